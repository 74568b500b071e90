//! Keeps the mesh root CA: creates the Secret `mizzen-ca` on first start, rotates its root as
//! [`super::secret::plan`] says, and publishes the current [`Authority`] to the CSR signer on a
//! watch channel. Runs periodically and only while leading, like the webhook certificate task.
//!
//! Two operators racing at a leadership change cannot both win: the Secret is created with
//! `create` (the loser gets a conflict and re-reads the winner's root) and replaced with the
//! `resourceVersion` it read. Key material is never logged.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, api::PostParams};
use mizzen_ca::root::{PLUGIN_CA_CERT, PLUGIN_CA_KEY, PLUGIN_CERT_CHAIN, PLUGIN_ROOT_CERT};
use mizzen_ca::{Authority, CaError, DEFAULT_ROOT_VALIDITY, PluginCa, RootCa, RotationPolicy};
use tokio::sync::watch;

use super::secret::{
    self, CaPlan, MeshCa, PLUGIN_SECRET_NAME, PlanError, SECRET_NAME, SecretData, data_of,
};

/// The authority the signer signs with: `None` until the keeper has loaded one.
pub type AuthorityTx = watch::Sender<Option<Arc<Authority>>>;
/// The signer's end of [`AuthorityTx`].
pub type AuthorityRx = watch::Receiver<Option<Arc<Authority>>>;

/// How the root CA is kept.
#[derive(Clone, Debug)]
pub struct KeeperSettings {
    /// The control-plane namespace holding `mizzen-ca` and `cacerts`.
    pub namespace: String,
    /// Written into a generated root's subject.
    pub trust_domain: String,
    /// A generated root's lifetime.
    pub root_validity: Duration,
    pub policy: RotationPolicy,
    /// How often the Secrets are re-read while leading.
    pub period: Duration,
}

impl KeeperSettings {
    /// Ten-year roots rotated in their last fifth, checked every minute.
    pub fn new(namespace: impl Into<String>, trust_domain: impl Into<String>) -> Self {
        KeeperSettings {
            namespace: namespace.into(),
            trust_domain: trust_domain.into(),
            root_validity: DEFAULT_ROOT_VALIDITY,
            policy: RotationPolicy::default(),
            period: Duration::from_secs(60),
        }
    }
}

/// Why a pass failed; the next tick retries.
#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    #[error("reading Secret {namespace}/{name}: {source}")]
    Read {
        namespace: String,
        name: &'static str,
        source: kube::Error,
    },
    #[error("writing Secret {namespace}/{SECRET_NAME}: {source}")]
    Write {
        namespace: String,
        source: kube::Error,
    },
    #[error(
        "Secret {namespace}/{SECRET_NAME} could not be created (it exists) and then was not found"
    )]
    Vanished { namespace: String },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("building the signing authority: {0}")]
    Authority(#[from] CaError),
}

/// What one pass found or did (no key material).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Signing with the user's `cacerts`.
    Plugin,
    /// Created `mizzen-ca` with a new root.
    Created,
    /// Another operator created `mizzen-ca` first; using its root.
    LostCreate,
    /// Rotated or repaired `mizzen-ca`.
    Updated(Vec<secret::Step>),
    /// Another writer changed `mizzen-ca` meanwhile; the next pass starts from its version.
    Conflict,
    /// Nothing to change.
    Current,
}

/// One pass: the outcome, the data the authority comes from and the authority (rebuilt only
/// when that data differs from `last`).
pub struct Pass {
    pub outcome: Outcome,
    pub source: SecretData,
    pub authority: Option<Authority>,
}

/// Reads the Secrets, carries out [`secret::plan`] and builds the authority if its source
/// changed since `last`.
pub async fn check_once(
    api: &Api<Secret>,
    settings: &KeeperSettings,
    now: SystemTime,
    last: Option<&SecretData>,
) -> Result<Pass, KeeperError> {
    let get = |name: &'static str| async move {
        api.get_opt(name).await.map_err(|source| KeeperError::Read {
            namespace: settings.namespace.clone(),
            name,
            source,
        })
    };
    let generate =
        |at: SystemTime| RootCa::generate_at(&settings.trust_domain, settings.root_validity, at);
    let cacerts = get(PLUGIN_SECRET_NAME).await?.map(|s| data_of(&s));
    let stored = match &cacerts {
        Some(_) => None,
        None => get(SECRET_NAME).await?,
    };
    let stored_data = stored.as_ref().map(data_of);
    let plan = secret::plan(
        cacerts.as_ref(),
        stored_data.as_ref(),
        &settings.policy,
        now,
        generate,
    )?;
    let (outcome, ca) = match plan {
        CaPlan::Plugin(plugin) => (Outcome::Plugin, Signing::Plugin(plugin)),
        CaPlan::Keep(ca) => (Outcome::Current, Signing::Mesh(ca)),
        CaPlan::Create(ca) => {
            let created = api
                .create(
                    &PostParams::default(),
                    &secret::new_secret(&settings.namespace, &ca),
                )
                .await;
            match created {
                Ok(_) => (Outcome::Created, Signing::Mesh(ca)),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let theirs = get(SECRET_NAME)
                        .await?
                        .ok_or_else(|| KeeperError::Vanished {
                            namespace: settings.namespace.clone(),
                        })?;
                    let ca = MeshCa::from_data(&data_of(&theirs)).map_err(PlanError::from)?;
                    (Outcome::LostCreate, Signing::Mesh(ca))
                }
                Err(source) => return Err(write_error(settings, source)),
            }
        }
        CaPlan::Update(ca, steps) => {
            let current = stored.expect("an update follows a read Secret");
            let replaced = api
                .replace(
                    SECRET_NAME,
                    &PostParams::default(),
                    &secret::updated_secret(current, &ca),
                )
                .await;
            match replaced {
                Ok(_) => (Outcome::Updated(steps), Signing::Mesh(ca)),
                // Keep signing with what the signer has; the next pass reads the new version.
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    return Ok(Pass {
                        outcome: Outcome::Conflict,
                        source: last.cloned().unwrap_or_default(),
                        authority: None,
                    });
                }
                Err(source) => return Err(write_error(settings, source)),
            }
        }
    };
    let source = ca.source();
    let authority = if last == Some(&source) {
        None
    } else {
        Some(ca.authority()?)
    };
    Ok(Pass {
        outcome,
        source,
        authority,
    })
}

fn write_error(settings: &KeeperSettings, source: kube::Error) -> KeeperError {
    KeeperError::Write {
        namespace: settings.namespace.clone(),
        source,
    }
}

/// Where the authority comes from.
enum Signing {
    Plugin(PluginCa),
    Mesh(MeshCa),
}

impl Signing {
    /// The data the authority is built from, per Secret, so an unchanged Secret does not
    /// rebuild (and re-check) it every tick.
    fn source(&self) -> SecretData {
        let (name, data) = match self {
            Signing::Plugin(p) => (PLUGIN_SECRET_NAME, plugin_data(p)),
            Signing::Mesh(ca) => (SECRET_NAME, ca.to_data()),
        };
        data.into_iter()
            .map(|(k, v)| (format!("{name}/{k}"), v))
            .collect()
    }

    fn authority(&self) -> Result<Authority, KeeperError> {
        match self {
            Signing::Plugin(p) => Ok(p.authority().map_err(PlanError::from)?),
            Signing::Mesh(ca) => Ok(ca.authority()?),
        }
    }
}

fn plugin_data(p: &PluginCa) -> SecretData {
    let mut data = SecretData::new();
    for (k, v) in [
        (PLUGIN_CA_CERT, Some(&p.ca_cert_pem)),
        (PLUGIN_CA_KEY, Some(&p.ca_key_pem)),
        (PLUGIN_ROOT_CERT, Some(&p.root_cert_pem)),
        (PLUGIN_CERT_CHAIN, p.cert_chain_pem.as_ref()),
    ] {
        if let Some(v) = v {
            data.insert(k.to_string(), v.clone().into_bytes());
        }
    }
    data
}

/// Runs until the leadership channel closes or nobody listens on `out`. A failed pass is
/// logged and retried at the next tick; the signer keeps the authority it has meanwhile.
pub async fn keep_current(
    client: Client,
    settings: KeeperSettings,
    mut leading: watch::Receiver<bool>,
    out: AuthorityTx,
) {
    let api: Api<Secret> = Api::namespaced(client, &settings.namespace);
    let mut tick = tokio::time::interval(settings.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<SecretData> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = leading.changed() => if changed.is_err() { return },
            _ = out.closed() => return,
        }
        if !*leading.borrow() {
            continue;
        }
        match check_once(&api, &settings, SystemTime::now(), last.as_ref()).await {
            Ok(pass) => {
                if !matches!(pass.outcome, Outcome::Current | Outcome::Plugin) {
                    tracing::info!(outcome = ?pass.outcome, "mesh root CA");
                }
                if let Some(authority) = pass.authority {
                    let validity = authority.validity();
                    tracing::info!(
                        source = if pass.outcome == Outcome::Plugin { PLUGIN_SECRET_NAME } else { SECRET_NAME },
                        roots = authority.roots().len(),
                        signing_not_after = ?validity.not_after,
                        "signing authority loaded"
                    );
                    out.send_replace(Some(Arc::new(authority)));
                }
                last = Some(pass.source);
            }
            Err(e) => tracing::warn!(error = %e, "mesh root CA check failed; will retry"),
        }
    }
}
