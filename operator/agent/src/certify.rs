//! One workload's certificate for as long as its stream lives: the first signature, then a new
//! one inside the refresh window each time, a bundle event when the roots change, and an end
//! when the pod is gone or the proxy hangs up.
//!
//! The agent keeps the proxy's CSR and re-signs the same public key: the key never leaves the
//! pod, and the proxy needs no round trip to renew. A failed renewal sends an error event, backs
//! off (capped, never past expiry) and leaves the proxy with its still-valid certificate.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mizzen_ca::Authority;
use mizzen_identity::workload_api::Event;
use mizzen_identity::{RefreshPolicy, TrustBundle};
use tokio::sync::mpsc;

use crate::authz::{Authorizer, Grant};
use crate::metrics::Metrics;
use crate::node_ca::{AuthorityRx, same_roots};

/// Why a certificate could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the agent has no node CA yet (waited {0:?}); try again shortly")]
    NoAuthority(Duration),
    #[error("the agent holds no signing authority right now")]
    AuthorityGone,
    #[error(transparent)]
    Workload(#[from] mizzen_ca::workload::WorkloadError),
}

/// How certificates are signed and renewed.
#[derive(Clone, Debug)]
pub struct CertifySettings {
    pub ttl: Duration,
    pub policy: RefreshPolicy,
    /// How long a request waits for the first node CA when the agent has just started.
    pub authority_wait: Duration,
}

/// A signed certificate and the moment it was signed (its `not_before` is backdated for clock
/// skew, so the refresh window is measured from here instead).
pub struct Signed {
    pub event: Event,
    pub signed_at: SystemTime,
    pub not_after: SystemTime,
    pub roots: TrustBundle,
}

/// The current authority, waiting up to `wait` for the first.
pub async fn authority(rx: &AuthorityRx, wait: Duration) -> Result<Arc<Authority>, SignError> {
    let mut rx = rx.clone();
    let got = tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await;
    let current = match got {
        Ok(Ok(current)) => current.clone(),
        _ => None,
    };
    current.ok_or(SignError::NoAuthority(wait))
}

/// Signs `csr_pem` for `grant` with `authority`.
pub fn sign(
    authority: &Authority,
    csr_pem: &str,
    grant: &Grant,
    ttl: Duration,
) -> Result<Signed, SignError> {
    let signed_at = SystemTime::now();
    let issued = authority.sign_workload_at(csr_pem, &grant.id, ttl, signed_at)?;
    let not_after = issued.not_after;
    Ok(Signed {
        event: Event::Certificate {
            chain_pem: issued.chain_pem,
            roots_pem: issued.roots_pem,
            not_after: unix_secs(not_after),
        },
        signed_at,
        not_after,
        roots: authority.roots().clone(),
    })
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Everything a stream needs after its first certificate.
pub struct Stream {
    pub grant: Grant,
    pub csr_pem: String,
    pub authorizer: Arc<dyn Authorizer>,
    pub authorities: AuthorityRx,
    pub settings: CertifySettings,
    pub metrics: Metrics,
}

/// Renews and pushes until the pod is gone or `out`'s receiver is dropped; `first` was already
/// sent.
pub async fn keep_renewing(stream: Stream, first: Signed, out: mpsc::Sender<Event>) {
    let Stream {
        grant,
        csr_pem,
        authorizer,
        mut authorities,
        settings,
        metrics,
    } = stream;
    let mut changes = authorizer.changes();
    let mut not_after = first.not_after;
    let mut roots = first.roots;
    let mut next = settings
        .policy
        .renew_at(first.signed_at, not_after, rand::random());
    let mut failures = 0u32;
    // The pod may have gone between the authorization and the subscription above.
    if !authorizer.still_present(&grant) {
        return;
    }
    // `authorities` is not marked seen: a root change since the first signature is compared
    // (and pushed) on the first turn.
    loop {
        let sleep = next.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::select! {
            _ = out.closed() => return,
            changed = changes.changed() => {
                if changed.is_err() || !authorizer.still_present(&grant) {
                    tracing::info!(id = %grant.id, "pod gone; ending its certificate stream");
                    return;
                }
            }
            changed = authorities.changed() => {
                if changed.is_err() { return; }
                let latest = authorities.borrow_and_update().as_ref().map(|a| a.roots().clone());
                if let Some(latest) = latest.filter(|r| !same_roots(r, &roots)) {
                    roots = latest;
                    if out.send(Event::Bundle { roots_pem: roots.to_pem() }).await.is_err() {
                        return;
                    }
                }
            }
            _ = tokio::time::sleep(sleep) => {
                if !authorizer.still_present(&grant) {
                    return;
                }
                let current = authorities.borrow().clone();
                let signed = current
                    .ok_or(SignError::AuthorityGone)
                    .and_then(|a| sign(&a, &csr_pem, &grant, settings.ttl));
                let now = SystemTime::now();
                let event = match signed {
                    Ok(signed) => {
                        metrics.renewed(true);
                        failures = 0;
                        not_after = signed.not_after;
                        roots = signed.roots;
                        next = settings.policy.renew_at(signed.signed_at, not_after, rand::random());
                        signed.event
                    }
                    Err(e) => {
                        metrics.renewed(false);
                        tracing::warn!(id = %grant.id, error = %e, "renewal failed; keeping the current certificate");
                        next = settings.policy.retry_at(failures, now, not_after, rand::random());
                        failures = failures.saturating_add(1);
                        Event::Error { message: format!("renewal failed, will retry: {e}") }
                    }
                };
                if out.send(event).await.is_err() {
                    return;
                }
            }
        }
    }
}
