//! Golden tests: every `testdata/render/<case>/input.yaml` renders to `expected/<ns>.json` (one
//! per meshed namespace) and `expected/status.txt` (the verdict on every object, and namespace
//! problems). `MIZZEN_UPDATE_GOLDEN=1 cargo test -p mizzen-operator --test render` rewrites them.

use mizzen_crds::resource::MeshResource;
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use mizzen_operator::{
    Index, RenderSettings, Rendered, Renderer,
    files::{file_settings, load_text},
    render,
};

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/render");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("input.yaml").exists())
        .collect();
    out.sort();
    assert!(
        out.len() >= 20,
        "expected the fixture and multi-object cases"
    );
    out
}

fn settings() -> RenderSettings {
    file_settings(RenderSettings::default())
}

fn load(case: &Path) -> Index {
    let text = std::fs::read_to_string(case.join("input.yaml")).unwrap();
    let mut index = Index::new("mizzen-system");
    load_text(&mut index, &text, "default", &case.join("input.yaml")).unwrap();
    index
}

fn status_text(r: &Rendered) -> String {
    let mut out = String::new();
    for (obj, st) in &r.statuses {
        out.push_str(&format!("{obj}: {}", st.reason));
        if !st.message.is_empty() {
            out.push_str(&format!(": {}", st.message));
        }
        out.push('\n');
    }
    for (ns, problems) in &r.problems {
        for p in problems {
            out.push_str(&format!("namespace {ns}: {p}\n"));
        }
    }
    out.push_str(&format!(
        "meshed: {}\n",
        r.meshed.iter().cloned().collect::<Vec<_>>().join(", ")
    ));
    out
}

fn expected_files(r: &Rendered) -> BTreeMap<String, String> {
    let mut files: BTreeMap<String, String> = r
        .configs
        .iter()
        .map(|(ns, c)| (format!("{ns}.json"), c.config().to_json() + "\n"))
        .collect();
    files.insert("status.txt".into(), status_text(r));
    files
}

#[test]
fn renders_every_case_as_its_golden_files() {
    let update = std::env::var_os("MIZZEN_UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for case in cases() {
        let index = load(&case);
        let rendered = render(&index, &settings());
        let dir = case.join("expected");
        let files = expected_files(&rendered);
        if update {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            for (name, text) in &files {
                std::fs::write(dir.join(name), text).unwrap();
            }
            continue;
        }
        let mut on_disk: BTreeMap<String, String> = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries {
                let p = e.unwrap().path();
                on_disk.insert(
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(&p).unwrap(),
                );
            }
        }
        if on_disk != files {
            failures.push(format!(
                "{}: rendered output differs from expected/ (rerun with MIZZEN_UPDATE_GOLDEN=1 and review the diff)\n--- rendered:\n{}",
                case.display(),
                files
                    .iter()
                    .filter(|(k, v)| on_disk.get(*k) != Some(v))
                    .map(|(k, v)| format!("{k}:\n{v}"))
                    .collect::<String>()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn config_json_is_exactly_what_serde_writes_and_hash_is_stable() {
    for case in cases() {
        let index = load(&case);
        let a = render(&index, &settings());
        let b = render(&index, &settings());
        assert_eq!(a, b, "{}: render is not deterministic", case.display());
        for (ns, c) in &a.configs {
            let cfg = c.config();
            assert_eq!(cfg.namespace, *ns);
            assert_eq!(
                serde_json::to_string(&cfg).unwrap(),
                c.json(),
                "{}: assembled JSON differs from serde's",
                case.display()
            );
            assert_eq!(c.hash.len(), 16);
            assert_eq!(c.bytes, c.json().len());
        }
    }
}

/// Feeding the documents one at a time and rendering incrementally after each gives exactly
/// what one full render of the whole input gives.
#[test]
fn incremental_renders_equal_full_renders() {
    for case in cases() {
        let text = std::fs::read_to_string(case.join("input.yaml")).unwrap();
        let docs = mizzen_crds::document::parse_stream(&text).unwrap();
        let mut index = Index::new("mizzen-system");
        let mut renderer = Renderer::new(settings());
        for doc in &docs {
            index.apply_document(doc, "default").unwrap();
            let changes = index.take_changes();
            let incremental = renderer.render(&index, &changes);
            assert_eq!(
                incremental,
                render(&index, &settings()),
                "{}: after {}",
                case.display(),
                doc["metadata"]["name"]
            );
        }
        // And removing them again, newest first: deletes re-render just as adds do.
        for doc in docs.iter().rev() {
            let name = doc["metadata"]["name"].as_str().unwrap_or_default();
            let ns = doc["metadata"]["namespace"].as_str().unwrap_or("default");
            match (doc["kind"].as_str(), MeshResource::from_value(doc).unwrap()) {
                (_, Some(resource)) => index.delete_resource(&resource.object_ref("default")),
                (Some("Service"), None) => index.delete_service(ns, name),
                (Some("Namespace"), None) => index.delete_namespace(name),
                _ => continue,
            }
            let changes = index.take_changes();
            assert_eq!(
                renderer.render(&index, &changes),
                render(&index, &settings()),
                "{}: after deleting {name}",
                case.display()
            );
        }
        assert!(
            render(&index, &settings()).configs.is_empty(),
            "{}",
            case.display()
        );
    }
}

#[test]
fn file_mode_writes_one_file_per_meshed_namespace() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/render/dr-root-namespace");
    let out = std::env::temp_dir().join(format!("mizzen-render-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let rendered =
        mizzen_operator::files::render_dir(&case, &out, &RenderSettings::default()).unwrap();
    let mut written: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, ["shop.json", "web.json"]);
    for name in &written {
        assert_eq!(
            std::fs::read_to_string(out.join(name)).unwrap(),
            std::fs::read_to_string(case.join("expected").join(name)).unwrap()
        );
    }
    assert_eq!(rendered.configs.len(), 2);
    std::fs::remove_dir_all(&out).unwrap();
}

/// A route to a subset of a ServiceEntry host is checked against the DestinationRule in the
/// ServiceEntry's namespace: defined there, it is accepted; an undefined subset is not.
#[test]
fn subsets_of_service_entry_hosts_resolve_in_the_entry_namespace() {
    let text = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: ext}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: ext}
spec:
  host: api.example.com
  subsets: [{name: eu, labels: {region: eu}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: good, namespace: web}
spec:
  hosts: [api.example.com]
  tcp: [{route: [{destination: {host: api.example.com, subset: eu}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad, namespace: web}
spec:
  hosts: [api.example.com]
  tcp: [{route: [{destination: {host: api.example.com, subset: us}}]}]
"#;
    let mut index = Index::new("mizzen-system");
    load_text(&mut index, text, "default", "test.yaml".as_ref()).unwrap();
    let statuses = render::statuses(&index, &settings());
    let status = |name: &str| {
        statuses
            .iter()
            .find(|(o, _)| o.kind == "VirtualService" && o.name == name)
            .map(|(_, s)| s.clone())
            .unwrap()
    };
    assert!(status("good").accepted, "{:?}", status("good"));
    let bad = status("bad");
    assert!(!bad.accepted);
    assert!(bad.message.contains("subset \"us\""), "{}", bad.message);
}
