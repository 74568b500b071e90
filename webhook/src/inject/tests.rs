//! Behaviour of [`inject`] beyond the golden files (`webhook/tests/inject_golden.rs`): skips,
//! conflicts, the legacy sidecar mode, labels, and that unknown fields survive.

use serde_json::{Value, json};

use super::*;

fn pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "reviews-v2-7d9c8b6f5-",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "reviews-v2-7d9c8b6f5", "uid": "u1"}],
            "labels": {"pod-template-hash": "7d9c8b6f5"}
        },
        "spec": {
            "containers": [{"name": "reviews", "image": "reviews:2"}],
            "volumes": [{"name": "data", "emptyDir": {}}]
        }
    })
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

fn injected(p: &Value, settings: &InjectSettings) -> Value {
    let out = inject(p, "default", settings).unwrap();
    assert_eq!(out.outcome, Outcome::Injected);
    out.pod
}

#[test]
fn native_sidecar_layout() {
    let p = injected(&pod(), &InjectSettings::default());
    assert_eq!(
        names(&p["spec"]["initContainers"]),
        ["mizzen-init", "mizzen-proxy"]
    );
    assert_eq!(names(&p["spec"]["containers"]), ["reviews"]);
    assert_eq!(
        names(&p["spec"]["volumes"]),
        [
            "data",
            "mizzen-config",
            "mizzen-ca-root",
            "mizzen-agent",
            "mizzen-token",
            "mizzen-tmp"
        ]
    );
    let proxy = &p["spec"]["initContainers"][1];
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["args"], json!(["sidecar"]));
    assert!(proxy.get("lifecycle").is_none());
    assert_eq!(
        p["metadata"]["annotations"]["sidecar.istio.io/status"],
        r#"{"initContainers":["mizzen-init","mizzen-proxy"],"containers":[],"volumes":["mizzen-config","mizzen-ca-root","mizzen-agent","mizzen-token","mizzen-tmp"],"revision":"default"}"#
    );
    assert_eq!(
        p["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"],
        "reviews"
    );
}

#[test]
fn legacy_sidecar_is_the_first_container_and_holds_the_app() {
    let settings = InjectSettings {
        native_sidecar: false,
        ..InjectSettings::default()
    };
    let p = injected(&pod(), &settings);
    assert_eq!(names(&p["spec"]["initContainers"]), ["mizzen-init"]);
    assert_eq!(names(&p["spec"]["containers"]), ["mizzen-proxy", "reviews"]);
    let proxy = &p["spec"]["containers"][0];
    assert!(proxy.get("restartPolicy").is_none());
    assert_eq!(
        proxy["lifecycle"]["postStart"]["exec"]["command"],
        json!(["mizzen-proxy", "wait-ready"])
    );
    // kubectl logs / exec still pick the application by default.
    assert_eq!(
        p["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"],
        "reviews"
    );
    let status: Value = serde_json::from_str(
        p["metadata"]["annotations"]["sidecar.istio.io/status"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(status["initContainers"], json!(["mizzen-init"]));
    assert_eq!(status["containers"], json!(["mizzen-proxy"]));
}

#[test]
fn user_init_containers_run_after_the_proxy() {
    let mut p = pod();
    p["spec"]["initContainers"] = json!([{"name": "migrate", "image": "migrate:1"}]);
    let out = injected(&p, &InjectSettings::default());
    assert_eq!(
        names(&out["spec"]["initContainers"]),
        ["mizzen-init", "mizzen-proxy", "migrate"]
    );
}

#[test]
fn init_container_flags_and_privileges() {
    let p = injected(&pod(), &InjectSettings::default());
    let init = &p["spec"]["initContainers"][0];
    assert_eq!(
        init["args"],
        json!([
            "init",
            "--proxy-uid",
            "1337",
            "--inbound-capture-port",
            "15006",
            "--outbound-capture-port",
            "15001",
            "--include-inbound-ports",
            "*",
            "--exclude-inbound-ports",
            "15020,15021,15090",
            "--include-outbound-ip-ranges",
            "*",
            "--exclude-outbound-ip-ranges",
            "",
            "--include-outbound-ports",
            "",
            "--exclude-outbound-ports",
            ""
        ])
    );
    let sc = &init["securityContext"];
    assert_eq!(sc["capabilities"]["add"], json!(["NET_ADMIN", "NET_RAW"]));
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["runAsUser"], 0);
    assert_eq!(sc["runAsNonRoot"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
}

#[test]
fn canonical_labels_follow_istio() {
    // From the ReplicaSet's generated name.
    let p = injected(&pod(), &InjectSettings::default());
    let labels = &p["metadata"]["labels"];
    assert_eq!(labels["service.istio.io/canonical-name"], "reviews-v2");
    assert_eq!(labels["service.istio.io/canonical-revision"], "latest");
    assert_eq!(labels["security.istio.io/tlsMode"], "istio");

    // From app / version labels, with app.kubernetes.io/* first.
    let mut q = pod();
    q["metadata"]["labels"] = json!({"app": "reviews", "version": "v2"});
    let labels = injected(&q, &InjectSettings::default())["metadata"]["labels"].clone();
    assert_eq!(labels["service.istio.io/canonical-name"], "reviews");
    assert_eq!(labels["service.istio.io/canonical-revision"], "v2");
    q["metadata"]["labels"] = json!({
        "app": "reviews", "version": "v2",
        "app.kubernetes.io/name": "reviews-svc", "app.kubernetes.io/version": "2.1.0"
    });
    let labels = injected(&q, &InjectSettings::default())["metadata"]["labels"].clone();
    assert_eq!(labels["service.istio.io/canonical-name"], "reviews-svc");
    assert_eq!(labels["service.istio.io/canonical-revision"], "2.1.0");

    // Labels the pod sets itself are kept.
    q["metadata"]["labels"] = json!({
        "service.istio.io/canonical-name": "mine", "service.istio.io/canonical-revision": "r1",
        "security.istio.io/tlsMode": "disabled"
    });
    let labels = injected(&q, &InjectSettings::default())["metadata"]["labels"].clone();
    assert_eq!(labels["service.istio.io/canonical-name"], "mine");
    assert_eq!(labels["service.istio.io/canonical-revision"], "r1");
    assert_eq!(labels["security.istio.io/tlsMode"], "disabled");

    // A bare pod template with no name and no app label gets no canonical name.
    let t = json!({"spec": {"containers": [{"name": "c", "image": "i"}]}});
    let labels = injected(&t, &InjectSettings::default())["metadata"]["labels"].clone();
    assert!(labels.get("service.istio.io/canonical-name").is_none());
    let named = json!({"metadata": {"name": "solo"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let labels = injected(&named, &InjectSettings::default())["metadata"]["labels"].clone();
    assert_eq!(labels["service.istio.io/canonical-name"], "solo");
}

#[test]
fn skips_and_returns_the_pod_unchanged() {
    let settings = InjectSettings::default();
    let cases: Vec<(Value, &str, Skip)> = vec![
        (
            {
                let mut p = pod();
                p["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("false");
                p
            },
            "default",
            Skip::OptedOutByLabel,
        ),
        (
            {
                let mut p = pod();
                p["metadata"]["annotations"] = json!({"sidecar.istio.io/inject": "False"});
                p
            },
            "default",
            Skip::OptedOutByAnnotation,
        ),
        (
            {
                let mut p = pod();
                p["metadata"]["annotations"] = json!({"sidecar.istio.io/inject": false});
                p
            },
            "default",
            Skip::OptedOutByAnnotation,
        ),
        (
            {
                let mut p = pod();
                p["spec"]["hostNetwork"] = json!(true);
                p
            },
            "default",
            Skip::HostNetwork,
        ),
        (
            pod(),
            "kube-system",
            Skip::ExcludedNamespace("kube-system".into()),
        ),
        (
            pod(),
            "mizzen-system",
            Skip::ExcludedNamespace("mizzen-system".into()),
        ),
        (
            {
                let mut p = pod();
                p["metadata"]["annotations"] = json!({"sidecar.istio.io/status": "{}"});
                p
            },
            "default",
            Skip::AlreadyInjected,
        ),
    ];
    for (p, ns, why) in cases {
        let out = inject(&p, ns, &settings).unwrap();
        assert_eq!(out.outcome, Outcome::Skipped(why.clone()), "{why}");
        assert_eq!(out.pod, p, "{why}");
    }
    // "true" and absent both inject.
    let mut p = pod();
    p["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("true");
    assert_eq!(
        inject(&p, "default", &settings).unwrap().outcome,
        Outcome::Injected
    );
    assert_eq!(
        Skip::OptedOutByAnnotation.to_string(),
        "opted out by the annotation sidecar.istio.io/inject=false"
    );
}

#[test]
fn injecting_twice_changes_nothing() {
    let settings = InjectSettings::default();
    let once = injected(&pod(), &settings);
    let twice = inject(&once, "default", &settings).unwrap();
    assert_eq!(twice.outcome, Outcome::Skipped(Skip::AlreadyInjected));
    assert_eq!(twice.pod, once);
}

#[test]
fn unknown_fields_survive_everywhere() {
    let mut p = pod();
    p["futureTop"] = json!({"a": 1});
    p["metadata"]["futureMeta"] = json!("x");
    p["spec"]["futureSpec"] = json!([1, 2]);
    p["spec"]["containers"][0]["futureContainer"] = json!({"deep": {"er": true}});
    p["spec"]["volumes"][0]["futureVolume"] = json!(null);
    p["status"] = json!({"phase": "Pending"});
    let out = injected(&p, &InjectSettings::default());
    assert_eq!(out["futureTop"], json!({"a": 1}));
    assert_eq!(out["metadata"]["futureMeta"], "x");
    assert_eq!(out["spec"]["futureSpec"], json!([1, 2]));
    assert_eq!(
        out["spec"]["containers"][0]["futureContainer"],
        json!({"deep": {"er": true}})
    );
    assert_eq!(
        out["spec"]["volumes"][0],
        json!({"name": "data", "emptyDir": {}, "futureVolume": null})
    );
    assert_eq!(out["status"], json!({"phase": "Pending"}));
}

#[test]
fn refuses_pods_it_cannot_inject() {
    let settings = InjectSettings::default();
    let err = |p: Value| inject(&p, "default", &settings).unwrap_err().to_string();

    assert_eq!(err(json!([])), "a pod must be a JSON object");
    assert_eq!(err(json!({"metadata": {}})), "spec: a pod needs a spec");
    assert_eq!(
        err(json!({"spec": {"containers": []}})),
        "spec.containers: a pod needs at least one container"
    );
    assert_eq!(
        err(json!({"spec": {"containers": {"a": 1}}})),
        "spec.containers: must be a list"
    );

    let mut p = pod();
    p["spec"]["containers"][0]["name"] = json!("mizzen-proxy");
    assert_eq!(
        err(p),
        "spec.containers[0].name: the pod already has a container named mizzen-proxy, which injection would add"
    );
    let mut p = pod();
    p["spec"]["volumes"] =
        json!([{"name": "a", "emptyDir": {}}, {"name": "mizzen-token", "emptyDir": {}}]);
    assert_eq!(
        err(p),
        "spec.volumes[1].name: the pod already has a volume named mizzen-token, which injection would add"
    );
    let mut p = pod();
    p["metadata"]["annotations"] = json!({"traffic.sidecar.istio.io/excludeInboundPorts": "http"});
    assert_eq!(
        err(p),
        "annotation traffic.sidecar.istio.io/excludeInboundPorts: \"http\": \"http\" is not a port number (1 to 65535)"
    );
    let mut p = pod();
    p["metadata"]["labels"] = json!("oops");
    assert_eq!(err(p), "metadata.labels: must be an object");
}

#[test]
fn the_pods_istio_locality_label_becomes_its_proxys_locality() {
    let env_of = |out: &Value| -> Option<Value> {
        out["spec"]["initContainers"][1]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "MIZZEN_LOCALITY")
            .map(|e| e["value"].clone())
    };
    let mut p = pod();
    assert_eq!(env_of(&injected(&p, &InjectSettings::default())), None);
    p["metadata"]["labels"]["istio-locality"] = json!("us-east1.us-east1-b.rack-4");
    assert_eq!(
        env_of(&injected(&p, &InjectSettings::default())),
        Some(json!("us-east1/us-east1-b/rack-4"))
    );
}

#[test]
fn proxy_environment_and_mounts() {
    let mut p = pod();
    p["metadata"]["annotations"] = json!({"proxy.istio.io/config": "concurrency: 2\n"});
    p["spec"]["containers"][0]["readinessProbe"] = json!({"httpGet": {"path": "/r", "port": 9080}});
    let out = injected(&p, &InjectSettings::default());
    let proxy = &out["spec"]["initContainers"][1];
    let env: Vec<(&str, Value)> = proxy["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let v = e
                .get("value")
                .cloned()
                .unwrap_or_else(|| e["valueFrom"]["fieldRef"]["fieldPath"].clone());
            (e["name"].as_str().unwrap(), v)
        })
        .collect();
    assert_eq!(
        env,
        vec![
            ("POD_NAME", json!("metadata.name")),
            ("POD_NAMESPACE", json!("metadata.namespace")),
            ("SERVICE_ACCOUNT", json!("spec.serviceAccountName")),
            ("NODE_NAME", json!("spec.nodeName")),
            ("POD_IP", json!("status.podIP")),
            ("HOST_IP", json!("status.hostIP")),
            ("MIZZEN_CONFIG", json!("/etc/mizzen/config/config.json")),
            ("MIZZEN_AGENT_SOCKET", json!("/var/run/mizzen/agent.sock")),
            (
                "MIZZEN_TOKEN",
                json!("/var/run/secrets/tokens/mizzen-token")
            ),
            (
                "MIZZEN_APP_PROBES",
                json!(
                    r#"{"/app-health/reviews/readyz":{"httpGet":{"path":"/r","port":9080,"scheme":"HTTP"},"timeoutSeconds":1}}"#
                )
            ),
            ("MIZZEN_PROXY_CONFIG", json!("concurrency: 2\n")),
        ]
    );
    let token = out["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "mizzen-token")
        .unwrap();
    assert_eq!(
        token["projected"]["sources"][0]["serviceAccountToken"],
        json!({"audience": "mizzen-ca", "expirationSeconds": 3600, "path": "mizzen-token"})
    );
}

#[test]
fn probe_rewriting_can_be_switched_off() {
    let mut p = pod();
    p["metadata"]["annotations"] = json!({"sidecar.istio.io/rewriteAppHTTPProbers": "false"});
    let probe = json!({"httpGet": {"path": "/r", "port": 9080}});
    p["spec"]["containers"][0]["readinessProbe"] = probe.clone();
    let out = injected(&p, &InjectSettings::default());
    assert_eq!(out["spec"]["containers"][0]["readinessProbe"], probe);
    let env = out["spec"]["initContainers"][1]["env"].as_array().unwrap();
    assert!(env.iter().all(|e| e["name"] != "MIZZEN_APP_PROBES"));
}
