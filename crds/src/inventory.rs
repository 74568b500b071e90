//! What a set of documents describes: mesh resources plus the Kubernetes objects they refer to
//! (Services, workloads, Namespaces). Cross-object checks and the operator's file mode read it.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::resource::{MeshResource, ObjectRef, ParseFailure};

/// The cluster DNS suffix Istio assumes for Service hosts.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// A Kubernetes Service, reduced to what routing needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    pub name: String,
    pub namespace: String,
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePortInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePortInfo {
    pub port: u32,
    pub name: Option<String>,
    pub app_protocol: Option<String>,
}

impl ServiceInfo {
    /// `name.namespace.svc.cluster.local`
    pub fn fqdn(&self) -> String {
        format!("{}.{}.svc.{CLUSTER_DOMAIN}", self.name, self.namespace)
    }
}

/// Pods, or the pod templates of workload controllers, by their labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadInfo {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A mesh resource with where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub resource: MeshResource,
    pub object: ObjectRef,
    /// File (and document) it was read from, for messages.
    pub origin: String,
}

/// Everything read from the input.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inventory {
    pub resources: Vec<Entry>,
    pub services: Vec<ServiceInfo>,
    pub workloads: Vec<WorkloadInfo>,
    pub namespaces: Vec<NamespaceInfo>,
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn text(v: &Value, ptr: &str) -> Option<String> {
    v.pointer(ptr).and_then(Value::as_str).map(str::to_string)
}

/// Where each workload kind keeps the labels of the pods it makes.
fn pod_labels_pointer(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Pod" => "/metadata/labels",
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => "/spec/template/metadata/labels",
        "CronJob" => "/spec/jobTemplate/spec/template/metadata/labels",
        _ => return None,
    })
}

impl Inventory {
    /// Adds one document. Objects with no namespace land in `default_namespace`, as `kubectl
    /// apply -n` would put them. Kinds Mizzen does not use are ignored.
    pub fn add(
        &mut self,
        doc: &Value,
        default_namespace: &str,
        origin: &str,
    ) -> Result<(), Box<ParseFailure>> {
        let namespace =
            text(doc, "/metadata/namespace").unwrap_or_else(|| default_namespace.to_string());
        let name = text(doc, "/metadata/name").unwrap_or_default();
        let kind = text(doc, "/kind").unwrap_or_default();
        let core = matches!(text(doc, "/apiVersion").as_deref(), Some("v1"));
        if let Some(mut resource) = MeshResource::from_value(doc)? {
            resource.meta_mut().namespace = Some(namespace);
            let object = resource.object_ref(default_namespace);
            self.resources.push(Entry {
                resource,
                object,
                origin: origin.to_string(),
            });
        } else if core && kind == "Service" {
            let ports = doc
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ports| {
                    ports
                        .iter()
                        .filter_map(|p| {
                            Some(ServicePortInfo {
                                port: u32::try_from(p.get("port")?.as_u64()?).ok()?,
                                name: text(p, "/name"),
                                app_protocol: text(p, "/appProtocol"),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            self.services.push(ServiceInfo {
                name,
                namespace,
                selector: string_map(doc.pointer("/spec/selector")),
                ports,
            });
        } else if core && kind == "Namespace" {
            self.namespaces.push(NamespaceInfo {
                name,
                labels: string_map(doc.pointer("/metadata/labels")),
            });
        } else if let Some(ptr) = pod_labels_pointer(&kind) {
            self.workloads.push(WorkloadInfo {
                kind,
                name,
                namespace,
                labels: string_map(doc.pointer(ptr)),
            });
        }
        Ok(())
    }

    pub fn mesh(&self) -> impl Iterator<Item = &Entry> {
        self.resources.iter()
    }
}

/// Istio's host resolution: a short name (no dot) is a Service in `namespace`; anything with a
/// dot is taken as written. Lower-cased, since DNS is.
pub fn fqdn(host: &str, namespace: &str) -> String {
    let host = host.to_ascii_lowercase();
    if host.contains('.') || host.contains('*') {
        host
    } else {
        format!("{host}.{namespace}.svc.{CLUSTER_DOMAIN}")
    }
}

/// Whether `pattern` (a host, `*.suffix` or `*`) covers `host`; both already resolved.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some("") => true,
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => pattern == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_hosts_as_istio() {
        assert_eq!(
            fqdn("reviews", "bookinfo"),
            "reviews.bookinfo.svc.cluster.local"
        );
        assert_eq!(
            fqdn("Reviews.Other.svc.cluster.local", "x"),
            "reviews.other.svc.cluster.local"
        );
        assert_eq!(fqdn("reviews.other", "x"), "reviews.other");
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(host_matches("*", "anything"));
        assert!(!host_matches("a.com", "b.com"));
    }

    #[test]
    fn reads_services_workloads_and_namespaces() {
        let docs = crate::document::parse_stream(
            "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec:\n  selector: {app: reviews}\n  ports: [{port: 9080, name: http}]\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: reviews-v1, namespace: shop}\nspec:\n  template:\n    metadata:\n      labels: {app: reviews, version: v1}\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {istio-injection: enabled}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: ignored}\n",
        )
        .unwrap();
        let mut inv = Inventory::default();
        for d in &docs {
            inv.add(d, "default", "test").unwrap();
        }
        assert_eq!(inv.services[0].fqdn(), "reviews.default.svc.cluster.local");
        assert_eq!(inv.services[0].ports[0].port, 9080);
        assert_eq!(inv.workloads[0].labels["version"], "v1");
        assert_eq!(inv.workloads[0].namespace, "shop");
        assert_eq!(inv.namespaces[0].labels["istio-injection"], "enabled");
    }
}
