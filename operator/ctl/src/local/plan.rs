//! What the local mesh runs, worked out from the rendered proxy configs alone (pure).
//!
//! Every endpoint of a service that carries Istio's `security.istio.io/tlsMode: istio` label
//! (a WorkloadEntry fronted by a sidecar) becomes a [`Workload`]: a sidecar listening at the
//! entry's address and ports, with the entry's labels and service account. Endpoints without
//! the label are processes the user runs: the sidecars route to them as they are and nothing
//! is started for them. Each sidecar gets one outbound listener per service port of its
//! namespace, so an app reaches `reviews` through `127.0.0.1:<its listener>`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use mizzen_proxy_config::ProxyConfig;

/// The label that says a sidecar fronts an endpoint.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// One sidecar (and the demo app behind it, when it is one of the demo's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// `<app>-<version>` (or `<app>`), as Istio names a workload in its metrics.
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub app: String,
    pub version: String,
    /// Every label of the entry (policy selectors and `sourceLabels` match on them).
    pub labels: BTreeMap<String, String>,
    /// Where the sidecar takes mesh traffic: the entry's address and each of its ports.
    pub inbound: Vec<SocketAddr>,
}

/// A service port a sidecar offers an outbound listener for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Destination {
    pub host: String,
    pub port: u16,
    /// The `app` label its endpoints share, if any (how the demo apps find each other).
    pub app: Option<String>,
}

/// Everything to start, by namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub workloads: Vec<Workload>,
    /// Namespace → the service ports its sidecars can call.
    pub destinations: BTreeMap<String, Vec<Destination>>,
}

/// Why an entry cannot be run locally.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "{host}: endpoint address {address:?} is not an IP address (a local sidecar listens there)"
    )]
    Address { host: String, address: String },
    #[error(
        "{host}: endpoint {address} has no `app` label (the sidecar's workload is named after it)"
    )]
    NoApp { host: String, address: String },
    #[error("{first} and {second} both listen on {addr}")]
    Clash {
        first: String,
        second: String,
        addr: SocketAddr,
    },
}

impl Plan {
    /// The plan of the rendered configs (one per namespace).
    pub fn of(configs: &[ProxyConfig]) -> Result<Plan, PlanError> {
        let mut plan = Plan::default();
        let mut owner: BTreeMap<SocketAddr, usize> = BTreeMap::new();
        for config in configs {
            let mut destinations = Vec::new();
            for service in &config.services {
                let app = common_app(service.endpoints.iter().map(|e| &e.labels));
                for port in &service.ports {
                    destinations.push(Destination {
                        host: service.host.clone(),
                        port: port.number,
                        app: app.clone(),
                    });
                }
                for ep in &service.endpoints {
                    if ep.labels.get(TLS_MODE_LABEL).map(String::as_str) != Some("istio") {
                        continue;
                    }
                    let ip: IpAddr = ep.address.parse().map_err(|_| PlanError::Address {
                        host: service.host.clone(),
                        address: ep.address.clone(),
                    })?;
                    let inbound: Vec<SocketAddr> =
                        ep.ports.values().map(|p| SocketAddr::new(ip, *p)).collect();
                    // One entry selected by several services is one workload.
                    if let Some(&i) = inbound.first().and_then(|a| owner.get(a))
                        && plan.workloads[i].labels == ep.labels
                    {
                        continue;
                    }
                    let workload = workload(config, service.host.as_str(), ep, inbound)?;
                    for addr in &workload.inbound {
                        if let Some(&i) = owner.get(addr) {
                            return Err(PlanError::Clash {
                                first: plan.workloads[i].name.clone(),
                                second: workload.name.clone(),
                                addr: *addr,
                            });
                        }
                        owner.insert(*addr, plan.workloads.len());
                    }
                    plan.workloads.push(workload);
                }
            }
            destinations.sort();
            destinations.dedup();
            plan.destinations
                .insert(config.namespace.clone(), destinations);
        }
        Ok(plan)
    }

    /// The destination in `namespace` whose endpoints are the app `app`.
    pub fn destination(&self, namespace: &str, app: &str) -> Option<&Destination> {
        self.destinations
            .get(namespace)?
            .iter()
            .find(|d| d.app.as_deref() == Some(app))
    }
}

fn workload(
    config: &ProxyConfig,
    host: &str,
    ep: &mizzen_proxy_config::Endpoint,
    inbound: Vec<SocketAddr>,
) -> Result<Workload, PlanError> {
    let app = ep
        .labels
        .get("app")
        .cloned()
        .ok_or_else(|| PlanError::NoApp {
            host: host.to_string(),
            address: ep.address.clone(),
        })?;
    let version = ep.labels.get("version").cloned().unwrap_or_default();
    let name = if version.is_empty() {
        app.clone()
    } else {
        format!("{app}-{version}")
    };
    // The renderer writes the entry's serviceAccount as its SPIFFE id.
    let service_account = ep
        .identity
        .as_deref()
        .and_then(|id| id.rsplit_once("/sa/"))
        .map(|(_, sa)| sa.to_string())
        .unwrap_or_else(|| "default".into());
    Ok(Workload {
        name,
        namespace: config.namespace.clone(),
        service_account,
        app,
        version,
        labels: ep.labels.clone(),
        inbound,
    })
}

/// The `app` label every endpoint shares, if they share one.
fn common_app<'a>(
    mut labels: impl Iterator<Item = &'a BTreeMap<String, String>>,
) -> Option<String> {
    let first = labels.next()?.get("app")?.clone();
    labels
        .all(|l| l.get("app") == Some(&first))
        .then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mizzen_proxy_config::{Endpoint, Protocol, Service, ServicePort};

    fn endpoint(port: u16, labels: &[(&str, &str)], sa: &str) -> Endpoint {
        Endpoint {
            address: "127.0.0.1".into(),
            ports: [("http".to_string(), port)].into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            weight: None,
            identity: Some(format!("spiffe://cluster.local/ns/shop/sa/{sa}")),
            locality: None,
        }
    }

    fn service(host: &str, endpoints: Vec<Endpoint>) -> Service {
        Service {
            host: host.into(),
            namespace: "shop".into(),
            ports: vec![ServicePort {
                number: 9080,
                name: "http".into(),
                protocol: Protocol::Http,
                target_port: None,
            }],
            endpoints,
            ..Service::default()
        }
    }

    const MESHED: (&str, &str) = (TLS_MODE_LABEL, "istio");

    #[test]
    fn sidecars_for_meshed_entries_and_listeners_for_every_service() {
        let mut config = ProxyConfig::new("shop");
        config.services = vec![
            service(
                "reviews.shop.svc.cluster.local",
                vec![
                    endpoint(
                        19081,
                        &[("app", "reviews"), ("version", "v1"), MESHED],
                        "rev",
                    ),
                    endpoint(
                        19082,
                        &[("app", "reviews"), ("version", "v2"), MESHED],
                        "rev",
                    ),
                ],
            ),
            // The user's own process: routed to, nothing started for it.
            service(
                "legacy.shop.svc.cluster.local",
                vec![endpoint(7000, &[("app", "legacy")], "legacy")],
            ),
        ];
        let plan = Plan::of(&[config]).unwrap();
        let names: Vec<_> = plan.workloads.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["reviews-v1", "reviews-v2"]);
        let v2 = &plan.workloads[1];
        assert_eq!(v2.service_account, "rev");
        assert_eq!(v2.namespace, "shop");
        assert_eq!(v2.inbound, ["127.0.0.1:19082".parse().unwrap()]);
        assert_eq!(v2.labels["version"], "v2");
        let dest = plan.destination("shop", "reviews").unwrap();
        assert_eq!(
            (dest.host.as_str(), dest.port),
            ("reviews.shop.svc.cluster.local", 9080)
        );
        assert_eq!(plan.destinations["shop"].len(), 2);
        assert!(plan.destination("shop", "ratings").is_none());
    }

    #[test]
    fn two_workloads_on_one_port_are_refused() {
        let mut config = ProxyConfig::new("shop");
        config.services = vec![service(
            "reviews.shop.svc.cluster.local",
            vec![
                endpoint(19081, &[("app", "reviews"), ("version", "v1"), MESHED], "r"),
                endpoint(19081, &[("app", "reviews"), ("version", "v2"), MESHED], "r"),
            ],
        )];
        let err = Plan::of(&[config]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "reviews-v1 and reviews-v2 both listen on 127.0.0.1:19081"
        );
    }
}
