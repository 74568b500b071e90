//! Writing the render to the cluster: the `mizzen-proxy-config` and `mizzen-ca-root-cert`
//! ConfigMaps of every meshed namespace. What to write is worked out by pure functions
//! ([`desired_config_maps`], [`plan`]); [`ConfigMapWriter`] only carries it out, with server-side
//! apply under one field manager.
//!
//! A proxy config is stored as text under `data` or, when large, gzip-compressed under
//! `binaryData` (see [`mizzen_proxy_config::payload`]); each apply sets exactly one of the two.
//! Server-side apply removes the fields a manager owned and no longer sets, so a config that
//! moves between them does not leave its old copy behind (the API server would refuse a key
//! present in both).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use mizzen_proxy_config::payload::Payload;

use crate::{
    index::Index,
    render::{Rendered, RenderedConfig},
};

pub const FIELD_MANAGER: &str = "mizzen-operator";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "mizzen";
pub const HASH_ANNOTATION: &str = "mizzen.io/config-hash";
pub const TRUST_BUNDLE_NAME: &str = "mizzen-ca-root-cert";
pub const TRUST_BUNDLE_KEY: &str = "root-cert.pem";

/// What a ConfigMap holds: text, or a rendered config whose stored form is built only when the
/// ConfigMap is actually written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    Text(String),
    Config(RenderedConfig),
}

impl Content {
    pub fn payload(&self) -> Payload {
        match self {
            Self::Text(t) => Payload::Text(t.clone()),
            Self::Config(c) => c.payload(),
        }
    }
}

/// A ConfigMap to apply: name, namespace, key, content and its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub namespace: String,
    pub name: &'static str,
    pub key: &'static str,
    pub data: Content,
    pub hash: String,
    /// The Namespace's uid, so deleting the namespace deletes the ConfigMap.
    pub owner_uid: String,
}

impl Desired {
    pub fn to_config_map(&self) -> ConfigMap {
        let owner = (!self.owner_uid.is_empty()).then(|| {
            vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Namespace".into(),
                name: self.namespace.clone(),
                uid: self.owner_uid.clone(),
                controller: None,
                block_owner_deletion: None,
            }]
        });
        let key = self.key.to_string();
        let (data, binary_data) = match self.data.payload() {
            Payload::Text(text) => (Some([(key, text)].into()), None),
            Payload::Gzip(bytes) => (None, Some([(key, ByteString(bytes))].into())),
        };
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.into()),
                namespace: Some(self.namespace.clone()),
                labels: Some([(MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string())].into()),
                annotations: Some([(HASH_ANNOTATION.to_string(), self.hash.clone())].into()),
                owner_references: owner,
                ..ObjectMeta::default()
            },
            data,
            binary_data,
            ..ConfigMap::default()
        }
    }
}

/// The proxy-config ConfigMap of every namespace that has a config, and the gateway-config
/// ConfigMap of every gateway namespace that has one (same key, same payload rules).
pub fn desired_config_maps(rendered: &Rendered, index: &Index) -> Vec<Desired> {
    let sidecars = rendered
        .configs
        .iter()
        .map(|c| (mizzen_proxy_config::CONFIG_MAP_NAME, c));
    let gateways = rendered
        .gateway_configs
        .iter()
        .map(|c| (mizzen_proxy_config::GATEWAY_CONFIG_MAP_NAME, c));
    sidecars
        .chain(gateways)
        .map(|(name, (ns, c))| Desired {
            namespace: ns.clone(),
            name,
            key: mizzen_proxy_config::CONFIG_MAP_KEY,
            data: Content::Config(c.clone()),
            hash: c.hash.clone(),
            owner_uid: index
                .namespace(ns)
                .map(|n| n.uid.clone())
                .unwrap_or_default(),
        })
        .collect()
}

/// The trust bundle ConfigMap of every meshed namespace and every gateway namespace (the
/// gateway verifies the mesh's servers with it), when a root certificate exists.
pub fn desired_trust_bundles(
    rendered: &Rendered,
    index: &Index,
    root_pem: Option<&str>,
) -> Vec<Desired> {
    let Some(pem) = root_pem else {
        return Vec::new();
    };
    let hash = crate::hash::Fnv64::of(pem.as_bytes());
    // The root namespace too: the node agents read the roots there, and it is never meshed.
    let root = index.root_namespace().to_string();
    let mut namespaces: Vec<&String> = rendered.meshed.iter().collect();
    for ns in rendered
        .gateway_configs
        .keys()
        .chain(std::iter::once(&root))
    {
        if !namespaces.contains(&ns) {
            namespaces.push(ns);
        }
    }
    namespaces
        .into_iter()
        .map(|ns| Desired {
            namespace: ns.clone(),
            name: TRUST_BUNDLE_NAME,
            key: TRUST_BUNDLE_KEY,
            data: Content::Text(pem.to_string()),
            hash: format!("{hash:016x}"),
            owner_uid: index
                .namespace(ns)
                .map(|n| n.uid.clone())
                .unwrap_or_default(),
        })
        .collect()
}

/// What the writer must do, given the managed ConfigMaps that exist (`(namespace, name)` to
/// their hash annotation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub apply: Vec<Desired>,
    /// `(namespace, name)` of ConfigMaps to delete.
    pub delete: Vec<(String, String)>,
    pub unchanged: usize,
}

/// Applies what differs, deletes ours in namespaces that are no longer meshed. A meshed
/// namespace whose config was refused (too large) keeps its last good ConfigMap. A gateway
/// config is never deleted here: gateway namespaces come from the operator's flags, and a
/// refused one keeps serving its last good config.
pub fn plan(
    desired: Vec<Desired>,
    existing: &BTreeMap<(String, String), Option<String>>,
    meshed: &BTreeSet<String>,
) -> Plan {
    let mut out = Plan::default();
    let wanted: BTreeSet<(String, String)> = desired
        .iter()
        .map(|d| (d.namespace.clone(), d.name.to_string()))
        .collect();
    for d in desired {
        let key = (d.namespace.clone(), d.name.to_string());
        if existing.get(&key).and_then(Option::as_deref) == Some(d.hash.as_str()) {
            out.unchanged += 1;
        } else {
            out.apply.push(d);
        }
    }
    for (ns, name) in existing.keys() {
        let ours = name == mizzen_proxy_config::CONFIG_MAP_NAME || name == TRUST_BUNDLE_NAME;
        // A meshed namespace whose config was refused keeps its last good one; the root
        // namespace keeps the trust bundle it is given although it is not meshed.
        let keep = meshed.contains(ns) || wanted.contains(&(ns.clone(), name.clone()));
        if ours && !keep {
            out.delete.push((ns.clone(), name.clone()));
        }
    }
    out
}

/// Errors talking to the API server.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("listing managed ConfigMaps: {0}")]
    List(#[source] kube::Error),
    #[error("applying ConfigMap {namespace}/{name}: {source}")]
    Apply {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting ConfigMap {namespace}/{name}: {source}")]
    Delete {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading Secret {name}: {source}")]
    Secret {
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl ApplyError {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::List(_) => "list_configmaps",
            Self::Apply { .. } => "apply_configmap",
            Self::Delete { .. } => "delete_configmap",
            Self::Secret { .. } => "read_secret",
        }
    }
}

/// What one sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub applied: usize,
    pub deleted: usize,
    pub unchanged: usize,
}

/// Carries out plans against the API server.
#[derive(Clone)]
pub struct ConfigMapWriter {
    client: Client,
}

impl ConfigMapWriter {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The ConfigMaps labelled as ours, with their hash annotation.
    pub async fn existing(&self) -> Result<BTreeMap<(String, String), Option<String>>, ApplyError> {
        let api: Api<ConfigMap> = Api::all(self.client.clone());
        let lp = ListParams::default().labels(&format!("{MANAGED_BY}={MANAGED_BY_VALUE}"));
        let list = api.list_metadata(&lp).await.map_err(ApplyError::List)?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|cm| {
                let m = cm.metadata;
                let hash = m
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(HASH_ANNOTATION).cloned());
                Some(((m.namespace?, m.name?), hash))
            })
            .collect())
    }

    /// Reads the trust bundle: Secret `cacerts` (`root-cert.pem`), else `mizzen-ca`
    /// (`roots.pem`, else `ca.crt`), in `namespace`; the choice is
    /// [`crate::ca::secret::trust_bundle_pem`]. `None` when neither exists yet.
    pub async fn root_certificate(&self, namespace: &str) -> Result<Option<String>, ApplyError> {
        use crate::ca::secret::{PLUGIN_SECRET_NAME, SECRET_NAME, data_of, trust_bundle_pem};
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let read = |name: &'static str| {
            let api = api.clone();
            async move {
                let secret = api
                    .get_opt(name)
                    .await
                    .map_err(|source| ApplyError::Secret {
                        name: name.into(),
                        source,
                    })?;
                Ok::<_, ApplyError>(secret.as_ref().map(data_of))
            }
        };
        if let Some(pem) = trust_bundle_pem(read(PLUGIN_SECRET_NAME).await?.as_ref(), None) {
            return Ok(Some(pem));
        }
        Ok(trust_bundle_pem(None, read(SECRET_NAME).await?.as_ref()))
    }

    pub async fn execute(&self, plan: &Plan) -> Result<SyncReport, ApplyError> {
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        for d in &plan.apply {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &d.namespace);
            // Server-side apply needs the type in the body.
            let mut body = serde_json::to_value(d.to_config_map()).expect("ConfigMaps serialise");
            body["apiVersion"] = "v1".into();
            body["kind"] = "ConfigMap".into();
            api.patch(d.name, &pp, &Patch::Apply(&body))
                .await
                .map_err(|source| ApplyError::Apply {
                    namespace: d.namespace.clone(),
                    name: d.name.into(),
                    source,
                })?;
        }
        for (ns, name) in &plan.delete {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => {
                    return Err(ApplyError::Delete {
                        namespace: ns.clone(),
                        name: name.clone(),
                        source,
                    });
                }
            }
        }
        Ok(SyncReport {
            applied: plan.apply.len(),
            deleted: plan.delete.len(),
            unchanged: plan.unchanged,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(ns: &str, hash: &str) -> Desired {
        Desired {
            namespace: ns.into(),
            name: mizzen_proxy_config::CONFIG_MAP_NAME,
            key: "config.json",
            data: Content::Text("{}".into()),
            hash: hash.into(),
            owner_uid: "uid-1".into(),
        }
    }

    #[test]
    fn plans_only_what_changed() {
        let existing: BTreeMap<_, _> = [
            (
                ("a".to_string(), "mizzen-proxy-config".to_string()),
                Some("h1".to_string()),
            ),
            (
                ("b".to_string(), "mizzen-proxy-config".to_string()),
                Some("old".to_string()),
            ),
            (
                ("gone".to_string(), "mizzen-proxy-config".to_string()),
                Some("x".to_string()),
            ),
            (
                ("gone".to_string(), "mizzen-ca-root-cert".to_string()),
                None,
            ),
        ]
        .into();
        let meshed: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
        let p = plan(
            vec![desired("a", "h1"), desired("b", "h2"), desired("c", "h3")],
            &existing,
            &meshed,
        );
        assert_eq!(p.unchanged, 1);
        assert_eq!(
            p.apply
                .iter()
                .map(|d| d.namespace.as_str())
                .collect::<Vec<_>>(),
            ["b", "c"]
        );
        assert_eq!(p.delete.len(), 2);
        assert!(p.delete.iter().all(|(ns, _)| ns == "gone"));
    }

    #[test]
    fn config_maps_carry_label_hash_and_owner() {
        let cm = desired("a", "h1").to_config_map();
        assert_eq!(cm.metadata.labels.unwrap()[MANAGED_BY], "mizzen");
        assert_eq!(cm.metadata.annotations.unwrap()[HASH_ANNOTATION], "h1");
        let owner = &cm.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Namespace", "uid-1")
        );
        assert_eq!(cm.data.unwrap()["config.json"], "{}");
    }
}
