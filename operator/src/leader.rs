//! Leader election on a `coordination.k8s.io` Lease: only the holder writes. kube 5 ships no
//! elector, so this is a small one: [`decide`] is the pure rule, [`LeaderElector`] gets, creates
//! and updates (with the read `resourceVersion`, so two candidates never both win) the Lease.
//! The RBAC grants exactly get/update on the Lease's name, and create.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{Api, Client, api::PostParams};
use tokio::sync::watch;

/// How the Lease is held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This candidate (the pod name).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

impl LeaseSettings {
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: "mizzen-operator".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(2),
        }
    }
}

/// What to do with the Lease as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Someone else held it and it expired (or nobody holds it): take it over.
    Acquire,
    /// Someone else holds it.
    Follow { holder: String },
}

/// The rule: hold, take over an expired or empty Lease, or follow.
pub fn decide(
    lease: Option<&LeaseSpec>,
    me: &str,
    now: Timestamp,
    default_duration: Duration,
) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == me {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Acquire;
    }
    let duration = spec.lease_duration_seconds.map_or(default_duration, |s| {
        Duration::from_secs(u64::try_from(s).unwrap_or(0))
    });
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    let expired = match renewed {
        None => true,
        Some(t) => {
            let age = now.duration_since(t);
            age > SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX)
        }
    };
    if expired {
        Decision::Acquire
    } else {
        Decision::Follow {
            holder: holder.to_string(),
        }
    }
}

/// Runs the election and publishes whether this candidate leads.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    leading: watch::Sender<bool>,
}

impl LeaderElector {
    pub fn new(client: Client, settings: LeaseSettings) -> (Self, watch::Receiver<bool>) {
        let (tx, rx) = watch::channel(false);
        (
            Self {
                api: Api::namespaced(client, &settings.namespace),
                settings,
                leading: tx,
            },
            rx,
        )
    }

    fn spec(&self, now: Timestamp, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(15),
            ),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One round: returns whether we hold the Lease afterwards. A conflict (someone else
    /// wrote first) means we do not.
    pub async fn try_once(&self, now: Timestamp) -> Result<bool, kube::Error> {
        let name = &self.settings.name;
        let current = self.api.get_opt(name).await?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let decision = decide(
            spec,
            &self.settings.identity,
            now,
            self.settings.lease_duration,
        );
        let result = match decision {
            Decision::Follow { .. } => return Ok(false),
            Decision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(self.settings.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(now, None, 0)),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
            Decision::Renew | Decision::Acquire => {
                let mut lease = current.expect("a decision other than Create has a Lease");
                let old = lease.spec.clone().unwrap_or_default();
                let (acquired, transitions) = if decision == Decision::Renew {
                    (old.acquire_time, old.lease_transitions.unwrap_or(0))
                } else {
                    (None, old.lease_transitions.unwrap_or(0) + 1)
                };
                lease.spec = Some(self.spec(now, acquired, transitions));
                self.api
                    .replace(name, &PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Renews forever. On an API error the candidate stops leading until it renews again:
    /// writing nothing is always safe.
    pub async fn run(self) {
        let mut interval = tokio::time::interval(self.settings.renew_every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let leading = match self.try_once(Timestamp::now()).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: could not read or renew the Lease");
                    false
                }
            };
            self.leading.send_if_modified(|was| {
                let changed = *was != leading;
                if changed {
                    tracing::info!(leading, identity = %self.settings.identity, "leadership changed");
                }
                *was = leading;
                changed
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(renewed)),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn holds_renews_takes_over_expired_and_follows() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let d = Duration::from_secs(15);
        assert_eq!(decide(None, "me", t0, d), Decision::Create);
        assert_eq!(decide(Some(&lease("me", t0)), "me", t0, d), Decision::Renew);
        let later = t0 + SignedDuration::from_secs(10);
        assert_eq!(
            decide(Some(&lease("other", t0)), "me", later, d),
            Decision::Follow {
                holder: "other".into()
            }
        );
        let expired = t0 + SignedDuration::from_secs(16);
        assert_eq!(
            decide(Some(&lease("other", t0)), "me", expired, d),
            Decision::Acquire
        );
        assert_eq!(decide(Some(&lease("", t0)), "me", t0, d), Decision::Acquire);
    }
}
