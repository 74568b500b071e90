//! Outlier detection (`outlierDetection` of a DestinationRule) as a pure state machine over
//! an upstream's endpoints, plus the hooks the balancer uses.
//!
//! [`OutlierDetector`] never reads the clock: every call takes `now`. Semantics (Envoy's, as
//! Istio configures it):
//! - every answer of an endpoint is [`record`](OutlierDetector::record)ed. A 5xx adds to its
//!   consecutive-5xx count, a 502/503/504 also to its consecutive-gateway-error count, a 500
//!   (or 501, 505...) resets the gateway count, anything below 500 resets both. Failures of
//!   the proxy's own call count as statuses: connect failure and reset as 503, timeout as 504.
//! - with `splitExternalLocalOriginErrors` ([`OutlierDetection::consecutive_local_origin_failures`]
//!   set), those failures of the proxy's own call count on a counter of their own instead,
//!   which any response resets; the 5xx and gateway-error counters then count responses only.
//! - an endpoint whose count reaches `consecutive5xxErrors` or `consecutiveGatewayErrors`
//!   (unset or 0: off) is ejected for `baseEjectionTime × n`, `n` being how many times it has
//!   been ejected, capped at 300 s (or the base, if longer). `n` goes down by one for every
//!   full `interval` the endpoint stayed healthy since it came back.
//! - no ejection takes the ejected share above `maxEjectionPercent`, except that one endpoint
//!   may always be ejected.
//! - an ejected endpoint is back as soon as its time has passed (Envoy waits for the next
//!   interval tick; this is at most one interval sooner).
//! - when fewer than `minHealthPercent` of the endpoints are healthy, [`OutlierDetector::healthy`]
//!   returns all of them (panic mode): traffic goes everywhere rather than nowhere.
//!
//! [`SharedOutlier`] wraps a detector for the data path (tokio clock, shared by clones), and
//! [`OutlierLayer`] records each answer of one endpoint's service into it.

use std::{
    collections::HashMap,
    error::Error as StdError,
    hash::Hash,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use http::Response;
use mizzen_proxy_config::OutlierDetection;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::{
    BoxError,
    upstream::{UpstreamError, UpstreamErrorKind},
};

/// The longest an ejection lasts (Envoy's default `max_ejection_time`), unless the base is
/// longer.
pub const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

/// What one call to an endpoint came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status.
    Status(u16),
    /// The call failed before a response head.
    Error(UpstreamErrorKind),
}

impl Outcome {
    pub fn of_response<B>(response: &Response<B>) -> Self {
        Outcome::Status(response.status().as_u16())
    }

    pub fn of_error(error: &(dyn StdError + 'static)) -> Self {
        Outcome::Error(UpstreamError::classify(error))
    }

    /// The status the outcome counts as.
    fn status(self) -> u16 {
        match self {
            Outcome::Status(code) => code,
            Outcome::Error(UpstreamErrorKind::Timeout) => 504,
            Outcome::Error(_) => 503,
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Host {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    consecutive_local_origin: u32,
    /// How many times it was ejected, less the decay for healthy intervals.
    ejections: u32,
    /// While ejected: until when. Afterwards: when it came back (for the decay).
    until: Option<Instant>,
    ejected: bool,
}

impl Host {
    fn is_ejected(&self, now: Instant) -> bool {
        self.ejected && self.until.is_some_and(|u| now < u)
    }

    /// Counts a response status on the 5xx and gateway-error counters.
    fn count_status(&mut self, status: u16) {
        if (500..600).contains(&status) {
            self.consecutive_5xx += 1;
            if matches!(status, 502..=504) {
                self.consecutive_gateway += 1;
            } else {
                self.consecutive_gateway = 0;
            }
        } else {
            self.consecutive_5xx = 0;
            self.consecutive_gateway = 0;
        }
    }

    fn reset_counts(&mut self) {
        self.consecutive_5xx = 0;
        self.consecutive_gateway = 0;
        self.consecutive_local_origin = 0;
    }
}

/// A counter's threshold, `None` when it is off (unset or 0).
fn threshold(n: Option<u32>) -> Option<u32> {
    n.filter(|n| *n > 0)
}

/// The outlier state of one upstream's endpoints. See the module docs.
#[derive(Clone, Debug)]
pub struct OutlierDetector<E> {
    config: OutlierDetection,
    hosts: HashMap<E, Host>,
}

impl<E: Eq + Hash + Clone> OutlierDetector<E> {
    pub fn new(config: OutlierDetection) -> Self {
        Self {
            config,
            hosts: HashMap::new(),
        }
    }

    pub fn config(&self) -> &OutlierDetection {
        &self.config
    }

    /// Tells the detector which endpoints the upstream has now; state of the ones kept is
    /// kept, the others are forgotten. Percentages are taken over this set.
    pub fn set_endpoints(&mut self, endpoints: impl IntoIterator<Item = E>) {
        let mut next = HashMap::new();
        for e in endpoints {
            let host = self.hosts.remove(&e).unwrap_or_default();
            next.insert(e, host);
        }
        self.hosts = next;
    }

    /// Records one answer of `endpoint` (added if unknown). Returns how long it is now
    /// ejected for, when this answer ejected it.
    pub fn record(&mut self, endpoint: &E, outcome: Outcome, now: Instant) -> Option<Duration> {
        let config = &self.config;
        let host = self.hosts.entry(endpoint.clone()).or_default();
        if host.is_ejected(now) {
            return None;
        }
        let split = config.consecutive_local_origin_failures;
        match (outcome, split) {
            (Outcome::Error(_), Some(_)) => host.consecutive_local_origin += 1,
            (Outcome::Status(status), Some(_)) => {
                host.consecutive_local_origin = 0;
                host.count_status(status);
            }
            (outcome, None) => host.count_status(outcome.status()),
        }
        let reached = |max: Option<u32>, count: u32| threshold(max).is_some_and(|n| count >= n);
        let tripped = reached(config.consecutive_5xx_errors, host.consecutive_5xx)
            || reached(config.consecutive_gateway_errors, host.consecutive_gateway)
            || reached(split, host.consecutive_local_origin);
        if tripped && self.may_eject(now) {
            Some(self.eject(endpoint, now))
        } else {
            None
        }
    }

    /// Whether ejecting one more endpoint keeps within `maxEjectionPercent`.
    fn may_eject(&self, now: Instant) -> bool {
        let ejected = self.ejected_count(now);
        if ejected == 0 {
            return true;
        }
        let total = self.hosts.len() as u64;
        (ejected as u64 + 1) * 100 <= u64::from(self.config.max_ejection_percent) * total
    }

    fn eject(&mut self, endpoint: &E, now: Instant) -> Duration {
        let base = Duration::from_millis(self.config.base_ejection_time_ms);
        let interval = Duration::from_millis(self.config.interval_ms);
        let host = self.hosts.get_mut(endpoint).expect("recorded above");
        // Decay: one less for every full interval healthy since it came back.
        if let (Some(back), false) = (host.until, interval.is_zero()) {
            let healthy = now.saturating_duration_since(back);
            let intervals = (healthy.as_millis() / interval.as_millis()) as u32;
            host.ejections = host.ejections.saturating_sub(intervals);
        }
        host.ejections += 1;
        let duration = base
            .saturating_mul(host.ejections)
            .min(MAX_EJECTION_TIME.max(base));
        host.until = Some(now + duration);
        host.ejected = true;
        host.reset_counts();
        duration
    }

    pub fn is_ejected(&self, endpoint: &E, now: Instant) -> bool {
        self.hosts.get(endpoint).is_some_and(|h| h.is_ejected(now))
    }

    pub fn ejected_count(&self, now: Instant) -> usize {
        self.hosts.values().filter(|h| h.is_ejected(now)).count()
    }

    /// Brings back the endpoints whose ejection time has passed and returns them.
    pub fn tick(&mut self, now: Instant) -> Vec<E> {
        let mut back = Vec::new();
        for (e, host) in &mut self.hosts {
            if host.ejected && !host.is_ejected(now) {
                host.ejected = false;
                host.reset_counts();
                back.push(e.clone());
            }
        }
        back
    }

    /// The endpoints the balancer may pick from: those not ejected, or all of them when
    /// fewer than `minHealthPercent` are healthy (panic mode).
    pub fn healthy<'a>(&self, endpoints: &'a [E], now: Instant) -> Vec<&'a E> {
        let eligible = self.eligible(endpoints.iter(), now);
        endpoints
            .iter()
            .zip(eligible)
            .filter_map(|(e, ok)| ok.then_some(e))
            .collect()
    }

    /// For each endpoint in order, whether the balancer may pick it (see [`Self::healthy`]).
    pub fn eligible<'a>(&self, endpoints: impl Iterator<Item = &'a E>, now: Instant) -> Vec<bool>
    where
        E: 'a,
    {
        let mut eligible: Vec<bool> = endpoints.map(|e| !self.is_ejected(e, now)).collect();
        let healthy = eligible.iter().filter(|ok| **ok).count() as u64;
        let min = u64::from(self.config.min_health_percent);
        if healthy * 100 < min * eligible.len() as u64 {
            eligible.fill(true);
        }
        eligible
    }
}

/// A detector shared by the balancer and the per-endpoint layers, on the tokio clock.
#[derive(Debug)]
pub struct SharedOutlier<E>(Arc<Mutex<OutlierDetector<E>>>);

impl<E> Clone for SharedOutlier<E> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<E: Eq + Hash + Clone> SharedOutlier<E> {
    pub fn new(config: OutlierDetection) -> Self {
        Self(Arc::new(Mutex::new(OutlierDetector::new(config))))
    }

    fn lock(&self) -> MutexGuard<'_, OutlierDetector<E>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_endpoints(&self, endpoints: impl IntoIterator<Item = E>) {
        self.lock().set_endpoints(endpoints);
    }

    pub fn record(&self, endpoint: &E, outcome: Outcome) -> Option<Duration> {
        self.lock().record(endpoint, outcome, Instant::now())
    }

    pub fn is_ejected(&self, endpoint: &E) -> bool {
        self.lock().is_ejected(endpoint, Instant::now())
    }

    /// For each endpoint in order, whether the balancer may pick it now (see
    /// [`OutlierDetector::eligible`]); one lock, no copies of the endpoint names.
    pub fn eligible<'a>(&self, endpoints: impl Iterator<Item = &'a E>) -> Vec<bool>
    where
        E: 'a,
    {
        self.lock().eligible(endpoints, Instant::now())
    }

    /// The endpoints to balance over now (see [`OutlierDetector::healthy`]).
    pub fn healthy(&self, endpoints: &[E]) -> Vec<E> {
        self.lock()
            .healthy(endpoints, Instant::now())
            .into_iter()
            .cloned()
            .collect()
    }

    pub fn tick(&self) -> Vec<E> {
        self.lock().tick(Instant::now())
    }

    /// Ticks every `interval` until dropped; spawn it with the detector's upstream.
    pub async fn run(self, interval: Duration) {
        let mut timer = tokio::time::interval(interval.max(Duration::from_millis(1)));
        loop {
            timer.tick().await;
            self.tick();
        }
    }
}

/// Records every answer of one endpoint's service into a [`SharedOutlier`].
#[derive(Clone, Debug)]
pub struct OutlierLayer<E> {
    detector: SharedOutlier<E>,
    endpoint: E,
}

impl<E> OutlierLayer<E> {
    pub fn new(detector: SharedOutlier<E>, endpoint: E) -> Self {
        Self { detector, endpoint }
    }
}

impl<S, E: Clone> Layer<S> for OutlierLayer<E> {
    type Service = RecordOutcome<S, E>;
    fn layer(&self, inner: S) -> RecordOutcome<S, E> {
        RecordOutcome {
            inner,
            detector: self.detector.clone(),
            endpoint: self.endpoint.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RecordOutcome<S, E> {
    inner: S,
    detector: SharedOutlier<E>,
    endpoint: E,
}

impl<S, E, Req, B> Service<Req> for RecordOutcome<S, E>
where
    S: Service<Req, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    E: Eq + Hash + Clone + Send + 'static,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<B>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let call = self.inner.call(req);
        let detector = self.detector.clone();
        let endpoint = self.endpoint.clone();
        Box::pin(async move {
            let result = call.await.map_err(Into::into);
            let outcome = match &result {
                Ok(response) => Outcome::of_response(response),
                Err(error) => Outcome::of_error(error.as_ref()),
            };
            detector.record(&endpoint, outcome);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(c5xx: Option<u32>, gateway: Option<u32>) -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx_errors: c5xx,
            consecutive_gateway_errors: gateway,
            interval_ms: 10_000,
            base_ejection_time_ms: 30_000,
            max_ejection_percent: 100,
            min_health_percent: 0,
            consecutive_local_origin_failures: None,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn fail(
        d: &mut OutlierDetector<&'static str>,
        e: &'static str,
        times: u32,
        now: Instant,
    ) -> Option<Duration> {
        let mut last = None;
        for _ in 0..times {
            last = d.record(&e, Outcome::Status(500), now);
        }
        last
    }

    #[test]
    fn a_failing_endpoint_is_ejected_returns_and_is_ejected_twice_as_long() {
        let t0 = Instant::now();
        let mut d = OutlierDetector::new(config(Some(5), None));
        d.set_endpoints(["a", "b"]);
        assert_eq!(fail(&mut d, "a", 4, t0), None);
        assert!(!d.is_ejected(&"a", t0));
        assert_eq!(d.record(&"a", Outcome::Status(503), t0), Some(ms(30_000)));
        assert!(d.is_ejected(&"a", t0));
        assert!(d.is_ejected(&"a", t0 + ms(29_999)));
        assert!(!d.is_ejected(&"b", t0));

        let back = t0 + ms(30_000);
        assert!(!d.is_ejected(&"a", back));
        assert_eq!(d.tick(back), vec!["a"]);
        assert!(d.tick(back).is_empty());

        // It keeps failing: the second ejection lasts twice the base time.
        assert_eq!(fail(&mut d, "a", 5, back + ms(1)), Some(ms(60_000)));
        assert!(d.is_ejected(&"a", back + ms(60_000)));
        assert!(!d.is_ejected(&"a", back + ms(60_001)));
    }

    #[test]
    fn records_while_ejected_are_ignored() {
        let t0 = Instant::now();
        let mut d = OutlierDetector::new(config(Some(2), None));
        d.set_endpoints(["a"]);
        assert!(fail(&mut d, "a", 2, t0).is_some());
        assert_eq!(fail(&mut d, "a", 10, t0 + ms(1)), None);
        d.tick(t0 + ms(30_000));
        // counting starts again from zero after it is back
        assert_eq!(fail(&mut d, "a", 1, t0 + ms(30_000)), None);
    }

    #[test]
    fn success_resets_the_count() {
        let t0 = Instant::now();
        let mut d = OutlierDetector::new(config(Some(3), None));
        for status in [500, 500, 200, 500, 500] {
            assert_eq!(d.record(&"a", Outcome::Status(status), t0), None);
        }
        assert_eq!(d.record(&"a", Outcome::Status(500), t0), Some(ms(30_000)));
    }

    #[test]
    fn gateway_errors_count_502_to_504_and_other_5xx_reset_them() {
        let t0 = Instant::now();
        let mut d = OutlierDetector::new(config(None, Some(3)));
        for status in [502, 503, 500, 504, 502] {
            assert_eq!(
                d.record(&"a", Outcome::Status(status), t0),
                None,
                "{status}"
            );
        }
        assert!(d.record(&"a", Outcome::Status(503), t0).is_some());
    }

    #[test]
    fn local_failures_count_as_gateway_errors() {
        let t0 = Instant::now();
        let mut d = OutlierDetector::new(config(None, Some(3)));
        d.record(&"a", Outcome::Error(UpstreamErrorKind::ConnectFailure), t0);
        d.record(&"a", Outcome::Error(UpstreamErrorKind::Reset), t0);
        assert!(
            d.record(&"a", Outcome::Error(UpstreamErrorKind::Timeout), t0)
                .is_some()
        );
        let mut five = OutlierDetector::new(config(Some(2), None));
        five.record(&"a", Outcome::Error(UpstreamErrorKind::ConnectFailure), t0);
        assert!(
            five.record(&"a", Outcome::Error(UpstreamErrorKind::ConnectFailure), t0)
                .is_some()
        );
    }

    #[test]
    fn split_local_origin_failures_count_apart_and_responses_reset_them() {
        use UpstreamErrorKind::{ConnectFailure, Reset, Timeout};
        let t0 = Instant::now();
        let mut cfg = config(Some(2), Some(2));
        cfg.consecutive_local_origin_failures = Some(3);
        let mut d = OutlierDetector::new(cfg.clone());
        // Local failures no longer reach the 5xx or gateway counters (2 would eject)...
        for kind in [ConnectFailure, Timeout] {
            assert_eq!(d.record(&"a", Outcome::Error(kind), t0), None);
        }
        // ...and any response, even a 5xx, resets their own counter.
        assert_eq!(d.record(&"a", Outcome::Status(503), t0), None);
        for kind in [Reset, ConnectFailure] {
            assert_eq!(d.record(&"a", Outcome::Error(kind), t0), None);
        }
        assert_eq!(
            d.record(&"a", Outcome::Error(Timeout), t0),
            Some(ms(30_000)),
            "three local failures in a row"
        );
        // The response counters still count responses: 503 above and one more.
        let mut d = OutlierDetector::new(cfg.clone());
        d.record(&"b", Outcome::Status(503), t0);
        d.record(&"b", Outcome::Error(Reset), t0);
        assert!(d.record(&"b", Outcome::Status(502), t0).is_some());

        // 0: local failures never eject, and still do not count as 5xx.
        cfg.consecutive_local_origin_failures = Some(0);
        let mut d = OutlierDetector::new(cfg);
        for _ in 0..100 {
            assert_eq!(d.record(&"a", Outcome::Error(ConnectFailure), t0), None);
        }
    }

    #[test]
    fn unset_or_zero_counters_never_eject() {
        let t0 = Instant::now();
        for cfg in [config(None, None), config(Some(0), Some(0))] {
            let mut d = OutlierDetector::new(cfg);
            assert_eq!(fail(&mut d, "a", 100, t0), None);
        }
    }

    #[test]
    fn max_ejection_percent_caps_ejections_but_allows_one() {
        let t0 = Instant::now();
        let mut cfg = config(Some(1), None);
        cfg.max_ejection_percent = 10;
        let mut d = OutlierDetector::new(cfg.clone());
        let names = ["a", "b", "c", "d"];
        d.set_endpoints(names);
        assert!(fail(&mut d, "a", 1, t0).is_some(), "one may always go");
        assert_eq!(fail(&mut d, "b", 1, t0), None);
        assert_eq!(d.ejected_count(t0), 1);

        cfg.max_ejection_percent = 50;
        let mut d = OutlierDetector::new(cfg);
        d.set_endpoints(names);
        assert!(fail(&mut d, "a", 1, t0).is_some());
        assert!(fail(&mut d, "b", 1, t0).is_some());
        assert_eq!(fail(&mut d, "c", 1, t0), None);
        assert_eq!(d.ejected_count(t0), 2);
    }

    #[test]
    fn below_min_health_the_balancer_gets_every_endpoint() {
        let t0 = Instant::now();
        let mut cfg = config(Some(1), None);
        cfg.min_health_percent = 60;
        let mut d = OutlierDetector::new(cfg.clone());
        let all = ["a", "b", "c"];
        d.set_endpoints(all);
        fail(&mut d, "a", 1, t0);
        assert_eq!(d.healthy(&all, t0), vec![&"b", &"c"]); // 66% healthy
        fail(&mut d, "b", 1, t0);
        assert_eq!(d.healthy(&all, t0).len(), 3); // 33% healthy: panic mode

        cfg.min_health_percent = 0;
        let mut d = OutlierDetector::new(cfg);
        d.set_endpoints(["a"]);
        fail(&mut d, "a", 1, t0);
        assert!(d.healthy(&["a"], t0).is_empty());
    }

    #[test]
    fn the_multiplier_decays_while_healthy_and_is_capped() {
        let t0 = Instant::now();
        let mut d = OutlierDetector::new(config(Some(1), None));
        assert_eq!(fail(&mut d, "a", 1, t0), Some(ms(30_000)));
        let back = t0 + ms(30_000);
        d.tick(back);
        // two healthy intervals later, the count is back to zero: base time again
        assert_eq!(fail(&mut d, "a", 1, back + ms(20_000)), Some(ms(30_000)));

        let mut d = OutlierDetector::new(config(Some(1), None));
        let mut now = t0;
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            last = fail(&mut d, "a", 1, now).unwrap();
            now += last;
        }
        assert_eq!(last, MAX_EJECTION_TIME);
    }

    #[test]
    fn forgotten_endpoints_lose_their_state() {
        let t0 = Instant::now();
        let mut d = OutlierDetector::new(config(Some(1), None));
        d.set_endpoints(["a", "b"]);
        fail(&mut d, "a", 1, t0);
        d.set_endpoints(["b"]);
        assert!(!d.is_ejected(&"a", t0));
        d.set_endpoints(["a", "b"]);
        assert!(!d.is_ejected(&"a", t0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_layer_records_each_answer_and_the_balancer_skips_ejected() {
        use bytes::Bytes;
        use http::{Request, StatusCode};
        use http_body_util::Full;
        use tower::ServiceExt;
        use tower_test::mock;

        let shared = SharedOutlier::new(config(Some(2), None));
        shared.set_endpoints(["a", "b"]);
        let (svc, mut handle) = mock::pair::<Request<()>, Response<Full<Bytes>>>();
        let svc = OutlierLayer::new(shared.clone(), "a").layer(svc);
        for i in 0..2 {
            let call = tokio::spawn(svc.clone().oneshot(Request::new(())));
            let (_req, send) = handle.next_request().await.unwrap();
            if i == 0 {
                let mut resp = Response::new(Full::new(Bytes::new()));
                *resp.status_mut() = StatusCode::BAD_GATEWAY;
                send.send_response(resp);
                call.await.unwrap().unwrap();
            } else {
                send.send_error(UpstreamError::connect_failure("refused"));
                assert!(call.await.unwrap().is_err());
            }
        }
        assert!(shared.is_ejected(&"a"));
        assert_eq!(shared.healthy(&["a", "b"]), vec!["b"]);
        tokio::time::advance(ms(30_000)).await;
        assert_eq!(shared.tick(), vec!["a"]);
        assert_eq!(shared.healthy(&["a", "b"]), vec!["a", "b"]);
    }
}
