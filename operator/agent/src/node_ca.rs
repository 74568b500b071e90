//! The agent's own signing CA: a per-node intermediate that the operator signs through the
//! Kubernetes CertificateSigningRequest API, renewed before half its lifetime, and the mesh roots
//! it chains to, read from the `mizzen-ca-root-cert` ConfigMap.
//!
//! [`keep_node_ca`] is the renewal loop, written against [`NodeCaSigner`] so tests run it with a
//! signer that holds a root in memory; [`KubeNodeCaSigner`] is the cluster shell (create the CSR
//! object, watch it until `status.certificate` appears). The current [`Authority`] is published on
//! a watch channel: the workload API signs with whatever it holds at that moment, and a new
//! intermediate never invalidates certificates already handed out (they carry their own chain).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::runtime::watcher;
use mizzen_ca::{Authority, node_ca_request};
use mizzen_identity::{RefreshPolicy, TrustBundle};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// The signer name the operator approves and signs node intermediates for.
pub const SIGNER_NAME: &str = "mizzen.io/node-ca";
/// The ConfigMap (in the control-plane namespace) that carries the mesh roots.
pub const ROOT_CONFIG_MAP: &str = "mizzen-ca-root-cert";
/// Its key holding the PEM roots.
pub const ROOT_CERT_KEY: &str = "root-cert.pem";
/// The shortest `expirationSeconds` the API server accepts.
pub const MIN_EXPIRATION: Duration = Duration::from_secs(600);

/// The latest authority, or `None` until the first intermediate arrives.
pub type AuthorityRx = watch::Receiver<Option<Arc<Authority>>>;

/// Why a node intermediate could not be had.
#[derive(Debug, thiserror::Error)]
pub enum NodeCaError {
    #[error("making the node CA key and CSR: {0}")]
    Request(#[from] mizzen_ca::node::NodeCaRequestError),
    #[error("creating CertificateSigningRequest {name}: {reason}")]
    Create { name: String, reason: String },
    #[error("CertificateSigningRequest {name} was {condition}: {message}")]
    Refused {
        name: String,
        condition: String,
        message: String,
    },
    #[error("waiting for CertificateSigningRequest {name} to be signed: {reason}")]
    Wait { name: String, reason: String },
    #[error("the signed node CA is unusable: {0}")]
    Authority(#[from] mizzen_ca::CaError),
}

/// Signs the agent's node CA request; returns the chain PEM (node CA first).
pub trait NodeCaSigner: Send + Sync + 'static {
    fn sign<'a>(
        &'a self,
        node: &'a str,
        csr_pem: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<String, NodeCaError>>;
}

/// Settings of the renewal loop.
#[derive(Clone, Debug)]
pub struct NodeCaSettings {
    pub node: String,
    /// The lifetime asked for (the operator may give less).
    pub ttl: Duration,
    pub policy: RefreshPolicy,
}

/// One new intermediate: key + CSR, signed, checked against `roots`.
pub async fn obtain(
    signer: &dyn NodeCaSigner,
    settings: &NodeCaSettings,
    roots: &TrustBundle,
) -> Result<Authority, NodeCaError> {
    let request = node_ca_request(&settings.node)?;
    let chain = signer
        .sign(&settings.node, &request.csr_pem, settings.ttl)
        .await?;
    Ok(Authority::from_node_ca(&chain, request.key, roots.clone())?)
}

/// Keeps `out` holding a valid node authority: obtains one as soon as roots are known, renews
/// it inside the refresh window, and again whenever the roots change (a root rotation gets an
/// intermediate signed by the new root, and the workload streams push the new bundle). A failed
/// attempt backs off and leaves the current authority in place. Runs until `out` has no
/// receivers.
pub async fn keep_node_ca(
    signer: Arc<dyn NodeCaSigner>,
    settings: NodeCaSettings,
    mut roots: watch::Receiver<Option<TrustBundle>>,
    out: watch::Sender<Option<Arc<Authority>>>,
    metrics: Metrics,
) {
    let mut failures = 0u32;
    loop {
        let bundle = match roots.wait_for(Option::is_some).await {
            Ok(bundle) => bundle.clone(),
            Err(_) => return,
        };
        let Some(bundle) = bundle else { continue };
        roots.mark_unchanged();
        let now = SystemTime::now();
        let next = match obtain(signer.as_ref(), &settings, &bundle).await {
            Ok(authority) => {
                failures = 0;
                let validity = authority.validity();
                metrics.node_ca_renewed(validity.not_after);
                tracing::info!(
                    node = %settings.node,
                    not_after = ?validity.not_after,
                    "node CA in place"
                );
                out.send_replace(Some(Arc::new(authority)));
                settings
                    .policy
                    .renew_at(now, validity.not_after, rand::random())
            }
            Err(e) => {
                metrics.node_ca_failed();
                let not_after = out
                    .borrow()
                    .as_ref()
                    .map_or(now, |a| a.validity().not_after);
                let at = settings
                    .policy
                    .retry_at(failures, now, not_after, rand::random());
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, retry_in = ?at.duration_since(now).unwrap_or_default(), "node CA request failed");
                at
            }
        };
        let sleep = next.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            changed = roots.changed() => {
                if changed.is_err() { return; }
                tracing::info!("mesh roots changed; renewing the node CA");
            }
            _ = out.closed() => return,
        }
    }
}

/// The CSR object the agent creates for `node`'s intermediate: named
/// `mizzen-node-ca-<node>-<suffix>`, signer [`SIGNER_NAME`], usages digital signature and cert
/// sign, asking for `ttl` (at least [`MIN_EXPIRATION`]).
pub fn csr_object(
    node: &str,
    csr_pem: &str,
    ttl: Duration,
    suffix: &str,
) -> CertificateSigningRequest {
    // Object names are at most 253 characters; a long node name is cut, the suffix kept.
    let budget = 253usize.saturating_sub("mizzen-node-ca-".len() + 1 + suffix.len());
    let node_part = truncated(node, budget);
    let expiration = ttl.max(MIN_EXPIRATION).as_secs().min(i32::MAX as u64) as i32;
    CertificateSigningRequest {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("mizzen-node-ca-{node_part}-{suffix}")),
            labels: Some(
                [
                    (
                        "app.kubernetes.io/managed-by".to_string(),
                        "mizzen".to_string(),
                    ),
                    ("mizzen.io/node".to_string(), node_label(node)),
                ]
                .into(),
            ),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(csr_pem.as_bytes().to_vec()),
            signer_name: SIGNER_NAME.into(),
            usages: Some(vec!["digital signature".into(), "cert sign".into()]),
            expiration_seconds: Some(expiration),
            ..Default::default()
        },
        status: None,
    }
}

/// A label value holds at most 63 characters; node names are longer at times.
fn node_label(node: &str) -> String {
    truncated(node, 63)
}

/// The first `max` characters of `name`, without a trailing `-` or `.` (names must end with an
/// alphanumeric character).
fn truncated(name: &str, max: usize) -> String {
    let cut: String = name.chars().take(max).collect();
    cut.trim_end_matches(['-', '.']).to_string()
}

/// What a CSR's status says: signed (chain PEM), refused (condition and message), or pending.
pub fn csr_outcome(csr: &CertificateSigningRequest) -> Option<Result<String, (String, String)>> {
    let status = csr.status.as_ref()?;
    if let Some(refusal) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True")
    {
        return Some(Err((
            refusal.type_.to_lowercase(),
            refusal.message.clone().unwrap_or_default(),
        )));
    }
    let cert = status.certificate.as_ref().filter(|c| !c.0.is_empty())?;
    Some(Ok(String::from_utf8_lossy(&cert.0).into_owned()))
}

/// Node intermediates through the CertificateSigningRequest API.
#[derive(Clone)]
pub struct KubeNodeCaSigner {
    pub client: kube::Client,
    /// How long to wait for the operator to sign.
    pub timeout: Duration,
}

impl NodeCaSigner for KubeNodeCaSigner {
    fn sign<'a>(
        &'a self,
        node: &'a str,
        csr_pem: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<String, NodeCaError>> {
        Box::pin(async move {
            let suffix = format!("{:08x}", rand::random::<u32>());
            let object = csr_object(node, csr_pem, ttl, &suffix);
            let name = object.metadata.name.clone().unwrap_or_default();
            let api: kube::Api<CertificateSigningRequest> = kube::Api::all(self.client.clone());
            api.create(&PostParams::default(), &object)
                .await
                .map_err(|e| NodeCaError::Create {
                    name: name.clone(),
                    reason: e.to_string(),
                })?;
            let done =
                |csr: Option<&CertificateSigningRequest>| csr.and_then(csr_outcome).is_some();
            let wait = kube::runtime::wait::await_condition(api, &name, done);
            let csr = tokio::time::timeout(self.timeout, wait)
                .await
                .map_err(|_| NodeCaError::Wait {
                    name: name.clone(),
                    reason: format!("not signed within {:?}", self.timeout),
                })?
                .map_err(|e| NodeCaError::Wait {
                    name: name.clone(),
                    reason: e.to_string(),
                })?;
            match csr.as_ref().and_then(csr_outcome) {
                Some(Ok(chain)) => Ok(chain),
                Some(Err((condition, message))) => Err(NodeCaError::Refused {
                    name,
                    condition,
                    message,
                }),
                None => Err(NodeCaError::Wait {
                    name,
                    reason: "the object was deleted".into(),
                }),
            }
        })
    }
}

/// Why a roots ConfigMap is unusable.
#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    #[error("ConfigMap {ROOT_CONFIG_MAP} has no `{ROOT_CERT_KEY}` key")]
    Missing,
    #[error("ConfigMap {ROOT_CONFIG_MAP} `{ROOT_CERT_KEY}`: {0}")]
    Bundle(#[from] mizzen_identity::bundle::BundleError),
}

/// The roots in the ConfigMap.
pub fn bundle_of(config_map: &ConfigMap) -> Result<TrustBundle, RootsError> {
    let pem = config_map
        .data
        .as_ref()
        .and_then(|d| d.get(ROOT_CERT_KEY))
        .ok_or(RootsError::Missing)?;
    Ok(TrustBundle::from_pem(pem)?)
}

/// Whether two bundles hold the same roots.
pub fn same_roots(a: &TrustBundle, b: &TrustBundle) -> bool {
    a.roots() == b.roots()
}

/// Keeps `out` holding the roots from the `mizzen-ca-root-cert` ConfigMap in `namespace`; an
/// unusable or deleted ConfigMap is logged and the last good roots are kept.
pub async fn watch_roots(
    client: kube::Client,
    namespace: String,
    out: watch::Sender<Option<TrustBundle>>,
) {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={ROOT_CONFIG_MAP}"));
    let stream = kube::runtime::WatchStreamExt::default_backoff(watcher(api, config));
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let cm = match event {
            Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => cm,
            Ok(watcher::Event::Delete(_)) => {
                tracing::warn!(namespace = %namespace, "{ROOT_CONFIG_MAP} deleted; keeping the last roots");
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "watching {ROOT_CONFIG_MAP}");
                continue;
            }
        };
        match bundle_of(&cm) {
            Ok(bundle) => {
                out.send_if_modified(|current| match current {
                    Some(old) if same_roots(old, &bundle) => false,
                    _ => {
                        tracing::info!(roots = bundle.len(), "mesh roots loaded");
                        *current = Some(bundle);
                        true
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "keeping the last good roots"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_object_shape() {
        let csr = csr_object("node-1", "PEM", Duration::from_secs(3600), "abcd1234");
        let json = serde_json::to_value(&csr).unwrap();
        assert_eq!(json["metadata"]["name"], "mizzen-node-ca-node-1-abcd1234");
        assert_eq!(json["spec"]["signerName"], "mizzen.io/node-ca");
        assert_eq!(
            json["spec"]["usages"],
            serde_json::json!(["digital signature", "cert sign"])
        );
        assert_eq!(json["spec"]["expirationSeconds"], 3600);
        // The request travels base64-encoded, as ByteString serializes it.
        assert_eq!(json["spec"]["request"], "UEVN");
        // Lifetimes under the API minimum are raised to it.
        let short = csr_object("n", "PEM", Duration::from_secs(2), "x");
        assert_eq!(short.spec.expiration_seconds, Some(600));
        let long = csr_object(
            &"a".repeat(253),
            "PEM",
            Duration::from_secs(3600),
            "abcd1234",
        );
        assert_eq!(long.metadata.name.unwrap().len(), 253);
    }

    #[test]
    fn csr_status_is_read() {
        let mut csr = csr_object("n", "PEM", Duration::from_secs(600), "x");
        assert_eq!(csr_outcome(&csr), None);
        csr.status =
            serde_json::from_value(serde_json::json!({"certificate": "Q0VSVA=="})).unwrap();
        assert_eq!(csr_outcome(&csr), Some(Ok("CERT".into())));
        csr.status = serde_json::from_value(serde_json::json!({"conditions": [
            {"type": "Denied", "status": "True", "message": "node n2 is not the requester's node"}
        ]}))
        .unwrap();
        assert_eq!(
            csr_outcome(&csr),
            Some(Err((
                "denied".into(),
                "node n2 is not the requester's node".into()
            )))
        );
    }

    #[test]
    fn roots_come_from_the_config_map() {
        let root = mizzen_ca::RootCa::generate("cluster.local", Duration::from_secs(3600)).unwrap();
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": ROOT_CONFIG_MAP},
            "data": {ROOT_CERT_KEY: root.cert_pem()}
        }))
        .unwrap();
        let bundle = bundle_of(&cm).unwrap();
        assert_eq!(bundle.roots(), std::slice::from_ref(root.cert_der()));
        let empty: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {}})).unwrap();
        assert!(matches!(bundle_of(&empty), Err(RootsError::Missing)));
    }
}
