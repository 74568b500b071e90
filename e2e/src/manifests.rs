//! The suite's YAML: read from the repository, edited where a scenario needs a variant (a
//! faulty version, a field the fixture leaves out), and server-side applied into a test's
//! namespace, whatever its kind.

use std::path::Path;

use anyhow::{Context, bail};
use kube::{
    Api, Client,
    api::{DynamicObject, GroupVersionKind, Patch, PatchParams},
    discovery::{self, Scope},
};
use serde_json::Value;

/// The field manager of everything the suite applies.
pub const FIELD_MANAGER: &str = "mizzen-e2e";

/// Every object of a multi-document YAML file (relative to the repository root).
pub fn load(relative: &str) -> anyhow::Result<Vec<Value>> {
    let path = crate::repo_path(relative);
    parse(&path)
}

fn parse(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .with_context(|| format!("parsing {}", path.display()))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// The object of `kind` named `name`, to edit in place.
pub fn find<'a>(objects: &'a mut [Value], kind: &str, name: &str) -> &'a mut Value {
    objects
        .iter_mut()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the manifests"))
}

/// Appends `args` to the first container of Deployment `name`.
pub fn append_args(objects: &mut [Value], name: &str, args: &[&str]) {
    let container =
        &mut find(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"][0];
    let list = container["args"]
        .as_array_mut()
        .unwrap_or_else(|| panic!("Deployment {name}: its first container has no args"));
    list.extend(args.iter().map(|a| Value::from(*a)));
}

/// Drops every object whose `metadata.name` is in `names`.
pub fn without(objects: Vec<Value>, names: &[&str]) -> Vec<Value> {
    objects
        .into_iter()
        .filter(|o| !names.iter().any(|n| o["metadata"]["name"] == *n))
        .collect()
}

/// Server-side applies `objects` into namespace `ns` (cluster-scoped kinds as they are).
pub async fn apply(client: &Client, ns: &str, objects: &[Value]) -> anyhow::Result<()> {
    for object in objects {
        let obj: DynamicObject = serde_json::from_value(object.clone())
            .with_context(|| format!("not a Kubernetes object: {object}"))?;
        let Some(types) = &obj.types else {
            bail!("object without apiVersion/kind: {object}");
        };
        let gvk = GroupVersionKind::try_from(types)?;
        let name = obj.metadata.name.clone().unwrap_or_default();
        let (resource, caps) = discovery::pinned_kind(client, &gvk)
            .await
            .with_context(|| format!("the cluster does not serve {gvk:?}"))?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(client.clone(), ns, &resource),
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await
        .with_context(|| format!("applying {} {name} in {ns}", gvk.kind))?;
    }
    Ok(())
}

/// Applies `objects` into `ns` and waits (up to 5 minutes: image pulls, certificates) until
/// every Deployment there has rolled out.
pub async fn deploy(client: &Client, ns: &str, objects: &[Value]) -> anyhow::Result<()> {
    apply(client, ns, objects).await?;
    crate::wait::rollouts(client, ns, std::time::Duration::from_secs(300)).await
}

/// A `PeerAuthentication` for the whole namespace in `mode` (STRICT, PERMISSIVE, DISABLE).
pub fn peer_authentication(mode: &str) -> Value {
    serde_json::json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default"},
        "spec": {"mtls": {"mode": mode}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suites_yaml_parses_and_edits() {
        let mut demo = load("e2e/manifests/demo.yaml").unwrap();
        append_args(&mut demo, "reviews-v2", &["--error-rate", "0.5"]);
        let args = &find(&mut demo, "Deployment", "reviews-v2")["spec"]["template"]["spec"]["containers"]
            [0]["args"];
        assert_eq!(args.as_array().unwrap().last().unwrap(), "0.5");
        for fixture in [
            "gateway-and-cookie-match",
            "vs-canary-90-10",
            "vs-fault-abort",
            "vs-fault-delay",
            "vs-retries",
            "dr-serviceb-subsets",
        ] {
            for doc in load(&format!("e2e/fixtures/{fixture}.yaml")).unwrap() {
                let obj: DynamicObject = serde_json::from_value(doc).unwrap();
                assert!(obj.types.is_some(), "{fixture}");
            }
        }
        let serviceb = load("e2e/manifests/serviceb.yaml").unwrap();
        assert_eq!(
            without(serviceb.clone(), &["serviceb-v2"]).len() + 1,
            serviceb.len()
        );
    }
}
