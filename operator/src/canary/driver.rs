//! One round of a canary, whatever runs it: gather what [`step`] needs through a
//! [`CanaryWorld`], call it, and carry out its actions. The Kubernetes shell
//! ([`super::kube`]) and the file shell ([`super::local`]) are two worlds; everything they share
//! — the two-scrape metric windows, Prometheus queries, webhook calls and their answers — lives
//! here, once.
//!
//! # Metric windows
//! The built-in metrics come from the canary pods' proxies: each round scrapes them, and the
//! window a check judges is the increase of the counters since the scrape taken at the previous
//! round (the baseline, kept in [`Memory`]). The baseline moves only when a round ran (the
//! state's `lastAnalysisTime` advanced), so a call between rounds (a watch event) neither
//! shortens the window nor loses requests. A controller that starts with no baseline in the
//! middle of an analysis takes one and waits one interval before judging, rather than failing a
//! round for lack of data it never had the chance to collect.
//!
//! A metric with `provider.type: prometheus` or a `query` asks the Prometheus server at
//! `provider.address` an instant query instead (the built-in names have built-in queries).

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    path::PathBuf,
    time::Duration,
};

use k8s_openapi::jiff::Timestamp;
use mizzen_crds::rollouts::canary::{
    BuiltinMetric, Canary, CanaryMetric, CanaryPhase, CanaryStatus, CanaryWebhook,
    MetricProviderType, WebhookType,
};
use serde_json::{Value, json};

use super::{
    Action, CanaryState, Decision, EventType, Observed, Traffic, WebhookAnswer,
    checks::IstioWindow,
    fetch::{FetchError, Fetcher, WEBHOOK_TIMEOUT, instant_value, query_url},
    promtext::{self, Sample},
    step,
};

/// Why a round could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The Canary names something that is not there (a DestinationRule, a subset).
    #[error("{0}")]
    Missing(String),
    #[error("{path}: {message}")]
    Document { path: PathBuf, message: String },
}

/// What a world sees of the two subsets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Subsets {
    /// See [`Observed::revision`].
    pub revision: Option<String>,
    /// See [`Observed::stable_revision`].
    pub stable_revision: Option<String>,
    pub primary_ready: bool,
    pub canary_ready: bool,
    /// The `/stats/prometheus` URLs of the canary subset's proxies.
    pub canary_scrape_urls: Vec<String>,
}

/// Where a canary runs: reading the subsets and writing the routing, the promotion, Events and
/// status. HTTP calls (scrapes, queries, webhooks) go through [`CanaryWorld::fetcher`] by
/// default; a world may answer them itself.
pub trait CanaryWorld: Send {
    /// Revision, readiness and scrape targets of the stable and canary subsets.
    fn observe(&mut self, canary: &Canary) -> impl Future<Output = Result<Subsets, Error>> + Send;
    /// Routes the service as `traffic` says.
    fn set_traffic(
        &mut self,
        canary: &Canary,
        traffic: Traffic,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// Makes the stable subset select the canary's pods.
    fn promote(
        &mut self,
        canary: &Canary,
        revision: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// Records an Event on the Canary.
    fn record_event(
        &mut self,
        canary: &Canary,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// Writes the Canary's status.
    fn write_status(
        &mut self,
        canary: &Canary,
        status: &CanaryStatus,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// The HTTP client of the default scrape, query and webhook calls.
    fn fetcher(&self) -> &Fetcher;

    /// The metrics text of one proxy.
    fn scrape(&mut self, url: &str) -> impl Future<Output = Result<String, Error>> + Send {
        let fetcher = self.fetcher().clone();
        let url = url.to_string();
        async move { Ok(fetcher.get_text(&url).await?) }
    }

    /// A Prometheus instant query; `None` for an empty answer.
    fn query(
        &mut self,
        address: &str,
        query: &str,
    ) -> impl Future<Output = Result<Option<f64>, Error>> + Send {
        let fetcher = self.fetcher().clone();
        let url = query_url(address, query);
        async move {
            let text = fetcher.get_text(&url).await?;
            let answer: Value = serde_json::from_str(&text).unwrap_or_default();
            Ok(instant_value(&answer))
        }
    }

    /// POSTs a webhook; its status code is the answer.
    fn call_webhook(
        &mut self,
        url: &str,
        payload: &Value,
        timeout: Duration,
    ) -> impl Future<Output = Result<u16, Error>> + Send {
        let fetcher = self.fetcher().clone();
        let url = url.to_string();
        let payload = payload.clone();
        async move { Ok(fetcher.post_json(&url, &payload, timeout).await?) }
    }
}

/// What the driver remembers of one canary between rounds: the baseline scrape of each canary
/// proxy and the latest answer of each webhook. Lost on restart (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct Memory {
    baselines: HashMap<String, Vec<Sample>>,
    webhooks: BTreeMap<String, WebhookAnswer>,
}

/// One round: observe, [`step`], act, write status when it changed. Returns the decision; the
/// caller calls again after its `requeue_after` (or on a watch event).
///
/// A failed traffic or promotion write stops the round before the status is written, so the
/// next round decides again from the same state; a failed Event is logged and skipped.
pub async fn round<W: CanaryWorld>(
    world: &mut W,
    memory: &mut Memory,
    canary: &Canary,
    now: Timestamp,
) -> Result<Decision, Error> {
    let spec = &canary.spec;
    let state = CanaryState::from_status(canary.status.clone().unwrap_or_default());
    let subsets = world.observe(canary).await?;
    let scrapes = scrape_all(world, &subsets.canary_scrape_urls).await;

    let analysing = matches!(
        state.status.phase,
        CanaryPhase::Progressing | CanaryPhase::WaitingPromotion
    );
    if analysing && memory.baselines.is_empty() && !scrapes.is_empty() && scrapes_needed(canary) {
        memory.baselines = scrapes;
        return Ok(Decision {
            state,
            actions: Vec::new(),
            requeue_after: interval_of(canary),
        });
    }

    let metrics = measure(world, memory, canary, &scrapes).await;
    let observed = Observed {
        revision: subsets.revision,
        stable_revision: subsets.stable_revision,
        primary_ready: subsets.primary_ready,
        canary_ready: subsets.canary_ready,
        metrics,
        webhooks: memory.webhooks.clone(),
    };
    let decision = step(spec, &state, &observed, now);
    if decision.state.last_analysis_time != state.last_analysis_time || memory.baselines.is_empty()
    {
        memory.baselines = scrapes;
    }

    for action in &decision.actions {
        match action {
            Action::SetTraffic(traffic) => world.set_traffic(canary, *traffic).await?,
            Action::Promote { revision } => world.promote(canary, revision).await?,
            Action::CallWebhook { name, .. } => {
                let Some(hook) = webhook(canary, name) else {
                    continue;
                };
                let payload = webhook_payload(canary, &decision.state.status, hook, None);
                let passed = match world
                    .call_webhook(&hook.url, &payload, webhook_timeout(hook))
                    .await
                {
                    Ok(code) => (200..300).contains(&code),
                    Err(e) => {
                        tracing::info!(webhook = %name, error = %e, "webhook gave no answer");
                        false
                    }
                };
                memory
                    .webhooks
                    .insert(name.clone(), WebhookAnswer { passed, at: now });
            }
            Action::Event {
                type_,
                reason,
                message,
            } => {
                if let Err(e) = world.record_event(canary, *type_, reason, message).await {
                    tracing::warn!(%reason, error = %e, "recording an event failed");
                }
                notify_event_webhooks(world, canary, &decision.state.status, *type_, message).await;
            }
        }
    }

    let next = decision.state.to_status();
    if canary.status.as_ref() != Some(&next) {
        world.write_status(canary, &next).await?;
    }
    Ok(decision)
}

/// `"passed"` or `"failed"` when a check round ran between two states, for the
/// `mizzen_canary_analysis_total` counter; `None` when none did.
pub fn analysis_result(prev: &CanaryStatus, next: &CanaryStatus) -> Option<&'static str> {
    if next.failed_checks > prev.failed_checks
        || (next.phase == CanaryPhase::Failed && prev.phase != CanaryPhase::Failed)
    {
        return Some("failed");
    }
    let judged = matches!(
        prev.phase,
        CanaryPhase::Progressing | CanaryPhase::WaitingPromotion
    ) && next.last_analysis_time != prev.last_analysis_time
        && next.phase != CanaryPhase::Failed;
    judged.then_some("passed")
}

fn interval_of(canary: &Canary) -> Duration {
    canary
        .spec
        .analysis
        .as_ref()
        .and_then(|a| a.interval)
        .map_or(super::state::DEFAULT_INTERVAL, |i| i.get())
}

fn webhook<'a>(canary: &'a Canary, name: &str) -> Option<&'a CanaryWebhook> {
    canary
        .spec
        .analysis
        .as_ref()?
        .webhooks
        .iter()
        .find(|w| w.name == name)
}

fn webhook_timeout(hook: &CanaryWebhook) -> Duration {
    hook.timeout.map_or(WEBHOOK_TIMEOUT, |t| t.get())
}

/// What a webhook receives, as Flagger sends it: the Canary's name, namespace and phase, the
/// webhook's type and its `metadata` (plus the event, for `event` webhooks).
pub fn webhook_payload(
    canary: &Canary,
    status: &CanaryStatus,
    hook: &CanaryWebhook,
    event: Option<(EventType, &str)>,
) -> Value {
    let mut metadata = hook.metadata.clone();
    if let Some((type_, message)) = event {
        metadata.insert("eventMessage".into(), message.to_string());
        let type_ = match type_ {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        metadata.insert("eventType".into(), type_.into());
    }
    json!({
        "name": canary.metadata.name,
        "namespace": canary.metadata.namespace,
        "phase": status.phase,
        "checksum": status.last_applied_revision,
        "type": hook.type_,
        "metadata": metadata,
    })
}

/// Sends an Event to the `event` webhooks; their answers change nothing.
async fn notify_event_webhooks<W: CanaryWorld>(
    world: &mut W,
    canary: &Canary,
    status: &CanaryStatus,
    type_: EventType,
    message: &str,
) {
    let hooks = canary
        .spec
        .analysis
        .iter()
        .flat_map(|a| &a.webhooks)
        .filter(|w| w.type_ == WebhookType::Event);
    for hook in hooks {
        let payload = webhook_payload(canary, status, hook, Some((type_, message)));
        if let Err(e) = world
            .call_webhook(&hook.url, &payload, webhook_timeout(hook))
            .await
        {
            tracing::info!(webhook = %hook.name, error = %e, "event webhook gave no answer");
        }
    }
}

/// Whether any check reads the proxies (the built-in metrics without a Prometheus provider).
fn scrapes_needed(canary: &Canary) -> bool {
    canary
        .spec
        .analysis
        .iter()
        .flat_map(|a| &a.metrics)
        .any(from_proxies)
}

fn from_proxies(metric: &CanaryMetric) -> bool {
    metric.query.is_none()
        && metric.builtin().is_some()
        && metric
            .provider
            .as_ref()
            .is_none_or(|p| p.type_ == MetricProviderType::Proxy)
}

/// Scrapes each URL; one that fails is left out (logged) and the others still count.
async fn scrape_all<W: CanaryWorld>(
    world: &mut W,
    urls: &[String],
) -> HashMap<String, Vec<Sample>> {
    let mut out = HashMap::new();
    for url in urls {
        match world.scrape(url).await {
            Ok(text) => {
                out.insert(url.clone(), promtext::parse(&text));
            }
            Err(e) => tracing::info!(%url, error = %e, "scrape failed; leaving this proxy out"),
        }
    }
    out
}

/// The value of every check by name: the built-in ones from the proxies' windows since the
/// baseline, the others from Prometheus.
async fn measure<W: CanaryWorld>(
    world: &mut W,
    memory: &Memory,
    canary: &Canary,
    scrapes: &HashMap<String, Vec<Sample>>,
) -> BTreeMap<String, Option<f64>> {
    let window = proxy_window(&memory.baselines, scrapes);
    let mut values = BTreeMap::new();
    let metrics = canary.spec.analysis.iter().flat_map(|a| &a.metrics);
    for metric in metrics {
        let value = if from_proxies(metric) {
            window.as_ref().and_then(|w| w.value(metric.builtin()?))
        } else {
            match prometheus_query(canary, metric) {
                Some((address, query)) => match world.query(&address, &query).await {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::info!(metric = %metric.name, error = %e, "query failed: no data");
                        None
                    }
                },
                None => None,
            }
        };
        values.insert(metric.name.clone(), value);
    }
    values
}

/// The canary proxies' traffic between the baseline and now, summed over the proxies scraped
/// both times; `None` when none was.
pub fn proxy_window(
    baselines: &HashMap<String, Vec<Sample>>,
    scrapes: &HashMap<String, Vec<Sample>>,
) -> Option<IstioWindow> {
    let mut total: Option<IstioWindow> = None;
    for (url, after) in scrapes {
        let Some(before) = baselines.get(url) else {
            continue;
        };
        let w = IstioWindow::between(before, after, &[]);
        match &mut total {
            Some(t) => t.merge(&w),
            None => total = Some(w),
        }
    }
    total
}

/// The Prometheus address and PromQL of a metric not read from the proxies; `None` without an
/// address.
pub fn prometheus_query(canary: &Canary, metric: &CanaryMetric) -> Option<(String, String)> {
    let address = metric.provider.as_ref()?.address.clone()?;
    let namespace = canary.metadata.namespace.as_deref().unwrap_or("default");
    let service = &canary.spec.service;
    let window = format!("{}s", metric.interval_or_default().get().as_secs().max(1));
    if let Some(q) = &metric.query {
        let q = q
            .replace("{{ namespace }}", namespace)
            .replace("{{ target }}", service)
            .replace("{{ interval }}", &window);
        return Some((address, q));
    }
    let service_name = service.split('.').next().unwrap_or_default();
    let mut selector = format!(
        "reporter=\"destination\",destination_workload_namespace=\"{namespace}\",destination_service_name=\"{service_name}\""
    );
    // The canary subset is told apart by its version label, which Istio's examples name the
    // subset after (`v2` selects `version: v2`).
    if !canary.spec.canary_subset.is_empty() {
        let version = &canary.spec.canary_subset;
        selector.push_str(&format!(",destination_version=\"{version}\""));
    }
    let query = match metric.builtin()? {
        BuiltinMetric::RequestSuccessRate => format!(
            "sum(rate(istio_requests_total{{{selector},response_code!~\"5..\"}}[{window}])) / sum(rate(istio_requests_total{{{selector}}}[{window}])) * 100"
        ),
        BuiltinMetric::RequestDuration => format!(
            "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{{{selector}}}[{window}])) by (le))"
        ),
    };
    Some((address, query))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analysis_results() {
        let st = |phase, failed, t: Option<&str>| CanaryStatus {
            phase,
            failed_checks: failed,
            last_analysis_time: t.map(str::to_string),
            ..Default::default()
        };
        let p = CanaryPhase::Progressing;
        assert_eq!(
            analysis_result(&st(p, 0, Some("a")), &st(p, 1, Some("b"))),
            Some("failed")
        );
        assert_eq!(
            analysis_result(&st(p, 0, Some("a")), &st(p, 0, Some("b"))),
            Some("passed")
        );
        assert_eq!(
            analysis_result(&st(p, 0, Some("a")), &st(p, 0, Some("a"))),
            None
        );
        assert_eq!(
            analysis_result(&st(CanaryPhase::Initialized, 0, None), &st(p, 0, Some("a"))),
            None
        );
    }

    #[test]
    fn builtin_prometheus_queries_select_the_canary_version() {
        let canary: Canary = serde_json::from_value(json!({
            "apiVersion": "rollouts.mizzen.io/v1alpha1", "kind": "Canary",
            "metadata": {"name": "reviews", "namespace": "shop"},
            "spec": {"service": "reviews", "stableSubset": "v1", "canarySubset": "v2",
              "analysis": {"interval": "30s", "stepWeight": 10, "maxWeight": 50, "metrics": [
                {"name": "request-success-rate", "thresholdRange": {"min": 99},
                 "provider": {"type": "prometheus", "address": "http://prom:9090"}},
                {"name": "errors", "query": "sum(x{ns=\"{{ namespace }}\"}[{{ interval }}])",
                 "interval": "2m", "thresholdRange": {"max": 1},
                 "provider": {"type": "prometheus", "address": "http://prom:9090"}},
                {"name": "request-duration", "thresholdRange": {"max": 500}},
              ]}}
        }))
        .unwrap();
        let m = &canary.spec.analysis.as_ref().unwrap().metrics;
        let (addr, q) = prometheus_query(&canary, &m[0]).unwrap();
        assert_eq!(addr, "http://prom:9090");
        assert!(q.contains("destination_version=\"v2\""), "{q}");
        assert!(q.contains("response_code!~\"5..\""), "{q}");
        assert!(q.contains("[60s]"), "{q}");
        let (_, q) = prometheus_query(&canary, &m[1]).unwrap();
        assert_eq!(q, "sum(x{ns=\"shop\"}[120s])");
        assert!(from_proxies(&m[2]) && !from_proxies(&m[0]) && !from_proxies(&m[1]));
    }
}
