//! Where the addresses of a service's endpoints come from: the config file
//! (`Service.endpoints`, from ServiceEntries and WorkloadEntries) here, the node agent's stream
//! in [`crate::agent::AgentEndpoints`].

use std::{collections::BTreeMap, sync::Arc};

use mizzen_identity::SpiffeId;
use mizzen_proxy_config::{ProxyConfig, Resolution};

use crate::balance::locality::Locality;
use crate::config::ConfigStore;

/// One address to send requests to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// IP address or DNS name.
    pub host: String,
    pub port: u16,
    pub labels: BTreeMap<String, String>,
    pub weight: u32,
    /// The SPIFFE id the endpoint's server must present over mesh mTLS (secure naming); `None`
    /// when unknown (a ServiceEntry address, a WorkloadEntry without a service account).
    pub identity: Option<SpiffeId>,
    /// Where it runs (empty when unknown).
    pub locality: Locality,
    /// The node it runs on, when the node agent says.
    pub node: Option<String>,
}

impl Endpoint {
    /// `host:port`, with brackets around IPv6 addresses.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

pub trait EndpointSource: Send + Sync {
    /// The endpoints of `service_host` serving its port `port` whose labels include `subset`.
    fn endpoints(
        &self,
        service_host: &str,
        port: u16,
        subset: &BTreeMap<String, String>,
    ) -> Vec<Endpoint>;

    /// Changes whenever any answer of [`Self::endpoints`] or [`Self::locality`] may have
    /// changed.
    fn generation(&self) -> u64;

    /// Where this proxy runs, when the source knows (the node agent knows its node's).
    fn locality(&self) -> Option<Locality> {
        None
    }

    /// The node this proxy runs on, when the source knows.
    fn node(&self) -> Option<String> {
        None
    }
}

/// Endpoints written in the config file.
pub struct ConfigEndpoints {
    store: Arc<ConfigStore>,
}

impl ConfigEndpoints {
    pub fn new(store: Arc<ConfigStore>) -> Self {
        Self { store }
    }
}

impl EndpointSource for ConfigEndpoints {
    fn endpoints(
        &self,
        service_host: &str,
        port: u16,
        subset: &BTreeMap<String, String>,
    ) -> Vec<Endpoint> {
        endpoints_in_config(self.store.current().config(), service_host, port, subset)
    }

    fn generation(&self) -> u64 {
        self.store.current().version
    }
}

/// The endpoints the config lists for a service port, with their port numbers resolved: the
/// endpoint's own number for the port's name, else the port's `targetPort`, else the port.
/// A DNS service without endpoints is its own endpoint.
pub fn endpoints_in_config(
    config: &ProxyConfig,
    service_host: &str,
    port: u16,
    subset: &BTreeMap<String, String>,
) -> Vec<Endpoint> {
    let Some(service) = config.service(service_host) else {
        return Vec::new();
    };
    let sport = service.port(port);
    let default_port = sport.and_then(|p| p.target_port).unwrap_or(port);
    if service.endpoints.is_empty() && service.resolution == Resolution::Dns {
        return vec![Endpoint {
            host: service.host.clone(),
            port: default_port,
            labels: BTreeMap::new(),
            weight: 1,
            identity: None,
            locality: Locality::default(),
            node: None,
        }];
    }
    let mut out: Vec<Endpoint> = service
        .endpoints
        .iter()
        .filter(|e| subset.iter().all(|(k, v)| e.labels.get(k) == Some(v)))
        .map(|e| Endpoint {
            host: e.address.clone(),
            port: sport
                .and_then(|p| e.ports.get(&p.name))
                .copied()
                .unwrap_or(default_port),
            labels: e.labels.clone(),
            weight: e.weight.unwrap_or(1).max(1),
            // The renderer writes well-formed ids; one that is not is treated as unknown.
            identity: e
                .identity
                .as_deref()
                .and_then(|id| SpiffeId::parse(id).ok()),
            locality: e
                .locality
                .as_deref()
                .map(Locality::parse)
                .unwrap_or_default(),
            node: None,
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mizzen_proxy_config::{Endpoint as ConfigEndpoint, Protocol, Service, ServicePort};

    fn config() -> ProxyConfig {
        let mut c = ProxyConfig::new("default");
        let ep = |addr: &str, v: &str| ConfigEndpoint {
            address: addr.into(),
            labels: [("version".to_string(), v.to_string())].into(),
            ..Default::default()
        };
        c.services.push(Service {
            host: "b.default.svc.cluster.local".into(),
            namespace: "default".into(),
            ports: vec![ServicePort {
                number: 80,
                name: "http".into(),
                protocol: Protocol::Http,
                target_port: Some(8080),
            }],
            endpoints: vec![
                ep("10.0.0.2", "v2"),
                ConfigEndpoint {
                    ports: [("http".to_string(), 9090)].into(),
                    identity: Some("spiffe://cluster.local/ns/default/sa/b".into()),
                    ..ep("10.0.0.1", "v1")
                },
            ],
            ..Default::default()
        });
        c
    }

    #[test]
    fn selects_by_subset_and_resolves_ports() {
        let c = config();
        let all = endpoints_in_config(&c, "b.default.svc.cluster.local", 80, &BTreeMap::new());
        assert_eq!(
            all.iter().map(Endpoint::authority).collect::<Vec<_>>(),
            ["10.0.0.1:9090", "10.0.0.2:8080"]
        );
        let v2 = [("version".to_string(), "v2".to_string())].into();
        let only = endpoints_in_config(&c, "b.default.svc.cluster.local", 80, &v2);
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].host, "10.0.0.2");
        assert_eq!(only[0].identity, None);
        assert_eq!(
            all[0].identity.as_ref().map(SpiffeId::uri).as_deref(),
            Some("spiffe://cluster.local/ns/default/sa/b")
        );
        assert!(endpoints_in_config(&c, "nope", 80, &BTreeMap::new()).is_empty());
    }
}
