//! The running operator: watches feed the index, one task reconciles, a small HTTP server
//! answers `/metrics`, `/healthz` and `/readyz`, and the elector decides who writes.

use std::{
    collections::BTreeSet,
    fmt::Debug,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::{
    Api, Client, Resource,
    api::DynamicObject,
    runtime::{WatchStreamExt, watcher},
};
use mizzen_crds::resource::{MeshResource, ObjectRef};
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::{
    leader::{LeaderElector, LeaseSettings},
    metrics::Metrics,
    reconcile::Reconciler,
    render::RenderSettings,
};

/// A watch's news, with the initial listing (and every relist) as one `Reset`.
pub enum Feed<T> {
    Apply(T),
    Delete(T),
    Reset(Vec<T>),
}

// Updates pass through a channel once each; boxing would only add allocations.
#[allow(clippy::large_enum_variant)]
pub enum Update {
    /// Mesh resources; a deletion carries only the object's identity (the object may not even
    /// parse).
    Mesh(&'static str, Feed<MeshResource>),
    MeshDeleted(ObjectRef),
    Service(Feed<Service>),
    Namespace(Feed<Namespace>),
}

impl Update {
    fn kind(&self) -> &'static str {
        match self {
            Self::Mesh(k, _) => k,
            Self::MeshDeleted(_) => "MeshDeleted",
            Self::Service(_) => "Service",
            Self::Namespace(_) => "Namespace",
        }
    }

    fn is_reset(&self) -> bool {
        matches!(
            self,
            Self::Mesh(_, Feed::Reset(_))
                | Self::Service(Feed::Reset(_))
                | Self::Namespace(Feed::Reset(_))
        )
    }
}

/// Applies one update to the index.
pub fn apply_update(index: &mut crate::Index, update: Update) {
    let root = index.root_namespace().to_string();
    match update {
        Update::Mesh(_, Feed::Apply(r)) => index.apply_resource(r),
        Update::Mesh(_, Feed::Delete(r)) => index.delete_resource(&r.object_ref(&root)),
        Update::MeshDeleted(o) => index.delete_resource(&o),
        Update::Mesh(kind, Feed::Reset(list)) => index.reset_resources(kind, list),
        Update::Service(Feed::Apply(s)) => index.apply_service(&s),
        Update::Service(Feed::Delete(s)) => index.delete_service(
            s.metadata.namespace.as_deref().unwrap_or_default(),
            s.metadata.name.as_deref().unwrap_or_default(),
        ),
        Update::Service(Feed::Reset(list)) => index.reset_services(&list),
        Update::Namespace(Feed::Apply(n)) => index.apply_namespace(&n),
        Update::Namespace(Feed::Delete(n)) => {
            index.delete_namespace(n.metadata.name.as_deref().unwrap_or_default());
        }
        Update::Namespace(Feed::Reset(list)) => index.reset_namespaces(&list),
    }
}

/// Watches every object of `K`, with kube's default backoff. A watch error (an API error or
/// an object that does not parse) is logged and counted; the watch carries on.
fn spawn_watch<K>(
    client: Client,
    kind: &'static str,
    tx: mpsc::Sender<Update>,
    wrap: impl Fn(Feed<K>) -> Update + Send + 'static,
    metrics: Metrics,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let span = tracing::info_span!("watch", kind);
    tokio::spawn(
        async move {
            let api: Api<K> = Api::all(client);
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            let mut buffer = Vec::new();
            while let Some(event) = stream.next().await {
                let feed = match event {
                    Ok(watcher::Event::Init) => {
                        buffer.clear();
                        continue;
                    }
                    Ok(watcher::Event::InitApply(k)) => {
                        buffer.push(k);
                        continue;
                    }
                    Ok(watcher::Event::InitDone) => Feed::Reset(std::mem::take(&mut buffer)),
                    Ok(watcher::Event::Apply(k)) => Feed::Apply(k),
                    Ok(watcher::Event::Delete(k)) => Feed::Delete(k),
                    Err(e) => {
                        tracing::warn!(error = %e, "watch failed; retrying with backoff");
                        metrics.error("watch");
                        continue;
                    }
                };
                if tx.send(wrap(feed)).await.is_err() {
                    return;
                }
            }
        }
        .instrument(span),
    );
}

/// Reads an untyped object of the mesh kind `ar` as its type; `Err` names the field that does
/// not fit.
pub fn parse_mesh(
    ar: &kube::api::ApiResource,
    obj: &DynamicObject,
) -> Result<Option<MeshResource>, Box<mizzen_crds::resource::ParseFailure>> {
    let mut value = serde_json::to_value(obj).unwrap_or_default();
    value["apiVersion"] = ar.api_version.clone().into();
    value["kind"] = ar.kind.clone().into();
    MeshResource::from_value(&value)
}

/// Watches one mesh kind as untyped objects and parses each one alone, so a malformed object
/// (one the API server stored but Mizzen's types refuse) is logged, counted and skipped (its
/// last good version stays in the index) instead of failing the whole list.
fn spawn_mesh_watch(
    client: Client,
    kind: &'static str,
    tx: mpsc::Sender<Update>,
    metrics: Metrics,
) {
    let Some(ar) = crate::status::api_resource(kind) else {
        return;
    };
    let span = tracing::info_span!("watch", kind);
    tokio::spawn(
        async move {
            let api: Api<DynamicObject> = Api::all_with(client, &ar);
            let parse = |obj: DynamicObject| match parse_mesh(&ar, &obj) {
                Ok(r) => r,
                Err(f) => {
                    tracing::warn!(
                        kind = %f.kind,
                        namespace = f.namespace.as_deref().unwrap_or("-"),
                        name = f.name.as_deref().unwrap_or("-"),
                        problem = %f.problem,
                        "object does not parse; keeping its last good version"
                    );
                    metrics.error("parse");
                    None
                }
            };
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            let mut buffer = Vec::new();
            while let Some(event) = stream.next().await {
                let update = match event {
                    Ok(watcher::Event::Init) => {
                        buffer.clear();
                        continue;
                    }
                    Ok(watcher::Event::InitApply(o)) => {
                        buffer.extend(parse(o));
                        continue;
                    }
                    Ok(watcher::Event::InitDone) => {
                        Update::Mesh(kind, Feed::Reset(std::mem::take(&mut buffer)))
                    }
                    Ok(watcher::Event::Apply(o)) => match parse(o) {
                        Some(r) => Update::Mesh(kind, Feed::Apply(r)),
                        None => continue,
                    },
                    Ok(watcher::Event::Delete(o)) => Update::MeshDeleted(ObjectRef {
                        kind: kind.to_string(),
                        namespace: o.metadata.namespace.clone().unwrap_or_default(),
                        name: o.metadata.name.clone().unwrap_or_default(),
                    }),
                    Err(e) => {
                        tracing::warn!(error = %e, "watch failed; retrying with backoff");
                        metrics.error("watch");
                        continue;
                    }
                };
                if tx.send(update).await.is_err() {
                    return;
                }
            }
        }
        .instrument(span),
    );
}

/// Everything `main` configures.
#[derive(Clone, Debug)]
pub struct Options {
    pub settings: RenderSettings,
    pub metrics_addr: SocketAddr,
    pub health_addr: SocketAddr,
    /// Leader-election identity (the pod name).
    pub identity: String,
    /// Quiet time before a burst of changes is rendered.
    pub debounce: Duration,
    /// Writes are redone this often even without changes (repairs drift).
    pub resync: Duration,
    /// A PEM bundle of CAs the canary controller trusts for `https://` webhooks and Prometheus
    /// servers, besides the public web PKI roots.
    pub canary_ca_file: Option<std::path::PathBuf>,
}

async fn serve(addr: SocketAddr, router: Router) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "listening");
    axum::serve(listener, router).await
}

fn metrics_router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(r): State<Arc<Registry>>| async move {
                let mut text = String::new();
                match prometheus_client::encoding::text::encode(&mut text, &r) {
                    Ok(()) => (
                        StatusCode::OK,
                        [(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                        .into_response(),
                    Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }),
        )
        .with_state(registry)
}

/// `/healthz` answers while the process runs; `/readyz` once every watch has listed once.
pub fn health_router(ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(ready): State<Arc<AtomicBool>>| async move {
                if ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
                }
            }),
        )
        .with_state(ready)
}

/// How often the leader checks the webhook's serving certificate and `caBundle`s.
const WEBHOOK_CERT_CHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs until a server fails.
pub async fn run(client: Client, opts: Options) -> anyhow::Result<()> {
    // A canary CA file that cannot be read stops the start, before anything runs, rather than
    // failing every HTTPS call later.
    let fetcher = match &opts.canary_ca_file {
        Some(path) => crate::canary::fetch::Fetcher::with_ca_file(path)?,
        None => crate::canary::fetch::Fetcher::new(),
    };
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let registry = Arc::new(registry);
    let ready = Arc::new(AtomicBool::new(false));

    let metrics_server = tokio::spawn(serve(opts.metrics_addr, metrics_router(registry)));
    let health_server = tokio::spawn(serve(opts.health_addr, health_router(ready.clone())));

    let (elector, leading) = LeaderElector::new(
        client.clone(),
        LeaseSettings::new(opts.settings.root_namespace.clone(), opts.identity.clone()),
    );
    tokio::spawn(elector.run().instrument(tracing::info_span!("leader")));
    tokio::spawn(
        crate::webhook_certs::keep_current(
            client.clone(),
            opts.settings.root_namespace.clone(),
            leading.clone(),
            WEBHOOK_CERT_CHECK,
        )
        .instrument(tracing::info_span!("webhook-certs")),
    );
    let (authority_tx, authority_rx) = watch::channel(None);
    tokio::spawn(
        crate::ca::keeper::keep_current(
            client.clone(),
            crate::ca::KeeperSettings::new(
                opts.settings.root_namespace.clone(),
                opts.settings.trust_domain.clone(),
            ),
            leading.clone(),
            authority_tx,
        )
        .instrument(tracing::info_span!("mesh-ca")),
    );
    tokio::spawn(
        crate::ca::signer::run(
            client.clone(),
            crate::ca::SignerSettings::new(&opts.settings.root_namespace),
            leading.clone(),
            authority_rx,
        )
        .instrument(tracing::info_span!("node-ca-signer")),
    );
    // Canaries: a round per Canary when due, only while leading (like the renderer's writes).
    tokio::spawn(
        crate::canary::kube::run(
            client.clone(),
            Arc::new(
                crate::canary::kube::Context::new(
                    client.clone(),
                    opts.identity.clone(),
                    leading.clone(),
                    metrics.canary.clone(),
                )
                .with_fetcher(fetcher),
            ),
        )
        .instrument(tracing::info_span!("canary")),
    );

    let (tx, rx) = mpsc::channel::<Update>(1024);
    for kind in [
        "VirtualService",
        "DestinationRule",
        "Gateway",
        "ServiceEntry",
        "WorkloadEntry",
        "Sidecar",
        "PeerAuthentication",
        "AuthorizationPolicy",
        "RequestAuthentication",
    ] {
        spawn_mesh_watch(client.clone(), kind, tx.clone(), metrics.clone());
    }
    spawn_watch::<Service>(
        client.clone(),
        "Service",
        tx.clone(),
        Update::Service,
        metrics.clone(),
    );
    spawn_watch::<Namespace>(
        client.clone(),
        "Namespace",
        tx.clone(),
        Update::Namespace,
        metrics.clone(),
    );
    drop(tx);
    const WATCHES: usize = 11;

    let reconciler = Reconciler::new(
        client,
        opts.settings.clone(),
        Some(opts.identity.clone()),
        leading.clone(),
        metrics.clone(),
    );
    let control = tokio::spawn(
        control_loop(reconciler, rx, leading, ready, opts, WATCHES)
            .instrument(tracing::info_span!("reconcile")),
    );
    tokio::select! {
        r = metrics_server => r??,
        r = health_server => r??,
        r = control => r?,
    }
    Ok(())
}

async fn control_loop(
    mut reconciler: Reconciler,
    mut rx: mpsc::Receiver<Update>,
    mut leading: watch::Receiver<bool>,
    ready: Arc<AtomicBool>,
    opts: Options,
    watches: usize,
) {
    let mut synced: BTreeSet<&'static str> = BTreeSet::new();
    let mut resync = tokio::time::interval(opts.resync);
    loop {
        tokio::select! {
            update = rx.recv() => {
                let Some(update) = update else { return };
                let mut apply = |u: Update| {
                    if u.is_reset() {
                        synced.insert(u.kind());
                    }
                    apply_update(reconciler.index_mut(), u);
                };
                apply(update);
                // Let a burst settle, then take all of it.
                tokio::time::sleep(opts.debounce).await;
                while let Ok(u) = rx.try_recv() {
                    apply(u);
                }
            }
            _ = resync.tick() => {}
            changed = leading.changed() => {
                if changed.is_err() { return; }
            }
        }
        if synced.len() < watches {
            continue;
        }
        match reconciler.reconcile().await {
            Ok(outcome) => {
                if !ready.swap(true, Ordering::Relaxed) {
                    tracing::info!("caches synced; ready");
                }
                if outcome.config_maps_applied
                    + outcome.config_maps_deleted
                    + outcome.statuses_written
                    > 0
                {
                    tracing::info!(?outcome, "reconciled");
                }
            }
            Err(e) => {
                ready.store(true, Ordering::Relaxed);
                tracing::warn!(error = %e, "reconcile failed; will retry");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let res = router
            .oneshot(
                axum::http::Request::builder()
                    .uri(path)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn ready_only_after_sync_and_healthy_always() {
        let ready = Arc::new(AtomicBool::new(false));
        let router = health_router(ready.clone());
        assert_eq!(get(router.clone(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(router.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        ready.store(true, Ordering::Relaxed);
        assert_eq!(get(router, "/readyz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn serves_the_registry_as_openmetrics() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        metrics.reconciles.inc();
        metrics.error("apply_configmap");
        let (status, body) = get(metrics_router(Arc::new(registry)), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("mizzen_operator_reconciles_total 1"),
            "{body}"
        );
        assert!(
            body.contains("mizzen_operator_errors_total{reason=\"apply_configmap\"} 1"),
            "{body}"
        );
        assert!(
            body.contains("mizzen_operator_render_duration_seconds_bucket"),
            "{body}"
        );
    }

    #[test]
    fn a_malformed_object_is_refused_alone_naming_the_field() {
        let ar = crate::status::api_resource("VirtualService").unwrap();
        let obj = |spec: serde_json::Value| -> DynamicObject {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": "x", "namespace": "shop"}, "spec": spec
            }))
            .unwrap()
        };
        let good = parse_mesh(&ar, &obj(serde_json::json!({"hosts": ["a"]}))).unwrap();
        assert!(matches!(good, Some(MeshResource::VirtualService(_))));
        let bad = parse_mesh(&ar, &obj(serde_json::json!({"hosts": "a"}))).unwrap_err();
        assert_eq!(bad.name.as_deref(), Some("x"));
        assert!(bad.problem.path.contains("hosts"), "{:?}", bad.problem);
    }

    /// A Gateway's watch events mark the gateway configs for a render, and nothing else: not
    /// every namespace's config, as they once did.
    #[test]
    fn a_gateway_change_renders_the_gateway_configs_only() {
        let mut index = crate::Index::new("mizzen-system");
        index.take_changes();
        let gw = MeshResource::from_value(&serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "edge"},
            "spec": {"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}
        }))
        .unwrap()
        .unwrap();
        let gateways_only = crate::index::Changes {
            gateways: true,
            ..Default::default()
        };
        apply_update(&mut index, Update::Mesh("Gateway", Feed::Apply(gw)));
        assert_eq!(index.take_changes(), gateways_only);
        apply_update(
            &mut index,
            Update::MeshDeleted(ObjectRef {
                kind: "Gateway".into(),
                namespace: "edge".into(),
                name: "gw".into(),
            }),
        );
        assert_eq!(index.take_changes(), gateways_only);
    }

    #[test]
    fn watch_feeds_apply_delete_and_reset_the_index() {
        let mut index = crate::Index::new("mizzen-system");
        let ns = |name: &str, label: Option<&str>| {
            let mut n = Namespace::default();
            n.metadata.name = Some(name.into());
            if let Some(l) = label {
                n.metadata.labels = Some([("istio-injection".to_string(), l.to_string())].into());
            }
            n
        };
        apply_update(
            &mut index,
            Update::Namespace(Feed::Reset(vec![ns("a", Some("enabled")), ns("b", None)])),
        );
        assert_eq!(index.namespaces().filter(|n| n.meshed).count(), 1);
        apply_update(&mut index, Update::Namespace(Feed::Delete(ns("a", None))));
        apply_update(
            &mut index,
            Update::Namespace(Feed::Apply(ns("b", Some("enabled")))),
        );
        let meshed: Vec<_> = index
            .namespaces()
            .filter(|n| n.meshed)
            .map(|n| n.name.clone())
            .collect();
        assert_eq!(meshed, ["b"]);
    }
}
