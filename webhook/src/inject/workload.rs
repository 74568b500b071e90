//! Injection into the pod template of a workload object, for `mizzenctl inject` (GitOps users
//! inject in their YAML, as with `istioctl kube-inject`). The template goes through
//! [`super::inject`] like an admitted pod.

use serde_json::Value;

use super::{InjectError, InjectSettings, Outcome, inject};

/// Where the pod (template) of a kind lives: `Some("")` for a Pod itself, `None` for kinds that
/// hold no pod.
pub fn template_pointer(api_version: &str, kind: &str) -> Option<&'static str> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    match (group, kind) {
        ("", "Pod") => Some(""),
        ("", "ReplicationController") => Some("/spec/template"),
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            Some("/spec/template")
        }
        ("batch", "Job") => Some("/spec/template"),
        ("batch", "CronJob") => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// What [`inject_workload`] did with one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkloadOutcome {
    /// Not a kind that holds a pod: returned as it was.
    NotAWorkload,
    Pod(Outcome),
}

/// Injects the pod of `object` (a Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet,
/// ReplicationController, Job or CronJob); other objects come back unchanged. The namespace is
/// the object's own, `default` when it names none. Error paths are from the object's root.
pub fn inject_workload(
    object: &Value,
    settings: &InjectSettings,
) -> Result<(Value, WorkloadOutcome), InjectError> {
    let text = |ptr: &str| {
        object
            .pointer(ptr)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let Some(pointer) = template_pointer(text("/apiVersion"), text("/kind")) else {
        return Ok((object.clone(), WorkloadOutcome::NotAWorkload));
    };
    let namespace = Some(text("/metadata/namespace"))
        .filter(|ns| !ns.is_empty())
        .unwrap_or("default");
    let prefix = pointer.trim_start_matches('/').replace('/', ".");
    let Some(template) = object.pointer(pointer) else {
        return Err(InjectError::InvalidPod {
            path: prefix,
            message: "the workload has no pod template".into(),
        });
    };
    let done = inject(template, namespace, settings).map_err(|e| at(e, &prefix))?;
    let mut out = object.clone();
    if pointer.is_empty() {
        out = done.pod;
    } else {
        *out.pointer_mut(pointer).expect("present above") = done.pod;
    }
    Ok((out, WorkloadOutcome::Pod(done.outcome)))
}

/// `err` with its field path starting at the object's root rather than at the template.
fn at(err: InjectError, prefix: &str) -> InjectError {
    let join = |path: String| match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path,
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}.{path}"),
    };
    match err {
        InjectError::InvalidPod { path, message } => InjectError::InvalidPod {
            path: join(path),
            message,
        },
        InjectError::NameConflict { path, what, name } => InjectError::NameConflict {
            path: join(path),
            what,
            name,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::inject::Skip;

    fn template() -> Value {
        json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "a", "image": "a"}]}})
    }

    #[test]
    fn finds_the_template_of_every_workload_kind() {
        let settings = InjectSettings::default();
        let cases = [
            ("v1", "Pod", ""),
            ("v1", "ReplicationController", "/spec/template"),
            ("apps/v1", "Deployment", "/spec/template"),
            ("apps/v1", "StatefulSet", "/spec/template"),
            ("apps/v1", "DaemonSet", "/spec/template"),
            ("apps/v1", "ReplicaSet", "/spec/template"),
            ("batch/v1", "Job", "/spec/template"),
            ("batch/v1", "CronJob", "/spec/jobTemplate/spec/template"),
        ];
        for (api_version, kind, pointer) in cases {
            let mut object =
                json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}});
            if pointer.is_empty() {
                object["spec"] = template()["spec"].clone();
            } else if kind == "CronJob" {
                object["spec"] = json!({"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template()}}});
            } else {
                object["spec"] = json!({"template": template()});
            }
            let (out, outcome) = inject_workload(&object, &settings).unwrap();
            assert_eq!(outcome, WorkloadOutcome::Pod(Outcome::Injected), "{kind}");
            let pod = out.pointer(pointer).unwrap();
            assert_eq!(
                pod["spec"]["initContainers"][0]["name"], "mizzen-init",
                "{kind}"
            );
            assert_eq!(out["metadata"]["name"], "x", "{kind}");
        }
    }

    #[test]
    fn other_objects_pass_through() {
        let settings = InjectSettings::default();
        for object in [
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}),
            json!({"apiVersion": "example.com/v1", "kind": "Deployment", "spec": {"template": template()}}),
            json!("just a string"),
        ] {
            let (out, outcome) = inject_workload(&object, &settings).unwrap();
            assert_eq!(outcome, WorkloadOutcome::NotAWorkload);
            assert_eq!(out, object);
        }
    }

    #[test]
    fn namespace_and_errors_are_the_objects() {
        let settings = InjectSettings::default();
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "namespace": "kube-system"}, "spec": {"template": template()}});
        let (out, outcome) = inject_workload(&d, &settings).unwrap();
        assert_eq!(
            outcome,
            WorkloadOutcome::Pod(Outcome::Skipped(Skip::ExcludedNamespace(
                "kube-system".into()
            )))
        );
        assert_eq!(out, d);

        let mut bad = d.clone();
        bad["metadata"]["namespace"] = json!("shop");
        bad["spec"]["template"]["spec"]["containers"][0]["name"] = json!("mizzen-proxy");
        assert_eq!(
            inject_workload(&bad, &settings).unwrap_err().to_string(),
            "spec.template.spec.containers[0].name: the pod already has a container named mizzen-proxy, which injection would add"
        );
        let none = json!({"apiVersion": "batch/v1", "kind": "CronJob", "spec": {}});
        assert_eq!(
            inject_workload(&none, &settings).unwrap_err().to_string(),
            "spec.jobTemplate.spec.template: the workload has no pod template"
        );
    }
}
