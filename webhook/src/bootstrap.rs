//! The webhook's serving certificate, kept by the operator: a self-signed CA and a certificate
//! it signs for `mizzen-webhook.<namespace>.svc`, stored in the Secret `mizzen-webhook-tls`
//! (`tls.crt`, `tls.key`, `ca.crt`), with the CA written into the `caBundle` of every webhook of
//! `mizzen-sidecar-injector` and `mizzen-validator`.
//!
//! [`plan`] is pure: given what is there now and the time, it says what to write. A new pair is
//! issued when the Secret is missing, unreadable, for another name, not signed by its CA, or
//! past two thirds of its life. The CA's key is not kept: each renewal makes a new CA, and the
//! bundle carries the new CA and the one before it (until that expires), so the API server
//! trusts both the certificate the webhook serves now and the one it will load next. [`ensure`]
//! is the thin shell that reads the three objects and applies the plan: bundles first, then
//! the Secret, so the API server never meets a certificate it does not trust yet.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use k8s_openapi::{
    ByteString,
    api::{
        admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration},
        core::v1::Secret,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use rustls::{
    RootCertStore,
    client::{WebPkiServerVerifier, danger::ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
    sign::CertifiedKey,
};
use serde_json::json;

/// The Secret the webhook mounts.
pub const SECRET_NAME: &str = "mizzen-webhook-tls";
/// The webhook's Service.
pub const SERVICE_NAME: &str = "mizzen-webhook";
pub const MUTATING_CONFIG: &str = "mizzen-sidecar-injector";
pub const VALIDATING_CONFIG: &str = "mizzen-validator";
/// Keys of the Secret.
pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const CA_CRT: &str = "ca.crt";
/// Lifetime of each CA and serving certificate; renewed after two thirds of it.
pub const LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start this long before they are issued, for clocks a little behind.
const BACKDATE: Duration = Duration::from_secs(3600);

/// The name the API server calls the webhook by.
pub fn dns_name(namespace: &str) -> String {
    format!("{SERVICE_NAME}.{namespace}.svc")
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("generating the webhook certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// The two kinds of webhook configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConfigKind {
    Mutating,
    Validating,
}

/// The `caBundle` of one webhook as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookBundle {
    pub kind: ConfigKind,
    /// The configuration's name.
    pub config: String,
    /// The webhook's name inside it.
    pub webhook: String,
    pub ca_bundle: Option<Vec<u8>>,
}

/// What is in the cluster now.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The Secret's `data`, `None` when the Secret does not exist.
    pub secret: Option<BTreeMap<String, Vec<u8>>>,
    pub bundles: Vec<WebhookBundle>,
}

/// A `caBundle` to write into the webhooks of one configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundlePatch {
    pub kind: ConfigKind,
    pub config: String,
    pub webhooks: Vec<String>,
    pub ca_bundle: Vec<u8>,
}

/// What to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Why a new certificate is issued; `None` when the current one is kept.
    pub renewal: Option<String>,
    /// New Secret data (`tls.crt`, `tls.key`, `ca.crt`), when a certificate is issued.
    pub secret: Option<BTreeMap<String, Vec<u8>>>,
    /// Configurations whose webhooks do not carry [`Plan::ca_bundle`] yet.
    pub patches: Vec<BundlePatch>,
    /// The bundle every webhook should carry: the current CA, then the previous one.
    pub ca_bundle: Vec<u8>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.secret.is_none() && self.patches.is_empty()
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// A CA certificate's validity, for choosing which to keep in a bundle.
struct CaInfo {
    pem: String,
    der: Vec<u8>,
    not_before: i64,
    not_after: i64,
}

fn ca_info((pem, der): (String, Vec<u8>)) -> Option<CaInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(CaInfo {
        pem,
        der: der.clone(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// Each certificate of a PEM text: its block (trimmed, one final newline) and its DER.
fn cert_blocks(pem: &[u8]) -> Vec<(String, Vec<u8>)> {
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut rest = &text[..];
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        let block = format!("{}\n", &rest[start..end]);
        if let Ok(der) = CertificateDer::from_pem_slice(block.as_bytes()) {
            out.push((block, der.to_vec()));
        }
        rest = &rest[end..];
    }
    out
}

/// Why the current Secret must be replaced, or `None` when it is good.
fn assess(
    data: Option<&BTreeMap<String, Vec<u8>>>,
    dns_name: &str,
    now: SystemTime,
    provider: &Arc<CryptoProvider>,
) -> Option<String> {
    let Some(data) = data else {
        return Some(format!("the Secret {SECRET_NAME} does not exist"));
    };
    let field = |key: &str| {
        data.get(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("the Secret has no {key}"))
    };
    let check = || -> Result<Option<String>, String> {
        let chain = CertificateDer::pem_slice_iter(field(TLS_CRT)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{TLS_CRT} is not PEM: {e}"))?;
        let leaf = chain
            .first()
            .ok_or(format!("{TLS_CRT} holds no certificate"))?;
        let key = PrivateKeyDer::from_pem_slice(field(TLS_KEY)?)
            .map_err(|e| format!("{TLS_KEY} is not a PEM private key: {e}"))?;
        CertifiedKey::from_der(chain.clone(), key, provider)
            .map_err(|e| format!("{TLS_KEY} does not match {TLS_CRT}: {e}"))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(field(CA_CRT)?) {
            let ca = ca.map_err(|e| format!("{CA_CRT} is not PEM: {e}"))?;
            roots
                .add(ca)
                .map_err(|e| format!("{CA_CRT} is not a usable CA: {e}"))?;
        }
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("{CA_CRT}: {e}"))?;
        let name = ServerName::try_from(dns_name.to_string()).map_err(|e| e.to_string())?;
        let at = UnixTime::since_unix_epoch(Duration::from_secs(unix(now)));
        verifier
            .verify_server_cert(leaf, &chain[1..], &name, &[], at)
            .map_err(|e| {
                format!("{TLS_CRT} does not verify for {dns_name} against {CA_CRT}: {e}")
            })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| e.to_string())?;
        let (start, end) = (
            parsed.validity().not_before.timestamp(),
            parsed.validity().not_after.timestamp(),
        );
        let renew_at = start + (end - start) * 2 / 3;
        if unix(now) as i64 >= renew_at {
            return Ok(Some(format!(
                "the certificate is past two thirds of its life (renewal due at {renew_at}, expires at {end}, Unix time)"
            )));
        }
        Ok(None)
    };
    match check() {
        Ok(reason) => reason,
        Err(problem) => Some(format!("the Secret {SECRET_NAME} is unusable: {problem}")),
    }
}

/// A new CA and a serving certificate for `dns_name` signed by it, valid from `now`.
pub fn issue(dns_name: &str, now: SystemTime) -> Result<BTreeMap<String, Vec<u8>>, rcgen::Error> {
    let not_before = now - BACKDATE;
    let not_after = now + LIFETIME;
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca = rcgen::CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    // A subject of its own per CA, so verifiers never confuse two CAs in one bundle.
    ca.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("mizzen-webhook-ca-{}", unix(now)),
    );
    ca.distinguished_name
        .push(rcgen::DnType::OrganizationName, "mizzen");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before.into();
    ca.not_after = not_after.into();
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);

    let key = rcgen::KeyPair::generate()?;
    let mut leaf = rcgen::CertificateParams::new(vec![dns_name.to_string()])?;
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, dns_name);
    leaf.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = not_before.into();
    leaf.not_after = not_after.into();
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(BTreeMap::from([
        (TLS_CRT.to_string(), cert.pem().into_bytes()),
        (TLS_KEY.to_string(), key.serialize_pem().into_bytes()),
        (CA_CRT.to_string(), ca_cert.pem().into_bytes()),
    ]))
}

/// Decides what to write. Pure but for the randomness of new keys.
pub fn plan(observed: &Observed, dns_name: &str, now: SystemTime) -> Result<Plan, rcgen::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let current = observed.secret.as_ref();
    let renewal = assess(current, dns_name, now, &provider);
    let old_ca = current
        .and_then(|d| d.get(CA_CRT))
        .map(|pem| cert_blocks(pem))
        .unwrap_or_default();
    let secret = match renewal {
        Some(_) => Some(issue(dns_name, now)?),
        None => None,
    };
    let ca_now = cert_blocks(
        secret
            .as_ref()
            .or(current)
            .and_then(|d| d.get(CA_CRT))
            .map(Vec::as_slice)
            .unwrap_or_default(),
    );

    // The previous CA: when renewing, the one being replaced (its certificate is still being
    // served until the new Secret reaches the pods); otherwise the newest other CA the bundles
    // already carry. Either only while it is valid.
    let now_s = unix(now) as i64;
    let candidates: Vec<CaInfo> = if secret.is_some() {
        old_ca.into_iter().filter_map(ca_info).collect()
    } else {
        observed
            .bundles
            .iter()
            .filter_map(|b| b.ca_bundle.as_deref())
            .flat_map(cert_blocks)
            .filter_map(ca_info)
            .collect()
    };
    let previous = candidates
        .into_iter()
        .filter(|c| c.not_before <= now_s && now_s < c.not_after)
        .filter(|c| !ca_now.iter().any(|(_, der)| *der == c.der))
        .max_by_key(|c| c.not_before);
    let mut ca_bundle = String::new();
    for (pem, _) in &ca_now {
        ca_bundle.push_str(pem);
    }
    if let Some(p) = &previous {
        ca_bundle.push_str(&p.pem);
    }
    let ca_bundle = ca_bundle.into_bytes();

    let mut patches: Vec<BundlePatch> = Vec::new();
    for b in &observed.bundles {
        if b.ca_bundle.as_deref() == Some(ca_bundle.as_slice()) {
            continue;
        }
        match patches
            .iter_mut()
            .find(|p| p.kind == b.kind && p.config == b.config)
        {
            Some(p) => p.webhooks.push(b.webhook.clone()),
            None => patches.push(BundlePatch {
                kind: b.kind,
                config: b.config.clone(),
                webhooks: vec![b.webhook.clone()],
                ca_bundle: ca_bundle.clone(),
            }),
        }
    }
    Ok(Plan {
        renewal,
        secret,
        patches,
        ca_bundle,
    })
}

/// The strategic-merge patch that sets `ca_bundle` on the named webhooks (webhooks are merged
/// by name, so no other webhook or field is touched).
pub fn bundle_patch_body(patch: &BundlePatch) -> serde_json::Value {
    let bundle = ByteString(patch.ca_bundle.clone());
    json!({
        "webhooks": patch.webhooks.iter().map(|name| json!({
            "name": name,
            "clientConfig": { "caBundle": bundle },
        })).collect::<Vec<_>>()
    })
}

/// The Secret holding `data`.
pub fn secret_object(
    namespace: &str,
    data: &BTreeMap<String, Vec<u8>>,
    resource_version: Option<String>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(SECRET_NAME.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/name".to_string(),
                    "mizzen-webhook".to_string(),
                ),
                (
                    "app.kubernetes.io/part-of".to_string(),
                    "mizzen".to_string(),
                ),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "mizzen-operator".to_string(),
                ),
            ])),
            resource_version,
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.clone(), ByteString(v.clone())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// What [`ensure`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Why a new certificate was issued, if one was.
    pub renewal: Option<String>,
    /// The configurations whose `caBundle` was patched.
    pub patched: Vec<String>,
}

/// Reads the Secret and both webhook configurations, and writes what [`plan`] says: the
/// `caBundle` patches first, then the Secret (created, or replaced at the version read).
/// A configuration that does not exist is skipped. The operator calls this periodically.
pub async fn ensure(client: Client, namespace: &str) -> Result<Applied, BootstrapError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client);

    let secret = secrets.get_opt(SECRET_NAME).await?;
    let mut observed = Observed {
        secret: secret.as_ref().map(|s| {
            s.data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect()
        }),
        bundles: Vec::new(),
    };
    if let Some(config) = mutating.get_opt(MUTATING_CONFIG).await? {
        for w in config.webhooks.iter().flatten() {
            observed.bundles.push(WebhookBundle {
                kind: ConfigKind::Mutating,
                config: MUTATING_CONFIG.to_string(),
                webhook: w.name.clone(),
                ca_bundle: w.client_config.ca_bundle.as_ref().map(|b| b.0.clone()),
            });
        }
    }
    if let Some(config) = validating.get_opt(VALIDATING_CONFIG).await? {
        for w in config.webhooks.iter().flatten() {
            observed.bundles.push(WebhookBundle {
                kind: ConfigKind::Validating,
                config: VALIDATING_CONFIG.to_string(),
                webhook: w.name.clone(),
                ca_bundle: w.client_config.ca_bundle.as_ref().map(|b| b.0.clone()),
            });
        }
    }

    let plan = plan(&observed, &dns_name(namespace), SystemTime::now())?;
    let params = PatchParams::default();
    let mut applied = Applied {
        renewal: plan.renewal.clone(),
        patched: Vec::new(),
    };
    for p in &plan.patches {
        let body = Patch::Strategic(bundle_patch_body(p));
        match p.kind {
            ConfigKind::Mutating => {
                mutating.patch(&p.config, &params, &body).await?;
            }
            ConfigKind::Validating => {
                validating.patch(&p.config, &params, &body).await?;
            }
        }
        tracing::info!(config = %p.config, webhooks = ?p.webhooks, "caBundle updated");
        applied.patched.push(p.config.clone());
    }
    if let Some(data) = &plan.secret {
        match secret {
            None => {
                secrets
                    .create(
                        &PostParams::default(),
                        &secret_object(namespace, data, None),
                    )
                    .await?;
            }
            Some(old) => {
                let version = old.metadata.resource_version.clone();
                secrets
                    .replace(
                        SECRET_NAME,
                        &PostParams::default(),
                        &secret_object(namespace, data, version),
                    )
                    .await?;
            }
        }
        tracing::info!(
            secret = SECRET_NAME,
            reason = plan.renewal.as_deref().unwrap_or_default(),
            "webhook serving certificate issued"
        );
    }
    Ok(applied)
}

#[cfg(test)]
mod tests;
