//! DestinationRule traffic policies into the proxy's [`TrafficPolicy`](pc::TrafficPolicy), with
//! Istio's defaults for what is unset and subset policies merged over the service's.

use mizzen_crds::networking::destination_rule as dr;
use mizzen_proxy_config as pc;

fn ms(d: &mizzen_crds::Duration) -> u64 {
    u64::try_from(d.get().as_millis()).unwrap_or(u64::MAX)
}

fn positive(n: Option<i32>) -> Option<u32> {
    n.and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0)
}

fn load_balancer(lb: &dr::LoadBalancerSettings) -> Option<pc::LoadBalancer> {
    if let Some(ch) = &lb.consistent_hash {
        let key = if let Some(h) = &ch.http_header_name {
            pc::HashKey::Header(h.to_ascii_lowercase())
        } else if let Some(c) = &ch.http_cookie {
            pc::HashKey::Cookie {
                name: c.name.clone(),
                path: c.path.clone(),
                ttl_ms: c.ttl.as_ref().map(ms),
                attributes: c
                    .attributes
                    .iter()
                    .map(|a| pc::CookieAttribute {
                        name: a.name.clone(),
                        value: a.value.clone(),
                    })
                    .collect(),
            }
        } else if ch.use_source_ip == Some(true) {
            pc::HashKey::SourceIp
        } else if let Some(q) = &ch.http_query_parameter_name {
            pc::HashKey::QueryParameter(q.clone())
        } else {
            return None;
        };
        let algorithm = if let Some(m) = &ch.maglev {
            pc::HashAlgorithm::Maglev {
                table_size: m.table_size.unwrap_or(65_537),
            }
        } else {
            pc::HashAlgorithm::RingHash {
                minimum_ring_size: ch
                    .ring_hash
                    .and_then(|r| r.minimum_ring_size)
                    .or(ch.minimum_ring_size)
                    .unwrap_or(1024),
            }
        };
        return Some(pc::LoadBalancer::ConsistentHash(pc::ConsistentHash {
            key,
            algorithm,
        }));
    }
    Some(match lb.simple? {
        dr::SimpleLb::Unspecified => return None,
        dr::SimpleLb::RoundRobin => pc::LoadBalancer::RoundRobin,
        dr::SimpleLb::LeastConn | dr::SimpleLb::LeastRequest => pc::LoadBalancer::LeastRequest,
        dr::SimpleLb::Random => pc::LoadBalancer::Random,
        dr::SimpleLb::Passthrough => pc::LoadBalancer::Passthrough,
    })
}

fn locality_lb(lb: &dr::LoadBalancerSettings) -> Option<pc::LocalityLb> {
    let l = lb.locality_lb_setting.as_ref()?;
    Some(pc::LocalityLb {
        disabled: l.enabled == Some(false),
        distribute: l
            .distribute
            .iter()
            .map(|d| pc::LocalityDistribute {
                from: d.from.clone(),
                to: d.to.clone(),
            })
            .collect(),
        failover: l
            .failover
            .iter()
            .map(|f| pc::LocalityFailover {
                from: f.from.clone(),
                to: f.to.clone(),
            })
            .collect(),
        failover_priority: l.failover_priority.clone(),
    })
}

/// `warmup` (or the deprecated `warmupDurationSecs`, which parsing moves into it) with
/// Istio's defaults: 10% at first, a linear ramp.
fn warmup(lb: &dr::LoadBalancerSettings) -> Option<pc::Warmup> {
    let w = lb.warmup.as_ref()?;
    Some(pc::Warmup {
        duration_ms: ms(&w.duration),
        minimum_percent: w.minimum_percent.unwrap_or(10.0),
        aggression: w.aggression.unwrap_or(1.0),
    })
}

fn connection_pool(p: &dr::ConnectionPoolSettings) -> pc::ConnectionPool {
    let tcp = p.tcp.clone().unwrap_or_default();
    let http = p.http.clone().unwrap_or_default();
    pc::ConnectionPool {
        max_connections: positive(tcp.max_connections),
        connect_timeout_ms: tcp.connect_timeout.as_ref().map(ms),
        http1_max_pending_requests: positive(http.http1_max_pending_requests),
        http2_max_requests: positive(http.http2_max_requests),
        max_requests_per_connection: positive(http.max_requests_per_connection),
        max_retries: positive(http.max_retries),
        idle_timeout_ms: http
            .idle_timeout
            .as_ref()
            .or(tcp.idle_timeout.as_ref())
            .map(ms),
        h2_upgrade: http.h2_upgrade_policy == Some(dr::H2UpgradePolicy::Upgrade),
        use_client_protocol: http.use_client_protocol == Some(true),
        max_concurrent_streams: positive(http.max_concurrent_streams),
        tcp_keepalive: tcp.tcp_keepalive.as_ref().map(|k| pc::TcpKeepalive {
            probes: k.probes,
            time_ms: k.time.as_ref().map(ms),
            interval_ms: k.interval.as_ref().map(ms),
        }),
        max_connection_duration_ms: tcp.max_connection_duration.as_ref().map(ms),
    }
}

fn outlier_detection(o: &dr::OutlierDetection) -> pc::OutlierDetection {
    let d = pc::OutlierDetection::default();
    let gateway = o.consecutive_gateway_errors.filter(|n| *n > 0);
    // Istio: the 5xx counter is on (5) by default, unless only the gateway counter is given.
    let five_xx = match o.consecutive_5xx_errors {
        Some(0) => None,
        Some(n) => Some(n),
        None if gateway.is_some() => None,
        None => d.consecutive_5xx_errors,
    };
    pc::OutlierDetection {
        consecutive_5xx_errors: five_xx,
        consecutive_gateway_errors: gateway,
        interval_ms: o.interval.as_ref().map_or(d.interval_ms, ms),
        base_ejection_time_ms: o
            .base_ejection_time
            .as_ref()
            .map_or(d.base_ejection_time_ms, ms),
        max_ejection_percent: o
            .max_ejection_percent
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(d.max_ejection_percent),
        min_health_percent: o
            .min_health_percent
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(d.min_health_percent),
        // Istio sets Envoy's threshold only when it is above 0; Envoy's default is 5.
        consecutive_local_origin_failures: (o.split_external_local_origin_errors == Some(true))
            .then(|| {
                o.consecutive_local_origin_failures
                    .filter(|n| *n > 0)
                    .unwrap_or(LOCAL_ORIGIN_FAILURES)
            }),
    }
}

/// A `CONNECT` tunnel (the default protocol); `POST`, which Mizzen does not speak, is not
/// rendered (validation says so).
fn tunnel(t: &dr::TunnelSettings) -> Option<pc::Tunnel> {
    if t.protocol.as_deref().unwrap_or("CONNECT") != "CONNECT" {
        return None;
    }
    Some(pc::Tunnel {
        target_host: t.target_host.clone(),
        target_port: u16::try_from(t.target_port).ok()?,
    })
}

/// `retryBudget` with Istio's documented defaults (20%, at least 3) for what it leaves unset.
fn retry_budget(b: &dr::RetryBudget) -> pc::RetryBudget {
    let d = pc::RetryBudget::default();
    pc::RetryBudget {
        percent: b.percent.unwrap_or(d.percent),
        min_retry_concurrency: b
            .min_retry_concurrency
            .filter(|n| *n > 0)
            .unwrap_or(d.min_retry_concurrency),
    }
}

/// Envoy's `consecutive_local_origin_failure` when Istio leaves it unset.
const LOCAL_ORIGIN_FAILURES: u32 = 5;

fn tls(t: &dr::ClientTlsSettings) -> pc::ClientTls {
    pc::ClientTls {
        mode: match t.mode.unwrap_or_default() {
            dr::ClientTlsMode::Disable => pc::ClientTlsMode::Disable,
            dr::ClientTlsMode::Simple => pc::ClientTlsMode::Simple,
            dr::ClientTlsMode::Mutual => pc::ClientTlsMode::Mutual,
            dr::ClientTlsMode::IstioMutual => pc::ClientTlsMode::IstioMutual,
        },
        sni: t.sni.clone(),
        subject_alt_names: t.subject_alt_names.clone(),
        ca_certificates: t.ca_certificates.clone(),
        ca_crl: t.ca_crl.clone(),
        client_certificate: t.client_certificate.clone(),
        private_key: t.private_key.clone(),
        insecure_skip_verify: t.insecure_skip_verify.unwrap_or(false),
        credential_name: t.credential_name.clone(),
    }
}

/// A DestinationRule's (or subset's) traffic policy.
pub fn traffic_policy(p: &dr::TrafficPolicy) -> pc::TrafficPolicy {
    pc::TrafficPolicy {
        load_balancer: p.load_balancer.as_ref().and_then(load_balancer),
        locality_lb: p.load_balancer.as_ref().and_then(locality_lb),
        warmup: p.load_balancer.as_ref().and_then(warmup),
        connection_pool: p.connection_pool.as_ref().map(connection_pool),
        outlier_detection: p.outlier_detection.as_ref().map(outlier_detection),
        tls: p.tls.as_ref().map(tls),
        retry_budget: p.retry_budget.as_ref().map(retry_budget),
        tunnel: p.tunnel.as_ref().and_then(tunnel),
        proxy_protocol: p
            .proxy_protocol
            .map(|pp| match pp.version.unwrap_or_default() {
                dr::ProxyProtocolVersion::V1 => pc::ProxyProtocol::V1,
                dr::ProxyProtocolVersion::V2 => pc::ProxyProtocol::V2,
            }),
        ports: p
            .port_level_settings
            .iter()
            .filter_map(|s| {
                Some(pc::PortPolicy {
                    port: u16::try_from(s.port?.number).ok()?,
                    load_balancer: s.load_balancer.as_ref().and_then(load_balancer),
                    locality_lb: s.load_balancer.as_ref().and_then(locality_lb),
                    warmup: s.load_balancer.as_ref().and_then(warmup),
                    connection_pool: s.connection_pool.as_ref().map(connection_pool),
                    outlier_detection: s.outlier_detection.as_ref().map(outlier_detection),
                    tls: s.tls.as_ref().map(tls),
                })
            })
            .collect(),
    }
}

/// A subset's policy merged over its service's: what the subset sets wins, per field and per
/// port.
pub fn merge(service: Option<&pc::TrafficPolicy>, subset: &pc::TrafficPolicy) -> pc::TrafficPolicy {
    let Some(base) = service else {
        return subset.clone();
    };
    let mut out = base.clone();
    if subset.load_balancer.is_some() || subset.locality_lb.is_some() || subset.warmup.is_some() {
        out.load_balancer = subset.load_balancer.clone();
        out.locality_lb = subset.locality_lb.clone();
        out.warmup = subset.warmup;
    }
    if subset.connection_pool.is_some() {
        out.connection_pool = subset.connection_pool.clone();
    }
    if subset.outlier_detection.is_some() {
        out.outlier_detection = subset.outlier_detection.clone();
    }
    if subset.tls.is_some() {
        out.tls = subset.tls.clone();
    }
    if subset.retry_budget.is_some() {
        out.retry_budget = subset.retry_budget;
    }
    if subset.tunnel.is_some() {
        out.tunnel = subset.tunnel.clone();
    }
    if subset.proxy_protocol.is_some() {
        out.proxy_protocol = subset.proxy_protocol;
    }
    for p in &subset.ports {
        match out.ports.iter_mut().find(|q| q.port == p.port) {
            Some(q) => *q = p.clone(),
            None => out.ports.push(p.clone()),
        }
    }
    out.ports.sort_by_key(|p| p.port);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outlier_defaults_follow_istio() {
        let o = outlier_detection(&dr::OutlierDetection::default());
        assert_eq!(o, pc::OutlierDetection::default());
        let o = outlier_detection(&dr::OutlierDetection {
            consecutive_gateway_errors: Some(3),
            ..Default::default()
        });
        assert_eq!(o.consecutive_5xx_errors, None);
        assert_eq!(o.consecutive_gateway_errors, Some(3));
        assert_eq!(o.consecutive_local_origin_failures, None);
    }

    #[test]
    fn a_retry_budget_takes_istio_defaults_and_a_subset_keeps_the_rules() {
        let p: dr::TrafficPolicy = serde_json::from_value(serde_json::json!({
            "retryBudget": {"percent": 12.5},
            "connectionPool": {"http": {"maxRetries": 4}}
        }))
        .unwrap();
        let rule = traffic_policy(&p);
        let budget = pc::RetryBudget {
            percent: 12.5,
            min_retry_concurrency: 3,
        };
        assert_eq!(rule.retry_budget, Some(budget));
        let sub = traffic_policy(
            &serde_json::from_value(serde_json::json!({
                "connectionPool": {"http": {"maxRetries": 1}}
            }))
            .unwrap(),
        );
        assert_eq!(merge(Some(&rule), &sub).retry_budget, Some(budget));
        let own = traffic_policy(
            &serde_json::from_value(serde_json::json!({"retryBudget": {"minRetryConcurrency": 7}}))
                .unwrap(),
        );
        assert_eq!(
            merge(Some(&rule), &own).retry_budget,
            Some(pc::RetryBudget {
                percent: 20.0,
                min_retry_concurrency: 7
            })
        );
    }

    #[test]
    fn local_origin_failures_are_split_only_when_asked() {
        let split = |split, n| {
            outlier_detection(&dr::OutlierDetection {
                split_external_local_origin_errors: split,
                consecutive_local_origin_failures: n,
                ..Default::default()
            })
            .consecutive_local_origin_failures
        };
        assert_eq!(split(Some(true), Some(2)), Some(2));
        assert_eq!(split(Some(true), None), Some(5), "Envoy's default");
        assert_eq!(split(Some(true), Some(0)), Some(5), "Istio passes only > 0");
        assert_eq!(split(Some(false), Some(2)), None);
        assert_eq!(split(None, None), None);
    }

    #[test]
    fn subset_policy_wins_field_by_field() {
        let base = pc::TrafficPolicy {
            load_balancer: Some(pc::LoadBalancer::RoundRobin),
            connection_pool: Some(pc::ConnectionPool {
                max_connections: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sub = pc::TrafficPolicy {
            load_balancer: Some(pc::LoadBalancer::Random),
            ..Default::default()
        };
        let m = merge(Some(&base), &sub);
        assert_eq!(m.load_balancer, Some(pc::LoadBalancer::Random));
        assert_eq!(m.connection_pool, base.connection_pool);
    }

    #[test]
    fn locality_settings_reach_the_proxy_and_go_with_their_load_balancer() {
        let p: dr::TrafficPolicy = serde_json::from_value(serde_json::json!({
            "loadBalancer": {"simple": "ROUND_ROBIN", "localityLbSetting": {
                "distribute": [{"from": "us-west/zone1/*",
                    "to": {"us-west/zone1/*": 80, "us-west/zone2/*": 20}}]}},
            "portLevelSettings": [{"port": {"number": 9080},
                "loadBalancer": {"localityLbSetting": {"enabled": false}}}]
        }))
        .unwrap();
        let out = traffic_policy(&p);
        let l = out.locality_lb.as_ref().unwrap();
        assert_eq!(l.distribute[0].from, "us-west/zone1/*");
        assert_eq!(l.distribute[0].to["us-west/zone2/*"], 20);
        assert!(!l.disabled);
        // The port's loadBalancer replaces the whole of it: locality off, default balancer.
        let port = out.for_port(9080);
        assert!(port.locality_lb.as_ref().unwrap().disabled);
        assert_eq!(port.load_balancer, None);
        // A subset's loadBalancer likewise, even one that only sets the algorithm (Istio's
        // mesh default for locality then applies again).
        let sub = pc::TrafficPolicy {
            load_balancer: Some(pc::LoadBalancer::Random),
            ..Default::default()
        };
        let m = merge(Some(&out), &sub);
        assert_eq!(m.locality_lb, None);
        let sub = pc::TrafficPolicy {
            locality_lb: Some(pc::LocalityLb {
                failover_priority: vec!["version".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = merge(Some(&out), &sub);
        assert_eq!(m.load_balancer, None);
        assert_eq!(m.locality_lb, sub.locality_lb);
    }

    #[test]
    fn origination_settings_reach_the_proxy_credential_name_included() {
        let t: dr::ClientTlsSettings = serde_json::from_value(serde_json::json!({
            "mode": "MUTUAL",
            "clientCertificate": "/etc/certs/client.pem",
            "privateKey": "/etc/certs/client.key",
            "caCertificates": "/etc/certs/ca.pem",
            "subjectAltNames": ["api.example.com"],
            "sni": "api.example.com",
            "credentialName": "client-credential"
        }))
        .unwrap();
        let out = tls(&t);
        assert_eq!(out.mode, pc::ClientTlsMode::Mutual);
        assert_eq!(
            out.client_certificate.as_deref(),
            Some("/etc/certs/client.pem")
        );
        assert_eq!(out.ca_certificates.as_deref(), Some("/etc/certs/ca.pem"));
        assert_eq!(out.subject_alt_names, ["api.example.com"]);
        // Carried so the sidecar can refuse it by name (gateway-only in Istio).
        assert_eq!(out.credential_name.as_deref(), Some("client-credential"));
    }
}
