//! The CertificateSigningRequest signer `mizzen.io/node-ca`: approves and signs a node agent's
//! request for its per-node intermediate CA, and denies every other request for that signer.
//!
//! [`decide`] is the whole rule, pure: the requester must be the agent's service account, the
//! API server must have recorded the node its pod-bound token belongs to
//! (`spec.extra["authentication.kubernetes.io/node-name"]`, Kubernetes 1.30+), and the CSR's
//! subject must name that same node, so an agent can only get a CA for the node it runs on. The
//! shell ([`run`]) watches only this signer's requests, and only while leading: it approves
//! through `/approval` and writes the chain through `/status` (both `update`, as the RBAC grants),
//! with the `resourceVersion` it read, so two operators never both act on one request.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::{
    ByteString,
    api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestCondition},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::PostParams,
    runtime::{WatchStreamExt, watcher},
};
use mizzen_ca::node::NodeCaError;
use mizzen_ca::{Authority, DEFAULT_NODE_CA_TTL};
use tokio::sync::watch;
use x509_parser::prelude::{FromDer, X509CertificationRequest};

use super::keeper::AuthorityRx;

/// The signer this module serves.
pub const SIGNER_NAME: &str = "mizzen.io/node-ca";
/// Where the API server records the node of the pod a bound token belongs to.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";
/// The reason on every condition Mizzen writes.
pub const CONDITION_REASON: &str = "MizzenNodeCA";
/// The key usages a node CA request must ask for, exactly (as Kubernetes spells them).
pub const NODE_CA_USAGES: [&str; 2] = ["cert sign", "digital signature"];

/// Who may ask, and for how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignerSettings {
    /// The only requester served: the node agent's service account.
    pub agent_username: String,
    /// The longest intermediate lifetime handed out; a longer `expirationSeconds` is capped.
    /// The root rotation overlap assumes it (see `mizzen_ca::rotation`).
    pub max_ttl: Duration,
    /// How often pending requests are retried (e.g. while no authority is loaded yet).
    pub retry: Duration,
}

impl SignerSettings {
    /// The agent `mizzen-agent` in `namespace`, intermediates of at most two days.
    pub fn new(namespace: &str) -> Self {
        SignerSettings {
            agent_username: format!("system:serviceaccount:{namespace}:mizzen-agent"),
            max_ttl: DEFAULT_NODE_CA_TTL,
            retry: Duration::from_secs(30),
        }
    }
}

/// What to do with one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Approve, then sign an intermediate for `node` valid for `ttl`.
    Approve { node: String, ttl: Duration },
    /// Approved already (by a crashed earlier pass, or by hand) and unsigned: sign.
    Sign { node: String, ttl: Duration },
    /// Deny, saying why.
    Deny { reason: String },
    /// Not ours, already decided, or already signed.
    Ignore,
}

fn condition_is(csr: &CertificateSigningRequest, kind: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// The rule for one request.
pub fn decide(csr: &CertificateSigningRequest, settings: &SignerSettings) -> Decision {
    if csr.spec.signer_name != SIGNER_NAME {
        return Decision::Ignore;
    }
    let signed = csr
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty());
    if signed || condition_is(csr, "Denied") || condition_is(csr, "Failed") {
        return Decision::Ignore;
    }
    let approved = condition_is(csr, "Approved");
    match check(csr, settings) {
        Ok((node, ttl)) if approved => Decision::Sign { node, ttl },
        Ok((node, ttl)) => Decision::Approve { node, ttl },
        // Someone approved a request Mizzen would deny: it is not signed, and not touched.
        Err(_) if approved => Decision::Ignore,
        Err(reason) => Decision::Deny { reason },
    }
}

/// The node the request may have a CA for, and the lifetime; or what is wrong.
fn check(
    csr: &CertificateSigningRequest,
    settings: &SignerSettings,
) -> Result<(String, Duration), String> {
    let spec = &csr.spec;
    let username = spec.username.as_deref().unwrap_or_default();
    if username != settings.agent_username {
        return Err(format!(
            "requested by `{username}`; only the node agent `{}` may ask for a node CA",
            settings.agent_username
        ));
    }
    let nodes = spec
        .extra
        .as_ref()
        .and_then(|e| e.get(NODE_NAME_EXTRA))
        .map(Vec::as_slice)
        .unwrap_or_default();
    let node = match nodes {
        [node] if !node.is_empty() => node.clone(),
        [] => {
            return Err(format!(
                "the request does not say which node it comes from (no spec.extra[\"{NODE_NAME_EXTRA}\"]): the agent must authenticate with a pod-bound service-account token, on Kubernetes 1.30 or later"
            ));
        }
        other => {
            return Err(format!(
                "spec.extra[\"{NODE_NAME_EXTRA}\"] must hold one node name; it holds {other:?}"
            ));
        }
    };
    let mut usages: Vec<&str> = spec.usages.iter().flatten().map(String::as_str).collect();
    usages.sort_unstable();
    if usages != NODE_CA_USAGES {
        return Err(format!(
            "spec.usages must be exactly [\"digital signature\", \"cert sign\"]; it is {:?}",
            spec.usages.as_deref().unwrap_or_default()
        ));
    }
    let cn = subject_cn(&spec.request.0)?;
    if cn != node {
        return Err(format!(
            "the CSR's subject CN is `{cn}`, but the requesting agent runs on node `{node}`"
        ));
    }
    let ttl = match spec.expiration_seconds {
        None => settings.max_ttl,
        Some(s) if s <= 0 => {
            return Err(format!(
                "spec.expirationSeconds must be positive; it is {s}"
            ));
        }
        Some(s) => Duration::from_secs(u64::from(s.unsigned_abs())).min(settings.max_ttl),
    };
    Ok((node, ttl))
}

/// The one subject CN of the PEM PKCS#10 request in `spec.request`.
fn subject_cn(request: &[u8]) -> Result<String, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(request)
        .map_err(|e| format!("spec.request is not a PEM block: {e}"))?;
    if pem.label != "CERTIFICATE REQUEST" {
        return Err(format!(
            "spec.request holds a `{}` PEM block, not a CERTIFICATE REQUEST",
            pem.label
        ));
    }
    let (_, csr) = X509CertificationRequest::from_der(&pem.contents)
        .map_err(|e| format!("spec.request is not a PKCS#10 request: {e}"))?;
    let cns: Vec<&str> = csr
        .certification_request_info
        .subject
        .iter_common_name()
        .map(|cn| cn.as_str().unwrap_or_default())
        .collect();
    match cns[..] {
        [cn] if !cn.is_empty() => Ok(cn.to_string()),
        _ => Err(format!(
            "the CSR's subject must have one CN, the node name; it has {cns:?}"
        )),
    }
}

fn condition(kind: &str, message: String) -> CertificateSigningRequestCondition {
    let now = Time(Timestamp::now());
    CertificateSigningRequestCondition {
        type_: kind.into(),
        status: "True".into(),
        reason: Some(CONDITION_REASON.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

fn with_condition(
    mut csr: CertificateSigningRequest,
    c: CertificateSigningRequestCondition,
) -> CertificateSigningRequest {
    csr.status
        .get_or_insert_with(Default::default)
        .conditions
        .get_or_insert_with(Vec::new)
        .push(c);
    csr
}

/// Why acting on a request failed; it stays pending and is retried.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("no signing authority loaded yet")]
    NoAuthority,
    #[error("signing the node CA: {0}")]
    Sign(NodeCaError),
    #[error("updating {subresource} of CertificateSigningRequest {name}: {source}")]
    Write {
        name: String,
        subresource: &'static str,
        source: kube::Error,
    },
}

/// What [`act`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acted {
    Signed {
        node: String,
    },
    /// Denied through `/approval` (a `Denied` condition).
    Denied {
        reason: String,
    },
    /// Approved earlier but unsignable (its CSR is broken): a `Failed` condition through
    /// `/status`, so the agent learns at once instead of waiting.
    Failed {
        reason: String,
    },
    Ignored,
}

/// Carries out `decide` for one request: signs before approving, so a request that cannot be
/// signed (a CSR whose signature does not verify, a bad node name) is denied instead of being
/// left approved and unsigned.
pub async fn act(
    api: &Api<CertificateSigningRequest>,
    csr: &CertificateSigningRequest,
    settings: &SignerSettings,
    authority: Option<&Authority>,
) -> Result<Acted, SignerError> {
    let name = csr.metadata.name.clone().unwrap_or_default();
    let (node, ttl, approve) = match decide(csr, settings) {
        Decision::Ignore => return Ok(Acted::Ignored),
        Decision::Deny { reason } => {
            return refuse(api, csr, &name, Refusal::Denied, reason).await;
        }
        Decision::Approve { node, ttl } => (node, ttl, true),
        Decision::Sign { node, ttl } => (node, ttl, false),
    };
    let authority = authority.ok_or(SignerError::NoAuthority)?;
    let pem = String::from_utf8_lossy(&csr.spec.request.0);
    let issued = match authority.sign_node_ca(&pem, &node, ttl) {
        Ok(issued) => issued,
        // The request's own fault: retrying cannot help.
        Err(e @ (NodeCaError::Csr(_) | NodeCaError::BadNodeName(_))) => {
            let kind = if approve {
                Refusal::Denied
            } else {
                Refusal::Failed
            };
            let reason = format!("the request cannot be signed: {e}");
            return refuse(api, csr, &name, kind, reason).await;
        }
        // The authority's (expired, cannot sign CAs): the request waits for a better one.
        Err(e) => return Err(SignerError::Sign(e)),
    };
    let mut current = csr.clone();
    if approve {
        let approved = with_condition(
            csr.clone(),
            condition(
                "Approved",
                format!("the node agent on `{node}` asked for its node CA"),
            ),
        );
        current = api
            .replace_subresource("approval", &name, &PostParams::default(), &approved)
            .await
            .map_err(|source| write_error(&name, "approval", source))?;
    }
    current
        .status
        .get_or_insert_with(Default::default)
        .certificate = Some(ByteString(issued.chain_pem.into_bytes()));
    api.replace_status(&name, &PostParams::default(), &current)
        .await
        .map_err(|source| write_error(&name, "status", source))?;
    Ok(Acted::Signed { node })
}

fn write_error(name: &str, subresource: &'static str, source: kube::Error) -> SignerError {
    SignerError::Write {
        name: name.to_string(),
        subresource,
        source,
    }
}

/// How a request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// Before approval: a `Denied` condition, through `/approval`.
    Denied,
    /// After approval: a `Failed` condition, through `/status`.
    Failed,
}

/// Writes the refusal's condition, saying `reason`.
async fn refuse(
    api: &Api<CertificateSigningRequest>,
    csr: &CertificateSigningRequest,
    name: &str,
    kind: Refusal,
    reason: String,
) -> Result<Acted, SignerError> {
    let pp = PostParams::default();
    match kind {
        Refusal::Denied => {
            let refused = with_condition(csr.clone(), condition("Denied", reason.clone()));
            api.replace_subresource("approval", name, &pp, &refused)
                .await
                .map_err(|source| write_error(name, "approval", source))?;
            Ok(Acted::Denied { reason })
        }
        Refusal::Failed => {
            let refused = with_condition(csr.clone(), condition("Failed", reason.clone()));
            api.replace_status(name, &pp, &refused)
                .await
                .map_err(|source| write_error(name, "status", source))?;
            Ok(Acted::Failed { reason })
        }
    }
}

/// Runs until the leadership channel closes: while leading, watches this signer's requests
/// and acts on each pending one; when leadership is lost the watch is dropped.
pub async fn run(
    client: Client,
    settings: SignerSettings,
    mut leading: watch::Receiver<bool>,
    mut authority: AuthorityRx,
) {
    let api: Api<CertificateSigningRequest> = Api::all(client);
    loop {
        if leading.wait_for(|l| *l).await.is_err() {
            return;
        }
        if !lead(&api, &settings, &mut leading, &mut authority).await {
            return;
        }
    }
}

/// The requests still to act on, from the watch. A request this term already signed or denied
/// is not taken back when the watch shows an intermediate version of it (approved, not yet
/// signed): acting on that would only conflict with our own write.
#[derive(Default)]
struct Queue {
    pending: BTreeMap<String, CertificateSigningRequest>,
    listing: BTreeMap<String, CertificateSigningRequest>,
    handled: BTreeSet<String>,
    listed: bool,
}

impl Queue {
    /// Applies a watch event; returns whether there may be something new to act on.
    fn apply(
        &mut self,
        event: watcher::Event<CertificateSigningRequest>,
        settings: &SignerSettings,
    ) -> bool {
        let name = |csr: &CertificateSigningRequest| csr.metadata.name.clone().unwrap_or_default();
        match event {
            watcher::Event::Init => {
                self.listing.clear();
                false
            }
            watcher::Event::InitApply(csr) => {
                let n = name(&csr);
                if decide(&csr, settings) != Decision::Ignore && !self.handled.contains(&n) {
                    self.listing.insert(n, csr);
                }
                false
            }
            watcher::Event::InitDone => {
                self.pending = std::mem::take(&mut self.listing);
                self.listed = true;
                true
            }
            watcher::Event::Apply(csr) => {
                let n = name(&csr);
                if decide(&csr, settings) == Decision::Ignore || self.handled.contains(&n) {
                    self.pending.remove(&n);
                    false
                } else {
                    self.pending.insert(n, csr);
                    true
                }
            }
            watcher::Event::Delete(csr) => {
                let n = name(&csr);
                self.pending.remove(&n);
                self.handled.remove(&n);
                false
            }
        }
    }
}

/// One term of leadership. Returns `false` when a channel closed (stop), `true` when
/// leadership was lost (wait for it again).
async fn lead(
    api: &Api<CertificateSigningRequest>,
    settings: &SignerSettings,
    leading: &mut watch::Receiver<bool>,
    authority: &mut AuthorityRx,
) -> bool {
    let config = watcher::Config::default().fields(&format!("spec.signerName={SIGNER_NAME}"));
    let mut stream = watcher(api.clone(), config).default_backoff().boxed();
    let mut queue = Queue::default();
    let mut retry = tokio::time::interval(settings.retry);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    retry.tick().await;
    loop {
        tokio::select! {
            // Leadership first: a lost Lease must stop the writes before any more events.
            biased;
            changed = leading.changed() => {
                if changed.is_err() { return false; }
                if !*leading.borrow() { return true; }
                continue;
            }
            event = stream.next() => match event {
                None => return false,
                Some(Ok(event)) => if !queue.apply(event, settings) { continue },
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watching CertificateSigningRequests failed; retrying with backoff");
                    continue;
                }
            },
            changed = authority.changed() => if changed.is_err() { return false },
            _ = retry.tick() => {}
        }
        if !queue.listed || queue.pending.is_empty() {
            continue;
        }
        let current: Option<Arc<Authority>> = authority.borrow().clone();
        let names: Vec<String> = queue.pending.keys().cloned().collect();
        for name in names {
            if !*leading.borrow() {
                return true;
            }
            let Some(csr) = queue.pending.get(&name) else {
                continue;
            };
            match act(api, csr, settings, current.as_deref()).await {
                Ok(acted) => {
                    match &acted {
                        Acted::Signed { node } => {
                            tracing::info!(csr = %name, %node, "node CA approved and signed");
                        }
                        Acted::Denied { reason } => {
                            tracing::warn!(csr = %name, %reason, "node CA request denied");
                        }
                        Acted::Failed { reason } => {
                            tracing::warn!(csr = %name, %reason, "approved node CA request failed");
                        }
                        Acted::Ignored => {}
                    }
                    queue.pending.remove(&name);
                    queue.handled.insert(name);
                }
                Err(SignerError::NoAuthority) => {
                    tracing::debug!(csr = %name, "no signing authority yet; request stays pending");
                }
                Err(e) => {
                    tracing::warn!(csr = %name, error = %e, "node CA request not handled; will retry")
                }
            }
        }
    }
}
