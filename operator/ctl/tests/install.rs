//! `mizzenctl install`: the committed `manifests/` are exactly what the command renders, and what
//! it renders is sound: images from one hub and tag, every container locked down, the webhooks
//! scoped as the design says, RBAC without wildcards and documented rule by rule.
//!
//! Regenerate the committed files with `MIZZEN_UPDATE_GOLDEN=1 cargo test -p mizzenctl --test
//! install` (or `mizzenctl install --out-dir manifests`).

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

/// The defaults `mizzenctl install` documents.
const DEFAULT_HUB: &str = "ghcr.io/mizzen-mesh";
const DEFAULT_TAG: &str = env!("CARGO_PKG_VERSION");

const FILES: [&str; 8] = [
    "00-namespace.yaml",
    "01-crds.yaml",
    "02-rbac.yaml",
    "03-operator.yaml",
    "04-webhook.yaml",
    "05-agent.yaml",
    "06-webhook-configurations.yaml",
    "07-ingress-gateway.yaml",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Runs `mizzenctl install ARGS` and returns its stdout.
fn install(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mizzenctl"))
        .arg("install")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mizzenctl install {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The files `mizzenctl install --out-dir` writes (with `args` added), by name, in name order.
fn rendered_files(case: &str, args: &[&str]) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("install-{case}"));
    let _ = fs::remove_dir_all(&dir);
    let mut all = vec!["--out-dir", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    install(&all);
    let files = yaml_files(&dir);
    fs::remove_dir_all(&dir).unwrap();
    files
}

/// Every `.yaml` file in `dir` (not recursive, as `kubectl apply -f DIR` reads it), in name order.
fn yaml_files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .map(|path| {
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            (name, fs::read_to_string(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

fn parse(name: &str, text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"))
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect()
}

/// Every object of the default render.
fn objects() -> Vec<Value> {
    rendered_files("objects", &[])
        .iter()
        .flat_map(|(name, text)| parse(name, text))
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("expected a list, got {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// Each workload's name and pod spec.
fn pod_specs(objects: &[Value]) -> Vec<(String, &Value)> {
    objects
        .iter()
        .filter(|o| o["kind"] == "Deployment" || o["kind"] == "DaemonSet")
        .map(|o| {
            let name = o["metadata"]["name"].as_str().unwrap().to_string();
            (name, &o["spec"]["template"]["spec"])
        })
        .collect()
}

#[test]
fn committed_manifests_match_the_render() {
    let rendered = rendered_files("golden", &[]);
    let names: Vec<_> = rendered.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, FILES);

    let dir = repo_root().join("manifests");
    if std::env::var_os("MIZZEN_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        fs::create_dir_all(&dir).unwrap();
        for (name, _) in yaml_files(&dir) {
            if !FILES.contains(&name.as_str()) {
                fs::remove_file(dir.join(name)).unwrap();
            }
        }
        for (name, text) in &rendered {
            fs::write(dir.join(name), text).unwrap();
        }
    }

    // kubectl apply -f manifests/ takes every .yaml, .yml and .json file: only ours may be there.
    for entry in fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            // `addons/` holds optional extras applied on their own (`kubectl apply -f` does
            // not descend into it).
            FILES.contains(&name.as_str()) || name == "README.md" || name == "addons",
            "manifests/{name} is not part of the install; remove it (kubectl would apply it)"
        );
    }
    for (name, text) in &rendered {
        let committed = fs::read_to_string(dir.join(name)).unwrap_or_default();
        assert!(
            committed == *text,
            "manifests/{name} differs from what `mizzenctl install` renders; regenerate it with \
             `MIZZEN_UPDATE_GOLDEN=1 cargo test -p mizzenctl --test install`"
        );
    }
}

#[test]
fn the_stream_on_stdout_is_the_files_in_order() {
    let files = rendered_files("stream", &[]);
    let expected = files
        .iter()
        .map(|(_, text)| text.as_str())
        .filter(|text| !text.trim().is_empty())
        .collect::<Vec<_>>()
        .join("---\n");
    assert_eq!(install(&[]), expected);
}

#[test]
fn hub_and_tag_move_every_image_and_nothing_else() {
    let (hub, tag) = ("registry.example.com/team", "9.8.7-test");
    let default = install(&[]);
    let custom = install(&["--hub", hub, "--tag", tag]);

    // Putting the defaults back gives the default render: nothing else depends on them.
    assert_eq!(
        custom.replace(hub, DEFAULT_HUB).replace(tag, DEFAULT_TAG),
        default
    );
    // The lines that moved are image references and version labels, nothing else.
    for (before, after) in default.lines().zip(custom.lines()) {
        if before != after {
            let line = after.trim_start();
            assert!(
                line.starts_with("image: ")
                    || line.starts_with("app.kubernetes.io/version: ")
                    || line.starts_with(&format!("- \"{hub}/mizzen-proxy:")),
                "unexpected change: {after}"
            );
        }
    }

    // Every image reference, the proxy image the injector adds included, moved to hub and tag.
    let mut images = BTreeSet::new();
    let mut references = 0;
    for doc in parse("stream", &custom) {
        if let Some(spec) = doc.pointer("/spec/template/spec") {
            for container in spec["containers"].as_array().unwrap() {
                images.insert(container["image"].as_str().unwrap().to_string());
                references += 1;
                let args = strings(&container["args"]);
                if let Some(i) = args.iter().position(|a| a == "--proxy-image") {
                    images.insert(args[i + 1].clone());
                    references += 1;
                }
            }
        }
    }
    let expected: BTreeSet<_> = [
        "mizzen-agent",
        "mizzen-operator",
        "mizzen-proxy",
        "mizzen-webhook",
    ]
    .iter()
    .map(|image| format!("{hub}/{image}:{tag}"))
    .collect();
    assert_eq!(images, expected);
    assert!(!custom.contains(DEFAULT_HUB));
    assert_eq!(default.matches(DEFAULT_HUB).count(), references);
}

#[test]
fn every_document_is_a_named_kubernetes_object() {
    let mut found = BTreeSet::new();
    for (file, text) in rendered_files("parse", &[]) {
        for doc in parse(&file, &text) {
            let api_version = doc["apiVersion"].as_str();
            let kind = doc["kind"].as_str();
            let name = doc["metadata"]["name"].as_str();
            assert!(
                api_version.is_some_and(|s| !s.is_empty())
                    && kind.is_some_and(|s| !s.is_empty())
                    && name.is_some_and(|s| !s.is_empty()),
                "{file}: a document without apiVersion, kind or metadata.name: {doc}"
            );
            if file != "01-crds.yaml" {
                let labels = &doc["metadata"]["labels"];
                assert_eq!(
                    labels["app.kubernetes.io/part-of"], "mizzen",
                    "{file}: {name:?}"
                );
                assert_eq!(
                    labels["app.kubernetes.io/version"], DEFAULT_TAG,
                    "{file}: {name:?}"
                );
                // The ingress gateway has its own namespace (docs/rbac.md).
                let home = if file == "07-ingress-gateway.yaml" {
                    "mizzen-ingress"
                } else {
                    "mizzen-system"
                };
                let namespace = &doc["metadata"]["namespace"];
                assert!(
                    namespace.is_null() || namespace == home,
                    "{file}: {name:?} in {namespace}"
                );
            }
            found.insert(format!("{file} {} {}", kind.unwrap(), name.unwrap()));
        }
    }
    let expected: BTreeSet<String> = [
        "00-namespace.yaml Namespace mizzen-system",
        "00-namespace.yaml ResourceQuota mizzen-node-critical",
        "02-rbac.yaml ServiceAccount mizzen-operator",
        "02-rbac.yaml ServiceAccount mizzen-webhook",
        "02-rbac.yaml ServiceAccount mizzen-agent",
        "02-rbac.yaml ClusterRole mizzen-operator",
        "02-rbac.yaml ClusterRoleBinding mizzen-operator",
        "02-rbac.yaml Role mizzen-operator",
        "02-rbac.yaml RoleBinding mizzen-operator",
        "02-rbac.yaml ClusterRole mizzen-agent",
        "02-rbac.yaml ClusterRoleBinding mizzen-agent",
        "02-rbac.yaml Role mizzen-agent",
        "02-rbac.yaml RoleBinding mizzen-agent",
        "03-operator.yaml Deployment mizzen-operator",
        "04-webhook.yaml Deployment mizzen-webhook",
        "04-webhook.yaml Service mizzen-webhook",
        "04-webhook.yaml PodDisruptionBudget mizzen-webhook",
        "05-agent.yaml DaemonSet mizzen-agent",
        "06-webhook-configurations.yaml MutatingWebhookConfiguration mizzen-sidecar-injector",
        "06-webhook-configurations.yaml ValidatingWebhookConfiguration mizzen-validator",
        "07-ingress-gateway.yaml Namespace mizzen-ingress",
        "07-ingress-gateway.yaml ServiceAccount mizzen-ingressgateway",
        "07-ingress-gateway.yaml Role mizzen-ingressgateway",
        "07-ingress-gateway.yaml RoleBinding mizzen-ingressgateway",
        "07-ingress-gateway.yaml Deployment mizzen-ingressgateway",
        "07-ingress-gateway.yaml Service mizzen-ingressgateway",
        "07-ingress-gateway.yaml PodDisruptionBudget mizzen-ingressgateway",
        "07-ingress-gateway.yaml HorizontalPodAutoscaler mizzen-ingressgateway",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    found.retain(|f| !f.starts_with("01-crds.yaml "));
    assert_eq!(found, expected);
}

#[test]
fn every_container_has_resources_and_a_locked_down_security_context() {
    let objects = objects();
    let workloads = pod_specs(&objects);
    assert_eq!(workloads.len(), 4);
    for (workload, spec) in workloads {
        assert!(spec.get("hostNetwork").is_none() && spec.get("hostPID").is_none());
        let containers = spec["containers"].as_array().unwrap().iter();
        let init = spec["initContainers"].as_array().into_iter().flatten();
        for c in containers.chain(init) {
            let at = format!("{workload}/{}", c["name"].as_str().unwrap());
            for field in [
                "/requests/cpu",
                "/requests/memory",
                "/limits/cpu",
                "/limits/memory",
            ] {
                assert!(
                    c["resources"].pointer(field).is_some_and(Value::is_string),
                    "{at}: no resources{field}"
                );
            }
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{at}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{at}");
            assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{at}");
            assert!(sc["capabilities"].get("add").is_none(), "{at}");
            assert!(sc.get("privileged").is_none(), "{at}");
            assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{at}");
            if workload == "mizzen-agent" {
                // Root only as the owner of the kubelet-created socket directory (05-agent.yaml).
                assert_eq!(sc["runAsNonRoot"], false, "{at}");
                assert_eq!(sc["runAsUser"], 0, "{at}");
            } else if workload == "mizzen-ingressgateway" {
                // The proxy's UID, as in a sidecar; the credentials syncer shares its files.
                assert_eq!(sc["runAsNonRoot"], true, "{at}");
                assert_eq!(sc["runAsUser"], 1337, "{at}");
            } else {
                assert_eq!(sc["runAsNonRoot"], true, "{at}");
                assert_eq!(sc["runAsUser"], 65532, "{at}");
            }
            let env = c["env"].as_array().unwrap();
            assert!(
                env.iter().any(|e| e["name"] == "RUST_LOG"),
                "{at}: no RUST_LOG"
            );
            // The gateway runs the proxy and the agent's credentials mode; every other
            // workload its own image.
            let image = match (workload.as_str(), c["name"].as_str().unwrap()) {
                ("mizzen-ingressgateway", "credentials") => "mizzen-agent",
                ("mizzen-ingressgateway", _) => "mizzen-proxy",
                (w, _) => w,
            };
            assert_eq!(
                c["image"].as_str().unwrap(),
                format!("{DEFAULT_HUB}/{image}:{DEFAULT_TAG}")
            );
        }
        // Only the agent mounts a host path, and only its socket directory.
        let host_paths: Vec<_> = spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["hostPath"]["path"].as_str())
            .collect();
        // The agent, and the gateway as a sidecar does, for the agent's socket.
        let expected: &[&str] = if workload == "mizzen-agent" || workload == "mizzen-ingressgateway"
        {
            &["/var/run/mizzen"]
        } else {
            &[]
        };
        assert_eq!(host_paths, expected, "{workload}");
    }
}

#[test]
fn workloads_select_their_own_pods_with_stable_labels() {
    let objects = objects();
    for kind in ["Deployment", "DaemonSet"] {
        for o in objects.iter().filter(|o| o["kind"] == kind) {
            let name = o["metadata"]["name"].as_str().unwrap();
            let selector = &o["spec"]["selector"]["matchLabels"];
            // The selector is immutable: it must not carry the version, which changes on upgrade.
            assert_eq!(
                *selector,
                serde_json::json!({ "app.kubernetes.io/name": name })
            );
            let labels = &o["spec"]["template"]["metadata"]["labels"];
            assert_eq!(labels["app.kubernetes.io/name"], name);
            assert_eq!(labels["app.kubernetes.io/part-of"], "mizzen");
            assert_eq!(labels["app.kubernetes.io/version"], DEFAULT_TAG);
            let account = o["spec"]["template"]["spec"]["serviceAccountName"]
                .as_str()
                .unwrap();
            assert_eq!(account, name);
            find(&objects, "ServiceAccount", account);
        }
    }

    let webhook = find(&objects, "Deployment", "mizzen-webhook");
    let pod = &webhook["spec"]["template"]["spec"];
    assert_eq!(webhook["spec"]["replicas"], 2);
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        find(&objects, "ServiceAccount", "mizzen-webhook")["automountServiceAccountToken"],
        false
    );
    let tls = &pod["volumes"][0]["secret"];
    assert_eq!(tls["secretName"], "mizzen-webhook-tls");
    assert!(
        tls.get("optional").is_none(),
        "the webhook cannot serve without its certificate"
    );

    let service = find(&objects, "Service", "mizzen-webhook");
    assert_eq!(
        service["spec"]["selector"],
        webhook["spec"]["selector"]["matchLabels"]
    );
    let port = &service["spec"]["ports"][0];
    assert_eq!(port["port"], 443);
    assert_eq!(port["targetPort"], "https");
    assert_eq!(pod["containers"][0]["ports"][0]["name"], "https");
    assert_eq!(pod["containers"][0]["ports"][0]["containerPort"], 8443);

    let budget = find(&objects, "PodDisruptionBudget", "mizzen-webhook");
    assert_eq!(budget["spec"]["minAvailable"], 1);
    assert_eq!(budget["spec"]["selector"], webhook["spec"]["selector"]);

    let agent = &find(&objects, "DaemonSet", "mizzen-agent")["spec"]["template"]["spec"];
    assert_eq!(
        agent["tolerations"],
        serde_json::json!([{ "operator": "Exists" }])
    );
    assert_eq!(agent["priorityClassName"], "system-node-critical");

    let namespace = &find(&objects, "Namespace", "mizzen-system")["metadata"]["labels"];
    assert_eq!(namespace["istio-injection"], "disabled");
    assert_eq!(
        namespace["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
}

#[test]
fn webhook_configurations_carry_their_selectors() {
    let objects = objects();
    let mutating = find(
        &objects,
        "MutatingWebhookConfiguration",
        "mizzen-sidecar-injector",
    );
    let validating = find(
        &objects,
        "ValidatingWebhookConfiguration",
        "mizzen-validator",
    );
    for (config, path) in [(mutating, "/inject"), (validating, "/validate")] {
        let hooks = config["webhooks"].as_array().unwrap();
        assert_eq!(hooks.len(), 1);
        let hook = &hooks[0];
        let service = &hook["clientConfig"]["service"];
        assert_eq!(
            *service,
            serde_json::json!({
                "name": "mizzen-webhook", "namespace": "mizzen-system", "path": path, "port": 443
            })
        );
        // The operator fills the caBundle in at run time.
        assert!(hook["clientConfig"].get("caBundle").is_none());
        assert_eq!(hook["sideEffects"], "None");
        assert_eq!(strings(&hook["admissionReviewVersions"]), ["v1"]);
        assert_eq!(hook["timeoutSeconds"], 5);
        assert_eq!(hook["failurePolicy"], "Fail");
        assert_eq!(hook["matchPolicy"], "Equivalent");
    }

    let inject = &mutating["webhooks"][0];
    assert_eq!(inject["name"], "sidecar-injector.mizzen.io");
    assert_eq!(inject["reinvocationPolicy"], "IfNeeded");
    assert_eq!(
        inject["rules"],
        serde_json::json!([{
            "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
            "resources": ["pods"], "scope": "Namespaced"
        }])
    );
    assert_eq!(
        inject["namespaceSelector"],
        serde_json::json!({
            "matchLabels": { "istio-injection": "enabled" },
            "matchExpressions": [{
                "key": "kubernetes.io/metadata.name", "operator": "NotIn",
                "values": ["mizzen-system", "kube-system"]
            }]
        })
    );
    assert_eq!(
        inject["objectSelector"],
        serde_json::json!({
            "matchExpressions": [{
                "key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]
            }]
        })
    );

    let validate = &validating["webhooks"][0];
    assert_eq!(validate["name"], "validation.mizzen.io");
    // Everywhere: no namespace or object is exempt from validation.
    assert!(validate.get("namespaceSelector").is_none());
    assert!(validate.get("objectSelector").is_none());
    let rules = validate["rules"].as_array().unwrap();
    let covered: BTreeSet<_> = rules
        .iter()
        .flat_map(|rule| {
            assert_eq!(strings(&rule["operations"]), ["CREATE", "UPDATE"]);
            assert_eq!(strings(&rule["resources"]), ["*"]);
            let versions = strings(&rule["apiVersions"]);
            strings(&rule["apiGroups"]).into_iter().flat_map(move |g| {
                versions
                    .clone()
                    .into_iter()
                    .map(move |v| format!("{g}/{v}"))
            })
        })
        .collect();
    let expected: BTreeSet<_> = [
        "networking.istio.io/v1",
        "networking.istio.io/v1beta1",
        "networking.istio.io/v1alpha3",
        "security.istio.io/v1",
        "security.istio.io/v1beta1",
        "security.istio.io/v1alpha3",
        "rollouts.mizzen.io/v1alpha1",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(covered, expected);
}

/// One RBAC rule as docs/rbac.md writes it: component, scope, API group, resources, resource
/// names, verbs (lists joined with ", ", the core group as `core`).
type RuleRow = [String; 6];

fn rbac_rules(objects: &[Value]) -> BTreeSet<RuleRow> {
    let join = |v: &Value| {
        v.as_array()
            .map_or(String::new(), |_| strings(v).join(", "))
    };
    let mut rows = BTreeSet::new();
    for role in objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
    {
        let component = role["metadata"]["name"]
            .as_str()
            .unwrap()
            .trim_start_matches("mizzen-");
        let scope = role["metadata"]["namespace"].as_str().unwrap_or("cluster");
        for rule in role["rules"].as_array().unwrap() {
            let groups = strings(&rule["apiGroups"]);
            assert_eq!(
                groups.len(),
                1,
                "one API group per rule keeps the table readable"
            );
            let group = if groups[0].is_empty() {
                "core"
            } else {
                groups[0].as_str()
            };
            let row = [
                component.to_string(),
                scope.to_string(),
                group.to_string(),
                join(&rule["resources"]),
                join(&rule["resourceNames"]),
                join(&rule["verbs"]),
            ];
            assert!(rows.insert(row.clone()), "duplicate rule {row:?}");
        }
    }
    rows
}

#[test]
fn no_role_grants_wildcards() {
    for role in objects()
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
    {
        let name = role["metadata"]["name"].as_str().unwrap();
        assert!(role.get("aggregationRule").is_none(), "{name}");
        for rule in role["rules"].as_array().unwrap() {
            assert!(rule.get("nonResourceURLs").is_none(), "{name}: {rule}");
            for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                for value in rule[field].as_array().into_iter().flatten() {
                    let value = value.as_str().unwrap();
                    assert!(!value.contains('*'), "{name} grants {field} {value:?}");
                }
            }
            // Nothing escalates: no binding, impersonation or role editing.
            for verb in strings(&rule["verbs"]) {
                assert!(
                    !["escalate", "bind", "impersonate"].contains(&verb.as_str()),
                    "{name}: {verb}"
                );
            }
        }
    }
}

#[test]
fn docs_rbac_lists_every_rule() {
    let doc = fs::read_to_string(repo_root().join("docs/rbac.md")).unwrap();
    let documented: BTreeSet<RuleRow> = doc
        .lines()
        .filter(|line| {
            ["| operator |", "| agent |", "| ingressgateway |"]
                .iter()
                .any(|p| line.starts_with(p))
        })
        .map(|line| {
            let cells: Vec<_> = line.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(
                cells.len(),
                7,
                "docs/rbac.md: a rule row needs 7 cells: {line}"
            );
            let plain = |s: &str| s.replace('`', "");
            std::array::from_fn(|i| plain(cells[i]))
        })
        .collect();
    let granted = rbac_rules(&objects());
    let missing: Vec<_> = granted.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "docs/rbac.md does not list the rules {missing:#?}"
    );
    let extra: Vec<_> = documented.difference(&granted).collect();
    assert!(
        extra.is_empty(),
        "docs/rbac.md lists rules the manifests do not grant: {extra:#?}"
    );
}
