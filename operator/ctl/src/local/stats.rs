//! What the live view shows, computed from the sidecars' own Istio metrics: each sidecar's
//! `/stats/prometheus` is scraped every second and the last scrapes are diffed (pure
//! [`Window::between`]), so the numbers are exactly what Prometheus and the canary checks would
//! see. Only `reporter="destination"` series count: each request once, where it was served.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mizzen_operator::canary::checks::{IstioWindow, REQUESTS_TOTAL};
use mizzen_operator::canary::promtext::{self, Sample};

/// How many seconds of scrapes the rates and percentiles cover.
pub const WINDOW: usize = 5;

/// One service as its sidecars served it over a window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceRow {
    /// `destination_service` (the host).
    pub service: String,
    pub rps: f64,
    /// Percentage of non-5xx answers; `None` without requests.
    pub success_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Requests by `destination_version`.
    pub versions: BTreeMap<String, f64>,
}

/// Who talked to whom, as the serving side's mTLS handshake saw it (since the start).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct IdentityRow {
    pub source_principal: String,
    pub destination_principal: String,
    /// `mutual_tls` or `none`.
    pub security_policy: String,
}

/// Everything a view needs at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Window {
    pub seconds: f64,
    pub services: Vec<ServiceRow>,
    /// With the requests each pair made since the start.
    pub identities: Vec<(IdentityRow, f64)>,
}

impl Window {
    /// What the sidecars served between two rounds of scrapes (one scrape per sidecar, in the
    /// same order; a sidecar missing from `before` counts from zero), `seconds` apart.
    pub fn between(before: &[Vec<Sample>], after: &[Vec<Sample>], seconds: f64) -> Window {
        let empty = Vec::new();
        let pairs = || {
            after
                .iter()
                .enumerate()
                .map(|(i, a)| (before.get(i).unwrap_or(&empty), a))
        };
        let mut services: BTreeMap<String, ServiceRow> = BTreeMap::new();
        let mut versions: BTreeMap<(String, String), ()> = BTreeMap::new();
        for (_, a) in pairs() {
            for s in a.iter().filter(|s| served(s)) {
                if let Some(host) = s.label("destination_service") {
                    services.entry(host.to_string()).or_default();
                    let version = s.label("destination_version").unwrap_or("unknown");
                    versions.insert((host.to_string(), version.to_string()), ());
                }
            }
        }
        for (host, row) in services.iter_mut() {
            let mut window = IstioWindow::default();
            for (b, a) in pairs() {
                window.merge(&IstioWindow::between(
                    b,
                    a,
                    &[("destination_service", host)],
                ));
            }
            row.service = host.clone();
            row.rps = if seconds > 0.0 {
                window.requests / seconds
            } else {
                0.0
            };
            row.success_rate = window.success_rate();
            row.p50_ms = window.duration_quantile(0.5);
            row.p99_ms = window.duration_quantile(0.99);
            for ((h, version), ()) in versions.range((host.clone(), String::new())..) {
                if h != host {
                    break;
                }
                let requests: f64 = pairs()
                    .map(|(b, a)| {
                        IstioWindow::between(
                            b,
                            a,
                            &[
                                ("destination_service", host),
                                ("destination_version", version),
                            ],
                        )
                        .requests
                    })
                    .sum();
                row.versions.insert(version.clone(), requests);
            }
        }
        let mut identities: BTreeMap<IdentityRow, f64> = BTreeMap::new();
        for (_, a) in pairs() {
            for s in a.iter().filter(|s| served(s)) {
                let label = |k| s.label(k).unwrap_or("unknown").to_string();
                *identities
                    .entry(IdentityRow {
                        source_principal: label("source_principal"),
                        destination_principal: label("destination_principal"),
                        security_policy: label("connection_security_policy"),
                    })
                    .or_default() += s.value;
            }
        }
        Window {
            seconds,
            services: services.into_values().collect(),
            identities: identities.into_iter().collect(),
        }
    }

    pub fn service(&self, host: &str) -> Option<&ServiceRow> {
        self.services.iter().find(|s| s.service == host)
    }
}

/// A request counter sample reported by the serving side.
fn served(s: &Sample) -> bool {
    s.name == REQUESTS_TOTAL && s.label("reporter") == Some("destination")
}

/// The serving sidecar's own identity where its series leave `destination_principal` unknown
/// (the proxy reports only the peer's principal on the destination side), so the identities
/// table shows both ends of each hop.
pub fn fill_destination_principal(samples: &mut [Sample], principal: &str) {
    for s in samples.iter_mut().filter(|s| served(s)) {
        for (k, v) in s.labels.iter_mut() {
            if k == "destination_principal" && v == "unknown" {
                *v = principal.to_string();
            }
        }
    }
}

/// A sidecar to scrape: its Prometheus port and its SPIFFE id.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub principal: String,
}

/// Scrapes every sidecar, keeping the last [`WINDOW`] rounds.
pub struct Scraper {
    client: Client<HttpConnector, Empty<Bytes>>,
    targets: Vec<Target>,
    rounds: VecDeque<(Instant, Vec<Vec<Sample>>)>,
    started: Instant,
}

impl Scraper {
    pub fn new(targets: Vec<Target>) -> Self {
        Scraper {
            client: Client::builder(TokioExecutor::new()).build_http(),
            targets,
            rounds: VecDeque::new(),
            started: Instant::now(),
        }
    }

    /// Scrapes every sidecar once (a sidecar that does not answer within a second reads as
    /// empty this round).
    pub async fn scrape(&mut self) {
        let scrapes = futures::future::join_all(self.targets.iter().map(|t| self.fetch(t))).await;
        self.rounds.push_back((Instant::now(), scrapes));
        if self.rounds.len() > WINDOW + 1 {
            self.rounds.pop_front();
        }
    }

    async fn fetch(&self, target: &Target) -> Vec<Sample> {
        let call = async {
            let uri: http::Uri = format!("http://{}/stats/prometheus", target.addr)
                .parse()
                .ok()?;
            let response = self.client.get(uri).await.ok()?;
            let body = response.into_body().collect().await.ok()?.to_bytes();
            let mut samples = promtext::parse(&String::from_utf8_lossy(&body));
            fill_destination_principal(&mut samples, &target.principal);
            Some(samples)
        };
        tokio::time::timeout(Duration::from_secs(1), call)
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// The last [`WINDOW`] seconds (less at the start).
    pub fn recent(&self) -> Window {
        match (self.rounds.front(), self.rounds.back()) {
            (Some((t0, before)), Some((t1, after))) if self.rounds.len() > 1 => {
                Window::between(before, after, (*t1 - *t0).as_secs_f64())
            }
            _ => Window::default(),
        }
    }

    /// Everything since the sidecars started (their counters began at zero).
    pub fn total(&self) -> Window {
        match self.rounds.back() {
            Some((t, after)) => Window::between(&[], after, (*t - self.started).as_secs_f64()),
            None => Window::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(text: &str) -> Vec<Sample> {
        promtext::parse(text)
    }

    const HOST: &str = "reviews.shop.svc.cluster.local";

    fn series(version: &str, code: u16, n: u32, extra: &str) -> String {
        format!(
            "istio_requests_total{{reporter=\"destination\",destination_service=\"{HOST}\",\
             destination_version=\"{version}\",response_code=\"{code}\",\
             source_principal=\"spiffe://cluster.local/ns/shop/sa/page\",\
             destination_principal=\"spiffe://cluster.local/ns/shop/sa/reviews\",\
             connection_security_policy=\"mutual_tls\"}} {n}\n{extra}"
        )
    }

    fn buckets(counts: [u32; 3]) -> String {
        let [a, b, c] = counts;
        format!(
            "istio_request_duration_milliseconds_bucket{{reporter=\"destination\",destination_service=\"{HOST}\",le=\"1\"}} {a}\n\
             istio_request_duration_milliseconds_bucket{{reporter=\"destination\",destination_service=\"{HOST}\",le=\"10\"}} {b}\n\
             istio_request_duration_milliseconds_bucket{{reporter=\"destination\",destination_service=\"{HOST}\",le=\"+Inf\"}} {c}\n"
        )
    }

    #[test]
    fn rates_split_latency_and_identities_from_two_scrapes() {
        // Two sidecars (v1, v2) scraped twice, 2 s apart. The source side's series do not count.
        let before = vec![
            scrape(&series("v1", 200, 10, &buckets([10, 10, 10]))),
            scrape(&series("v2", 200, 0, "")),
        ];
        let source_side =
            "istio_requests_total{reporter=\"source\",destination_service=\"x\"} 99\n";
        let after = vec![
            scrape(&(series("v1", 200, 26, &buckets([18, 26, 26])) + source_side)),
            scrape(&(series("v2", 200, 2, &buckets([0, 2, 4])) + &series("v2", 503, 2, ""))),
        ];
        let w = Window::between(&before, &after, 2.0);
        assert_eq!(w.services.len(), 1, "{w:?}");
        let row = w.service(HOST).unwrap();
        // 16 more for v1, 4 for v2 (2 of them 503) in 2 s.
        assert_eq!(row.rps, 10.0);
        assert_eq!(
            row.versions,
            BTreeMap::from([("v1".into(), 16.0), ("v2".into(), 4.0)])
        );
        assert_eq!(row.success_rate, Some(90.0));
        // 8 of 20 under 1 ms: the median lies in the 1–10 ms bucket.
        let p50 = row.p50_ms.unwrap();
        assert!((1.0..10.0).contains(&p50), "{p50}");
        assert_eq!(row.p99_ms, Some(10.0));
        assert_eq!(w.identities.len(), 1);
        let (id, n) = &w.identities[0];
        assert_eq!(id.security_policy, "mutual_tls");
        assert!(id.source_principal.ends_with("/sa/page"));
        assert_eq!(*n, 30.0);
    }
}
