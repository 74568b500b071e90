//! The Istio objects the canary controller writes, as pure functions of the Canary: the
//! VirtualService that carries a [`Traffic`] (so the operator's one render path turns it into
//! proxy config, with no second routing model), and the DestinationRule change that promotes.
//!
//! Both shells use these: the Kubernetes one applies them with its field manager, the file one
//! writes them as YAML.

use std::collections::BTreeMap;

use mizzen_crds::rollouts::canary::Canary;
use serde_json::{Value, json};

use super::Traffic;

/// The field manager of every write the controller makes.
pub const FIELD_MANAGER: &str = "mizzen-canary";

/// Name of the VirtualService the controller owns: `spec.virtualService`, else the Canary's.
pub fn virtual_service_name(canary: &Canary) -> String {
    canary
        .spec
        .virtual_service
        .clone()
        .unwrap_or_else(|| canary.metadata.name.clone().unwrap_or_default())
}

/// The whole VirtualService for `traffic`: an A/B route first when requests that match
/// `analysis.match` go to the canary, then the weighted route between the two subsets (with the
/// mirror, for blue/green with mirroring). Idempotent: the same inputs give the same object, so
/// applying it again repairs drift.
pub fn virtual_service(canary: &Canary, traffic: Traffic) -> Value {
    let spec = &canary.spec;
    let dest = |subset: &str| json!({"host": spec.service, "subset": subset});
    let mut http = Vec::new();
    if traffic.canary_match {
        let matches: Vec<Value> = spec
            .analysis
            .iter()
            .flat_map(|a| &a.r#match)
            .map(|m| serde_json::to_value(m).unwrap_or_default())
            .collect();
        if !matches.is_empty() {
            http.push(json!({
                "name": "canary-match",
                "match": matches,
                "route": [{"destination": dest(&spec.canary_subset), "weight": 100}],
            }));
        }
    }
    let mut main = json!({
        "name": "canary",
        "route": [
            {"destination": dest(&spec.stable_subset), "weight": traffic.primary},
            {"destination": dest(&spec.canary_subset), "weight": traffic.canary},
        ],
    });
    if let Some(percent) = traffic.mirror {
        main["mirror"] = dest(&spec.canary_subset);
        main["mirrorPercentage"] = json!({"value": f64::from(percent)});
    }
    http.push(main);
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {
            "name": virtual_service_name(canary),
            "namespace": canary.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        },
        "spec": {"hosts": [spec.service], "http": http},
    })
}

/// Whether a DestinationRule's `host` names the canary's service: equal, or equal in the
/// first label (`reviews` and `reviews.prod.svc.cluster.local` in the same namespace).
pub fn host_matches(host: &str, service: &str) -> bool {
    let first = |h: &str| h.split('.').next().unwrap_or_default().to_string();
    host == service || first(host) == first(service)
}

/// The labels of subset `name` of a DestinationRule given as JSON.
pub fn subset_labels(rule: &Value, name: &str) -> Option<BTreeMap<String, String>> {
    rule.pointer("/spec/subsets")?
        .as_array()?
        .iter()
        .find(|s| s.get("name").and_then(Value::as_str) == Some(name))
        .map(|s| {
            s.get("labels")
                .and_then(Value::as_object)
                .map(|labels| {
                    labels
                        .iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default()
        })
}

/// Promotion on a DestinationRule given as JSON: the stable subset takes the canary subset's
/// labels, so the stable subset now selects the pods of the promoted version. Returns the JSON
/// Patch (guarded by a `test` of the subset's name, so a concurrent reorder fails instead of
/// changing the wrong subset), or `None` when a subset is missing.
pub fn promotion_patch(rule: &Value, stable: &str, canary: &str) -> Option<Value> {
    let subsets = rule.pointer("/spec/subsets")?.as_array()?;
    let index = subsets
        .iter()
        .position(|s| s.get("name").and_then(Value::as_str) == Some(stable))?;
    let labels = subset_labels(rule, canary)?;
    Some(json!([
        {"op": "test", "path": format!("/spec/subsets/{index}/name"), "value": stable},
        {"op": "add", "path": format!("/spec/subsets/{index}/labels"), "value": labels},
    ]))
}

/// A label map as `k=v,k=v` (sorted): a Kubernetes label selector, and the revision of a
/// subset when nothing better identifies it.
pub fn selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(analysis: Value) -> Canary {
        serde_json::from_value(json!({
            "apiVersion": "rollouts.mizzen.io/v1alpha1", "kind": "Canary",
            "metadata": {"name": "reviews", "namespace": "shop"},
            "spec": {"service": "reviews", "stableSubset": "v1", "canarySubset": "v2",
                     "analysis": analysis},
        }))
        .unwrap()
    }

    #[test]
    fn weights_become_one_weighted_route() {
        let c = canary(json!({"interval": "1m", "stepWeight": 10, "maxWeight": 50}));
        let vs = virtual_service(&c, Traffic::weights(30));
        assert_eq!(
            vs["metadata"],
            json!({"name": "reviews", "namespace": "shop"})
        );
        assert_eq!(
            vs["spec"],
            json!({"hosts": ["reviews"], "http": [{"name": "canary", "route": [
                {"destination": {"host": "reviews", "subset": "v1"}, "weight": 70},
                {"destination": {"host": "reviews", "subset": "v2"}, "weight": 30},
            ]}]})
        );
    }

    #[test]
    fn ab_routes_go_first_and_mirror_rides_on_the_main_route() {
        let c = canary(json!({"interval": "1m", "iterations": 2,
            "match": [{"headers": {"x-canary": {"exact": "yes"}}}]}));
        let t = Traffic {
            canary_match: true,
            ..Traffic::STABLE
        };
        let vs = virtual_service(&c, t);
        assert_eq!(vs["spec"]["http"][0]["name"], "canary-match");
        assert_eq!(
            vs["spec"]["http"][0]["match"][0]["headers"]["x-canary"]["exact"],
            "yes"
        );
        assert_eq!(vs["spec"]["http"][0]["route"][0]["weight"], 100);
        assert_eq!(vs["spec"]["http"][1]["route"][0]["weight"], 100);

        let m = Traffic {
            mirror: Some(40),
            ..Traffic::STABLE
        };
        let vs = virtual_service(&c, m);
        let main = &vs["spec"]["http"][0];
        assert_eq!(main["mirror"], json!({"host": "reviews", "subset": "v2"}));
        assert_eq!(main["mirrorPercentage"]["value"], 40.0);
    }

    #[test]
    fn promotion_gives_the_stable_subset_the_canary_labels() {
        let dr = json!({"spec": {"host": "reviews", "subsets": [
            {"name": "v2", "labels": {"version": "v2"}},
            {"name": "v1", "labels": {"version": "v1"}},
        ]}});
        assert_eq!(
            promotion_patch(&dr, "v1", "v2").unwrap(),
            json!([
                {"op": "test", "path": "/spec/subsets/1/name", "value": "v1"},
                {"op": "add", "path": "/spec/subsets/1/labels", "value": {"version": "v2"}},
            ])
        );
        assert_eq!(promotion_patch(&dr, "v1", "v3"), None);
        assert_eq!(
            selector(&subset_labels(&dr, "v2").unwrap()),
            "version=v2".to_string()
        );
        assert!(host_matches("reviews.shop.svc.cluster.local", "reviews"));
        assert!(!host_matches("ratings", "reviews"));
    }
}
