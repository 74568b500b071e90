//! Who may have which certificate: the token says which pod and service account is asking, the
//! pod cache says whether that pod runs on this node, and the CSR says which identity it wants.
//!
//! The decisions are pure functions ([`workload_of`], [`check_pod`], [`check_identity`]) of a
//! TokenReview's outcome, the cached pod and the requested SPIFFE id, so every refusal is tested
//! without an API server. The API call is behind [`TokenReviewer`] ([`KubeTokenReviewer`] in a
//! cluster, a fake in tests); [`ClusterAuthorizer`] strings the steps together. Local mode has
//! its own [`Authorizer`] (see [`crate::local`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use mizzen_identity::SpiffeId;

use crate::pods::{PodDirectory, PodInfo};

/// The audience the webhook gives the projected token, and the only one the agent accepts.
pub const AUDIENCE: &str = "mizzen-ca";

/// `status.user.extra` keys the API server sets for a token bound to a pod.
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";

const SA_PREFIX: &str = "system:serviceaccount:";

/// Why a request for a certificate is refused; each variant says what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "token rejected by the API server (expired, revoked, malformed or not for audience `{AUDIENCE}`): {0}"
    )]
    Unauthenticated(String),
    #[error("token audiences {0:?} do not include `{AUDIENCE}`")]
    WrongAudience(Vec<String>),
    #[error("token user `{0}` is not a service account")]
    NotServiceAccount(String),
    #[error(
        "token is not bound to a pod (no pod name/uid in the TokenReview): mount a projected service-account token"
    )]
    NotPodBound,
    #[error(
        "pod {namespace}/{name} does not run on node `{node}` (this agent serves only its own node)"
    )]
    OtherNode {
        namespace: String,
        name: String,
        node: String,
    },
    #[error("pod {namespace}/{name} with uid {uid} is gone (deleted or replaced)")]
    PodGone {
        namespace: String,
        name: String,
        uid: String,
    },
    #[error(
        "pod {namespace}/{name} runs as service account `{actual}`, but the token is for `{token}`"
    )]
    ServiceAccountMismatch {
        namespace: String,
        name: String,
        actual: String,
        token: String,
    },
    #[error("CSR asks for identity `{requested}`, but the token is for `{allowed}`")]
    WrongIdentity { requested: String, allowed: String },
    #[error("token is not one of the local mesh's workload tokens")]
    UnknownLocalToken,
    #[error("cannot verify the token now: {0}")]
    Unavailable(String),
}

impl Refusal {
    /// The HTTP status the workload API answers with: 401 when the token itself is not good, 403
    /// when it is good but not for this certificate here, 503 when the agent cannot tell.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Refusal::Unauthenticated(_)
            | Refusal::WrongAudience(_)
            | Refusal::NotPodBound
            | Refusal::UnknownLocalToken => StatusCode::UNAUTHORIZED,
            Refusal::NotServiceAccount(_)
            | Refusal::OtherNode { .. }
            | Refusal::PodGone { .. }
            | Refusal::ServiceAccountMismatch { .. }
            | Refusal::WrongIdentity { .. } => StatusCode::FORBIDDEN,
            Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated(_) => "unauthenticated",
            Refusal::WrongAudience(_) => "wrong_audience",
            Refusal::NotServiceAccount(_) => "not_service_account",
            Refusal::NotPodBound => "not_pod_bound",
            Refusal::OtherNode { .. } => "other_node",
            Refusal::PodGone { .. } => "pod_gone",
            Refusal::ServiceAccountMismatch { .. } => "service_account_mismatch",
            Refusal::WrongIdentity { .. } => "wrong_identity",
            Refusal::UnknownLocalToken => "unknown_local_token",
            Refusal::Unavailable(_) => "unavailable",
        }
    }
}

/// What a TokenReview said, reduced to what the agent decides on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReviewOutcome {
    /// `status.authenticated: true`.
    Authenticated {
        username: String,
        /// `status.audiences`: the audiences the token is valid for among those asked.
        audiences: Vec<String>,
        extra: BTreeMap<String, Vec<String>>,
    },
    /// Not authenticated, with the API server's `status.error`.
    Unauthenticated(String),
}

/// The pod a token belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub service_account: String,
}

/// A workload the agent agreed to certify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub id: SpiffeId,
    /// The pod the certificate is for; `None` in local mode, where nothing is scheduled.
    pub pod: Option<PodRef>,
}

/// The pod and service account a reviewed token belongs to.
pub fn workload_of(outcome: ReviewOutcome) -> Result<PodRef, Refusal> {
    let (username, audiences, extra) = match outcome {
        ReviewOutcome::Unauthenticated(error) => return Err(Refusal::Unauthenticated(error)),
        ReviewOutcome::Authenticated {
            username,
            audiences,
            extra,
        } => (username, audiences, extra),
    };
    if !audiences.iter().any(|a| a == AUDIENCE) {
        return Err(Refusal::WrongAudience(audiences));
    }
    let (namespace, service_account) = username
        .strip_prefix(SA_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty() && !sa.contains(':'))
        .ok_or_else(|| Refusal::NotServiceAccount(username.clone()))?;
    let single = |key: &str| match extra.get(key).map(Vec::as_slice) {
        Some([value]) if !value.is_empty() => Some(value.clone()),
        _ => None,
    };
    let (Some(name), Some(uid)) = (single(EXTRA_POD_NAME), single(EXTRA_POD_UID)) else {
        return Err(Refusal::NotPodBound);
    };
    Ok(PodRef {
        namespace: namespace.to_string(),
        name,
        uid,
        service_account: service_account.to_string(),
    })
}

/// The token's pod must be in this node's pod cache, be the same pod (uid), not be shutting
/// down, and run as the token's service account.
pub fn check_pod(pod: &PodRef, found: Option<&PodInfo>, node: &str) -> Result<(), Refusal> {
    let Some(found) = found else {
        return Err(Refusal::OtherNode {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            node: node.to_string(),
        });
    };
    if found.node != node {
        return Err(Refusal::OtherNode {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            node: node.to_string(),
        });
    }
    if found.uid != pod.uid || found.terminated {
        return Err(Refusal::PodGone {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
        });
    }
    if found.service_account != pod.service_account {
        return Err(Refusal::ServiceAccountMismatch {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            actual: found.service_account.clone(),
            token: pod.service_account.clone(),
        });
    }
    Ok(())
}

/// The identity the pod may have (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`) must be exactly the
/// one its CSR asks for.
pub fn check_identity(
    requested: &SpiffeId,
    pod: &PodRef,
    trust_domain: &str,
) -> Result<SpiffeId, Refusal> {
    let allowed =
        SpiffeId::new(trust_domain, &pod.namespace, &pod.service_account).map_err(|e| {
            Refusal::NotServiceAccount(format!("{}:{} ({e})", pod.namespace, pod.service_account))
        })?;
    if *requested != allowed {
        return Err(Refusal::WrongIdentity {
            requested: requested.to_string(),
            allowed: allowed.to_string(),
        });
    }
    Ok(allowed)
}

/// Why the TokenReview call itself failed (as opposed to the token being refused).
#[derive(Debug, thiserror::Error)]
#[error("TokenReview: {0}")]
pub struct ReviewError(pub String);

/// Asks the API server about a token.
pub trait TokenReviewer: Send + Sync + 'static {
    fn review<'a>(
        &'a self,
        token: &'a str,
        audience: &'a str,
    ) -> BoxFuture<'a, Result<ReviewOutcome, ReviewError>>;
}

/// A shared reviewer (tests keep a handle to change its answers).
impl<T: TokenReviewer> TokenReviewer for Arc<T> {
    fn review<'a>(
        &'a self,
        token: &'a str,
        audience: &'a str,
    ) -> BoxFuture<'a, Result<ReviewOutcome, ReviewError>> {
        T::review(self, token, audience)
    }
}

/// Decides whether the bearer of `token` may have a certificate for `requested`.
pub trait Authorizer: Send + Sync + 'static {
    fn authorize<'a>(
        &'a self,
        token: &'a str,
        requested: &'a SpiffeId,
    ) -> BoxFuture<'a, Result<Grant, Refusal>>;

    /// Whether a granted workload still exists here; its certificate stream ends when not.
    fn still_present(&self, grant: &Grant) -> bool;

    /// Ticks whenever the answer of [`Authorizer::still_present`] may have changed.
    fn changes(&self) -> tokio::sync::watch::Receiver<()>;
}

/// The cluster authorizer: TokenReview, then this node's pod cache, then the identity.
pub struct ClusterAuthorizer<R, P> {
    pub reviewer: R,
    pub pods: Arc<P>,
    pub node: String,
    pub trust_domain: String,
    /// How long to wait for the pod cache to see a pod it does not know yet (a pod that has just
    /// started may ask before the watch event reaches the agent).
    pub cache_grace: Duration,
}

impl<R: TokenReviewer, P: PodDirectory> ClusterAuthorizer<R, P> {
    async fn decide(&self, token: &str, requested: &SpiffeId) -> Result<Grant, Refusal> {
        let outcome = self
            .reviewer
            .review(token, AUDIENCE)
            .await
            .map_err(|e| Refusal::Unavailable(e.to_string()))?;
        let pod = workload_of(outcome)?;
        let mut changes = self.pods.changes();
        let deadline = tokio::time::Instant::now() + self.cache_grace;
        loop {
            let found = self.pods.get(&pod.namespace, &pod.name);
            match check_pod(&pod, found.as_ref(), &self.node) {
                Err(Refusal::OtherNode { .. }) if found.is_none() => {
                    let wait = tokio::time::timeout_at(deadline, changes.changed()).await;
                    if !matches!(wait, Ok(Ok(()))) {
                        check_pod(&pod, None, &self.node)?;
                    }
                }
                other => {
                    other?;
                    break;
                }
            }
        }
        let id = check_identity(requested, &pod, &self.trust_domain)?;
        Ok(Grant { id, pod: Some(pod) })
    }
}

impl<R: TokenReviewer, P: PodDirectory> Authorizer for ClusterAuthorizer<R, P> {
    fn authorize<'a>(
        &'a self,
        token: &'a str,
        requested: &'a SpiffeId,
    ) -> BoxFuture<'a, Result<Grant, Refusal>> {
        Box::pin(self.decide(token, requested))
    }

    fn still_present(&self, grant: &Grant) -> bool {
        grant.pod.as_ref().is_none_or(|pod| {
            check_pod(
                pod,
                self.pods.get(&pod.namespace, &pod.name).as_ref(),
                &self.node,
            )
            .is_ok()
        })
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<()> {
        self.pods.changes()
    }
}

/// TokenReviews through the API server.
#[derive(Clone)]
pub struct KubeTokenReviewer {
    pub client: kube::Client,
}

/// The TokenReview object the agent creates for `token`.
pub fn token_review(token: &str, audience: &str) -> TokenReview {
    TokenReview {
        metadata: Default::default(),
        spec: TokenReviewSpec {
            token: token.to_string(),
            audiences: Some(vec![audience.to_string()]),
        },
        status: None,
    }
}

/// Reduces the API server's answer to a [`ReviewOutcome`].
pub fn outcome_of(review: TokenReview) -> ReviewOutcome {
    let status = review.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        return ReviewOutcome::Unauthenticated(
            status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "not authenticated".into()),
        );
    }
    let user = status.user.unwrap_or_default();
    ReviewOutcome::Authenticated {
        username: user.username.unwrap_or_default(),
        audiences: status.audiences.unwrap_or_default(),
        extra: user.extra.unwrap_or_default(),
    }
}

impl TokenReviewer for KubeTokenReviewer {
    fn review<'a>(
        &'a self,
        token: &'a str,
        audience: &'a str,
    ) -> BoxFuture<'a, Result<ReviewOutcome, ReviewError>> {
        Box::pin(async move {
            let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
            let answer = api
                .create(&PostParams::default(), &token_review(token, audience))
                .await
                .map_err(|e| ReviewError(e.to_string()))?;
            Ok(outcome_of(answer))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extra(name: &str, uid: &str) -> BTreeMap<String, Vec<String>> {
        BTreeMap::from([
            (EXTRA_POD_NAME.to_string(), vec![name.to_string()]),
            (EXTRA_POD_UID.to_string(), vec![uid.to_string()]),
        ])
    }

    fn authenticated(user: &str, audiences: &[&str]) -> ReviewOutcome {
        ReviewOutcome::Authenticated {
            username: user.into(),
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            extra: extra("cart-0", "u1"),
        }
    }

    fn pod_ref() -> PodRef {
        PodRef {
            namespace: "shop".into(),
            name: "cart-0".into(),
            uid: "u1".into(),
            service_account: "cart".into(),
        }
    }

    fn info(node: &str) -> PodInfo {
        PodInfo {
            uid: "u1".into(),
            node: node.into(),
            service_account: "cart".into(),
            terminated: false,
        }
    }

    #[test]
    fn a_bound_service_account_token_names_its_pod() {
        let pod = workload_of(authenticated(
            "system:serviceaccount:shop:cart",
            &[AUDIENCE],
        ))
        .unwrap();
        assert_eq!(pod, pod_ref());
    }

    #[test]
    fn bad_tokens_are_refused_with_the_reason() {
        let expired = workload_of(ReviewOutcome::Unauthenticated("token has expired".into()));
        let err = expired.unwrap_err();
        assert_eq!(err.status(), http::StatusCode::UNAUTHORIZED);
        assert!(err.to_string().contains("token has expired"), "{err}");

        let aud = workload_of(authenticated("system:serviceaccount:shop:cart", &["api"]));
        assert_eq!(aud, Err(Refusal::WrongAudience(vec!["api".into()])));
        assert!(aud.unwrap_err().to_string().contains("mizzen-ca"));

        let user = workload_of(authenticated("alice", &[AUDIENCE])).unwrap_err();
        assert_eq!(user, Refusal::NotServiceAccount("alice".into()));
        assert_eq!(user.status(), http::StatusCode::FORBIDDEN);
        assert!(workload_of(authenticated("system:serviceaccount:shop", &[AUDIENCE])).is_err());

        let unbound = workload_of(ReviewOutcome::Authenticated {
            username: "system:serviceaccount:shop:cart".into(),
            audiences: vec![AUDIENCE.into()],
            extra: BTreeMap::new(),
        });
        assert_eq!(unbound, Err(Refusal::NotPodBound));
    }

    #[test]
    fn the_pod_must_be_on_this_node_and_the_same_pod() {
        let pod = pod_ref();
        assert_eq!(check_pod(&pod, Some(&info("n1")), "n1"), Ok(()));
        let other = check_pod(&pod, Some(&info("n2")), "n1").unwrap_err();
        assert!(
            other.to_string().contains("does not run on node `n1`"),
            "{other}"
        );
        assert!(matches!(
            check_pod(&pod, None, "n1"),
            Err(Refusal::OtherNode { .. })
        ));
        let replaced = PodInfo {
            uid: "u2".into(),
            ..info("n1")
        };
        assert!(matches!(
            check_pod(&pod, Some(&replaced), "n1"),
            Err(Refusal::PodGone { .. })
        ));
        let done = PodInfo {
            terminated: true,
            ..info("n1")
        };
        assert!(matches!(
            check_pod(&pod, Some(&done), "n1"),
            Err(Refusal::PodGone { .. })
        ));
        let other_sa = PodInfo {
            service_account: "admin".into(),
            ..info("n1")
        };
        assert!(matches!(
            check_pod(&pod, Some(&other_sa), "n1"),
            Err(Refusal::ServiceAccountMismatch { .. })
        ));
    }

    #[test]
    fn the_csr_must_ask_for_the_pods_own_identity() {
        let pod = pod_ref();
        let own = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/cart").unwrap();
        assert_eq!(check_identity(&own, &pod, "cluster.local"), Ok(own.clone()));
        let admin = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/admin").unwrap();
        let err = check_identity(&admin, &pod, "cluster.local").unwrap_err();
        assert_eq!(
            err.to_string(),
            "CSR asks for identity `spiffe://cluster.local/ns/shop/sa/admin`, but the token is for `spiffe://cluster.local/ns/shop/sa/cart`"
        );
        let other_domain = SpiffeId::parse("spiffe://evil.example/ns/shop/sa/cart").unwrap();
        assert!(check_identity(&other_domain, &pod, "cluster.local").is_err());
    }

    #[test]
    fn api_answers_become_outcomes() {
        let review: TokenReview = serde_json::from_value(serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {},
            "status": {"authenticated": true, "audiences": ["mizzen-ca"],
                "user": {"username": "system:serviceaccount:shop:cart",
                    "extra": {EXTRA_POD_NAME: ["cart-0"], EXTRA_POD_UID: ["u1"]}}}
        }))
        .unwrap();
        assert_eq!(workload_of(outcome_of(review)).unwrap(), pod_ref());
        let refused: TokenReview = serde_json::from_value(serde_json::json!({
            "spec": {}, "status": {"authenticated": false, "error": "[invalid bearer token, token audiences [\"api\"] is invalid for the target audiences [\"mizzen-ca\"]]"}
        }))
        .unwrap();
        assert!(
            matches!(outcome_of(refused), ReviewOutcome::Unauthenticated(e) if e.contains("audiences"))
        );
        let empty: TokenReview = serde_json::from_value(serde_json::json!({"spec": {}})).unwrap();
        assert_eq!(
            outcome_of(empty),
            ReviewOutcome::Unauthenticated("not authenticated".into())
        );
    }
}
