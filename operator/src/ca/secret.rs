//! The mesh root CA as the operator stores it: the Secret `mizzen-ca` in the control-plane
//! namespace, read and advanced by pure functions (the [`super::keeper`] only gets and writes it).
//!
//! Keys of the Secret:
//! - `ca.crt` / `ca.key`: the root that signs node intermediates now, and its PKCS#8 key;
//! - `roots.pem`: every root still trusted (the signing one, a new one being published, an old
//!   one in its overlap). This is the trust bundle every meshed namespace receives;
//! - `next.crt` / `next.key`: during a rotation, the new root while it is only published. It
//!   moves to `ca.crt` / `ca.key` once it has had [`RotationPolicy::propagation`] to reach every
//!   proxy, so no proxy ever sees a chain that ends at a root it does not trust yet.
//!
//! When the user plugs in their own CA (Secret `cacerts`, Istio's layout), Mizzen never
//! generates or rotates anything: [`plan`] only reads it, and the trust bundle is its
//! `root-cert.pem`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::{
    ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use mizzen_ca::root::{PLUGIN_ROOT_CERT, PluginCaError};
use mizzen_ca::{Authority, CaError, PluginCa, RootCa, RotationPlan, RotationPolicy};
use mizzen_identity::TrustBundle;
use mizzen_identity::bundle::{BundleError, certs_to_pem};
use mizzen_identity::svid::{self, Validity};
use rustls_pki_types::CertificateDer;

/// The Secret Mizzen keeps its generated root in.
pub const SECRET_NAME: &str = "mizzen-ca";
/// The Secret a user plugs their own CA into (Istio's name and layout).
pub const PLUGIN_SECRET_NAME: &str = "cacerts";
/// The signing root's certificate.
pub const CA_CERT: &str = "ca.crt";
/// The signing root's PKCS#8 key.
pub const CA_KEY: &str = "ca.key";
/// Every root still trusted, PEM: the trust bundle.
pub const ROOTS: &str = "roots.pem";
/// A new root while it is only published, and its key.
pub const NEXT_CERT: &str = "next.crt";
pub const NEXT_KEY: &str = "next.key";

/// A Secret's `data`, decoded: key → bytes.
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// Why the Secret `mizzen-ca` cannot be used. Each names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("Secret {SECRET_NAME}: `{0}` is missing")]
    Missing(&'static str),
    #[error("Secret {SECRET_NAME}: `{0}` is not UTF-8 PEM")]
    NotUtf8(&'static str),
    #[error("Secret {SECRET_NAME}: `{present}` is present without `{absent}`")]
    Unpaired {
        present: &'static str,
        absent: &'static str,
    },
    #[error("Secret {SECRET_NAME}: `{key}`: {source}")]
    Root { key: &'static str, source: CaError },
    #[error("Secret {SECRET_NAME}: `{ROOTS}`: {0}")]
    Bundle(BundleError),
    #[error("Secret {SECRET_NAME}: `{ROOTS}`: root {index}: {reason}")]
    BadRoot { index: usize, reason: String },
    #[error(
        "Secret {SECRET_NAME}: `{ROOTS}` holds root {index}, newer than `{CA_CERT}`, whose key is not in `{NEXT_KEY}`; Mizzen cannot sign with it nor rotate past it (remove it, or plug the CA in as `cacerts`)"
    )]
    KeylessNewerRoot { index: usize },
    #[error("Secret {SECRET_NAME}: generating a new root: {0}")]
    Generate(CaError),
}

/// A root whose key Mizzen holds. `Debug` never shows the key.
#[derive(Clone)]
struct KeyedRoot {
    cert: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
    validity: Validity,
}

impl std::fmt::Debug for KeyedRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedRoot")
            .field("validity", &self.validity)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl KeyedRoot {
    fn of(root: &RootCa) -> Self {
        KeyedRoot {
            cert: root.cert_der().clone(),
            cert_pem: root.cert_pem(),
            key_pem: root.key_pem(),
            validity: root.validity(),
        }
    }

    /// The pair under `cert_key` / `key_key`: both, or neither (`None`), checked to belong
    /// together.
    fn read(
        data: &SecretData,
        cert_key: &'static str,
        key_key: &'static str,
    ) -> Result<Option<Self>, SecretError> {
        let (cert_pem, key_pem) = match (text(data, cert_key)?, text(data, key_key)?) {
            (None, None) => return Ok(None),
            (Some(c), Some(k)) => (c, k),
            (Some(_), None) => {
                return Err(SecretError::Unpaired {
                    present: cert_key,
                    absent: key_key,
                });
            }
            (None, Some(_)) => {
                return Err(SecretError::Unpaired {
                    present: key_key,
                    absent: cert_key,
                });
            }
        };
        let root = RootCa::from_pem(&cert_pem, &key_pem).map_err(|source| SecretError::Root {
            key: cert_key,
            source,
        })?;
        Ok(Some(KeyedRoot {
            cert: root.cert_der().clone(),
            cert_pem,
            key_pem,
            validity: root.validity(),
        }))
    }
}

fn text(data: &SecretData, key: &'static str) -> Result<Option<String>, SecretError> {
    data.get(key)
        .map(|bytes| String::from_utf8(bytes.clone()).map_err(|_| SecretError::NotUtf8(key)))
        .transpose()
}

/// One thing [`MeshCa::advance`] did, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A new root was generated and published (trusted, not signing yet).
    Published,
    /// The published root has had time to reach every proxy and now signs.
    Promoted,
    /// This many old roots left the trust bundle (expired, or their overlap is over).
    Retired(usize),
    /// The stored data was incomplete and was completed (e.g. `roots.pem` missing, or a
    /// signing root absent from it).
    Repaired,
}

/// The generated mesh root CA: the signing root, a root being published, and the trust bundle.
#[derive(Clone, Debug)]
pub struct MeshCa {
    signing: KeyedRoot,
    next: Option<KeyedRoot>,
    /// Always contains `signing` and `next`.
    roots: Vec<CertificateDer<'static>>,
}

impl MeshCa {
    /// A CA whose only root is `root` (first start).
    pub fn first(root: &RootCa) -> Self {
        let signing = KeyedRoot::of(root);
        MeshCa {
            roots: vec![signing.cert.clone()],
            signing,
            next: None,
        }
    }

    /// Reads the Secret's data. A missing `roots.pem`, or one that lacks the signing or the
    /// published root, is completed (so [`MeshCa::to_data`] then differs from `data`, and the
    /// keeper writes the repair).
    pub fn from_data(data: &SecretData) -> Result<Self, SecretError> {
        let signing =
            KeyedRoot::read(data, CA_CERT, CA_KEY)?.ok_or(SecretError::Missing(CA_CERT))?;
        let next = KeyedRoot::read(data, NEXT_CERT, NEXT_KEY)?;
        let mut roots = match text(data, ROOTS)? {
            // Read with the rules every proxy applies to the bundle it is handed.
            Some(pem) => TrustBundle::from_pem(&pem)
                .map_err(SecretError::Bundle)?
                .roots()
                .to_vec(),
            None => Vec::new(),
        };
        for keyed in std::iter::once(&signing).chain(&next) {
            if !roots.contains(&keyed.cert) {
                roots.push(keyed.cert.clone());
            }
        }
        let ca = MeshCa {
            signing,
            next,
            roots,
        };
        let validities = ca.validities()?;
        let held = |c: &CertificateDer<'_>| {
            *c == ca.signing.cert || ca.next.as_ref().is_some_and(|n| n.cert == *c)
        };
        if let Some(index) = (0..ca.roots.len()).find(|&i| {
            !held(&ca.roots[i]) && validities[i].not_before > ca.signing.validity.not_before
        }) {
            return Err(SecretError::KeylessNewerRoot { index });
        }
        Ok(ca)
    }

    /// The Secret's data for this CA.
    pub fn to_data(&self) -> SecretData {
        let mut data = SecretData::new();
        data.insert(CA_CERT.into(), self.signing.cert_pem.clone().into_bytes());
        data.insert(CA_KEY.into(), self.signing.key_pem.clone().into_bytes());
        data.insert(ROOTS.into(), self.roots_pem().into_bytes());
        if let Some(next) = &self.next {
            data.insert(NEXT_CERT.into(), next.cert_pem.clone().into_bytes());
            data.insert(NEXT_KEY.into(), next.key_pem.clone().into_bytes());
        }
        data
    }

    /// Every root still trusted, PEM (what `roots.pem` holds).
    pub fn roots_pem(&self) -> String {
        certs_to_pem(&self.roots)
    }

    /// How many roots are trusted.
    pub fn root_count(&self) -> usize {
        self.roots.len()
    }

    /// The signing root's validity.
    pub fn signing_validity(&self) -> Validity {
        self.signing.validity
    }

    /// The validity of the root being published, if a rotation is under way.
    pub fn next_validity(&self) -> Option<Validity> {
        self.next.as_ref().map(|n| n.validity)
    }

    /// The authority that signs node intermediates with the signing root and whose chains end
    /// at any root of the bundle.
    pub fn authority(&self) -> Result<Authority, CaError> {
        let root = RootCa::from_pem(&self.signing.cert_pem, &self.signing.key_pem)?;
        let roots =
            TrustBundle::from_der(self.roots.clone()).map_err(|source| CaError::Bundle {
                what: "mesh roots",
                source,
            })?;
        root.authority(Some(roots))
    }

    fn validities(&self) -> Result<Vec<Validity>, SecretError> {
        self.roots
            .iter()
            .enumerate()
            .map(|(index, c)| {
                svid::validity(c).map_err(|e| SecretError::BadRoot {
                    index,
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    /// Brings the CA up to date at `now`: promotes a published root whose propagation time has
    /// passed, retires roots whose overlap is over (never the signing or the published one),
    /// and publishes a new root (from `generate`) when the newest is in its last fifth. Returns
    /// what it did, in order; nothing when the CA is current.
    pub fn advance(
        &mut self,
        policy: &RotationPolicy,
        now: SystemTime,
        mut generate: impl FnMut(SystemTime) -> Result<RootCa, CaError>,
    ) -> Result<Vec<Step>, SecretError> {
        let mut steps = Vec::new();
        // Each round takes one action; four cover publish → promote → retire → publish.
        for _ in 0..4 {
            let validities = self.validities()?;
            if let Some(next) = &self.next {
                let signer = policy.signer(&validities, now);
                if signer.is_some_and(|i| self.roots[i] == next.cert) {
                    self.signing = self.next.take().expect("checked above");
                    steps.push(Step::Promoted);
                    continue;
                }
            }
            match policy.plan(&validities, now) {
                RotationPlan::Keep => break,
                RotationPlan::Retire(indices) => {
                    let before = self.roots.len();
                    let keep = |i: usize, c: &CertificateDer<'_>| {
                        !indices.contains(&i)
                            || *c == self.signing.cert
                            || self.next.as_ref().is_some_and(|n| n.cert == *c)
                    };
                    let roots: Vec<_> = self
                        .roots
                        .iter()
                        .enumerate()
                        .filter(|(i, c)| keep(*i, c))
                        .map(|(_, c)| c.clone())
                        .collect();
                    if roots.len() == before {
                        break;
                    }
                    self.roots = roots;
                    steps.push(Step::Retired(before - self.roots.len()));
                }
                RotationPlan::Rotate => {
                    if self.next.is_some() {
                        break;
                    }
                    let root = KeyedRoot::of(&generate(now).map_err(SecretError::Generate)?);
                    self.roots.push(root.cert.clone());
                    self.next = Some(root);
                    steps.push(Step::Published);
                }
            }
        }
        Ok(steps)
    }
}

/// What the keeper must do with the cluster's CA Secrets.
#[derive(Debug)]
pub enum CaPlan {
    /// The user's own CA (`cacerts`): read only, never generated or rotated.
    Plugin(PluginCa),
    /// No `mizzen-ca` yet: create it holding this CA.
    Create(MeshCa),
    /// `mizzen-ca` must be replaced by this CA (a rotation step or a repair).
    Update(MeshCa, Vec<Step>),
    /// `mizzen-ca` is current.
    Keep(MeshCa),
}

/// Why no plan could be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("Secret {PLUGIN_SECRET_NAME}: {0}")]
    Plugin(#[from] PluginCaError),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// The keeper's decision, from the data of `cacerts` and `mizzen-ca` (each `None` when the
/// Secret does not exist) at `now`. `generate` makes a new root when one is needed.
pub fn plan(
    cacerts: Option<&SecretData>,
    stored: Option<&SecretData>,
    policy: &RotationPolicy,
    now: SystemTime,
    mut generate: impl FnMut(SystemTime) -> Result<RootCa, CaError>,
) -> Result<CaPlan, PlanError> {
    if let Some(data) = cacerts {
        return Ok(CaPlan::Plugin(PluginCa::from_entries(data)?));
    }
    let Some(data) = stored else {
        let root = generate(now).map_err(SecretError::Generate)?;
        return Ok(CaPlan::Create(MeshCa::first(&root)));
    };
    let mut ca = MeshCa::from_data(data)?;
    let mut steps = ca.advance(policy, now, generate)?;
    if ca.to_data() == *data {
        return Ok(CaPlan::Keep(ca));
    }
    if steps.is_empty() {
        steps.push(Step::Repaired);
    }
    Ok(CaPlan::Update(ca, steps))
}

/// The trust bundle every meshed namespace receives: `cacerts`' `root-cert.pem` when the user
/// plugged in a CA, else `mizzen-ca`'s `roots.pem`, else its `ca.crt` (a Secret written before
/// `roots.pem` existed). `None` when there is none yet.
pub fn trust_bundle_pem(
    cacerts: Option<&SecretData>,
    stored: Option<&SecretData>,
) -> Option<String> {
    let pick = |data: Option<&SecretData>, keys: &[&str]| {
        let data = data?;
        keys.iter()
            .find_map(|k| data.get(*k))
            .and_then(|b| String::from_utf8(b.clone()).ok())
    };
    pick(cacerts, &[PLUGIN_ROOT_CERT]).or_else(|| pick(stored, &[ROOTS, CA_CERT]))
}

/// A Secret's `data` as bytes per key.
pub fn data_of(secret: &Secret) -> SecretData {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// The Secret `mizzen-ca` in `namespace` holding `ca`, as first created.
pub fn new_secret(namespace: &str, ca: &MeshCa) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(SECRET_NAME.into()),
            namespace: Some(namespace.into()),
            labels: Some(
                [(
                    crate::apply::MANAGED_BY.to_string(),
                    crate::apply::MANAGED_BY_VALUE.to_string(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(to_byte_strings(&ca.to_data())),
        ..Secret::default()
    }
}

/// `secret` (as read, `resourceVersion` kept so a concurrent writer conflicts) holding `ca`.
pub fn updated_secret(mut secret: Secret, ca: &MeshCa) -> Secret {
    secret.data = Some(to_byte_strings(&ca.to_data()));
    secret.string_data = None;
    secret
}

fn to_byte_strings(data: &SecretData) -> BTreeMap<String, ByteString> {
    data.iter()
        .map(|(k, v)| (k.clone(), ByteString(v.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const DAY: Duration = Duration::from_secs(24 * 3600);
    const LIFE: Duration = Duration::from_secs(100 * 24 * 3600);

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn generate(now: SystemTime) -> Result<RootCa, CaError> {
        RootCa::generate_at("cluster.local", LIFE, now)
    }

    fn first_data() -> SecretData {
        match plan(None, None, &RotationPolicy::default(), t0(), generate).unwrap() {
            CaPlan::Create(ca) => ca.to_data(),
            other => panic!("expected Create, got {other:?}"),
        }
    }

    #[test]
    fn missing_keys_are_named() {
        let data = first_data();
        let mut no_cert = data.clone();
        no_cert.remove(CA_CERT);
        no_cert.remove(CA_KEY);
        assert_eq!(
            MeshCa::from_data(&no_cert).unwrap_err().to_string(),
            "Secret mizzen-ca: `ca.crt` is missing"
        );
        let mut no_key = data.clone();
        no_key.remove(CA_KEY);
        assert_eq!(
            MeshCa::from_data(&no_key).unwrap_err().to_string(),
            "Secret mizzen-ca: `ca.crt` is present without `ca.key`"
        );
        let mut binary = data.clone();
        binary.insert(ROOTS.into(), vec![0xff, 0xfe]);
        assert_eq!(
            MeshCa::from_data(&binary).unwrap_err().to_string(),
            "Secret mizzen-ca: `roots.pem` is not UTF-8 PEM"
        );
        let mut wrong_key = data.clone();
        let other = generate(t0()).unwrap();
        wrong_key.insert(CA_KEY.into(), other.key_pem().into_bytes());
        let err = MeshCa::from_data(&wrong_key).unwrap_err().to_string();
        assert!(err.starts_with("Secret mizzen-ca: `ca.crt`: "), "{err}");
        assert!(err.contains("does not belong"), "{err}");
    }

    #[test]
    fn a_root_without_its_key_newer_than_the_signing_one_is_refused() {
        let mut data = first_data();
        let stranger = generate(t0() + DAY).unwrap();
        let mut roots = String::from_utf8(data[ROOTS].clone()).unwrap();
        roots.push_str(&stranger.cert_pem());
        data.insert(ROOTS.into(), roots.into_bytes());
        let err = MeshCa::from_data(&data).unwrap_err();
        assert!(
            matches!(err, SecretError::KeylessNewerRoot { index: 1 }),
            "{err}"
        );
    }

    #[test]
    fn debug_never_shows_key_material() {
        let ca = MeshCa::from_data(&first_data()).unwrap();
        let shown = format!("{ca:?}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
