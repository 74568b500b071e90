use super::*;

fn sample() -> ProxyConfig {
    let mut cfg = ProxyConfig::new("default");
    cfg.services.push(Service {
        host: "serviceb.default.svc.cluster.local".into(),
        aliases: vec!["serviceb".into(), "serviceb.default".into()],
        namespace: "default".into(),
        ports: vec![ServicePort {
            number: 8080,
            name: "http".into(),
            protocol: Protocol::Http,
            target_port: None,
        }],
        subsets: vec![Subset {
            name: "v1".into(),
            labels: [("version".into(), "v1".into())].into(),
            policy: None,
        }],
        http_routes: vec![HttpRoute {
            name: "default/serviceb/0".into(),
            matches: vec![HttpMatch {
                uri: Some(StringMatcher::Prefix("/api".into())),
                ..HttpMatch::default()
            }],
            action: HttpAction::Route(vec![WeightedDestination {
                destination: Destination {
                    host: "serviceb.default.svc.cluster.local".into(),
                    subset: Some("v1".into()),
                    port: None,
                },
                weight: 100,
                headers: HeaderOps::default(),
            }]),
            fault: Some(Fault {
                delay: None,
                abort: Some(FaultAbort {
                    status: AbortStatus::Http(500),
                    percentage: 50.0,
                }),
            }),
            ..HttpRoute::default()
        }],
        ..Service::default()
    });
    cfg
}

#[test]
fn round_trips_through_json() {
    let cfg = sample();
    let json = cfg.to_json();
    assert_eq!(ProxyConfig::from_json(json.as_bytes()).unwrap(), cfg);
    assert!(
        json.contains("\"format\": \"mizzen.io/proxy-config/v1\""),
        "{json}"
    );
    assert!(json.contains("\"prefix\": \"/api\""), "{json}");
}

#[test]
fn refuses_other_formats_and_unknown_fields_by_name() {
    let err = ProxyConfig::from_json(br#"{"format":"mizzen.io/proxy-config/v2","namespace":"x"}"#)
        .unwrap_err();
    assert!(err.to_string().contains("proxy-config/v2"), "{err}");
    let err = ProxyConfig::from_json(
        br#"{"format":"mizzen.io/proxy-config/v1","namespace":"x","servces":[]}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("servces"), "{err}");
    assert!(ProxyConfig::from_json(b"not json").is_err());
}

#[test]
fn finds_services_by_host() {
    let cfg = sample();
    assert!(cfg.service("serviceb.default.svc.cluster.local").is_some());
    assert!(cfg.service("nope").is_none());
}

#[test]
fn port_policy_overrides_only_what_it_sets() {
    let policy = TrafficPolicy {
        load_balancer: Some(LoadBalancer::RoundRobin),
        connection_pool: Some(ConnectionPool {
            max_connections: Some(1),
            ..ConnectionPool::default()
        }),
        ports: vec![PortPolicy {
            port: 80,
            load_balancer: Some(LoadBalancer::Random),
            ..PortPolicy::default()
        }],
        ..TrafficPolicy::default()
    };
    let p80 = policy.for_port(80);
    assert_eq!(p80.load_balancer, Some(LoadBalancer::Random));
    assert_eq!(p80.connection_pool, policy.connection_pool);
    assert_eq!(
        policy.for_port(81).load_balancer,
        Some(LoadBalancer::RoundRobin)
    );
}

#[test]
fn a_workload_rule_that_selects_the_workload_replaces_the_namespace_rule() {
    let policy = |lb| {
        Some(TrafficPolicy {
            load_balancer: Some(lb),
            ..TrafficPolicy::default()
        })
    };
    let rule = |name: &str, app: &str, lb| WorkloadRule {
        name: name.into(),
        selector: [("app".to_string(), app.to_string())].into(),
        subsets: vec![Subset {
            name: format!("{app}-only"),
            ..Subset::default()
        }],
        policy: policy(lb),
    };
    let mut cfg = sample();
    cfg.services[0].policy = policy(LoadBalancer::LeastRequest);
    cfg.services[0].workload_rules = vec![
        rule("default/for-a", "a", LoadBalancer::Random),
        rule("default/for-a-too", "a", LoadBalancer::RoundRobin),
        rule("default/for-b", "b", LoadBalancer::RoundRobin),
    ];
    let round_trip = ProxyConfig::from_json(cfg.to_json().as_bytes()).unwrap();
    assert_eq!(round_trip, cfg);
    assert!(cfg.to_json().contains("\"workloadRules\""));

    let labels = |app: &str| [("app".to_string(), app.to_string())].into();
    // The first rule that selects the workload wins, whole: its subsets too.
    let a = cfg.clone().for_workload(&labels("a"));
    assert_eq!(a.services[0].policy, policy(LoadBalancer::Random));
    assert_eq!(a.services[0].subsets[0].name, "a-only");
    assert!(a.services[0].workload_rules.is_empty());
    // A workload none selects keeps the namespace's rule.
    let c = cfg.clone().for_workload(&labels("c"));
    assert_eq!(c.services[0].policy, policy(LoadBalancer::LeastRequest));
    assert_eq!(c.services[0].subsets, sample().services[0].subsets);
    assert!(c.services[0].workload_rules.is_empty());
}

#[test]
fn selectors_select_by_labels() {
    let labels = [("app".to_string(), "b".to_string())].into();
    assert!(selects(&None, &labels));
    assert!(selects(&Some(labels.clone()), &labels));
    assert!(!selects(
        &Some([("app".into(), "c".into())].into()),
        &labels
    ));
}

#[test]
fn variant_fields_are_camel_case_and_defaults_are_left_out() {
    let lb = LoadBalancer::ConsistentHash(ConsistentHash {
        key: HashKey::Cookie {
            name: "user".into(),
            path: None,
            ttl_ms: Some(1000),
            attributes: vec![],
        },
        algorithm: HashAlgorithm::RingHash {
            minimum_ring_size: 1024,
        },
    });
    let json = serde_json::to_string(&lb).unwrap();
    assert!(
        json.contains("\"ttlMs\":1000")
            && json.contains("\"minimumRingSize\":1024")
            && !json.contains("attributes"),
        "{json}"
    );
    let svc = serde_json::to_string(&Service {
        host: "a".into(),
        ..Service::default()
    })
    .unwrap();
    assert!(
        !svc.contains("location") && !svc.contains("resolution"),
        "{svc}"
    );
}

#[test]
fn server_tls_carries_credentials_and_cipher_suites_by_openssl_name() {
    let tls = ServerTls {
        credential_names: vec!["rsa".into(), "ecdsa".into()],
        cipher_suites: vec![
            CipherSuite::EcdheEcdsaAes256GcmSha384,
            CipherSuite::EcdheRsaChacha20Poly1305,
        ],
        ..ServerTls::default()
    };
    let json = serde_json::to_value(&tls).unwrap();
    assert_eq!(
        json["cipherSuites"],
        serde_json::json!([
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-RSA-CHACHA20-POLY1305"
        ])
    );
    assert_eq!(serde_json::from_value::<ServerTls>(json).unwrap(), tls);
    assert_eq!(tls.credentials().collect::<Vec<_>>(), ["rsa", "ecdsa"]);
    // Unset lists are left out, so a config without them reads as before.
    let plain = serde_json::to_string(&ServerTls {
        credential_name: Some("one".into()),
        ..ServerTls::default()
    })
    .unwrap();
    assert!(
        !plain.contains("cipherSuites") && !plain.contains("credentialNames"),
        "{plain}"
    );
    // A suite the gateway cannot offer is not a valid config.
    let err = serde_json::from_value::<ServerTls>(serde_json::json!({
        "mode": "SIMPLE",
        "cipherSuites": ["AES128-SHA"]
    }))
    .unwrap_err();
    assert!(err.to_string().contains("AES128-SHA"), "{err}");
    for (suite, name) in CipherSuite::ALL {
        assert_eq!(
            (suite.name(), CipherSuite::from_name(name)),
            (name, Some(suite))
        );
    }
}

#[test]
fn client_certificate_pins_are_sha256_digests_in_lower_case_hex() {
    let hex = "06298432e8066b29e2223bcc23aa9504b56ae508fabf3435508869b9c3190e22";
    let json = serde_json::json!({"mode": "MUTUAL", "clientCertSha256": [hex]});
    let tls: ServerTls = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(tls.client_cert_sha256[0].0[..3], [0x06, 0x29, 0x84]);
    assert_eq!(serde_json::to_value(&tls).unwrap(), json);
    // Anything but 64 lower-case hex digits is not a valid config, and says which value.
    for bad in [&hex[..62], "zz", &hex.to_uppercase()] {
        let err = serde_json::from_value::<ServerTls>(
            serde_json::json!({"mode": "MUTUAL", "clientSpkiSha256": [bad]}),
        )
        .unwrap_err();
        assert!(err.to_string().contains(bad), "{err}");
    }
}

/// With Sidecar scopes, a proxy keeps the services and the outbound policy of the first scope
/// selecting it, else of the default scope; the scopes themselves are not kept.
#[test]
fn a_sidecar_scope_selects_the_services_a_workload_sees() {
    let mut cfg = ProxyConfig::new("default");
    for host in ["a.default.svc.cluster.local", "b.other.svc.cluster.local"] {
        cfg.services.push(Service {
            host: host.into(),
            ..Service::default()
        });
    }
    let scope = |name: &str, app: Option<&str>, hosts: &[&str], policy| SidecarScope {
        name: name.into(),
        selector: app.map(|a| [("app".to_string(), a.to_string())].into()),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        outbound_traffic_policy: policy,
    };
    cfg.sidecar_scopes = vec![
        scope(
            "default/wide",
            Some("ratings"),
            &["a.default.svc.cluster.local", "b.other.svc.cluster.local"],
            OutboundTrafficPolicy::AllowAny,
        ),
        scope(
            "default/later",
            Some("ratings"),
            &[],
            OutboundTrafficPolicy::AllowAny,
        ),
        scope(
            "",
            None,
            &["a.default.svc.cluster.local"],
            OutboundTrafficPolicy::RegistryOnly,
        ),
    ];
    let json = cfg.to_json();
    assert_eq!(ProxyConfig::from_json(json.as_bytes()).unwrap(), cfg);
    let labels = |app: &str| [("app".to_string(), app.to_string())].into();
    let hosts = |c: &ProxyConfig| {
        c.services
            .iter()
            .map(|s| s.host.clone())
            .collect::<Vec<_>>()
    };

    let ratings = cfg.clone().for_workload(&labels("ratings"));
    assert_eq!(hosts(&ratings).len(), 2);
    assert_eq!(
        ratings.mesh.outbound_traffic_policy,
        OutboundTrafficPolicy::AllowAny
    );
    assert!(ratings.sidecar_scopes.is_empty());
    let other = cfg.clone().for_workload(&labels("reviews"));
    assert_eq!(hosts(&other), ["a.default.svc.cluster.local"]);
    assert_eq!(
        other.mesh.outbound_traffic_policy,
        OutboundTrafficPolicy::RegistryOnly
    );
    // No scopes: the config as written.
    let mut plain = cfg.clone();
    plain.sidecar_scopes.clear();
    assert_eq!(plain.clone().for_workload(&labels("reviews")), plain);
    assert!(!plain.to_json().contains("sidecarScopes"));
}
