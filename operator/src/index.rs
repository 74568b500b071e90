//! The in-memory index the renderer reads: mesh resources, Services and Namespaces, fed by
//! watches (or by files) through `apply` / `delete` / `reset`. Each change records which hosts
//! and namespaces it touched, or that the Gateways changed, so the renderer can redo only those.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Namespace, Service};
use mizzen_crds::{
    inventory::fqdn,
    resource::{MeshResource, ObjectRef},
    validate::Problem,
};
use mizzen_proxy_config::TrafficDistribution;
use serde_json::Value;

/// Istio's annotation for a Service's traffic distribution, where `spec.trafficDistribution` is
/// not set (older clusters, or values Kubernetes does not have).
pub const TRAFFIC_DISTRIBUTION: &str = "networking.istio.io/traffic-distribution";

/// Annotation that limits which namespaces see a Service (Istio's `exportTo` for Services).
pub const SERVICE_EXPORT_TO: &str = "networking.istio.io/exportTo";
/// Annotation that turns an AuthorizationPolicy into a dry run.
pub const DRY_RUN: &str = "istio.io/dry-run";
/// Namespace label that meshes a namespace.
pub const INJECTION_LABEL: &str = "istio-injection";

/// A mesh resource as stored: normalised, with the problems its spec has on its own.
#[derive(Clone, Debug)]
pub struct Stored {
    pub resource: MeshResource,
    pub object: ObjectRef,
    /// `(creationTimestamp, namespace, name)`: the order Istio merges objects in.
    pub order: (String, String, String),
    /// Every problem `validate()` found, warnings included.
    pub problems: Vec<Problem>,
}

impl Stored {
    pub fn is_valid(&self) -> bool {
        !self.problems.iter().any(Problem::is_error)
    }

    pub fn namespace(&self) -> &str {
        &self.object.namespace
    }

    pub fn generation(&self) -> Option<i64> {
        self.resource.meta().generation
    }
}

/// A Kubernetes Service port, as routing needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRecord {
    pub port: u16,
    pub name: String,
    pub app_protocol: Option<String>,
    /// `TCP` (default), `UDP` or `SCTP`.
    pub transport: String,
    pub target_port: Option<u16>,
}

/// A Kubernetes Service, reduced to what rendering needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRecord {
    pub name: String,
    pub namespace: String,
    /// The `networking.istio.io/exportTo` annotation, split; empty means everywhere.
    pub export_to: Vec<String>,
    /// ClusterIPs; empty for a headless Service.
    pub cluster_ips: Vec<String>,
    pub headless: bool,
    pub ports: Vec<PortRecord>,
    /// `spec.trafficDistribution`, else the `networking.istio.io/traffic-distribution`
    /// annotation.
    pub traffic_distribution: Option<TrafficDistribution>,
}

impl ServiceRecord {
    pub fn from_service(svc: &Service, default_namespace: &str) -> Self {
        let meta = &svc.metadata;
        let export_to = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(SERVICE_EXPORT_TO))
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let spec = svc.spec.clone().unwrap_or_default();
        let traffic_distribution = match spec.traffic_distribution.as_deref() {
            Some(v) => TrafficDistribution::parse(v),
            None => meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(TRAFFIC_DISTRIBUTION))
                .and_then(|v| TrafficDistribution::parse(v)),
        };
        let mut cluster_ips: Vec<String> = spec
            .cluster_ips
            .clone()
            .or_else(|| spec.cluster_ip.clone().map(|ip| vec![ip]))
            .unwrap_or_default();
        let headless = cluster_ips.iter().any(|ip| ip == "None");
        cluster_ips.retain(|ip| ip != "None" && !ip.is_empty());
        let ports = spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| {
                let port = u16::try_from(p.port).ok()?;
                let target_port = match p.target_port {
                    Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                        u16::try_from(n).ok().filter(|n| *n != port)
                    }
                    _ => None,
                };
                Some(PortRecord {
                    port,
                    name: p.name.unwrap_or_default(),
                    app_protocol: p.app_protocol,
                    transport: p.protocol.unwrap_or_else(|| "TCP".into()),
                    target_port,
                })
            })
            .collect();
        Self {
            name: meta.name.clone().unwrap_or_default(),
            namespace: meta
                .namespace
                .clone()
                .unwrap_or_else(|| default_namespace.to_string()),
            export_to,
            cluster_ips,
            headless,
            ports,
            traffic_distribution,
        }
    }

    /// `name.namespace.svc.cluster.local`, resolved as every other host is.
    pub fn host(&self) -> String {
        fqdn(&self.name, &self.namespace)
    }
}

/// A Namespace: its name and whether it is meshed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceRecord {
    pub name: String,
    /// For owner references (empty in file mode).
    pub uid: String,
    pub meshed: bool,
}

impl NamespaceRecord {
    pub fn from_namespace(ns: &Namespace) -> Self {
        let meshed = ns
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(INJECTION_LABEL))
            .is_some_and(|v| v == "enabled");
        Self {
            name: ns.metadata.name.clone().unwrap_or_default(),
            uid: ns.metadata.uid.clone().unwrap_or_default(),
            meshed,
        }
    }
}

/// What changed since the renderer last looked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Everything must be redone.
    pub all: bool,
    /// Hosts (fully qualified) whose service entry may differ in every namespace.
    pub hosts: BTreeSet<String>,
    /// Namespaces whose whole config may differ.
    pub namespaces: BTreeSet<String>,
    /// A Gateway was added, changed or removed (or its verdict flipped): the gateway configs
    /// must be redone. Sidecar configs never read Gateways (a VirtualService's binding problems
    /// change its status, which every render works out afresh, not what the sidecars get), so
    /// this alone redoes no sidecar config.
    pub gateways: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        !self.all && !self.gateways && self.hosts.is_empty() && self.namespaces.is_empty()
    }

    /// Records what a resource's presence (or validity) affects; `in_root` when it lives in
    /// the root namespace, whose policies apply to the whole mesh.
    pub fn record(&mut self, stored: &Stored, in_root: bool) {
        let ns = stored.namespace().to_string();
        match &stored.resource {
            MeshResource::VirtualService(vs) => {
                for h in &vs.spec.hosts {
                    self.host(fqdn(h, &ns));
                }
                // A delegate (no hosts) is reached through its parents, which we do not track.
                if vs.spec.hosts.is_empty() {
                    self.all = true;
                }
            }
            MeshResource::DestinationRule(dr) => self.host(fqdn(&dr.spec.host, &ns)),
            MeshResource::ServiceEntry(se) => {
                for h in &se.spec.hosts {
                    self.host(fqdn(h, &ns));
                }
            }
            // Endpoints of ServiceEntries that select WorkloadEntries.
            MeshResource::WorkloadEntry(_) => self.all = true,
            MeshResource::Sidecar(_)
            | MeshResource::PeerAuthentication(_)
            | MeshResource::AuthorizationPolicy(_)
            | MeshResource::RequestAuthentication(_) => {
                if in_root {
                    self.all = true;
                } else {
                    self.namespaces.insert(ns);
                }
            }
            // Gateways shape the gateway configs only.
            MeshResource::Gateway(_) => self.gateways = true,
            // Canaries are run by their controller; the VirtualService it writes is recorded
            // as any other.
            MeshResource::Canary(_) => {}
        }
    }

    fn host(&mut self, host: String) {
        if host.contains('*') {
            self.all = true;
        } else {
            self.hosts.insert(host);
        }
    }
}

/// Everything the renderer reads.
#[derive(Clone, Debug)]
pub struct Index {
    root_namespace: String,
    resources: BTreeMap<ObjectRef, Stored>,
    services: BTreeMap<(String, String), ServiceRecord>,
    namespaces: BTreeMap<String, NamespaceRecord>,
    changes: Changes,
}

impl Index {
    pub fn new(root_namespace: impl Into<String>) -> Self {
        Self {
            root_namespace: root_namespace.into(),
            resources: BTreeMap::new(),
            services: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            changes: Changes {
                all: true,
                ..Changes::default()
            },
        }
    }

    pub fn root_namespace(&self) -> &str {
        &self.root_namespace
    }

    pub fn resources(&self) -> impl Iterator<Item = &Stored> {
        self.resources.values()
    }

    pub fn resource(&self, object: &ObjectRef) -> Option<&Stored> {
        self.resources.get(object)
    }

    pub fn services(&self) -> impl Iterator<Item = &ServiceRecord> {
        self.services.values()
    }

    pub fn namespaces(&self) -> impl Iterator<Item = &NamespaceRecord> {
        self.namespaces.values()
    }

    pub fn namespace(&self, name: &str) -> Option<&NamespaceRecord> {
        self.namespaces.get(name)
    }

    /// Hands over (and forgets) what changed since the last call.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// Marks everything as changed (after a settings change, or to force a full render).
    pub fn touch_all(&mut self) {
        self.changes.all = true;
    }

    // --- mesh resources -------------------------------------------------------------------

    /// Adds or replaces a mesh resource. Objects without a namespace land in the root namespace.
    pub fn apply_resource(&mut self, mut resource: MeshResource) {
        if resource.meta().namespace.is_none() {
            resource.meta_mut().namespace = Some(self.root_namespace.clone());
        }
        // Validate as written, so older spellings are reported (Deprecated) before they are
        // rewritten into their current form.
        let problems = resource.validate();
        resource.normalize();
        let object = resource.object_ref(&self.root_namespace);
        let meta = resource.meta();
        let created = meta
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default();
        let stored = Stored {
            order: (created, object.namespace.clone(), object.name.clone()),
            object: object.clone(),
            problems,
            resource,
        };
        self.touch_resource(&stored);
        if let Some(old) = self.resources.insert(object, stored) {
            self.touch_resource(&old);
        }
    }

    pub fn delete_resource(&mut self, object: &ObjectRef) {
        if let Some(old) = self.resources.remove(object) {
            self.touch_resource(&old);
        }
    }

    /// Replaces every resource of `kind` with `resources` (a watch restarted).
    pub fn reset_resources(&mut self, kind: &str, resources: Vec<MeshResource>) {
        let gone: Vec<ObjectRef> = self
            .resources
            .keys()
            .filter(|o| o.kind == kind)
            .cloned()
            .collect();
        for o in &gone {
            self.delete_resource(o);
        }
        for r in resources {
            self.apply_resource(r);
        }
    }

    fn touch_resource(&mut self, stored: &Stored) {
        let root = stored.namespace() == self.root_namespace;
        self.changes.record(stored, root);
    }

    // --- Services ------------------------------------------------------------------------

    pub fn apply_service(&mut self, svc: &Service) {
        let rec = ServiceRecord::from_service(svc, &self.root_namespace);
        self.changes.host(rec.host());
        self.services
            .insert((rec.namespace.clone(), rec.name.clone()), rec);
    }

    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        if let Some(rec) = self
            .services
            .remove(&(namespace.to_string(), name.to_string()))
        {
            self.changes.host(rec.host());
        }
    }

    pub fn reset_services(&mut self, services: &[Service]) {
        let gone: Vec<_> = self.services.keys().cloned().collect();
        for (ns, name) in gone {
            self.delete_service(&ns, &name);
        }
        for s in services {
            self.apply_service(s);
        }
    }

    // --- Namespaces ----------------------------------------------------------------------

    pub fn apply_namespace(&mut self, ns: &Namespace) {
        let rec = NamespaceRecord::from_namespace(ns);
        if self.namespaces.get(&rec.name) != Some(&rec) {
            self.changes.namespaces.insert(rec.name.clone());
        }
        self.namespaces.insert(rec.name.clone(), rec);
    }

    pub fn delete_namespace(&mut self, name: &str) {
        if self.namespaces.remove(name).is_some() {
            self.changes.namespaces.insert(name.to_string());
        }
    }

    pub fn reset_namespaces(&mut self, namespaces: &[Namespace]) {
        let gone: Vec<_> = self.namespaces.keys().cloned().collect();
        for n in gone {
            self.delete_namespace(&n);
        }
        for n in namespaces {
            self.apply_namespace(n);
        }
    }

    // --- documents (file mode) -----------------------------------------------------------

    /// Adds one document read from YAML: a mesh resource, a Service or a Namespace; other kinds
    /// are ignored. Objects without a namespace land in `default_namespace`.
    pub fn apply_document(
        &mut self,
        doc: &Value,
        default_namespace: &str,
    ) -> Result<(), DocumentError> {
        let mut doc = doc.clone();
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let core = doc.get("apiVersion").and_then(Value::as_str) == Some("v1");
        if kind != "Namespace"
            && let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut)
            && !meta.contains_key("namespace")
        {
            meta.insert("namespace".into(), default_namespace.into());
        }
        match MeshResource::from_value(&doc) {
            Ok(Some(r)) => {
                self.apply_resource(r);
                return Ok(());
            }
            Ok(None) => {}
            Err(f) => return Err(DocumentError::Invalid(f.to_string_lossy())),
        }
        if core && kind == "Service" {
            let svc: Service = serde_json::from_value(doc)
                .map_err(|e| DocumentError::Invalid(format!("Service: {e}")))?;
            self.apply_service(&svc);
        } else if core && kind == "Namespace" {
            let ns: Namespace = serde_json::from_value(doc)
                .map_err(|e| DocumentError::Invalid(format!("Namespace: {e}")))?;
            self.apply_namespace(&ns);
        }
        Ok(())
    }

    /// Namespaces holding any object, for file mode when the input has no Namespace objects.
    pub fn namespaces_with_objects(&self) -> BTreeSet<String> {
        self.resources
            .values()
            .map(|s| s.object.namespace.clone())
            .chain(self.services.keys().map(|(ns, _)| ns.clone()))
            .collect()
    }
}

/// A document that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("{0}")]
    Invalid(String),
}

trait LossyDisplay {
    fn to_string_lossy(&self) -> String;
}

impl LossyDisplay for mizzen_crds::resource::ParseFailure {
    fn to_string_lossy(&self) -> String {
        format!(
            "{}/{}/{}: {}",
            self.kind,
            self.namespace.as_deref().unwrap_or("-"),
            self.name.as_deref().unwrap_or("-"),
            self.problem
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vs(ns: &str, name: &str, host: &str) -> MeshResource {
        let doc = serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"hosts": [host], "http": [{"route": [{"destination": {"host": host}}]}]}
        });
        MeshResource::from_value(&doc).unwrap().unwrap()
    }

    #[test]
    fn records_touched_hosts_and_resets_per_kind() {
        let mut index = Index::new("mizzen-system");
        assert!(
            index.take_changes().all,
            "a new index renders everything once"
        );
        index.apply_resource(vs("shop", "a", "reviews"));
        index.apply_resource(vs("shop", "b", "ratings"));
        let changes = index.take_changes();
        assert!(!changes.all);
        assert_eq!(
            changes.hosts.iter().map(String::as_str).collect::<Vec<_>>(),
            [
                "ratings.shop.svc.cluster.local",
                "reviews.shop.svc.cluster.local"
            ]
        );

        index.reset_resources("VirtualService", vec![vs("shop", "a", "reviews")]);
        assert_eq!(index.resources().count(), 1);
        assert!(
            index
                .take_changes()
                .hosts
                .contains("ratings.shop.svc.cluster.local")
        );

        index.apply_resource(vs("shop", "w", "*.example.com"));
        assert!(
            index.take_changes().all,
            "a wildcard host touches everything"
        );
    }

    #[test]
    fn a_gateway_touches_the_gateway_configs_only() {
        let mut index = Index::new("mizzen-system");
        index.take_changes();
        let gw = MeshResource::from_value(&serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "edge"},
            "spec": {"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}
        }))
        .unwrap()
        .unwrap();
        let object = gw.object_ref("mizzen-system");
        index.apply_resource(gw);
        let gateways_only = Changes {
            gateways: true,
            ..Changes::default()
        };
        assert_eq!(index.take_changes(), gateways_only);
        index.delete_resource(&object);
        assert_eq!(index.take_changes(), gateways_only);
        assert!(!gateways_only.is_empty());
    }

    #[test]
    fn reads_services_with_export_to_and_cluster_ips() {
        let mut index = Index::new("mizzen-system");
        let doc = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "db", "annotations": {SERVICE_EXPORT_TO: ". , web"}},
            "spec": {"clusterIP": "None", "ports": [{"port": 5432, "targetPort": 15432, "protocol": "TCP"}]}
        });
        index.apply_document(&doc, "shop").unwrap();
        let svc = index.services().next().unwrap();
        assert_eq!(svc.namespace, "shop");
        assert_eq!(svc.export_to, [".", "web"]);
        assert!(svc.headless && svc.cluster_ips.is_empty());
        assert_eq!(svc.ports[0].target_port, Some(15432));
        index.delete_service("shop", "db");
        assert_eq!(index.services().count(), 0);
    }

    #[test]
    fn traffic_distribution_comes_from_the_spec_else_istios_annotation() {
        let service = |spec: Option<&str>, annotation: Option<&str>| {
            let mut doc = serde_json::json!({"metadata": {"name": "a", "namespace": "n"},
                "spec": {"ports": [{"port": 80}]}});
            if let Some(v) = spec {
                doc["spec"]["trafficDistribution"] = v.into();
            }
            if let Some(v) = annotation {
                doc["metadata"]["annotations"] = serde_json::json!({TRAFFIC_DISTRIBUTION: v});
            }
            let svc: Service = serde_json::from_value(doc).unwrap();
            ServiceRecord::from_service(&svc, "n").traffic_distribution
        };
        use TrafficDistribution::{PreferSameNode, PreferSameZone};
        assert_eq!(service(Some("PreferClose"), None), Some(PreferSameZone));
        assert_eq!(service(Some("PreferSameZone"), None), Some(PreferSameZone));
        assert_eq!(service(Some("PreferSameNode"), None), Some(PreferSameNode));
        assert_eq!(service(None, Some("preferclose")), Some(PreferSameZone));
        // The spec wins over the annotation; values Istio does not honour mean none.
        assert_eq!(
            service(Some("PreferClose"), Some("PreferSameNode")),
            Some(PreferSameZone)
        );
        assert_eq!(service(None, Some("Any")), None);
        assert_eq!(service(None, None), None);
    }

    #[test]
    fn malformed_documents_name_the_field() {
        let mut index = Index::new("mizzen-system");
        let doc = serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "x", "namespace": "shop"},
            "spec": {"hosts": ["a"], "http": [{"rout": []}]}
        });
        let err = index
            .apply_document(&doc, "default")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("VirtualService/shop/x") && err.contains("rout"),
            "{err}"
        );
    }
}
