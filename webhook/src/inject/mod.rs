//! Sidecar injection as one pure function over a pod's JSON: [`inject`]. The admission handler,
//! `mizzenctl inject` and the tests all call it. It never goes through typed structs, so fields
//! this code does not know (newer Kubernetes, other controllers) pass through untouched; the JSON
//! patch an admission answer carries is the difference between its input and its output.
//!
//! What is added, and every name the proxy and the agent rely on, is in [`contract`] and
//! `docs/injection.md`.

pub mod annotations;
pub mod contract;
pub mod probes;
pub mod quantity;
pub mod sidecar;
pub mod workload;

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value, json};

use self::{
    annotations::{PodOptions, meta_value},
    contract::keys,
};

/// The registry and organisation of the default proxy image (as `mizzenctl install`).
pub const DEFAULT_HUB: &str = "ghcr.io/mizzen-mesh";

/// Cluster-wide injection settings (the webhook's flags; `mizzenctl inject`'s flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectSettings {
    /// Image of both the init container and the proxy.
    pub proxy_image: String,
    /// The proxy as a native sidecar (Kubernetes 1.29 and later); otherwise the first regular
    /// container, holding the application until it is ready.
    pub native_sidecar: bool,
    /// The proxy's resources when the pod's annotations do not set them.
    pub resources: annotations::Resources,
    /// Namespaces whose pods are never injected.
    pub excluded_namespaces: Vec<String>,
    /// Recorded in the status annotation.
    pub revision: String,
}

impl Default for InjectSettings {
    fn default() -> Self {
        Self {
            proxy_image: format!("{DEFAULT_HUB}/mizzen-proxy:{}", env!("CARGO_PKG_VERSION")),
            native_sidecar: true,
            resources: annotations::Resources {
                cpu_request: "10m".into(),
                memory_request: "40Mi".into(),
                cpu_limit: "2000m".into(),
                memory_limit: "256Mi".into(),
            },
            excluded_namespaces: vec!["mizzen-system".into(), "kube-system".into()],
            revision: contract::DEFAULT_REVISION.into(),
        }
    }
}

/// The result of [`inject`]: the pod as it should be, and whether anything was added.
#[derive(Clone, Debug, PartialEq)]
pub struct Injection {
    pub pod: Value,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    /// The pod is returned exactly as given.
    Skipped(Skip),
}

/// Why a pod was left alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// It carries `sidecar.istio.io/status`: injection already happened.
    AlreadyInjected,
    /// `sidecar.istio.io/inject: "false"` as a label.
    OptedOutByLabel,
    /// `sidecar.istio.io/inject: "false"` as an annotation.
    OptedOutByAnnotation,
    /// `spec.hostNetwork: true`: iptables would redirect the node's traffic.
    HostNetwork,
    /// A namespace of [`InjectSettings::excluded_namespaces`].
    ExcludedNamespace(String),
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyInjected => write!(f, "already injected ({} is set)", keys::STATUS),
            Self::OptedOutByLabel => write!(f, "opted out by the label {}=false", keys::INJECT),
            Self::OptedOutByAnnotation => {
                write!(f, "opted out by the annotation {}=false", keys::INJECT)
            }
            Self::HostNetwork => f.write_str("uses the host network"),
            Self::ExcludedNamespace(ns) => write!(f, "namespace {ns} is never injected"),
        }
    }
}

/// Why a pod that should be injected cannot be.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error("a pod must be a JSON object")]
    NotAnObject,
    #[error("annotation {key}: {value:?}: {reason}")]
    InvalidAnnotation {
        key: String,
        value: String,
        reason: String,
    },
    #[error("{path}: {message}")]
    InvalidPod { path: String, message: String },
    #[error("{path}: the pod already has a {what} named {name}, which injection would add")]
    NameConflict {
        path: String,
        what: &'static str,
        name: String,
    },
    #[error("injection settings: {0}")]
    Settings(String),
}

fn invalid_pod(path: &str, message: &str) -> InjectError {
    InjectError::InvalidPod {
        path: path.to_string(),
        message: message.to_string(),
    }
}

/// What the `sidecar.istio.io/status` annotation records.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SidecarStatus<'a> {
    init_containers: Vec<&'a str>,
    containers: Vec<&'a str>,
    volumes: Vec<&'a str>,
    revision: &'a str,
}

/// Why `pod` (in `namespace`) is not to be injected, if it is not.
pub fn skip_reason(pod: &Value, namespace: &str, settings: &InjectSettings) -> Option<Skip> {
    let meta = pod.get("metadata");
    let labels = meta
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object);
    let annotations = meta
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object);
    let opted_out =
        |map| meta_value(map, keys::INJECT).is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));
    if annotations.is_some_and(|a| a.contains_key(keys::STATUS)) {
        Some(Skip::AlreadyInjected)
    } else if opted_out(labels) {
        Some(Skip::OptedOutByLabel)
    } else if opted_out(annotations) {
        Some(Skip::OptedOutByAnnotation)
    } else if pod.pointer("/spec/hostNetwork") == Some(&Value::Bool(true)) {
        Some(Skip::HostNetwork)
    } else if settings.excluded_namespaces.iter().any(|n| n == namespace) {
        Some(Skip::ExcludedNamespace(namespace.to_string()))
    } else {
        None
    }
}

/// Injects the sidecar into `pod`, a Pod or a pod template (any object with `metadata` and
/// `spec`), created in `namespace`. Returns the pod unchanged when it is not to be injected
/// ([`Skip`]), and an error when its annotations or spec make injection impossible.
pub fn inject(
    pod: &Value,
    namespace: &str,
    settings: &InjectSettings,
) -> Result<Injection, InjectError> {
    if !pod.is_object() {
        return Err(InjectError::NotAnObject);
    }
    if let Some(skip) = skip_reason(pod, namespace, settings) {
        return Ok(Injection {
            pod: pod.clone(),
            outcome: Outcome::Skipped(skip),
        });
    }
    let options = PodOptions::read(
        pod.pointer("/metadata/annotations")
            .and_then(Value::as_object),
        settings,
    )?
    .located(pod.pointer("/metadata/labels").and_then(Value::as_object));

    let mut out = pod.clone();
    let root = out.as_object_mut().expect("checked above");
    let spec = root
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| invalid_pod("spec", "a pod needs a spec"))?;

    // The lists injection adds to, checked before anything changes.
    let containers = list(spec, "containers")?;
    if containers.is_empty() {
        return Err(invalid_pod(
            "spec.containers",
            "a pod needs at least one container",
        ));
    }
    let init_containers = list(spec, "initContainers")?;
    let volumes = list(spec, "volumes")?;
    for (field, what, items, ours) in [
        (
            "containers",
            "container",
            &containers,
            &[contract::INIT_CONTAINER, contract::PROXY_CONTAINER][..],
        ),
        (
            "initContainers",
            "container",
            &init_containers,
            &[contract::INIT_CONTAINER, contract::PROXY_CONTAINER][..],
        ),
        ("volumes", "volume", &volumes, &contract::VOLUMES[..]),
    ] {
        for (i, item) in items.iter().enumerate() {
            if let Some(name) = item.get("name").and_then(Value::as_str)
                && ours.contains(&name)
            {
                return Err(InjectError::NameConflict {
                    path: format!("spec.{field}[{i}].name"),
                    what,
                    name: name.to_string(),
                });
            }
        }
    }
    let first_app = containers[0]
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string);

    let mut containers = containers;
    let app_probes = if options.rewrite_probes {
        let carried = probes::rewrite(&mut containers);
        (!carried.is_empty())
            .then(|| serde_json::to_string(&carried).expect("probes always serialise"))
    } else {
        None
    };

    let init = sidecar::init_container(&options, settings);
    let proxy = sidecar::proxy_container(&options, settings, app_probes);
    let mut new_init = vec![init];
    let mut new_containers = Vec::with_capacity(containers.len() + 1);
    if settings.native_sidecar {
        new_init.push(proxy);
    } else {
        new_containers.push(proxy);
    }
    new_init.extend(init_containers);
    new_containers.extend(containers);
    let mut new_volumes = volumes;
    new_volumes.extend(sidecar::volumes());
    spec.insert("initContainers".into(), Value::Array(new_init));
    spec.insert("containers".into(), Value::Array(new_containers));
    spec.insert("volumes".into(), Value::Array(new_volumes));

    // Metadata: the status record, the default container, Istio's labels.
    let meta = object_at(root, "metadata", "metadata")?;
    let workload = workload_name(meta);
    let labels = object_at(meta, "labels", "metadata.labels")?;
    let label = |labels: &Map<String, Value>, key: &str| meta_value(Some(labels), key);
    if !labels.contains_key(keys::TLS_MODE) {
        labels.insert(keys::TLS_MODE.into(), json!(keys::TLS_MODE_ISTIO));
    }
    if !labels.contains_key(keys::CANONICAL_NAME)
        && let Some(name) = label(labels, keys::APP_NAME)
            .or_else(|| label(labels, keys::APP))
            .or(workload)
    {
        labels.insert(keys::CANONICAL_NAME.into(), json!(name));
    }
    if !labels.contains_key(keys::CANONICAL_REVISION) {
        let revision = label(labels, keys::APP_VERSION)
            .or_else(|| label(labels, keys::VERSION))
            .unwrap_or_else(|| "latest".to_string());
        labels.insert(keys::CANONICAL_REVISION.into(), json!(revision));
    }

    let (init_names, container_names) = if settings.native_sidecar {
        (
            vec![contract::INIT_CONTAINER, contract::PROXY_CONTAINER],
            vec![],
        )
    } else {
        (
            vec![contract::INIT_CONTAINER],
            vec![contract::PROXY_CONTAINER],
        )
    };
    let status = SidecarStatus {
        init_containers: init_names,
        containers: container_names,
        volumes: contract::VOLUMES.to_vec(),
        revision: &settings.revision,
    };
    let annotations = object_at(meta, "annotations", "metadata.annotations")?;
    annotations.insert(
        keys::STATUS.into(),
        json!(serde_json::to_string(&status).expect("status always serialises")),
    );
    if let Some(first) = first_app
        && !annotations.contains_key(keys::DEFAULT_CONTAINER)
    {
        annotations.insert(keys::DEFAULT_CONTAINER.into(), json!(first));
    }

    Ok(Injection {
        pod: out,
        outcome: Outcome::Injected,
    })
}

/// The array `spec.<field>` (empty when absent or null), taken out of `spec`.
fn list(spec: &mut Map<String, Value>, field: &str) -> Result<Vec<Value>, InjectError> {
    match spec.remove(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(invalid_pod(&format!("spec.{field}"), "must be a list")),
    }
}

/// The object at `key` in `map` (whose path is `path`), created when absent or null.
fn object_at<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a mut Map<String, Value>, InjectError> {
    let slot = map
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
        .ok_or_else(|| invalid_pod(path, "must be an object"))
}

/// The name of the workload that created the pod, as far as the pod itself tells: a pod of a
/// ReplicaSet `<deployment>-<hash>` belongs to `<deployment>`; otherwise its `generateName`
/// without the final `-`, or its name.
fn workload_name(meta: &Map<String, Value>) -> Option<String> {
    let text = |key: &str| {
        meta.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(generate) = text("generateName") {
        let base = generate.trim_end_matches('-');
        let owned_by_replicaset = meta
            .get("ownerReferences")
            .and_then(Value::as_array)
            .is_some_and(|refs| {
                refs.iter()
                    .any(|r| r.get("kind").and_then(Value::as_str) == Some("ReplicaSet"))
            });
        if owned_by_replicaset && let Some((deployment, _hash)) = base.rsplit_once('-') {
            return Some(deployment.to_string());
        }
        return Some(base.to_string()).filter(|s| !s.is_empty());
    }
    text("name").map(str::to_string)
}

#[cfg(test)]
mod tests;
