//! The endpoints of every service, as the local proxies need them: for each (service host,
//! service port), the ready pod addresses with their target port, their pod's labels (which
//! select DestinationRule subsets) and their pod's service account (which names the identity the
//! pod's proxy must present: secure naming).
//!
//! A pure index fed by three watches (Services, EndpointSlices, Pods; see
//! [`crate::endpoints_feed`]) and read as a full [`EndpointsEvent`] snapshot, the line type of
//! `GET /v1/endpoints`. An endpoint is left out when its slice says it is not ready or is
//! terminating, or when its pod is being deleted or is not (or no longer) known.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mizzen_identity::workload_api::Version;
use serde::{Deserialize, Serialize};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One line of `GET /v1/endpoints`: the whole picture, each time it changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointsEvent {
    pub v: Version,
    /// Sorted by host, then port.
    pub services: Vec<ServiceEndpoints>,
}

/// The endpoints behind one service port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEndpoints {
    /// `<name>.<namespace>.svc.<cluster-domain>`.
    pub host: String,
    /// The service port clients dial.
    pub port: u16,
    /// Sorted by address, then port.
    pub endpoints: Vec<Endpoint>,
}

/// One ready endpoint.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Endpoint {
    pub address: String,
    /// The port on the pod (the service port's target).
    pub port: u16,
    /// The pod's labels (empty for endpoints that are not pods).
    pub labels: BTreeMap<String, String>,
    /// The pod's service account; absent for endpoints that are not pods. Added after the
    /// first release: proxies that predate it ignore it, and read none from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccountRef>,
}

/// A pod's service account, which names the SPIFFE identity its proxy serves
/// (`spiffe://<trust-domain>/ns/<namespace>/sa/<name>`; the proxy adds its trust domain).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
}

/// What the index keeps of a pod: its metadata, slimmed to what matters (name, namespace,
/// labels, deletion), and its service account. Made from each watched Pod at once, so the
/// rest of the object is not held.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodSummary {
    pub meta: ObjectMeta,
    /// `spec.serviceAccountName` (`default` when unset, as the API server fills it in).
    pub service_account: String,
}

impl PodSummary {
    pub fn of(pod: Pod) -> Self {
        let meta = pod.metadata;
        PodSummary {
            meta: ObjectMeta {
                name: meta.name,
                namespace: meta.namespace,
                labels: meta.labels,
                deletion_timestamp: meta.deletion_timestamp,
                ..Default::default()
            },
            service_account: pod
                .spec
                .and_then(|s| s.service_account_name)
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".to_string()),
        }
    }
}

impl EndpointsEvent {
    /// The event as one JSON line, newline included.
    pub fn to_line(&self) -> String {
        let mut json = serde_json::to_string(self).unwrap_or_default();
        json.push('\n');
        json
    }

    pub fn from_line(line: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line.trim_end())
    }
}

type Key = (String, String);

#[derive(Clone, Debug, PartialEq)]
struct ServicePorts {
    /// (port name, port).
    ports: Vec<(Option<String>, u16)>,
}

#[derive(Clone, Debug, PartialEq)]
struct Slice {
    service: String,
    /// (port name, target port).
    ports: Vec<(Option<String>, u16)>,
    /// Ready addresses with the pod they belong to (if any).
    endpoints: Vec<(String, Option<Key>)>,
}

#[derive(Clone, Debug, PartialEq)]
struct PodMeta {
    labels: BTreeMap<String, String>,
    service_account: String,
    deleting: bool,
}

/// Services, slices and pod labels, keyed by (namespace, name).
#[derive(Debug, Default)]
pub struct EndpointsIndex {
    cluster_domain: String,
    services: HashMap<Key, ServicePorts>,
    slices: HashMap<Key, Slice>,
    pods: HashMap<Key, PodMeta>,
}

fn key(meta: &ObjectMeta) -> Option<Key> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

fn port(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|p| *p != 0)
}

impl EndpointsIndex {
    pub fn new(cluster_domain: &str) -> Self {
        EndpointsIndex {
            cluster_domain: cluster_domain.to_string(),
            ..Default::default()
        }
    }

    pub fn apply_service(&mut self, svc: &Service) {
        let Some(k) = key(&svc.metadata) else { return };
        let ports = svc
            .spec
            .iter()
            .flat_map(|s| s.ports.iter().flatten())
            .filter(|p| p.protocol.as_deref().is_none_or(|proto| proto == "TCP"))
            .filter_map(|p| Some((p.name.clone().filter(|n| !n.is_empty()), port(p.port)?)))
            .collect();
        self.services.insert(k, ServicePorts { ports });
    }

    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        self.services
            .remove(&(namespace.to_string(), name.to_string()));
    }

    pub fn replace_services<'a>(&mut self, all: impl IntoIterator<Item = &'a Service>) {
        self.services.clear();
        all.into_iter().for_each(|s| self.apply_service(s));
    }

    pub fn apply_slice(&mut self, slice: &EndpointSlice) {
        let Some(k) = key(&slice.metadata) else {
            return;
        };
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .cloned();
        let Some(service) = service.filter(|_| slice.address_type != "FQDN") else {
            self.slices.remove(&k);
            return;
        };
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().is_none_or(|proto| proto == "TCP"))
            .filter_map(|p| Some((p.name.clone().filter(|n| !n.is_empty()), port(p.port?)?)))
            .collect();
        let endpoints = slice
            .endpoints
            .iter()
            .flatten()
            .filter(|e| {
                let c = e.conditions.as_ref();
                // An unset `ready` means ready, as the API documents.
                c.and_then(|c| c.ready) != Some(false)
                    && c.and_then(|c| c.terminating) != Some(true)
            })
            .flat_map(|e| {
                let pod = e
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .and_then(|r| {
                        Some((
                            r.namespace.clone().unwrap_or_else(|| k.0.clone()),
                            r.name.clone()?,
                        ))
                    });
                e.addresses.iter().map(move |a| (a.clone(), pod.clone()))
            })
            .collect();
        self.slices.insert(
            k,
            Slice {
                service,
                ports,
                endpoints,
            },
        );
    }

    pub fn delete_slice(&mut self, namespace: &str, name: &str) {
        self.slices
            .remove(&(namespace.to_string(), name.to_string()));
    }

    pub fn replace_slices<'a>(&mut self, all: impl IntoIterator<Item = &'a EndpointSlice>) {
        self.slices.clear();
        all.into_iter().for_each(|s| self.apply_slice(s));
    }

    /// A pod: its labels, service account and whether it is being deleted.
    pub fn apply_pod(&mut self, pod: &PodSummary) {
        let Some(k) = key(&pod.meta) else { return };
        self.pods.insert(
            k,
            PodMeta {
                labels: pod.meta.labels.clone().unwrap_or_default(),
                service_account: pod.service_account.clone(),
                deleting: pod.meta.deletion_timestamp.is_some(),
            },
        );
    }

    pub fn delete_pod(&mut self, namespace: &str, name: &str) {
        self.pods.remove(&(namespace.to_string(), name.to_string()));
    }

    pub fn replace_pods<'a>(&mut self, all: impl IntoIterator<Item = &'a PodSummary>) {
        self.pods.clear();
        all.into_iter().for_each(|m| self.apply_pod(m));
    }

    /// Every service port and its ready endpoints, sorted.
    pub fn snapshot(&self) -> EndpointsEvent {
        let mut out: BTreeMap<(String, u16), Vec<Endpoint>> = BTreeMap::new();
        for ((ns, name), svc) in &self.services {
            let host = format!("{name}.{ns}.svc.{}", self.cluster_domain);
            for (_, service_port) in &svc.ports {
                out.entry((host.clone(), *service_port)).or_default();
            }
        }
        for ((ns, _), slice) in &self.slices {
            let Some(svc) = self.services.get(&(ns.clone(), slice.service.clone())) else {
                continue;
            };
            let host = format!("{}.{ns}.svc.{}", slice.service, self.cluster_domain);
            for (port_name, service_port) in &svc.ports {
                let Some(target) = slice
                    .ports
                    .iter()
                    .find(|(name, _)| name == port_name)
                    .map(|(_, p)| *p)
                else {
                    continue;
                };
                let list = out.entry((host.clone(), *service_port)).or_default();
                for (address, pod) in &slice.endpoints {
                    let (labels, service_account) = match pod {
                        None => (BTreeMap::new(), None),
                        Some(pod_key) => match self.pods.get(pod_key) {
                            Some(meta) if !meta.deleting => (
                                meta.labels.clone(),
                                Some(ServiceAccountRef {
                                    namespace: pod_key.0.clone(),
                                    name: meta.service_account.clone(),
                                }),
                            ),
                            _ => continue,
                        },
                    };
                    list.push(Endpoint {
                        address: address.clone(),
                        port: target,
                        labels,
                        service_account,
                    });
                }
            }
        }
        EndpointsEvent {
            v: Version,
            services: out
                .into_iter()
                .map(|((host, port), mut endpoints)| {
                    endpoints.sort();
                    endpoints.dedup();
                    ServiceEndpoints {
                        host,
                        port,
                        endpoints,
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service() -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "reviews", "namespace": "shop"},
            "spec": {"ports": [
                {"name": "http", "port": 9080, "targetPort": 8080},
                {"name": "dns", "port": 53, "protocol": "UDP"}
            ]}
        }))
        .unwrap()
    }

    fn slice(endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "reviews-abc", "namespace": "shop",
                "labels": {SERVICE_NAME_LABEL: "reviews"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints
        }))
        .unwrap()
    }

    fn ep(ip: &str, pod: &str, ready: bool) -> serde_json::Value {
        json!({"addresses": [ip], "conditions": {"ready": ready},
            "targetRef": {"kind": "Pod", "namespace": "shop", "name": pod}})
    }

    fn pod(name: &str, version: &str) -> PodSummary {
        PodSummary::of(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "shop",
                    "labels": {"app": "reviews", "version": version},
                    "annotations": {"big": "dropped"}},
                "spec": {"serviceAccountName": format!("reviews-{version}"), "containers": []}
            }))
            .unwrap(),
        )
    }

    fn index() -> EndpointsIndex {
        let mut index = EndpointsIndex::new("cluster.local");
        index.apply_service(&service());
        index.apply_pod(&pod("r1", "v1"));
        index.apply_pod(&pod("r2", "v2"));
        index.apply_slice(&slice(json!([
            ep("10.0.0.2", "r2", true),
            ep("10.0.0.1", "r1", true)
        ])));
        index
    }

    fn addresses(event: &EndpointsEvent) -> Vec<(String, u16, String, Option<String>)> {
        event
            .services
            .iter()
            .flat_map(|s| {
                s.endpoints.iter().map(|e| {
                    (
                        s.host.clone(),
                        s.port,
                        format!("{}:{}", e.address, e.port),
                        e.labels.get("version").cloned(),
                    )
                })
            })
            .collect()
    }

    #[test]
    fn service_ports_map_to_target_ports_with_pod_labels() {
        let snap = index().snapshot();
        let host = "reviews.shop.svc.cluster.local".to_string();
        assert_eq!(
            addresses(&snap),
            vec![
                (
                    host.clone(),
                    9080,
                    "10.0.0.1:8080".into(),
                    Some("v1".into())
                ),
                (host, 9080, "10.0.0.2:8080".into(), Some("v2".into())),
            ]
        );
        // UDP ports are not served.
        assert_eq!(snap.services.len(), 1);
    }

    #[test]
    fn not_ready_terminating_and_deleted_pods_disappear() {
        let mut index = index();
        index.apply_slice(&slice(json!([
            ep("10.0.0.2", "r2", true),
            ep("10.0.0.1", "r1", false)
        ])));
        assert_eq!(addresses(&index.snapshot()).len(), 1);

        let mut terminating = ep("10.0.0.1", "r1", true);
        terminating["conditions"]["terminating"] = json!(true);
        index.apply_slice(&slice(json!([ep("10.0.0.2", "r2", true), terminating])));
        assert_eq!(addresses(&index.snapshot()).len(), 1);

        index.apply_slice(&slice(json!([
            ep("10.0.0.2", "r2", true),
            ep("10.0.0.1", "r1", true)
        ])));
        let mut deleting = pod("r1", "v1");
        deleting.meta.deletion_timestamp =
            Some(serde_json::from_value(json!("2026-11-22T00:00:00Z")).unwrap());
        index.apply_pod(&deleting);
        assert_eq!(addresses(&index.snapshot())[0].2, "10.0.0.2:8080");

        index.delete_pod("shop", "r2");
        let snap = index.snapshot();
        assert_eq!(
            snap.services.len(),
            1,
            "the service stays, with no endpoints"
        );
        assert!(snap.services[0].endpoints.is_empty());
    }

    #[test]
    fn slices_of_unknown_services_and_removed_slices_give_nothing() {
        let mut index = EndpointsIndex::new("cluster.local");
        index.apply_pod(&pod("r1", "v1"));
        index.apply_slice(&slice(json!([ep("10.0.0.1", "r1", true)])));
        assert!(index.snapshot().services.is_empty());
        index.apply_service(&service());
        assert_eq!(addresses(&index.snapshot()).len(), 1);
        index.delete_slice("shop", "reviews-abc");
        assert!(index.snapshot().services[0].endpoints.is_empty());
        index.delete_service("shop", "reviews");
        assert!(index.snapshot().services.is_empty());
    }

    #[test]
    fn unset_ready_counts_as_ready_and_non_pod_endpoints_have_no_labels() {
        let mut index = index();
        index.apply_slice(&slice(json!([{"addresses": ["192.168.1.9"]}])));
        let snap = index.snapshot();
        assert_eq!(snap.services[0].endpoints.len(), 1);
        assert!(snap.services[0].endpoints[0].labels.is_empty());
    }

    #[test]
    fn replace_drops_what_a_relist_no_longer_has() {
        let mut index = index();
        index.replace_pods([&pod("r1", "v1")]);
        assert_eq!(addresses(&index.snapshot()).len(), 1);
        index.replace_services(std::iter::empty());
        assert!(index.snapshot().services.is_empty());
    }

    #[test]
    fn endpoints_carry_their_pods_service_account() {
        let snap = index().snapshot();
        let accounts: Vec<Option<(String, String)>> = snap.services[0]
            .endpoints
            .iter()
            .map(|e| {
                e.service_account
                    .as_ref()
                    .map(|sa| (sa.namespace.clone(), sa.name.clone()))
            })
            .collect();
        assert_eq!(
            accounts,
            [
                Some(("shop".into(), "reviews-v1".into())),
                Some(("shop".into(), "reviews-v2".into()))
            ]
        );
        // A pod that names none runs as `default`; only what the index needs is kept.
        let bare = PodSummary::of(
            serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "shop",
                "annotations": {"a": "b"}}}))
            .unwrap(),
        );
        assert_eq!(bare.service_account, "default");
        assert_eq!(bare.meta.annotations, None);
        // Endpoints that are not pods have no account, and the field is then left out.
        let mut index = index();
        index.apply_slice(&slice(json!([{"addresses": ["192.168.1.9"]}])));
        let line = index.snapshot().to_line();
        assert!(!line.contains("service_account"), "{line}");
    }

    #[test]
    fn wire_form() {
        let line = index().snapshot().to_line();
        assert!(line.starts_with(r#"{"v":1,"services":[{"host":"reviews.shop.svc.cluster.local","port":9080,"endpoints":[{"address":"10.0.0.1","port":8080,"labels":{"app":"reviews","version":"v1"},"service_account":{"namespace":"shop","name":"reviews-v1"}}"#), "{line}");
        assert_eq!(
            EndpointsEvent::from_line(&line).unwrap(),
            index().snapshot()
        );
        assert!(EndpointsEvent::from_line(r#"{"v":2,"services":[]}"#).is_err());
    }
}
