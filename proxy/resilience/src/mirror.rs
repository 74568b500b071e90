//! Traffic mirroring (`mirror` / `mirrors` of a VirtualService HTTP route).
//!
//! [`Mirror::mirror`] takes the head of a request and its buffered body and, for the
//! configured share of requests, spawns a copy to the mirror's service. The copy's authority
//! (the URI's, which is HTTP/2's `:authority`, and the `Host` header) gets Istio's `-shadow`
//! suffix on the host, port kept (`reviews:9080` → `reviews-shadow:9080`). The copy is never
//! awaited; its answer or error is dropped, so it cannot change or slow the primary response.
//! At most `max_in_flight` copies run at once per [`Mirror`] (and its clones); beyond that a
//! copy is dropped rather than queued.
//!
//! The body must be buffered by the caller: mirror requests whose body fits in memory (for
//! example what [`crate::retry::ReplayBody`] could replay) and skip the others.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Uri, header, request::Parts, uri::Authority};
use http_body_util::Full;
use tokio::sync::Semaphore;
use tower::{Service, ServiceExt};

use crate::draw::SharedDraw;

/// Copies in flight per mirror by default.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// What [`Mirror::mirror`] did with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mirrored {
    /// A copy was spawned.
    Sent,
    /// The request fell outside the percentage.
    Skipped,
    /// Too many copies were in flight, or there is no runtime to spawn on.
    Dropped,
}

/// Sends copies of requests to one mirror destination. Cheap to clone; clones share the
/// in-flight bound and the draw.
#[derive(Clone, Debug)]
pub struct Mirror<S> {
    service: S,
    percentage: f64,
    draw: SharedDraw,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
}

impl<S> Mirror<S> {
    /// Copies `percentage` (0 to 100) of requests to `service`.
    pub fn new(service: S, percentage: f64) -> Self {
        Self {
            service,
            percentage,
            draw: SharedDraw::random(),
            in_flight: Arc::new(Semaphore::new(DEFAULT_MAX_IN_FLIGHT)),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }

    pub fn with_draw(mut self, draw: SharedDraw) -> Self {
        self.draw = draw;
        self
    }

    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.in_flight = Arc::new(Semaphore::new(max));
        self.max_in_flight = max;
        self
    }

    /// Copies in flight now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight
            .saturating_sub(self.in_flight.available_permits())
    }

    /// Maybe spawns a copy of the request `head` + `body`; returns at once.
    pub fn mirror(&self, head: &Parts, body: Bytes) -> Mirrored
    where
        S: Service<Request<Full<Bytes>>> + Clone + Send + 'static,
        S::Future: Send,
        S::Response: Send,
        S::Error: Send,
    {
        if !self.draw.hit(self.percentage) {
            return Mirrored::Skipped;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Mirrored::Dropped;
        };
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            return Mirrored::Dropped;
        };
        let request = shadow_request(head, body);
        let service = self.service.clone();
        runtime.spawn(async move {
            // The answer, good or bad, is of no interest to anyone.
            let _ = service.oneshot(request).await;
            drop(permit);
        });
        Mirrored::Sent
    }
}

/// The copy of a request that goes to the mirror.
pub fn shadow_request(head: &Parts, body: Bytes) -> Request<Full<Bytes>> {
    let mut parts = head.clone();
    if let Some(authority) = parts.uri.authority().map(|a| shadow_authority(a.as_str())) {
        let mut uri = parts.uri.clone().into_parts();
        if let Ok(a) = authority.parse::<Authority>() {
            uri.authority = Some(a);
            if let Ok(rebuilt) = Uri::from_parts(uri) {
                parts.uri = rebuilt;
            }
        }
    }
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    if let Some(value) = host.and_then(|h| HeaderValue::from_str(&shadow_authority(h)).ok()) {
        parts.headers.insert(header::HOST, value);
    }
    Request::from_parts(parts, Full::new(body))
}

/// `host[:port]` → `host-shadow[:port]`, IPv6 literals included.
pub fn shadow_authority(authority: &str) -> String {
    let split = if authority.starts_with('[') {
        authority.find(']').map(|i| i + 1)
    } else {
        authority.rfind(':')
    };
    match split {
        Some(i) => format!("{}-shadow{}", &authority[..i], &authority[i..]),
        None => format!("{authority}-shadow"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::draw::RandomDraw;
    use http::Response;
    use http_body_util::BodyExt;
    use std::{
        convert::Infallible,
        sync::atomic::{AtomicUsize, Ordering},
    };
    use tower_test::mock;

    fn head(uri: &str, host: Option<&str>) -> Parts {
        let mut b = Request::post(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.header("x-request-id", "abc")
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn shadow_authorities() {
        assert_eq!(shadow_authority("reviews:9080"), "reviews-shadow:9080");
        assert_eq!(shadow_authority("reviews"), "reviews-shadow");
        assert_eq!(
            shadow_authority("reviews.default.svc.cluster.local"),
            "reviews.default.svc.cluster.local-shadow"
        );
        assert_eq!(shadow_authority("[::1]:80"), "[::1]-shadow:80");
        assert_eq!(shadow_authority("[::1]"), "[::1]-shadow");
    }

    #[tokio::test]
    async fn the_copy_goes_to_the_shadow_host_and_is_never_awaited() {
        let (svc, mut handle) = mock::pair::<Request<Full<Bytes>>, Response<()>>();
        let mirror = Mirror::new(svc, 100.0);
        let h = head("http://reviews:9080/r?x=1", Some("reviews:9080"));
        assert_eq!(
            mirror.mirror(&h, Bytes::from_static(b"body")),
            Mirrored::Sent
        );
        // mirror() has returned although the copy is not answered (and never will be).
        let (copy, _never) = handle.next_request().await.unwrap();
        assert_eq!(copy.method(), "POST");
        assert_eq!(copy.uri().to_string(), "http://reviews-shadow:9080/r?x=1");
        assert_eq!(copy.headers()["host"], "reviews-shadow:9080");
        assert_eq!(copy.headers()["x-request-id"], "abc");
        assert_eq!(copy.into_body().collect().await.unwrap().to_bytes(), "body");
    }

    #[tokio::test]
    async fn origin_form_requests_get_only_the_host_header_changed() {
        let h = head("/r", Some("ratings"));
        let copy = shadow_request(&h, Bytes::new());
        assert_eq!(copy.uri(), "/r");
        assert_eq!(copy.headers()["host"], "ratings-shadow");
    }

    #[tokio::test]
    async fn copies_beyond_the_bound_are_dropped() {
        let (svc, mut handle) = mock::pair::<Request<Full<Bytes>>, Response<()>>();
        let mirror = Mirror::new(svc, 100.0).with_max_in_flight(2);
        let h = head("http://a/", None);
        let outcomes: Vec<_> = (0..5)
            .map(|_| mirror.clone().mirror(&h, Bytes::new()))
            .collect();
        assert_eq!(
            outcomes,
            [
                Mirrored::Sent,
                Mirrored::Sent,
                Mirrored::Dropped,
                Mirrored::Dropped,
                Mirrored::Dropped
            ]
        );
        assert_eq!(mirror.in_flight(), 2);
        let (_r1, send) = handle.next_request().await.unwrap();
        let (_r2, _s2) = handle.next_request().await.unwrap();
        send.send_error("mirror failed"); // errors go nowhere
        while mirror.in_flight() > 1 {
            tokio::task::yield_now().await;
        }
        assert_eq!(mirror.mirror(&h, Bytes::new()), Mirrored::Sent);
    }

    #[tokio::test]
    async fn the_percentage_holds() {
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        let svc = tower::service_fn(move |_req: Request<Full<Bytes>>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(())) }
        });
        let h = head("http://a/", None);
        for (pct, lo, hi) in [(50.0, 900, 1100), (0.0, 0, 0), (100.0, 2000, 2000)] {
            let mirror = Mirror::new(svc.clone(), pct)
                .with_draw(SharedDraw::new(RandomDraw::seeded(99)))
                .with_max_in_flight(5000);
            let sent = (0..2000)
                .filter(|_| mirror.mirror(&h, Bytes::new()) == Mirrored::Sent)
                .count();
            assert!((lo..=hi).contains(&sent), "{pct}%: {sent} of 2000");
        }
        while seen.load(Ordering::SeqCst) < 3000 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn without_a_runtime_nothing_is_sent() {
        let (svc, _handle) = mock::pair::<Request<Full<Bytes>>, Response<()>>();
        let mirror = Mirror::new(svc, 100.0);
        assert_eq!(
            mirror.mirror(&head("http://a/", None), Bytes::new()),
            Mirrored::Dropped
        );
    }
}
