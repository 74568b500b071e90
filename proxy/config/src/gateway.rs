//! What an ingress gateway serves: Istio `Gateway` servers and the VirtualService rules bound
//! to them.
//!
//! The operator renders one [`crate::ProxyConfig`] per gateway namespace (ConfigMap
//! [`GATEWAY_CONFIG_MAP_NAME`]) whose `gateway` section lists the servers of *every* Gateway
//! in the mesh, each with its selector; a gateway proxy serves the servers whose selector its
//! own pod labels satisfy (Istio's default: a Gateway selects gateway workloads in any
//! namespace). `services` in the same config are the destinations, exactly as for a sidecar.
//!
//! Secret material is never here: a server names its Kubernetes TLS Secret
//! (`credential_name`), and the gateway reads the files that its credentials syncer writes
//! from that Secret (see `docs/security.md`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{HttpRoute, TcpRoute, TlsRoute};

/// The ConfigMap the operator writes in each gateway namespace (key [`crate::CONFIG_MAP_KEY`]).
pub const GATEWAY_CONFIG_MAP_NAME: &str = "mizzen-gateway-config";

/// The servers of all Gateways, sorted by gateway (`namespace/name`) then port.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Server>,
}

/// One `servers[]` entry of a Gateway, with what is bound to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    /// The Gateway it belongs to, `namespace/name`.
    pub gateway: String,
    /// The Gateway's `selector`: labels a gateway workload must all carry to serve it.
    /// Empty selects every gateway workload.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// The port the gateway listens on (`port.number`).
    pub port: u16,
    /// `port.name`, for logs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub protocol: ServerProtocol,
    /// Hosts served, without the `namespace/` prefix: exact names, `*.suffix` or `*`.
    pub hosts: Vec<String>,
    /// TLS termination or passthrough (`HTTPS`, `TLS` protocols). `None`: plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTls>,
    /// `tls.httpsRedirect` on a plaintext HTTP server: every request gets a 301 to https.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect: bool,
    /// HTTP servers (HTTP, HTTP2, GRPC, and HTTPS once terminated): the bound VirtualServices'
    /// `http` rules per host, in VirtualService creation order (Istio's order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtual_hosts: Vec<VirtualHost>,
    /// TCP servers (and TLS servers terminated as TCP): the bound `tcp` rules, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_routes: Vec<TcpRoute>,
    /// TLS `PASSTHROUGH` servers: the bound `tls` rules (matched by SNI), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_routes: Vec<TlsRoute>,
}

/// `port.protocol` of a Gateway server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerProtocol {
    #[default]
    Http,
    Https,
    Http2,
    Grpc,
    Tls,
    Tcp,
}

impl ServerProtocol {
    /// Whether requests on this server are HTTP once any TLS is terminated.
    pub fn is_http(self) -> bool {
        matches!(self, Self::Http | Self::Https | Self::Http2 | Self::Grpc)
    }
}

/// `tls` of a Gateway server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTls {
    pub mode: ServerTlsMode,
    /// The Kubernetes TLS Secret (in the gateway's namespace) holding `tls.crt`, `tls.key` and,
    /// for `MUTUAL`, `ca.crt` (or a separate Secret `<name>-cacert` with `ca.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    /// Instead of `credential_name`: two Secrets whose certificates have different key types
    /// (typically RSA and ECDSA); each handshake gets the one the client can verify. The
    /// first one's `ca.crt` verifies clients under `MUTUAL`, as in Istio.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_names: Vec<String>,
    /// `MUTUAL`: client certificates must carry one of these SANs (empty: any, if trusted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// `MUTUAL` / `OPTIONAL_MUTUAL` (`verifyCertificateHash`, `verifyCertificateSpki`): when
    /// either list is set, a client certificate is accepted only if it is one of
    /// `client_cert_sha256` (SHA-256 of its DER form) or its public key is one of
    /// `client_spki_sha256` (SHA-256 of its SubjectPublicKeyInfo); on top of its chain and
    /// `subject_alt_names`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_cert_sha256: Vec<Sha256>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_spki_sha256: Vec<Sha256>,
    /// `TLSV1_2` or `TLSV1_3`; `None`: rustls' default (1.2 and 1.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TlsVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<TlsVersion>,
    /// The TLS 1.2 suites offered, in order; empty: every one the gateway implements. TLS 1.3
    /// suites are not restricted (as with Envoy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<CipherSuite>,
}

impl ServerTls {
    /// The Secrets whose certificates this server serves, in order.
    pub fn credentials(&self) -> impl Iterator<Item = &str> {
        self.credential_name
            .iter()
            .chain(&self.credential_names)
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    }
}

/// A SHA-256 digest, written as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256(pub [u8; 32]);

impl std::fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&base16ct::lower::encode_string(&self.0))
    }
}

impl Serialize for Sha256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base16ct::lower::encode_string(&self.0))
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let hex = String::deserialize(d)?;
        let mut digest = [0u8; 32];
        match base16ct::lower::decode(&hex, &mut digest) {
            Ok(bytes) if bytes.len() == 32 => Ok(Self(digest)),
            _ => Err(serde::de::Error::custom(format!(
                "{hex:?} is not a SHA-256 (64 lower-case hex digits)"
            ))),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    /// Terminate TLS with the server certificate.
    #[default]
    Simple,
    /// Terminate TLS and require a client certificate signed by the Secret's `ca.crt`.
    Mutual,
    /// Do not terminate: route the connection by SNI (`tls_routes`).
    Passthrough,
    /// Terminate with the gateway's own mesh certificate, require a mesh client certificate.
    IstioMutual,
    /// As `Mutual`, but a client without a certificate is accepted.
    OptionalMutual,
}

/// A protocol version bound of [`ServerTls`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TlsVersion {
    #[serde(rename = "TLSV1_2")]
    V1_2,
    #[serde(rename = "TLSV1_3")]
    V1_3,
}

/// A TLS 1.2 cipher suite a gateway server can offer, written with its OpenSSL name (the
/// spelling of Istio's `cipherSuites`): ECDHE key exchange with an AEAD cipher, the TLS 1.2
/// suites rustls implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum CipherSuite {
    EcdheEcdsaAes128GcmSha256,
    EcdheRsaAes128GcmSha256,
    EcdheEcdsaAes256GcmSha384,
    EcdheRsaAes256GcmSha384,
    EcdheEcdsaChacha20Poly1305,
    EcdheRsaChacha20Poly1305,
}

impl CipherSuite {
    /// Every suite with its OpenSSL name.
    pub const ALL: [(Self, &'static str); 6] = [
        (
            Self::EcdheEcdsaAes128GcmSha256,
            "ECDHE-ECDSA-AES128-GCM-SHA256",
        ),
        (Self::EcdheRsaAes128GcmSha256, "ECDHE-RSA-AES128-GCM-SHA256"),
        (
            Self::EcdheEcdsaAes256GcmSha384,
            "ECDHE-ECDSA-AES256-GCM-SHA384",
        ),
        (Self::EcdheRsaAes256GcmSha384, "ECDHE-RSA-AES256-GCM-SHA384"),
        (
            Self::EcdheEcdsaChacha20Poly1305,
            "ECDHE-ECDSA-CHACHA20-POLY1305",
        ),
        (
            Self::EcdheRsaChacha20Poly1305,
            "ECDHE-RSA-CHACHA20-POLY1305",
        ),
    ];

    /// The OpenSSL name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map(|(_, n)| *n)
            .expect("every suite is in ALL")
    }

    /// The suite with this OpenSSL name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, n)| *n == name).map(|(s, _)| *s)
    }
}

impl From<CipherSuite> for &'static str {
    fn from(s: CipherSuite) -> Self {
        s.name()
    }
}

impl TryFrom<String> for CipherSuite {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        Self::from_name(&name)
            .ok_or_else(|| format!("{name:?} is not a TLS 1.2 cipher suite the gateway offers"))
    }
}

/// The rules of one VirtualService for the hosts it shares with a server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualHost {
    /// The VirtualService, `namespace/name`.
    pub virtual_service: String,
    /// Host names (without port) this applies to: the VirtualService's hosts that the server
    /// serves, each exact, `*.suffix` or `*`. A request's Host picks the first virtual host of
    /// its server with the most specific matching name (exact, then longest wildcard).
    pub hosts: Vec<String>,
    /// The `http` rules, matches already narrowed to this gateway and port; first match wins.
    /// No rule matching: 404 with response flag NR.
    pub routes: Vec<HttpRoute>,
}
