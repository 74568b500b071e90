//! The fixtures' resilience features, measured through the proxy on loopback.

mod support;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use mizzen_proxy_config::*;
use support::*;

fn to_v(subset: &str) -> HttpAction {
    HttpAction::Route(vec![weighted(Some(subset), 100)])
}

/// vs-timeout.yaml (scaled down: 300 ms instead of 10 s): a slow backend gets 504 UT.
#[tokio::test]
async fn route_timeout_answers_504_ut() {
    let slow = backend_with("slow", Arc::new(|_, _| (200, Duration::from_secs(3)))).await;
    let r = HttpRoute {
        timeout_ms: Some(300),
        ..route("timeout", to_v("v1"))
    };
    let proxy = start(&config(vec![serviceb(
        vec![endpoint(slow.addr, "v1")],
        vec![r],
    )]))
    .await;
    let t = Instant::now();
    let reply = get(&client(), proxy.outbound, "/").await;
    assert_eq!(reply.status, 504);
    assert_eq!(reply.body, "upstream request timeout");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let m = metrics(proxy.prometheus).await;
    assert_sample(
        &m,
        "istio_requests_total",
        &[("response_code", "504"), ("response_flags", "UT")],
    );
}

/// vs-retries.yaml: attempts 3, perTryTimeout 2s. A backend failing two of every three
/// requests with 503 still serves every caller.
#[tokio::test]
async fn retries_turn_a_flaky_backends_errors_into_successes() {
    let flaky = backend_with(
        "flaky",
        Arc::new(|n, _| (if n % 3 == 2 { 200 } else { 503 }, Duration::ZERO)),
    )
    .await;
    let r = HttpRoute {
        retry: Some(Retry {
            attempts: 3,
            per_try_timeout_ms: Some(2000),
            retry_on: vec!["5xx".into()],
            retriable_status_codes: vec![],
            backoff_ms: Some(1),
            retry_remote_localities: false,
        }),
        ..route("retries", to_v("v1"))
    };
    let proxy = start(&config(vec![serviceb(
        vec![endpoint(flaky.addr, "v1")],
        vec![r],
    )]))
    .await;
    let counts = tally(&client(), proxy.outbound, 30, 1).await;
    assert_eq!(counts.get("flaky"), Some(&30), "{counts:?}");
    assert_eq!(flaky.hits(), 90);
}

/// vs-fault-abort.yaml: 50% of the requests get 500, within ±5 points over 2,000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_abort_hits_half_the_requests() {
    let v2 = backend("v2").await;
    let r = HttpRoute {
        fault: Some(Fault {
            delay: None,
            abort: Some(FaultAbort {
                status: AbortStatus::Http(500),
                percentage: 50.0,
            }),
        }),
        ..route("abort", to_v("v2"))
    };
    let proxy = start(&config(vec![serviceb(
        vec![endpoint(v2.addr, "v2")],
        vec![r],
    )]))
    .await;
    let counts = tally(&client(), proxy.outbound, 2000, 16).await;
    let aborted = *counts.get("500").unwrap_or(&0) as f64 / 20.0;
    assert!((45.0..=55.0).contains(&aborted), "{aborted}% ({counts:?})");
    assert_eq!(v2.hits() + counts["500"], 2000);
    let m = metrics(proxy.prometheus).await;
    assert_sample(
        &m,
        "istio_requests_total",
        &[("response_code", "500"), ("response_flags", "FI")],
    );
}

/// vs-fault-delay.yaml (scaled down: 200 ms): half the requests are delayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_delay_slows_half_the_requests() {
    let v1 = backend("v1").await;
    let r = HttpRoute {
        fault: Some(Fault {
            delay: Some(FaultDelay {
                fixed_delay_ms: 200,
                percentage: 50.0,
            }),
            abort: None,
        }),
        ..route("delay", to_v("v1"))
    };
    let proxy = start(&config(vec![serviceb(
        vec![endpoint(v1.addr, "v1")],
        vec![r],
    )]))
    .await;
    let c = client();
    let times = futures::future::join_all((0..200).map(|_| {
        let c = c.clone();
        let addr = proxy.outbound;
        async move {
            let t = Instant::now();
            let r = get(&c, addr, "/").await;
            assert_eq!(r.status, 200);
            t.elapsed()
        }
    }))
    .await;
    // Which requests were delayed is read from the DI flag (load on the machine may slow the
    // others too); every delayed one took at least the delay.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let m = metrics(proxy.prometheus).await;
    let delayed = sample(&m, "istio_requests_total", &[("response_flags", "DI")]).unwrap_or(0.0);
    assert!(
        (80.0..=120.0).contains(&delayed),
        "{delayed} of 200 delayed"
    );
    let slow = times
        .iter()
        .filter(|t| **t >= Duration::from_millis(200))
        .count();
    assert!(slow as f64 >= delayed, "{slow} slow, {delayed} delayed");
}

/// vs-mirror.yaml: everything to v1, a copy of every request to v2; callers only see v1.
#[tokio::test]
async fn mirror_receives_copies_while_the_caller_sees_only_the_primary() {
    let v1 = backend("v1").await;
    // The mirror is slow and fails: the caller must not notice either. It records the Host
    // each copy carries.
    let hosts = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = hosts.clone();
    let v2 = backend_with(
        "v2",
        Arc::new(move |_, req| {
            let host = req
                .headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            seen.lock().unwrap().push(host.to_string());
            (500, Duration::from_millis(300))
        }),
    )
    .await;
    let r = HttpRoute {
        mirrors: vec![Mirror {
            destination: dest(Some("v2")),
            percentage: 100.0,
        }],
        ..route("mirror", HttpAction::Route(vec![weighted(Some("v1"), 100)]))
    };
    let proxy = start(&config(vec![serviceb(
        vec![endpoint(v1.addr, "v1"), endpoint(v2.addr, "v2")],
        vec![r],
    )]))
    .await;
    let c = client();
    let t = Instant::now();
    for _ in 0..20 {
        let r = get(&c, proxy.outbound, "/").await;
        assert_eq!((r.status, r.header("x-backend")), (200, "v1"));
    }
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "mirror slowed the caller: {:?}",
        t.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while v2.hits() < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!((v1.hits(), v2.hits()), (20, 20));
    // Istio's convention: the copy's Host gets `-shadow`.
    assert!(
        hosts
            .lock()
            .unwrap()
            .iter()
            .all(|h| h == "serviceb-shadow:8080"),
        "{:?}",
        hosts.lock().unwrap()
    );
}

/// dr-circuit-breaker.yaml: one connection, ten pending; a burst of 40 slow requests sheds
/// the excess at once with 503 UO.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_sheds_the_excess_with_503_uo() {
    let slow = backend_with("slow", Arc::new(|_, _| (200, Duration::from_millis(200)))).await;
    let mut svc = serviceb(
        vec![endpoint(slow.addr, "v1")],
        vec![route("cb", to_v("v1"))],
    );
    svc.policy = Some(TrafficPolicy {
        connection_pool: Some(ConnectionPool {
            max_connections: Some(1),
            http1_max_pending_requests: Some(10),
            max_requests_per_connection: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    });
    let proxy = start(&config(vec![svc])).await;
    let c = client();
    let t = Instant::now();
    let replies = futures::future::join_all((0..40).map(|_| get(&c, proxy.outbound, "/"))).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let shed: Vec<_> = replies.iter().filter(|r| r.status == 503).collect();
    assert_eq!(ok + shed.len(), 40);
    // 1 in flight + 10 pending served; the rest shed.
    assert!((11..=13).contains(&ok), "{ok} served");
    assert!(
        shed.iter()
            .all(|r| r.header("x-envoy-overloaded") == "true")
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    let m = metrics(proxy.prometheus).await;
    assert_sample(
        &m,
        "istio_requests_total",
        &[("response_code", "503"), ("response_flags", "UO")],
    );
}

/// dr-outlier-detection.yaml (scaled down: 3 errors eject for 1 s): the failing endpoint is
/// ejected, then tried again after the ejection time.
#[tokio::test]
async fn failing_endpoint_is_ejected_and_returns_after_the_ejection_time() {
    let good = backend("good").await;
    let bad = backend_with("bad", Arc::new(|_, _| (503, Duration::ZERO))).await;
    let mut svc = serviceb(
        vec![endpoint(good.addr, "v1"), endpoint(bad.addr, "v1")],
        vec![route("od", to_v("v1"))],
    );
    svc.policy = Some(TrafficPolicy {
        load_balancer: Some(LoadBalancer::RoundRobin),
        outlier_detection: Some(ejecting(3, 1_000)),
        ..Default::default()
    });
    let proxy = start(&config(vec![svc])).await;
    let c = client();
    // Round robin: three 503s from `bad` within the first six requests eject it.
    let _ = tally(&c, proxy.outbound, 6, 1).await;
    assert_eq!(bad.hits(), 3);
    let counts = tally(&c, proxy.outbound, 20, 1).await;
    assert_eq!(counts.get("good"), Some(&20), "{counts:?}");
    assert_eq!(bad.hits(), 3, "ejected endpoint got traffic");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _ = tally(&c, proxy.outbound, 4, 1).await;
    assert!(bad.hits() > 3, "endpoint did not come back");
}

/// `splitExternalLocalOriginErrors`: an endpoint nobody listens on is ejected after
/// `consecutiveLocalOriginFailures` refused connections, not after `consecutive5xxErrors`
/// (which then counts responses only). Without the split, the first refusal counts as a 503.
#[tokio::test]
async fn split_local_origin_failures_eject_on_their_own_count() {
    async fn failures(split: Option<u32>) -> usize {
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        let good = backend("good").await;
        let r = HttpRoute {
            retry: Some(Retry::disabled()),
            ..route("od", to_v("v1"))
        };
        let mut svc = serviceb(
            vec![endpoint(good.addr, "v1"), endpoint(dead_addr, "v1")],
            vec![r],
        );
        svc.policy = Some(TrafficPolicy {
            load_balancer: Some(LoadBalancer::RoundRobin),
            outlier_detection: Some(OutlierDetection {
                consecutive_local_origin_failures: split,
                ..ejecting(1, 30_000)
            }),
            ..Default::default()
        });
        let proxy = start(&config(vec![svc])).await;
        let counts = tally(&client(), proxy.outbound, 20, 1).await;
        let failed = 20 - counts.get("good").copied().unwrap_or(0);
        assert_eq!(counts.get("503"), Some(&failed), "{counts:?}");
        failed
    }
    assert_eq!(failures(None).await, 1);
    assert_eq!(failures(Some(3)).await, 3);
}

/// `retryBudget`: with no share of the load (percent 0) the floor, two retries in flight,
/// is all there is, and it replaces `maxRetries` (1). Twenty requests all fail at once; each
/// may be retried once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_budget_caps_retries_in_flight() {
    async fn hits(budget: Option<RetryBudget>) -> usize {
        let failing = backend_with(
            "failing",
            Arc::new(|_, _| (503, Duration::from_millis(300))),
        )
        .await;
        let r = HttpRoute {
            retry: Some(Retry {
                attempts: 1,
                per_try_timeout_ms: None,
                retry_on: vec!["5xx".into()],
                retriable_status_codes: vec![],
                backoff_ms: Some(1),
                retry_remote_localities: false,
            }),
            ..route("budget", to_v("v1"))
        };
        let mut svc = serviceb(vec![endpoint(failing.addr, "v1")], vec![r]);
        svc.policy = Some(TrafficPolicy {
            connection_pool: Some(ConnectionPool {
                max_retries: Some(1),
                ..Default::default()
            }),
            retry_budget: budget,
            ..Default::default()
        });
        let proxy = start(&config(vec![svc])).await;
        let c = client();
        let replies =
            futures::future::join_all((0..20).map(|_| get(&c, proxy.outbound, "/"))).await;
        assert!(replies.iter().all(|r| r.status == 503));
        failing.hits()
    }
    let floor = RetryBudget {
        percent: 0.0,
        min_retry_concurrency: 2,
    };
    assert_eq!(hits(None).await, 21, "maxRetries 1");
    assert_eq!(hits(Some(floor)).await, 22, "the budget's floor of 2");
}

/// Fault injection comes before mirroring, as in Envoy: a request the fault aborts never goes
/// upstream, so no copy of it goes to the mirror either.
#[tokio::test]
async fn aborted_requests_are_not_mirrored() {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let r = HttpRoute {
        mirrors: vec![Mirror {
            destination: dest(Some("v2")),
            percentage: 100.0,
        }],
        fault: Some(Fault {
            delay: None,
            abort: Some(FaultAbort {
                status: AbortStatus::Http(503),
                percentage: 100.0,
            }),
        }),
        ..route("mirror", HttpAction::Route(vec![weighted(Some("v1"), 100)]))
    };
    let proxy = start(&config(vec![serviceb(
        vec![endpoint(v1.addr, "v1"), endpoint(v2.addr, "v2")],
        vec![r],
    )]))
    .await;
    let c = client();
    for _ in 0..10 {
        assert_eq!(get(&c, proxy.outbound, "/").await.status, 503);
    }
    // Give a stray copy time to arrive before concluding none was sent.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!((v1.hits(), v2.hits()), (0, 0));
}

/// `maxConnections` bounds a TCP service's connections: one more is closed at once, counted
/// with flag UO, and a place freed is taken again.
#[tokio::test]
async fn tcp_connections_over_max_connections_are_closed_with_uo() {
    let mut svc = serviceb(vec![endpoint(tcp_echo().await, "v1")], vec![]);
    svc.ports[0].protocol = Protocol::Tcp;
    svc.policy = Some(TrafficPolicy {
        connection_pool: Some(ConnectionPool {
            max_connections: Some(2),
            ..Default::default()
        }),
        ..Default::default()
    });
    let proxy = start(&config(vec![svc])).await;
    let (first, echoed) = tcp_echoed(proxy.outbound, b"one").await;
    assert_eq!(echoed.as_deref(), Some(&b"one"[..]));
    let (_second, echoed) = tcp_echoed(proxy.outbound, b"two").await;
    assert_eq!(echoed.as_deref(), Some(&b"two"[..]));
    let (_, echoed) = tcp_echoed(proxy.outbound, b"three").await;
    assert_eq!(echoed, None, "a third connection got through");
    let closed = [("destination_service", HOST), ("response_flags", "UO")];
    let m = "istio_tcp_connections_closed_total";
    assert!(sample_becomes(proxy.prometheus, m, &closed, 1.0).await);
    drop(first);
    assert!(
        wait_for(async || tcp_echoed(proxy.outbound, b"four").await.1.is_some()).await,
        "the place the first connection freed was not taken again"
    );
}

/// Outlier detection on a TCP service: an endpoint whose connections fail is ejected after
/// its consecutive errors, and new connections go to the one that works.
#[tokio::test]
async fn a_tcp_endpoint_that_refuses_connections_is_ejected() {
    // A port nothing listens on: connections to it are refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let mut svc = serviceb(
        vec![endpoint(tcp_echo().await, "v1"), endpoint(dead_addr, "v1")],
        vec![],
    );
    svc.ports[0].protocol = Protocol::Tcp;
    svc.policy = Some(TrafficPolicy {
        load_balancer: Some(LoadBalancer::RoundRobin),
        outlier_detection: Some(ejecting(2, 30_000)),
        ..Default::default()
    });
    let proxy = start(&config(vec![svc])).await;
    let mut failed = 0;
    let mut last = Vec::new();
    for i in 0..20 {
        let ok = tcp_echoed(proxy.outbound, b"ping").await.1.is_some();
        failed += usize::from(!ok);
        if i >= 10 {
            last.push(ok);
        }
    }
    // Round robin: the dead endpoint's first two connections fail, then it is out.
    assert_eq!(failed, 2, "connections failed");
    assert!(last.iter().all(|ok| *ok), "{last:?}");
}

/// An HTTP proxy on loopback that answers `CONNECT` with `status`, noting each target, and
/// echoes what the tunnel carries.
async fn connect_proxy(status: u16) -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    use hyper::{Request, Response, body::Incoming, service::service_fn};
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let targets = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = targets.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        seen.lock()
                            .unwrap()
                            .push(format!("{} {}", req.method(), req.uri()));
                        if status == 200 {
                            tokio::spawn(async move {
                                let Ok(up) = hyper::upgrade::on(req).await else {
                                    return;
                                };
                                let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
                                let _ = tokio::io::copy(&mut r, &mut w).await;
                            });
                        }
                        let mut resp = Response::new(http_body_util::Empty::<bytes::Bytes>::new());
                        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (addr, targets)
}

/// `tunnel`: a TCP connection to the service goes to its endpoint, an HTTP proxy, as a
/// `CONNECT` to the DestinationRule's target; what the tunnel carries reaches the caller. A
/// proxy that refuses the `CONNECT` fails the connection (UF).
#[tokio::test]
async fn tcp_is_tunnelled_through_an_http_proxy_with_connect() {
    for (status, tunnelled) in [(200, true), (403, false)] {
        let (proxy_addr, targets) = connect_proxy(status).await;
        let mut svc = serviceb(vec![endpoint(proxy_addr, "v1")], vec![]);
        svc.ports[0].protocol = Protocol::Tcp;
        svc.policy = Some(TrafficPolicy {
            tunnel: Some(Tunnel {
                target_host: "api.example.com".into(),
                target_port: 443,
            }),
            ..Default::default()
        });
        let proxy = start(&config(vec![svc])).await;
        let (_conn, echoed) = tcp_echoed(proxy.outbound, b"through the tunnel").await;
        assert_eq!(echoed.is_some(), tunnelled, "CONNECT answered {status}");
        assert_eq!(*targets.lock().unwrap(), ["CONNECT api.example.com:443"]);
        if !tunnelled {
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_sample(
                &metrics(proxy.prometheus).await,
                "istio_tcp_connections_closed_total",
                &[("response_flags", "UF")],
            );
        }
    }
}
