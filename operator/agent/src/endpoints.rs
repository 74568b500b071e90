//! The endpoints of every service, as the local proxies need them: for each (service host,
//! service port), the ready pod addresses with their target port, their pod's labels (which
//! select DestinationRule subsets), their pod's service account (which names the identity the
//! pod's proxy must present: secure naming) and their locality (for locality load balancing).
//!
//! A pure index fed by four watches (Services, EndpointSlices, Pods, Nodes' metadata; see
//! [`crate::endpoints_feed`]) and read as a full [`EndpointsEvent`] snapshot, the line type of
//! `GET /v1/endpoints`. An endpoint is left out when its slice says it is not ready or is
//! terminating, or when its pod is being deleted or is not (or no longer) known.
//!
//! An endpoint's locality (`region/zone/subzone`) is, as Istio finds it: its pod's
//! `istio-locality` label, else the topology labels of its node (the slice's `nodeName`), else
//! the slice's `zone` alone. The event also carries the locality of the agent's own node, which
//! is that of every proxy it serves.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mizzen_identity::workload_api::Version;
use serde::{Deserialize, Serialize};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The node labels a locality is made of.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
pub const SUBZONE_LABEL: &str = "topology.istio.io/subzone";

/// Istio's pod label that overrides the node's locality: `region.zone.subzone` (dots, as label
/// values cannot hold slashes).
pub const LOCALITY_LABEL: &str = "istio-locality";

/// One line of `GET /v1/endpoints`: the whole picture, each time it changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointsEvent {
    pub v: Version,
    /// Sorted by host, then port.
    pub services: Vec<ServiceEndpoints>,
    /// The locality of the agent's node, where every proxy it serves runs: `region/zone/subzone`
    /// (parts may be empty); absent when the node has no topology labels or is not known yet.
    /// Added after the first release, as [`Endpoint::locality`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// The agent's node's name (`kubernetes.io/hostname` for a Service's `PreferSameNode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
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
    /// Where the endpoint runs: `region/zone/subzone`, always three parts, any of them empty
    /// (`"/zone-a/"`); absent when nothing is known. Added after the first release, as
    /// `service_account` was. Last, so that endpoints still sort by address first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// The node it runs on (the slice's `nodeName`), for a Service's `PreferSameNode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
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

/// Where something runs, as Istio's locality load balancing sees it. Any part may be empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

impl Locality {
    /// A node's, from its topology labels.
    pub fn of_node(labels: &BTreeMap<String, String>) -> Self {
        let label = |name| labels.get(name).cloned().unwrap_or_default();
        Locality {
            region: label(REGION_LABEL),
            zone: label(ZONE_LABEL),
            subzone: label(SUBZONE_LABEL),
        }
    }

    /// A pod's `istio-locality` label: dots become slashes, as Istio turns them, so a value
    /// with more than three parts leaves the rest in the subzone. None when empty.
    pub fn of_pod_label(value: &str) -> Option<Self> {
        let slashed = value.replace('.', "/");
        let mut parts = slashed.splitn(3, '/').map(str::to_string);
        let locality = Locality {
            region: parts.next().unwrap_or_default(),
            zone: parts.next().unwrap_or_default(),
            subzone: parts.next().unwrap_or_default(),
        };
        (!locality.is_unknown()).then_some(locality)
    }

    /// An EndpointSlice endpoint's `zone`, with no region or subzone.
    pub fn of_zone(zone: &str) -> Self {
        Locality {
            zone: zone.to_string(),
            ..Default::default()
        }
    }

    pub fn is_unknown(&self) -> bool {
        self.region.is_empty() && self.zone.is_empty() && self.subzone.is_empty()
    }

    /// The wire form, `region/zone/subzone`; None when no part is known.
    pub fn to_wire(&self) -> Option<String> {
        (!self.is_unknown()).then(|| format!("{}/{}/{}", self.region, self.zone, self.subzone))
    }
}

/// What the index keeps of a node: its name and its locality. Made from the node's metadata as
/// it arrives, so neither the Node nor the rest of its metadata is held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeTopology {
    pub name: String,
    pub locality: Locality,
}

impl NodeTopology {
    pub fn of(meta: ObjectMeta) -> Self {
        NodeTopology {
            name: meta.name.unwrap_or_default(),
            locality: Locality::of_node(&meta.labels.unwrap_or_default()),
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
    /// The ready ones.
    endpoints: Vec<SliceEndpoint>,
}

#[derive(Clone, Debug, PartialEq)]
struct SliceEndpoint {
    address: String,
    /// The pod it belongs to, if any.
    pod: Option<Key>,
    /// `nodeName`: whose labels give its locality.
    node: Option<String>,
    /// `zone`: its locality when its node is not known.
    zone: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
struct PodMeta {
    labels: BTreeMap<String, String>,
    service_account: String,
    deleting: bool,
    /// From its `istio-locality` label.
    locality: Option<Locality>,
}

/// Services, slices and pod labels, keyed by (namespace, name); node localities by node name.
#[derive(Debug, Default)]
pub struct EndpointsIndex {
    cluster_domain: String,
    /// The agent's own node, whose locality the snapshot carries.
    node: Option<String>,
    services: HashMap<Key, ServicePorts>,
    slices: HashMap<Key, Slice>,
    pods: HashMap<Key, PodMeta>,
    nodes: HashMap<String, Locality>,
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

    /// The index of the agent on `node`: its snapshots carry that node's locality.
    pub fn on_node(mut self, node: &str) -> Self {
        self.node = Some(node.to_string());
        self
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
                e.addresses.iter().map(move |a| SliceEndpoint {
                    address: a.clone(),
                    pod: pod.clone(),
                    node: e.node_name.clone().filter(|n| !n.is_empty()),
                    zone: e.zone.clone().filter(|z| !z.is_empty()),
                })
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
        let labels = pod.meta.labels.clone().unwrap_or_default();
        self.pods.insert(
            k,
            PodMeta {
                locality: labels
                    .get(LOCALITY_LABEL)
                    .and_then(|l| Locality::of_pod_label(l)),
                labels,
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

    /// A node's locality. True when it changed: a node's metadata changes with every status
    /// update, its topology labels hardly ever.
    pub fn apply_node(&mut self, node: &NodeTopology) -> bool {
        if node.name.is_empty() || self.nodes.get(&node.name) == Some(&node.locality) {
            return false;
        }
        self.nodes.insert(node.name.clone(), node.locality.clone());
        true
    }

    pub fn delete_node(&mut self, name: &str) {
        self.nodes.remove(name);
    }

    pub fn replace_nodes<'a>(&mut self, all: impl IntoIterator<Item = &'a NodeTopology>) {
        self.nodes.clear();
        all.into_iter().for_each(|n| {
            self.apply_node(n);
        });
    }

    /// An endpoint's locality: its pod's label, else its node's labels, else its zone.
    fn locality(&self, endpoint: &SliceEndpoint, pod: Option<&PodMeta>) -> Option<String> {
        pod.and_then(|p| p.locality.as_ref())
            .or_else(|| {
                let node = self.nodes.get(endpoint.node.as_ref()?)?;
                (!node.is_unknown()).then_some(node)
            })
            .and_then(Locality::to_wire)
            .or_else(|| Locality::of_zone(endpoint.zone.as_deref()?).to_wire())
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
                for endpoint in &slice.endpoints {
                    let pod = match &endpoint.pod {
                        None => None,
                        Some(pod_key) => match self.pods.get(pod_key) {
                            Some(meta) if !meta.deleting => Some((pod_key, meta)),
                            _ => continue,
                        },
                    };
                    list.push(Endpoint {
                        address: endpoint.address.clone(),
                        port: target,
                        labels: pod.map(|(_, meta)| meta.labels.clone()).unwrap_or_default(),
                        service_account: pod.map(|((namespace, _), meta)| ServiceAccountRef {
                            namespace: namespace.clone(),
                            name: meta.service_account.clone(),
                        }),
                        locality: self.locality(endpoint, pod.map(|(_, meta)| meta)),
                        node: endpoint.node.clone(),
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
            locality: self
                .node
                .as_ref()
                .and_then(|node| self.nodes.get(node))
                .and_then(Locality::to_wire),
            node: self.node.clone(),
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

    /// A ready endpoint of pod `pod` on node `node` in zone `zone` (either may be absent).
    fn ep_at(ip: &str, pod: &str, node: Option<&str>, zone: Option<&str>) -> serde_json::Value {
        let mut e = ep(ip, pod, true);
        if let Some(node) = node {
            e["nodeName"] = json!(node);
        }
        if let Some(zone) = zone {
            e["zone"] = json!(zone);
        }
        e
    }

    fn node(name: &str, labels: serde_json::Value) -> NodeTopology {
        NodeTopology::of(serde_json::from_value(json!({"name": name, "labels": labels})).unwrap())
    }

    fn labelled(name: &str, region: &str, zone: &str, subzone: &str) -> NodeTopology {
        node(
            name,
            json!({REGION_LABEL: region, ZONE_LABEL: zone, SUBZONE_LABEL: subzone,
                "kubernetes.io/hostname": name}),
        )
    }

    /// Each endpoint's address and locality, in order.
    fn localities(event: &EndpointsEvent) -> Vec<(String, Option<String>)> {
        event
            .services
            .iter()
            .flat_map(|s| &s.endpoints)
            .map(|e| (e.address.clone(), e.locality.clone()))
            .collect()
    }

    fn located(pairs: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        pairs
            .iter()
            .map(|(a, l)| (a.to_string(), l.map(String::from)))
            .collect()
    }

    /// `index()` run by the agent on node `n1`, its slice's endpoints on `n1` and `n2`.
    fn located_index() -> EndpointsIndex {
        let mut index = index().on_node("n1");
        index.apply_node(&labelled("n1", "r1", "z1", "s1"));
        index.apply_node(&node("n2", json!({REGION_LABEL: "r1", ZONE_LABEL: "z2"})));
        index.apply_slice(&slice(json!([
            ep_at("10.0.0.1", "r1", Some("n1"), Some("z1")),
            ep_at("10.0.0.2", "r2", Some("n2"), Some("z2"))
        ])));
        index
    }

    #[test]
    fn endpoints_have_their_nodes_locality_and_the_event_the_agents_node() {
        let snap = located_index().snapshot();
        assert_eq!(
            localities(&snap),
            located(&[("10.0.0.1", Some("r1/z1/s1")), ("10.0.0.2", Some("r1/z2/"))])
        );
        assert_eq!(snap.locality.as_deref(), Some("r1/z1/s1"));
        let line = snap.to_line();
        assert!(
            line.contains(r#""service_account":{"namespace":"shop","name":"reviews-v1"},"locality":"r1/z1/s1","node":"n1"}"#),
            "{line}"
        );
        assert!(
            line.ends_with("],\"locality\":\"r1/z1/s1\",\"node\":\"n1\"}\n"),
            "{line}"
        );
        // Each endpoint names its node, for a Service's PreferSameNode.
        let nodes: Vec<Option<&str>> = snap.services[0]
            .endpoints
            .iter()
            .map(|e| e.node.as_deref())
            .collect();
        assert_eq!(nodes, [Some("n1"), Some("n2")]);
        assert_eq!(EndpointsEvent::from_line(&line).unwrap(), snap);
        // A node's locality is its three topology labels; the others do not count.
        let n = labelled("n1", "r1", "z1", "s1");
        assert_eq!(
            n.locality,
            Locality {
                region: "r1".into(),
                zone: "z1".into(),
                subzone: "s1".into()
            }
        );
    }

    #[test]
    fn the_pods_istio_locality_label_overrides_its_node() {
        let mut index = located_index();
        let mut r1 = pod("r1", "v1");
        r1.meta
            .labels
            .get_or_insert_default()
            .insert(LOCALITY_LABEL.into(), "eu.eu-a.rack9".into());
        index.apply_pod(&r1);
        let mut r2 = pod("r2", "v2");
        r2.meta
            .labels
            .get_or_insert_default()
            .insert(LOCALITY_LABEL.into(), "eu".into());
        index.apply_pod(&r2);
        assert_eq!(
            localities(&index.snapshot()),
            located(&[
                ("10.0.0.1", Some("eu/eu-a/rack9")),
                ("10.0.0.2", Some("eu//"))
            ])
        );
        // The pod's label does not move the agent's own node.
        assert_eq!(index.snapshot().locality.as_deref(), Some("r1/z1/s1"));
        // Istio turns every dot into a slash; an empty label says nothing.
        assert_eq!(
            Locality::of_pod_label("a.b.c.d").and_then(|l| l.to_wire()),
            Some("a/b/c/d".into())
        );
        assert_eq!(Locality::of_pod_label(""), None);
    }

    #[test]
    fn an_unknown_or_unlabelled_node_leaves_the_slices_zone() {
        let mut index = located_index();
        index.apply_node(&node("n2", json!({"kubernetes.io/hostname": "n2"})));
        index.apply_slice(&slice(json!([
            ep_at("10.0.0.1", "r1", Some("n9"), Some("z9")),
            ep_at("10.0.0.2", "r2", Some("n2"), Some("z2"))
        ])));
        assert_eq!(
            localities(&index.snapshot()),
            located(&[("10.0.0.1", Some("/z9/")), ("10.0.0.2", Some("/z2/"))])
        );
    }

    #[test]
    fn without_any_locality_the_fields_are_left_out() {
        let mut index = index().on_node("n1");
        index.apply_node(&node("n1", json!({})));
        index.apply_slice(&slice(json!([
            ep_at("10.0.0.1", "r1", Some("n1"), None),
            ep_at("10.0.0.2", "r2", None, None)
        ])));
        let snap = index.snapshot();
        assert_eq!(
            localities(&snap),
            located(&[("10.0.0.1", None), ("10.0.0.2", None)])
        );
        assert_eq!(snap.locality, None);
        let line = snap.to_line();
        assert!(!line.contains("locality"), "{line}");
        // A node name only where the slice gives one.
        let eps = &snap.services[0].endpoints;
        assert_eq!(
            (eps[0].node.as_deref(), eps[1].node.as_deref()),
            (Some("n1"), None)
        );
        assert_eq!(line.matches(r#""node":"#).count(), 2, "{line}"); // n1's endpoint, the event
    }

    #[test]
    fn node_label_changes_and_deletion_move_the_localities() {
        let mut index = located_index();
        assert!(
            !index.apply_node(&labelled("n1", "r1", "z1", "s1")),
            "unchanged"
        );
        assert!(index.apply_node(&labelled("n1", "r1", "z1", "s2")));
        let snap = index.snapshot();
        assert_eq!(localities(&snap)[0].1.as_deref(), Some("r1/z1/s2"));
        assert_eq!(snap.locality.as_deref(), Some("r1/z1/s2"));

        index.delete_node("n1");
        let snap = index.snapshot();
        assert_eq!(
            localities(&snap),
            located(&[("10.0.0.1", Some("/z1/")), ("10.0.0.2", Some("r1/z2/"))])
        );
        assert_eq!(snap.locality, None, "the agent's node is no longer known");

        // A relist keeps only the nodes it lists.
        index.replace_nodes([&labelled("n1", "r1", "z1", "s1")]);
        assert_eq!(
            localities(&index.snapshot()),
            located(&[("10.0.0.1", Some("r1/z1/s1")), ("10.0.0.2", Some("/z2/"))])
        );
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
