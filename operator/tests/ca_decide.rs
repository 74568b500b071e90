//! The node CA signer's rule, request by request: only the agent's service account, only for
//! the node its token is bound to, only with a CSR naming that node, only the CA usages.

use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use mizzen_ca::{DEFAULT_NODE_CA_TTL, node_ca_request};
use mizzen_identity::{CertificateRequest, SpiffeId};
use mizzen_operator::ca::signer::{Decision, SignerSettings, decide};
use serde_json::{Value, json};

const AGENT: &str = "system:serviceaccount:mizzen-system:mizzen-agent";
const CA_USAGES: [&str; 2] = ["digital signature", "cert sign"];

/// A request as the API server stores it: `user` asked, from a pod on `node` (when the token is
/// pod-bound), with `csr_pem`.
fn request(user: &str, node: Option<&str>, csr_pem: &str, usages: &[&str]) -> Value {
    let mut extra = json!({"authentication.kubernetes.io/pod-name": ["mizzen-agent-x7k2p"]});
    if let Some(node) = node {
        extra["authentication.kubernetes.io/node-name"] = json!([node]);
    }
    json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": "mizzen-node-ca-node-a-1f2e3d4c"},
        "spec": {
            "signerName": "mizzen.io/node-ca",
            "request": base64(csr_pem.as_bytes()),
            "usages": usages,
            "expirationSeconds": 3600,
            "username": user,
            "groups": ["system:serviceaccounts", "system:serviceaccounts:mizzen-system", "system:authenticated"],
            "extra": extra,
        }
    })
}

fn base64(bytes: &[u8]) -> String {
    serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec()))
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

fn parse(v: Value) -> CertificateSigningRequest {
    serde_json::from_value(v).unwrap()
}

fn node_csr(cn: &str) -> String {
    node_ca_request(cn).unwrap().csr_pem
}

fn decide_on(v: Value) -> Decision {
    decide(&parse(v), &SignerSettings::new("mizzen-system"))
}

fn denied_because(v: Value) -> String {
    match decide_on(v) {
        Decision::Deny { reason } => reason,
        other => panic!("expected Deny, got {other:?}"),
    }
}

#[test]
fn the_agent_on_its_own_node_is_approved_for_the_ttl_it_asked() {
    let v = request(AGENT, Some("node-a"), &node_csr("node-a"), &CA_USAGES);
    assert_eq!(
        decide_on(v),
        Decision::Approve {
            node: "node-a".into(),
            ttl: Duration::from_secs(3600)
        }
    );
    // Usages in either order.
    let v = request(
        AGENT,
        Some("node-a"),
        &node_csr("node-a"),
        &["cert sign", "digital signature"],
    );
    assert!(matches!(decide_on(v), Decision::Approve { .. }));
}

#[test]
fn an_agent_asking_for_another_node_is_denied() {
    // The agent on node-b presents a CSR naming node-a.
    let v = request(AGENT, Some("node-b"), &node_csr("node-a"), &CA_USAGES);
    let reason = denied_because(v);
    assert_eq!(
        reason,
        "the CSR's subject CN is `node-a`, but the requesting agent runs on node `node-b`"
    );
}

#[test]
fn another_service_account_is_denied() {
    let v = request(
        "system:serviceaccount:shop:default",
        Some("node-a"),
        &node_csr("node-a"),
        &CA_USAGES,
    );
    assert_eq!(
        denied_because(v),
        "requested by `system:serviceaccount:shop:default`; only the node agent `system:serviceaccount:mizzen-system:mizzen-agent` may ask for a node CA"
    );
    // A human or a node's kubelet are no better.
    for user in ["kubernetes-admin", "system:node:node-a"] {
        let v = request(user, Some("node-a"), &node_csr("node-a"), &CA_USAGES);
        assert!(denied_because(v).starts_with(&format!("requested by `{user}`")));
    }
}

#[test]
fn a_request_without_the_node_extra_is_denied() {
    let v = request(AGENT, None, &node_csr("node-a"), &CA_USAGES);
    let reason = denied_because(v);
    assert!(
        reason.contains("spec.extra[\"authentication.kubernetes.io/node-name\"]")
            && reason.contains("pod-bound"),
        "{reason}"
    );
    let mut two = request(AGENT, Some("node-a"), &node_csr("node-a"), &CA_USAGES);
    two["spec"]["extra"]["authentication.kubernetes.io/node-name"] = json!(["node-a", "node-b"]);
    assert!(denied_because(two).contains("must hold one node name"));
}

#[test]
fn a_csr_whose_subject_does_not_name_the_node_is_denied() {
    // A workload CSR: no subject at all, only a SPIFFE SAN.
    let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/default").unwrap();
    let workload = CertificateRequest::for_workload(&id).unwrap().csr_pem;
    let v = request(AGENT, Some("node-a"), &workload, &CA_USAGES);
    assert_eq!(
        denied_because(v),
        "the CSR's subject must have one CN, the node name; it has []"
    );
    let v = request(AGENT, Some("node-a"), &node_csr("node-a2"), &CA_USAGES);
    assert!(denied_because(v).starts_with("the CSR's subject CN is `node-a2`"));
    // Not a CSR at all.
    let v = request(
        AGENT,
        Some("node-a"),
        "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
        &CA_USAGES,
    );
    assert_eq!(
        denied_because(v),
        "spec.request holds a `CERTIFICATE` PEM block, not a CERTIFICATE REQUEST"
    );
}

#[test]
fn usages_must_be_exactly_digital_signature_and_cert_sign() {
    for usages in [
        &["digital signature", "cert sign", "server auth"][..],
        &["digital signature"][..],
        &["digital signature", "key encipherment"][..],
        &[][..],
    ] {
        let v = request(AGENT, Some("node-a"), &node_csr("node-a"), usages);
        let reason = denied_because(v);
        assert!(
            reason.starts_with("spec.usages must be exactly"),
            "{usages:?}: {reason}"
        );
    }
}

#[test]
fn a_too_long_lifetime_is_capped_and_a_missing_one_defaulted() {
    let mut v = request(AGENT, Some("node-a"), &node_csr("node-a"), &CA_USAGES);
    v["spec"]["expirationSeconds"] = json!(30 * 24 * 3600);
    assert_eq!(
        decide_on(v.clone()),
        Decision::Approve {
            node: "node-a".into(),
            ttl: DEFAULT_NODE_CA_TTL
        }
    );
    v["spec"]
        .as_object_mut()
        .unwrap()
        .remove("expirationSeconds");
    assert_eq!(
        decide_on(v.clone()),
        Decision::Approve {
            node: "node-a".into(),
            ttl: DEFAULT_NODE_CA_TTL
        }
    );
    v["spec"]["expirationSeconds"] = json!(-5);
    assert_eq!(
        denied_because(v),
        "spec.expirationSeconds must be positive; it is -5"
    );
}

#[test]
fn decided_signed_and_foreign_requests_are_left_alone() {
    let good = request(AGENT, Some("node-a"), &node_csr("node-a"), &CA_USAGES);
    let bad = request(AGENT, Some("node-b"), &node_csr("node-a"), &CA_USAGES);
    let with_status = |mut v: Value, status: Value| {
        v["status"] = status;
        v
    };
    let condition =
        |kind: &str| json!({"conditions": [{"type": kind, "status": "True", "reason": "X"}]});

    let mut foreign = good.clone();
    foreign["spec"]["signerName"] = json!("kubernetes.io/kube-apiserver-client");
    assert_eq!(decide_on(foreign), Decision::Ignore);
    assert_eq!(
        decide_on(with_status(good.clone(), condition("Denied"))),
        Decision::Ignore
    );
    assert_eq!(
        decide_on(with_status(good.clone(), condition("Failed"))),
        Decision::Ignore
    );
    let mut signed = condition("Approved");
    signed["certificate"] = json!(base64(b"-----BEGIN CERTIFICATE-----\n"));
    assert_eq!(
        decide_on(with_status(good.clone(), signed)),
        Decision::Ignore
    );
    // Approved but unsigned (a pass that stopped halfway): signed if the rule allows it...
    assert_eq!(
        decide_on(with_status(good, condition("Approved"))),
        Decision::Sign {
            node: "node-a".into(),
            ttl: Duration::from_secs(3600)
        }
    );
    // ... and never if it does not, whoever approved it.
    assert_eq!(
        decide_on(with_status(bad, condition("Approved"))),
        Decision::Ignore
    );
}
