//! Routing, splits and balancing through the proxy, with real sockets on loopback. Configs are
//! what the operator renders for the fixtures in `shared/fixtures/istio/`.

mod support;

use std::{sync::atomic::Ordering, time::Duration};

use mizzen_proxy::http::client::{Dial, Pool, PoolSettings};
use mizzen_proxy_config::*;
use support::*;

/// vs-canary-90-10.yaml + dr-serviceb-subsets.yaml: 90% to v1, 10% to v2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_90_10_split_lands_within_3_points_over_2000_requests() {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let cfg = config(vec![serviceb(
        vec![endpoint(v1.addr, "v1"), endpoint(v2.addr, "v2")],
        vec![route(
            "default/serviceb/0",
            HttpAction::Route(vec![weighted(Some("v1"), 90), weighted(Some("v2"), 10)]),
        )],
    )]);
    let proxy = start(&cfg).await;
    let counts = tally(&client(), proxy.outbound, 2000, 16).await;
    let v2_share = *counts.get("v2").unwrap_or(&0) as f64 / 2000.0 * 100.0;
    assert_eq!(
        counts.get("v1").unwrap_or(&0) + counts.get("v2").unwrap_or(&0),
        2000,
        "{counts:?}"
    );
    assert!(
        (7.0..=13.0).contains(&v2_share),
        "v2 got {v2_share}% ({counts:?})"
    );
}

/// vs-route-all-v1.yaml: every request to v1.
#[tokio::test]
async fn route_all_to_v1() {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let cfg = config(vec![serviceb(
        vec![endpoint(v1.addr, "v1"), endpoint(v2.addr, "v2")],
        vec![route(
            "r",
            HttpAction::Route(vec![weighted(Some("v1"), 100)]),
        )],
    )]);
    let proxy = start(&cfg).await;
    let counts = tally(&client(), proxy.outbound, 50, 5).await;
    assert_eq!(counts.get("v1"), Some(&50), "{counts:?}");
    assert_eq!(v2.hits(), 0);
}

/// gateway-and-cookie-match.yaml's match, for sidecars: a cookie regex and a header send to
/// v2, everything else to v1.
#[tokio::test]
async fn header_and_cookie_matches_route() {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let cookie = HttpRoute {
        matches: vec![HttpMatch {
            headers: vec![HeaderMatch {
                name: "cookie".into(),
                value: Some(StringMatcher::Regex("^(.*;?)?(user=b-nova)(;.*)?".into())),
                invert: false,
            }],
            ..Default::default()
        }],
        ..route("cookie", HttpAction::Route(vec![weighted(Some("v2"), 100)]))
    };
    let header = HttpRoute {
        matches: vec![HttpMatch {
            headers: vec![HeaderMatch {
                name: "end-user".into(),
                value: Some(StringMatcher::Exact("jason".into())),
                invert: false,
            }],
            ..Default::default()
        }],
        ..route("header", HttpAction::Route(vec![weighted(Some("v2"), 100)]))
    };
    let rest = route("rest", HttpAction::Route(vec![weighted(Some("v1"), 100)]));
    let cfg = config(vec![serviceb(
        vec![endpoint(v1.addr, "v1"), endpoint(v2.addr, "v2")],
        vec![cookie, header, rest],
    )]);
    let proxy = start(&cfg).await;
    let c = client();
    let r = get_with(
        &c,
        proxy.outbound,
        "/",
        &[("cookie", "a=1; user=b-nova; z=2")],
    )
    .await;
    assert_eq!(r.header("x-backend"), "v2");
    let r = get_with(&c, proxy.outbound, "/", &[("cookie", "user=someone-else")]).await;
    assert_eq!(r.header("x-backend"), "v1");
    let r = get_with(&c, proxy.outbound, "/", &[("end-user", "jason")]).await;
    assert_eq!(r.header("x-backend"), "v2");
    let r = get(&c, proxy.outbound, "/").await;
    assert_eq!(r.header("x-backend"), "v1");
}

#[tokio::test]
async fn rewrites_redirects_direct_responses_and_header_ops() {
    let v1 = backend("v1").await;
    let rewrite = HttpRoute {
        matches: vec![HttpMatch {
            uri: Some(StringMatcher::Prefix("/old".into())),
            ..Default::default()
        }],
        rewrite: Some(Rewrite {
            uri: Some("/new".into()),
            ..Default::default()
        }),
        headers: HeaderOps {
            request: HeaderOperations {
                set: [("x-added".to_string(), "yes".to_string())].into(),
                ..Default::default()
            },
            response: HeaderOperations {
                set: [("x-route".to_string(), "rewrite".to_string())].into(),
                ..Default::default()
            },
        },
        ..route(
            "rewrite",
            HttpAction::Route(vec![weighted(Some("v1"), 100)]),
        )
    };
    let redirect = HttpRoute {
        matches: vec![HttpMatch {
            uri: Some(StringMatcher::Exact("/moved".into())),
            ..Default::default()
        }],
        ..route(
            "redirect",
            HttpAction::Redirect(Redirect {
                uri: Some("/elsewhere".into()),
                code: 301,
                ..Default::default()
            }),
        )
    };
    let direct = HttpRoute {
        matches: vec![HttpMatch {
            uri: Some(StringMatcher::Exact("/teapot".into())),
            ..Default::default()
        }],
        ..route(
            "direct",
            HttpAction::DirectResponse(DirectResponse {
                status: 418,
                body: Some("short and stout".into()),
            }),
        )
    };
    let cfg = config(vec![serviceb(
        vec![endpoint(v1.addr, "v1")],
        vec![rewrite, redirect, direct],
    )]);
    let proxy = start(&cfg).await;
    let c = client();
    let r = get(&c, proxy.outbound, "/old/page?x=1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-echo-path"), "/new/page?x=1");
    assert_eq!(r.header("x-echo-x-added"), "yes");
    assert_eq!(r.header("x-route"), "rewrite");
    let r = get(&c, proxy.outbound, "/moved").await;
    assert_eq!(r.status, 301);
    assert!(
        r.header("location").ends_with("/elsewhere"),
        "{}",
        r.header("location")
    );
    let r = get(&c, proxy.outbound, "/teapot").await;
    assert_eq!((r.status, r.body.as_str()), (418, "short and stout"));
    // No route matches: 404 NR.
    let r = get(&c, proxy.outbound, "/unmatched").await;
    assert_eq!(r.status, 404);
    let m = metrics(proxy.prometheus).await;
    assert_sample(
        &m,
        "istio_requests_total",
        &[("response_code", "404"), ("response_flags", "NR")],
    );
}

/// A ServiceEntry's endpoint weights (3 : 1) shape round robin as Envoy's weighted balancing.
#[tokio::test]
async fn endpoint_weights_give_their_share_of_requests() {
    let heavy = backend("heavy").await;
    let light = backend("light").await;
    let mut svc = serviceb(
        vec![
            Endpoint {
                weight: Some(3),
                ..endpoint(heavy.addr, "v1")
            },
            endpoint(light.addr, "v1"),
        ],
        vec![],
    );
    svc.policy = Some(TrafficPolicy {
        load_balancer: Some(LoadBalancer::RoundRobin),
        ..Default::default()
    });
    let proxy = start(&config(vec![svc])).await;
    let counts = tally(&client(), proxy.outbound, 400, 1).await;
    assert_eq!(counts.get("heavy"), Some(&300), "{counts:?}");
    assert_eq!(counts.get("light"), Some(&100), "{counts:?}");
}

/// `warmup`: an endpoint added while the proxy runs starts with a fraction of its share (half
/// its weight in its first second of a 2 s window) and has a full one after the window. The
/// endpoints the proxy started with ramp together (even shares), so they are left to warm up
/// first.
#[tokio::test]
async fn a_new_endpoint_warms_up_to_its_full_share() {
    const WINDOW: Duration = Duration::from_secs(2);
    let old = backend("old").await;
    let new = backend("new").await;
    let policy = TrafficPolicy {
        load_balancer: Some(LoadBalancer::RoundRobin),
        warmup: Some(Warmup {
            duration_ms: WINDOW.as_millis() as u64,
            minimum_percent: 10.0,
            aggression: 1.0,
        }),
        ..Default::default()
    };
    let with = |endpoints| {
        let mut svc = serviceb(endpoints, vec![]);
        svc.policy = Some(policy.clone());
        config(vec![svc])
    };
    let proxy = start(&with(vec![endpoint(old.addr, "v1")])).await;
    let c = client();
    assert_eq!(tally(&c, proxy.outbound, 10, 1).await.get("old"), Some(&10));
    tokio::time::sleep(WINDOW).await;
    proxy.write_config(
        with(vec![endpoint(old.addr, "v1"), endpoint(new.addr, "v1")])
            .to_json()
            .as_bytes(),
    );
    let first = wait_for(async || {
        get(&c, proxy.outbound, "/").await;
        new.hits() > 0
    });
    assert!(first.await, "the new endpoint got no request");
    let joined = std::time::Instant::now();
    let warming = tally(&c, proxy.outbound, 300, 1).await;
    let young = joined.elapsed();
    // Half a weight against 1: a third of the requests (100); round robin would give 150.
    let share = warming.get("new").copied().unwrap_or(0);
    assert!((60..=125).contains(&share), "{warming:?} in {young:?}");
    tokio::time::sleep((WINDOW + Duration::from_millis(100)).saturating_sub(joined.elapsed()))
        .await;
    let warm = tally(&c, proxy.outbound, 300, 1).await;
    assert_eq!(warm.get("new"), Some(&150), "{warm:?}");
}

#[tokio::test]
async fn round_robin_spreads_evenly_and_consistent_hash_sticks() {
    let a = backend("a").await;
    let b = backend("b").await;
    let c3 = backend("c").await;
    let mut svc = serviceb(
        vec![
            endpoint(a.addr, "v1"),
            endpoint(b.addr, "v1"),
            endpoint(c3.addr, "v1"),
        ],
        vec![],
    );
    svc.policy = Some(TrafficPolicy {
        load_balancer: Some(LoadBalancer::RoundRobin),
        ..Default::default()
    });
    let mut hashed = svc.clone();
    let proxy = start(&config(vec![svc])).await;
    let counts = tally(&client(), proxy.outbound, 300, 1).await;
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![100, 100, 100],
        "{counts:?}"
    );

    hashed.policy = Some(TrafficPolicy {
        load_balancer: Some(LoadBalancer::ConsistentHash(ConsistentHash {
            key: HashKey::Header("x-user".into()),
            algorithm: HashAlgorithm::Maglev { table_size: 65537 },
        })),
        ..Default::default()
    });
    let proxy = start(&config(vec![hashed])).await;
    let c = client();
    let mut seen = std::collections::BTreeSet::new();
    for user in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        let first = get_with(&c, proxy.outbound, "/", &[("x-user", user)]).await;
        for _ in 0..5 {
            let again = get_with(&c, proxy.outbound, "/", &[("x-user", user)]).await;
            assert_eq!(
                again.header("x-backend"),
                first.header("x-backend"),
                "{user}"
            );
        }
        seen.insert(first.header("x-backend").to_string());
    }
    assert!(seen.len() >= 2, "six users all hashed to {seen:?}");
}

/// Sticky sessions as Istio users set them up: `httpCookie` with a `ttl`. A client without the
/// cookie is given one, and sending it back (over any connection) keeps it on one endpoint.
#[tokio::test]
async fn a_hash_cookie_with_a_ttl_is_set_and_then_sticks() {
    let backends = [backend("a").await, backend("b").await, backend("c").await];
    let mut svc = serviceb(
        backends.iter().map(|b| endpoint(b.addr, "v1")).collect(),
        vec![],
    );
    svc.policy = Some(TrafficPolicy {
        load_balancer: Some(LoadBalancer::ConsistentHash(ConsistentHash {
            key: HashKey::Cookie {
                name: "user".into(),
                path: Some("/".into()),
                ttl_ms: Some(3_600_000),
                attributes: vec![CookieAttribute {
                    name: "SameSite".into(),
                    value: Some("Lax".into()),
                }],
            },
            algorithm: HashAlgorithm::RingHash {
                minimum_ring_size: 1024,
            },
        })),
        ..Default::default()
    });
    let proxy = start(&config(vec![svc])).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..8 {
        // A new client: a new connection, so a new cookie.
        let first = get(&client(), proxy.outbound, "/").await;
        assert_eq!(first.status, 200);
        let set = first.header("set-cookie").to_string();
        let (cookie, attrs) = set.split_once("; ").expect(&set);
        assert!(cookie.starts_with("user=\""), "{set}");
        assert_eq!(attrs, "Max-Age=3600; Path=/; SameSite=Lax; HttpOnly");
        for _ in 0..5 {
            let again = get_with(&client(), proxy.outbound, "/", &[("cookie", cookie)]).await;
            assert_eq!(
                again.header("x-backend"),
                first.header("x-backend"),
                "{set}"
            );
            assert!(again.headers.get("set-cookie").is_none(), "{set}");
        }
        seen.insert(first.header("x-backend").to_string());
    }
    assert!(seen.len() >= 2, "eight sessions all hashed to {seen:?}");
}

#[tokio::test]
async fn h2c_clients_and_h2_upstreams() {
    let v1 = backend("v1").await;
    let mut svc = serviceb(vec![endpoint(v1.addr, "v1")], vec![]);
    let cfg = config(vec![svc.clone()]);
    let proxy = start(&cfg).await;
    // h2c (prior knowledge) from the client, HTTP/1.1 upstream (port declared HTTP).
    let r = get(&h2_client(), proxy.outbound, "/").await;
    assert_eq!((r.status, r.header("x-echo-version")), (200, "HTTP/1.1"));
    // Declared HTTP2: HTTP/2 upstream even for an HTTP/1.1 caller.
    svc.ports[0].protocol = Protocol::Http2;
    let proxy = start(&config(vec![svc.clone()])).await;
    let r = get(&client(), proxy.outbound, "/").await;
    assert_eq!((r.status, r.header("x-echo-version")), (200, "HTTP/2.0"));
    assert_eq!(r.header("x-echo-host"), "serviceb:8080");
    // `useClientProtocol`: the caller's version, even on the declared HTTP2 port.
    svc.policy = Some(TrafficPolicy {
        connection_pool: Some(ConnectionPool {
            use_client_protocol: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let proxy = start(&config(vec![svc])).await;
    for (c, version) in [(client(), "HTTP/1.1"), (h2_client(), "HTTP/2.0")] {
        let r = get(&c, proxy.outbound, "/").await;
        assert_eq!((r.status, r.header("x-echo-version")), (200, version));
    }
}

#[tokio::test]
async fn trace_headers_are_generated_and_propagated() {
    let v1 = backend("v1").await;
    let proxy = start(&config(vec![serviceb(
        vec![endpoint(v1.addr, "v1")],
        vec![],
    )]))
    .await;
    let c = client();
    let r = get(&c, proxy.outbound, "/").await;
    assert_eq!(r.header("x-echo-x-request-id").len(), 36);
    assert!(r.header("x-echo-traceparent").starts_with("00-"));
    let r = get_with(&c, proxy.outbound, "/", &[("x-request-id", "given-id")]).await;
    assert_eq!(r.header("x-echo-x-request-id"), "given-id");
    assert_eq!(r.header("x-echo-host"), "serviceb:8080");
    // Hop-by-hop headers stay on their hop.
    assert_eq!(r.header("x-echo-connection"), "");
}

#[tokio::test]
async fn the_upstreams_hop_by_hop_response_headers_stay_on_its_hop() {
    // nginx answers `Connection: keep-alive`; a server may add `Keep-Alive` and name its own
    // hop-by-hop headers in `Connection`. None of them is the caller's.
    let backend = raw_server(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, x-hop\r\n\
         Keep-Alive: timeout=5\r\nX-Hop: 1\r\nX-Kept: yes\r\n\r\nok",
    )
    .await;
    let proxy = start(&config(vec![serviceb(
        vec![endpoint(backend, "v1")],
        vec![],
    )]))
    .await;
    let r = get(&client(), proxy.outbound, "/").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    assert_eq!(r.header("x-kept"), "yes");
    for hop in ["connection", "keep-alive", "x-hop"] {
        assert!(
            r.headers.get(hop).is_none(),
            "{hop} reached the caller: {:?}",
            r.headers
        );
    }
}

#[tokio::test]
async fn unknown_endpoints_and_dead_upstreams_get_envoy_answers() {
    // Nothing listens on this port: connect failure, 503 UF.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = start(&config(vec![serviceb(vec![endpoint(dead, "v1")], vec![])])).await;
    let r = get(&client(), proxy.outbound, "/").await;
    assert_eq!(r.status, 503);
    // An upstream that closes every connection before answering: 503, never a hang or a crash.
    let resetter = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reset_addr = resetter.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = resetter.accept().await {
            drop(s);
        }
    });
    let proxy3 = start(&config(vec![serviceb(
        vec![endpoint(reset_addr, "v1")],
        vec![],
    )]))
    .await;
    let r = get(&client(), proxy3.outbound, "/").await;
    assert_eq!(r.status, 503);
    assert!(
        r.body
            .starts_with("upstream connect error or disconnect/reset before headers"),
        "{}",
        r.body
    );
    // A service without endpoints: 503 UH.
    let proxy2 = start(&config(vec![serviceb(vec![], vec![])])).await;
    let r = get(&client(), proxy2.outbound, "/").await;
    assert_eq!(r.status, 503);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let m = metrics(proxy.prometheus).await;
    assert_sample(
        &m,
        "istio_requests_total",
        &[("response_code", "503"), ("response_flags", "UF")],
    );
    let m = metrics(proxy2.prometheus).await;
    // Istio's default retries (503) ran out too: Envoy prints both flags.
    assert_sample(
        &m,
        "istio_requests_total",
        &[("response_code", "503"), ("response_flags", "UH,URX")],
    );
}

/// An h2c gRPC-style backend: answers with a body and `grpc-status: 0` in the trailers.
async fn grpc_backend() -> std::net::SocketAddr {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    trailers.insert("grpc-message", "fine".parse().unwrap());
                    let frames: Vec<Result<Frame<bytes::Bytes>, std::convert::Infallible>> = vec![
                        Ok(Frame::data(bytes::Bytes::from_static(b"\0\0\0\0\x02hi"))),
                        Ok(Frame::trailers(trailers)),
                    ];
                    let resp = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .body(StreamBody::new(futures::stream::iter(frames)))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn grpc_keeps_trailers_and_aborts_become_grpc_status() {
    use http_body_util::BodyExt;
    let addr = grpc_backend().await;
    let mut svc = serviceb(vec![endpoint(addr, "v1")], vec![]);
    svc.ports[0].protocol = Protocol::Grpc;
    let abort = HttpRoute {
        matches: vec![HttpMatch {
            uri: Some(StringMatcher::Prefix("/pkg.Svc/Fail".into())),
            ..Default::default()
        }],
        fault: Some(Fault {
            delay: None,
            abort: Some(FaultAbort {
                status: AbortStatus::Grpc(14),
                percentage: 100.0,
            }),
        }),
        ..route("abort", HttpAction::Route(vec![weighted(None, 100)]))
    };
    let ok = route("ok", HttpAction::Route(vec![weighted(None, 100)]));
    svc.http_routes = vec![abort, ok];
    let proxy = start(&config(vec![svc])).await;
    let c = h2_client();
    let call = |path: &str| {
        http::Request::post(format!("http://{}{path}", proxy.outbound))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"\0\0\0\0\0",
            )))
            .unwrap()
    };
    let resp = c.request(call("/pkg.Svc/Get")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers were lost");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "fine");
    assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x02hi");

    let resp = c.request(call("/pkg.Svc/Fail")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "14");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let m = metrics(proxy.prometheus).await;
    assert_sample(
        &m,
        "istio_requests_total",
        &[("request_protocol", "grpc"), ("grpc_response_status", "0")],
    );
    assert_sample(
        &m,
        "istio_requests_total",
        &[("grpc_response_status", "14"), ("response_flags", "FI")],
    );
}

#[tokio::test]
async fn cors_preflights_are_answered_and_responses_decorated() {
    let v1 = backend("v1").await;
    let r = HttpRoute {
        cors: Some(Cors {
            allow_origins: vec![StringMatcher::Exact("https://app.example.com".into())],
            allow_methods: vec!["GET".into(), "POST".into()],
            max_age_s: Some(60),
            ..Default::default()
        }),
        ..route("cors", HttpAction::Route(vec![weighted(Some("v1"), 100)]))
    };
    let proxy = start(&config(vec![serviceb(
        vec![endpoint(v1.addr, "v1")],
        vec![r],
    )]))
    .await;
    let c = client();
    let pre = http::Request::builder()
        .method("OPTIONS")
        .uri(format!("http://{}/", proxy.outbound))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let r = send(&c, pre).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        "https://app.example.com"
    );
    assert_eq!(v1.hits(), 0, "preflight reached the upstream");
    let r = get_with(
        &c,
        proxy.outbound,
        "/",
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        "https://app.example.com"
    );
    let r = get_with(
        &c,
        proxy.outbound,
        "/",
        &[("origin", "https://evil.example.com")],
    )
    .await;
    assert_eq!(r.header("access-control-allow-origin"), "");
}

/// REGISTRY_ONLY: a host no service knows gets 502 NR.
#[tokio::test]
async fn registry_only_rejects_unknown_hosts() {
    let mut cfg = config(vec![]);
    cfg.mesh.outbound_traffic_policy = OutboundTrafficPolicy::RegistryOnly;
    let proxy = start(&cfg).await;
    let r = get(&client(), proxy.outbound, "/").await;
    assert_eq!(r.status, 502);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let m = metrics(proxy.prometheus).await;
    assert_sample(
        &m,
        "istio_requests_total",
        &[("response_code", "502"), ("response_flags", "NR")],
    );
}

/// An upstream that closes each keep-alive connection right after its response (as servers
/// with a short keep-alive timeout do): the pooled connection goes stale between requests, and
/// the next request still succeeds on a new one rather than failing with a reset.
#[tokio::test]
async fn stale_pooled_connections_are_not_a_failure() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = upstream.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                // No `connection: close`: the client only learns it when the socket closes.
            });
        }
    });
    let proxy = start(&config(vec![serviceb(vec![endpoint(addr, "v1")], vec![])])).await;
    let c = client();
    for i in 0..20 {
        let r = get(&c, proxy.outbound, "/").await;
        assert_eq!((i, r.status), (i, 200), "{}", r.body);
        if i % 2 == 0 {
            // Give the close time to arrive, so both the detected and the racing case occur.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// DestinationRule `connectionPool.http.maxRequestsPerConnection`: 1 turns keep-alive to the
/// upstream off (a connection per request); unset, one connection carries them all.
#[tokio::test]
async fn max_requests_per_connection_retires_upstream_connections() {
    use std::sync::atomic::Ordering;
    let CountingBackend { addr, accepted, .. } = counting_backend().await;
    for (limit, expected) in [(Some(1), 5), (None, 1)] {
        accepted.store(0, Ordering::SeqCst);
        let mut svc = serviceb(vec![endpoint(addr, "v1")], vec![]);
        svc.policy = Some(TrafficPolicy {
            connection_pool: Some(ConnectionPool {
                max_requests_per_connection: limit,
                ..Default::default()
            }),
            ..Default::default()
        });
        let proxy = start(&config(vec![svc])).await;
        let c = client();
        for _ in 0..5 {
            let r = get(&c, proxy.outbound, "/").await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), expected, "limit {limit:?}");
    }
}

/// One request through `pool` to `endpoint` (over HTTP/2 when `h2`), its response read to the
/// end.
async fn round_trip(
    pool: &mizzen_proxy::http::client::Pool,
    endpoint: &http::uri::Authority,
    h2: bool,
) {
    let req = http::Request::builder()
        .uri("/")
        .body(mizzen_proxy::http::body::empty())
        .unwrap();
    let (resp, _) = pool.send(endpoint, h2, None, None, req).await.unwrap();
    assert_eq!(resp.status(), 200);
    http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap();
    // Let the connection see its response end and become ready again.
    tokio::time::sleep(Duration::from_millis(20)).await;
}

fn pool_settings(h2: bool, idle_timeout: Duration, max_age: Option<Duration>) -> PoolSettings {
    PoolSettings {
        dial: Dial::new(Duration::from_secs(1)),
        idle_timeout,
        h2,
        max_requests: None,
        max_age,
        max_streams: None,
    }
}

/// The backend saw a second connection, and the first one closed.
async fn replaced_once(backend: &CountingBackend, why: &str) {
    assert_eq!(
        backend.accepted.load(Ordering::SeqCst),
        2,
        "{why}: a new connection"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        backend.closed.load(Ordering::SeqCst),
        1,
        "{why}: the old one closed"
    );
}

/// The upstream pool keeps an HTTP/1.1 connection for reuse until it has been idle longer than
/// its idle timeout; the next request then closes it and opens another.
#[tokio::test]
async fn idle_upstream_connections_are_reused_until_their_idle_timeout() {
    let backend = counting_backend().await;
    let endpoint: http::uri::Authority = backend.addr.to_string().parse().unwrap();
    let pool = Pool::new(pool_settings(false, Duration::from_millis(300), None));
    for _ in 0..5 {
        round_trip(&pool, &endpoint, false).await;
    }
    assert_eq!(
        backend.accepted.load(Ordering::SeqCst),
        1,
        "one connection, reused"
    );
    // Idle past the timeout: closed at the next checkout, and a new one opened and kept.
    tokio::time::sleep(Duration::from_millis(400)).await;
    round_trip(&pool, &endpoint, false).await;
    round_trip(&pool, &endpoint, false).await;
    replaced_once(&backend, "idle timeout").await;
}

/// `maxConnectionDuration`: a connection in steady use (HTTP/1.1 or HTTP/2) is retired once it
/// is that old (it takes no new request and closes), and the next request opens another.
#[tokio::test]
async fn upstream_connections_are_retired_at_their_maximum_age() {
    for h2 in [false, true] {
        let backend = counting_backend().await;
        let endpoint: http::uri::Authority = backend.addr.to_string().parse().unwrap();
        let max_age = Duration::from_millis(400);
        let pool = Pool::new(pool_settings(h2, Duration::from_secs(60), Some(max_age)));
        let start = std::time::Instant::now();
        round_trip(&pool, &endpoint, h2).await;
        while start.elapsed() < max_age / 2 {
            round_trip(&pool, &endpoint, h2).await;
        }
        assert_eq!(
            backend.accepted.load(Ordering::SeqCst),
            1,
            "h2={h2}: reused while young"
        );
        // Kept busy past its age: the next request goes on a new connection.
        while start.elapsed() < max_age + Duration::from_millis(50) {
            round_trip(&pool, &endpoint, h2).await;
        }
        round_trip(&pool, &endpoint, h2).await;
        replaced_once(&backend, &format!("h2={h2}, maximum age")).await;
    }
}

/// `maxConcurrentStreams`: an HTTP/2 connection carries that many responses at a time (a
/// stream counts until its body is read or dropped), more open another connection, and freed
/// streams are used again. Uncapped, one connection carries them all.
#[tokio::test]
async fn capped_http2_connections_open_more_for_more_streams() {
    for (max_streams, connections) in [(Some(2), 3), (None, 1)] {
        let backend = counting_backend().await;
        let endpoint: http::uri::Authority = backend.addr.to_string().parse().unwrap();
        let pool = Pool::new(PoolSettings {
            max_streams,
            ..pool_settings(true, Duration::from_secs(60), None)
        });
        let mut held = Vec::new();
        for _ in 0..5 {
            let req = http::Request::builder()
                .uri("/")
                .body(mizzen_proxy::http::body::empty())
                .unwrap();
            let (resp, _) = pool.send(&endpoint, true, None, None, req).await.unwrap();
            assert_eq!(resp.status(), 200);
            held.push(resp);
        }
        let accepted = || backend.accepted.load(Ordering::SeqCst);
        assert_eq!(accepted(), connections, "{max_streams:?}");
        drop(held);
        for _ in 0..4 {
            round_trip(&pool, &endpoint, true).await;
        }
        assert_eq!(
            accepted(),
            connections,
            "{max_streams:?}: streams freed and reused"
        );
    }
    // Capped connections left idle past the idle timeout (opened by a burst) are closed.
    let backend = counting_backend().await;
    let endpoint: http::uri::Authority = backend.addr.to_string().parse().unwrap();
    let pool = Pool::new(PoolSettings {
        max_streams: Some(1),
        ..pool_settings(true, Duration::from_millis(200), None)
    });
    let mut held = Vec::new();
    for _ in 0..2 {
        let req = http::Request::builder()
            .uri("/")
            .body(mizzen_proxy::http::body::empty())
            .unwrap();
        held.push(pool.send(&endpoint, true, None, None, req).await.unwrap());
    }
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    round_trip(&pool, &endpoint, true).await;
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 3);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        backend.closed.load(Ordering::SeqCst),
        2,
        "the idle ones closed"
    );
}

/// A Sidecar for selected workloads decides what this proxy (`app: servicea`) sees: while it
/// selects the proxy, serviceb is reachable; once it selects other workloads the namespace's
/// default scope applies, which does not show serviceb, and the explicit listener for it
/// answers 502 (NR) as for any host the proxy does not know.
#[tokio::test]
async fn a_sidecar_for_selected_workloads_scopes_only_the_proxies_it_selects() {
    let v1 = backend("v1").await;
    let svc = serviceb(
        vec![endpoint(v1.addr, "v1")],
        vec![route(
            "default/serviceb/0",
            HttpAction::Route(vec![weighted(None, 100)]),
        )],
    );
    let scoped = |app: &str| {
        let mut c = config(vec![svc.clone()]);
        c.sidecar_scopes = vec![
            SidecarScope {
                name: "default/for-one-app".into(),
                selector: Some([("app".to_string(), app.to_string())].into()),
                hosts: vec![svc.host.clone()],
                outbound_traffic_policy: OutboundTrafficPolicy::AllowAny,
            },
            SidecarScope {
                outbound_traffic_policy: OutboundTrafficPolicy::RegistryOnly,
                ..SidecarScope::default()
            },
        ];
        c
    };
    let proxy = start(&scoped("servicea")).await;
    let c = client();
    let r = get(&c, proxy.outbound, "/").await;
    assert_eq!((r.status, r.header("x-backend")), (200, "v1"));

    proxy.write_config(scoped("reports").to_json().as_bytes());
    assert!(
        wait_for(async || get(&c, proxy.outbound, "/").await.status == 502).await,
        "serviceb stayed visible to a proxy its Sidecar no longer selects"
    );
    let hits = v1.hits();
    for _ in 0..5 {
        assert_eq!(get(&c, proxy.outbound, "/").await.status, 502);
    }
    assert_eq!(v1.hits(), hits);
}

/// A DestinationRule with a `workloadSelector` (rendered as a service's `workloadRules`) applies
/// to this proxy only when it selects the proxy's labels (`app: servicea`): then its subsets
/// replace the namespace's, else the namespace's stay.
#[tokio::test]
async fn a_destination_rule_for_selected_workloads_applies_only_to_the_proxies_it_selects() {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let mut svc = serviceb(
        vec![endpoint(v1.addr, "v1"), endpoint(v2.addr, "v2")],
        vec![route(
            "default/serviceb/0",
            HttpAction::Route(vec![weighted(Some("v1"), 100)]),
        )],
    );
    // For the selected workloads, `v1` names the v2 endpoints.
    let rule = |app: &str| WorkloadRule {
        name: "default/serviceb-for-servicea".into(),
        selector: [("app".to_string(), app.to_string())].into(),
        subsets: vec![Subset {
            name: "v1".into(),
            labels: [("version".to_string(), "v2".to_string())].into(),
            policy: None,
        }],
        policy: None,
    };
    svc.workload_rules = vec![rule("servicea")];
    let proxy = start(&config(vec![svc.clone()])).await;
    let counts = tally(&client(), proxy.outbound, 20, 4).await;
    assert_eq!(counts.get("v2"), Some(&20), "{counts:?}");

    // A rule for other workloads leaves this proxy the namespace's subsets.
    svc.workload_rules = vec![rule("reports")];
    proxy.write_config(config(vec![svc]).to_json().as_bytes());
    let c = client();
    assert!(
        wait_for(async || get(&c, proxy.outbound, "/").await.header("x-backend") == "v1").await,
        "the namespace's subsets never came back"
    );
    let counts = tally(&c, proxy.outbound, 20, 4).await;
    assert_eq!(counts.get("v1"), Some(&20), "{counts:?}");
}
