//! Status conditions: the pure rule for what an object's `status` should become
//! ([`next_status`]), and a thin writer that patches the `status` subresource and records an
//! Event when an object is rejected.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use mizzen_crds::{
    Condition, MeshStatus,
    networking::{DestinationRule, Gateway, ServiceEntry, Sidecar, VirtualService, WorkloadEntry},
    resource::ObjectRef,
    security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication},
};

use crate::{index::Stored, render::ObjectStatus};

pub const CONDITION: &str = "Accepted";

/// The status an object carries now, if any.
pub fn current_status(stored: &Stored) -> Option<MeshStatus> {
    let value = stored.resource.to_value();
    serde_json::from_value(value.get("status")?.clone()).ok()
}

/// The status to write, or `None` when `current` already says it. `lastTransitionTime` is
/// kept while the condition's status stays the same.
pub fn next_status(
    current: Option<&MeshStatus>,
    verdict: &ObjectStatus,
    now: &str,
) -> Option<MeshStatus> {
    let status = if verdict.accepted { "True" } else { "False" };
    let previous = current.and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION));
    let transition = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(now.to_string()),
    };
    let condition = Condition {
        type_: CONDITION.into(),
        status: status.into(),
        reason: Some(verdict.reason.into()),
        message: Some(verdict.message.clone()).filter(|m| !m.is_empty()),
        last_transition_time: transition,
        observed_generation: verdict.generation,
    };
    let mut next = current.cloned().unwrap_or_default();
    next.conditions.retain(|c| c.type_ != CONDITION);
    next.conditions.insert(0, condition);
    next.observed_generation = verdict.generation;
    // Compare ignoring the order of conditions other writers may have put there.
    let same = current.is_some_and(|c| {
        c.observed_generation == next.observed_generation
            && c.conditions.len() == next.conditions.len()
            && next.conditions.iter().all(|n| c.conditions.contains(n))
    });
    (!same).then_some(next)
}

/// The API resource of a mesh kind (served as `v1`).
pub fn api_resource(kind: &str) -> Option<ApiResource> {
    Some(match kind {
        "VirtualService" => ApiResource::erase::<VirtualService>(&()),
        "DestinationRule" => ApiResource::erase::<DestinationRule>(&()),
        "Gateway" => ApiResource::erase::<Gateway>(&()),
        "ServiceEntry" => ApiResource::erase::<ServiceEntry>(&()),
        "WorkloadEntry" => ApiResource::erase::<WorkloadEntry>(&()),
        "Sidecar" => ApiResource::erase::<Sidecar>(&()),
        "PeerAuthentication" => ApiResource::erase::<PeerAuthentication>(&()),
        "AuthorizationPolicy" => ApiResource::erase::<AuthorizationPolicy>(&()),
        "RequestAuthentication" => ApiResource::erase::<RequestAuthentication>(&()),
        _ => return None,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{0} is not a kind whose status Mizzen writes")]
    UnknownKind(String),
    #[error("patching the status of {object}: {source}")]
    Patch {
        object: String,
        #[source]
        source: kube::Error,
    },
}

/// Patches `status` and publishes Events.
#[derive(Clone)]
pub struct StatusWriter {
    client: Client,
    recorder: Recorder,
}

impl StatusWriter {
    pub fn new(client: Client, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: crate::apply::FIELD_MANAGER.into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
        }
    }

    pub async fn write(&self, object: &ObjectRef, status: &MeshStatus) -> Result<(), StatusError> {
        let ar = api_resource(&object.kind)
            .ok_or_else(|| StatusError::UnknownKind(object.kind.clone()))?;
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &object.namespace, &ar);
        let patch = serde_json::json!({ "status": status });
        api.patch_status(&object.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| StatusError::Patch {
                object: object.to_string(),
                source,
            })?;
        Ok(())
    }

    /// A Warning Event on a rejected object. Failures are logged, never fatal.
    pub async fn rejected(&self, stored: &Stored, message: &str) {
        let Some(ar) = api_resource(&stored.object.kind) else {
            return;
        };
        let meta = stored.resource.meta();
        let reference = ObjectReference {
            api_version: Some(ar.api_version.clone()),
            kind: Some(ar.kind.clone()),
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: "Invalid".into(),
            note: Some(message.chars().take(1000).collect()),
            action: "Render".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(object = %stored.object, error = %e, "could not publish event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(accepted: bool, generation: i64) -> ObjectStatus {
        ObjectStatus {
            accepted,
            reason: if accepted { "Accepted" } else { "Invalid" },
            message: if accepted {
                String::new()
            } else {
                "spec.http[0].route: bad".into()
            },
            generation: Some(generation),
        }
    }

    #[test]
    fn writes_only_on_change_and_keeps_transition_time() {
        let first = next_status(None, &verdict(true, 1), "t1").unwrap();
        assert_eq!(first.conditions[0].status, "True");
        assert_eq!(
            first.conditions[0].last_transition_time.as_deref(),
            Some("t1")
        );
        assert_eq!(first.observed_generation, Some(1));
        assert!(next_status(Some(&first), &verdict(true, 1), "t2").is_none());

        let newer = next_status(Some(&first), &verdict(true, 2), "t2").unwrap();
        assert_eq!(
            newer.conditions[0].last_transition_time.as_deref(),
            Some("t1")
        );

        let bad = next_status(Some(&newer), &verdict(false, 3), "t3").unwrap();
        assert_eq!(bad.conditions[0].status, "False");
        assert_eq!(bad.conditions[0].reason.as_deref(), Some("Invalid"));
        assert_eq!(
            bad.conditions[0].message.as_deref(),
            Some("spec.http[0].route: bad")
        );
        assert_eq!(
            bad.conditions[0].last_transition_time.as_deref(),
            Some("t3")
        );
    }

    #[test]
    fn keeps_conditions_of_other_writers() {
        let mut current = next_status(None, &verdict(true, 1), "t1").unwrap();
        current.conditions.push(Condition {
            type_: "Reconciled".into(),
            status: "True".into(),
            ..Condition::default()
        });
        assert!(next_status(Some(&current), &verdict(true, 1), "t2").is_none());
        let next = next_status(Some(&current), &verdict(false, 1), "t2").unwrap();
        assert_eq!(next.conditions.len(), 2);
    }
}
