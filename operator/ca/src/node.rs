//! Per-node intermediate CAs: what the operator signs for a node agent's CSR (signer
//! `mizzen.io/node-ca`).
//!
//! The operator decides whether the request really comes from the agent on `node`; this module
//! only turns an authorised request into a CA certificate that can sign leaves and nothing else
//! (pathLen 0), named for the node so a leaf's issuer says where it was signed.

use std::time::{Duration, SystemTime};

use mizzen_identity::CertificateRequest;
use mizzen_identity::csr::CsrError;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyUsagePurpose,
};

use crate::authority::{Authority, CaError, Issued};
use crate::workload::{WorkloadError, read_csr};

/// The default node intermediate lifetime.
pub const DEFAULT_NODE_CA_TTL: Duration = Duration::from_secs(48 * 3600);

/// The organizational unit every node CA subject carries.
pub const NODE_CA_OU: &str = "mizzen node CA";

/// Why a node CA CSR was not signed.
#[derive(Debug, thiserror::Error)]
pub enum NodeCaError {
    #[error("node name `{0}` is not a valid Kubernetes node name (RFC 1123 subdomain)")]
    BadNodeName(String),
    #[error(
        "this authority is itself limited to signing leaves (pathLen 0); it cannot sign a node CA"
    )]
    CannotSignCa,
    #[error(transparent)]
    Csr(#[from] WorkloadError),
    #[error(transparent)]
    Ca(#[from] CaError),
}

fn subject(node: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationalUnitName, NODE_CA_OU);
    dn.push(DnType::CommonName, node);
    dn
}

fn check_node_name(node: &str) -> Result<(), NodeCaError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if node.is_empty() || node.len() > 253 || !node.split('.').all(label_ok) {
        return Err(NodeCaError::BadNodeName(node.to_string()));
    }
    Ok(())
}

/// The node agent's side: a fresh key and a CSR whose subject names `node`.
pub fn node_ca_request(node: &str) -> Result<CertificateRequest, NodeCaRequestError> {
    check_node_name(node).map_err(|_| NodeCaRequestError::BadNodeName(node.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(node);
    Ok(CertificateRequest::with_params(&params)?)
}

/// Why the agent could not make its node CA request.
#[derive(Debug, thiserror::Error)]
pub enum NodeCaRequestError {
    #[error("node name `{0}` is not a valid Kubernetes node name (RFC 1123 subdomain)")]
    BadNodeName(String),
    #[error(transparent)]
    Csr(#[from] CsrError),
}

impl Authority {
    /// Signs a node intermediate for `node` from `csr_pem`, valid for `ttl` from now (capped at
    /// this CA's expiry): CA:true, pathLen 0, keyCertSign + cRLSign + digitalSignature, subject
    /// `OU=mizzen node CA, CN=<node>`. The CSR's own subject and extensions are ignored.
    pub fn sign_node_ca(
        &self,
        csr_pem: &str,
        node: &str,
        ttl: Duration,
    ) -> Result<Issued, NodeCaError> {
        self.sign_node_ca_at(csr_pem, node, ttl, SystemTime::now())
    }

    /// [`Authority::sign_node_ca`] as of `now`.
    pub fn sign_node_ca_at(
        &self,
        csr_pem: &str,
        node: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Issued, NodeCaError> {
        check_node_name(node)?;
        if self.path_len() == Some(0) {
            return Err(NodeCaError::CannotSignCa);
        }
        let csr = read_csr(csr_pem)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(node);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let validity = self.window(now, ttl)?;
        Ok(self.sign(params, &csr.public_key, validity)?)
    }
}
