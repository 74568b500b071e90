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

/// `n` Services in namespace `shop`, each with a VirtualService: a config of a few hundred bytes
/// per service.
fn many_services(n: usize) -> Index {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i:03}, namespace: shop}}\nspec: {{clusterIP: 10.0.0.{}, ports: [{{name: http, port: 8080}}]}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc-{i:03}, namespace: shop}}\nspec: {{hosts: [svc-{i:03}], http: [{{timeout: 2s, route: [{{destination: {{host: svc-{i:03}}}}}]}}]}}\n---\n",
            i % 250
        ));
    }
    let mut index = Index::new("mizzen-system");
    load_text(&mut index, &text, "default", "many.yaml".as_ref()).unwrap();
    index
}

/// The size limit applies to what the ConfigMap stores: a config whose JSON is over it but
/// whose gzip is under is written (compressed); one whose stored form is still over it is
/// refused with both sizes named, never truncated.
#[test]
fn the_size_limit_applies_to_the_stored_form() {
    let index = many_services(60);
    let json_bytes = render(&index, &settings()).configs["shop"].bytes;
    assert!(json_bytes > 10_000, "{json_bytes}");
    let limit = json_bytes / 2;

    // Stored as text, over the limit: refused, as before compression existed.
    let text_only = RenderSettings {
        max_config_bytes: limit,
        gzip_above_bytes: usize::MAX,
        ..settings()
    };
    let r = render(&index, &text_only);
    assert!(r.configs.is_empty());
    let problem = &r.problems["shop"][0];
    assert!(
        problem.contains(&format!(
            "is {json_bytes} bytes, over the limit of {limit} bytes"
        )),
        "{problem}"
    );

    // Compressed, the same JSON fits.
    let compressed = RenderSettings {
        max_config_bytes: limit,
        gzip_above_bytes: 1024,
        ..settings()
    };
    let r = render(&index, &compressed);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    let c = &r.configs["shop"];
    assert_eq!(c.bytes, json_bytes);
    let payload = c.payload();
    assert!(payload.is_gzip());
    assert_eq!(c.stored_bytes, payload.stored_bytes());
    assert!(c.stored_bytes < limit, "{} of {limit}", c.stored_bytes);
    assert_eq!(
        mizzen_proxy_config::payload::decode(payload.as_bytes()).unwrap(),
        c.json()
    );
    // The hash is the JSON's: the same as when stored as text.
    assert_eq!(c.hash, render(&index, &settings()).configs["shop"].hash);

    // Compressed and still over: refused, naming both sizes.
    let tiny = RenderSettings {
        max_config_bytes: 200,
        ..compressed
    };
    let r = render(&index, &tiny);
    assert!(r.configs.is_empty());
    let problem = &r.problems["shop"][0];
    assert!(
        problem.contains("bytes gzip-compressed")
            && problem.contains(&format!(
                "({json_bytes} bytes of JSON), over the limit of 200 bytes"
            )),
        "{problem}"
    );
}

/// Incremental renders reuse the compressed form of unchanged configs and recompress changed
/// ones; the result is what a full render gives, stored sizes included.
#[test]
fn incremental_renders_keep_compressed_forms_in_step() {
    let compressed = RenderSettings {
        gzip_above_bytes: 1024,
        ..settings()
    };
    let mut index = many_services(20);
    let mut renderer = Renderer::new(compressed.clone());
    let changes = index.take_changes();
    let first = renderer.render(&index, &changes);
    assert!(first.configs["shop"].payload().is_gzip());
    let edit = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: svc-007, namespace: shop}\nspec: {hosts: [svc-007], http: [{timeout: 9s, route: [{destination: {host: svc-007}}]}]}\n";
    load_text(&mut index, edit, "default", "edit.yaml".as_ref()).unwrap();
    let changes = index.take_changes();
    let second = renderer.render(&index, &changes);
    let full = render(&index, &compressed);
    assert_eq!(second, full);
    assert_eq!(
        second.configs["shop"].payload(),
        full.configs["shop"].payload()
    );
    assert_ne!(
        first.configs["shop"].payload(),
        second.configs["shop"].payload()
    );
    let json = mizzen_proxy_config::payload::decode(second.configs["shop"].payload().as_bytes())
        .unwrap()
        .into_owned();
    assert!(json.contains("\"timeoutMs\":9000"), "{json}");
}

/// File mode writes readable JSON whatever its size: only the ConfigMap is compressed.
#[test]
fn file_mode_writes_json_even_above_the_gzip_threshold() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/render/dr-root-namespace");
    let out = std::env::temp_dir().join(format!("mizzen-render-gzip-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let settings = RenderSettings {
        gzip_above_bytes: 0,
        ..RenderSettings::default()
    };
    let rendered = mizzen_operator::files::render_dir(&case, &out, &settings).unwrap();
    assert!(rendered.configs.values().all(|c| c.payload().is_gzip()));
    for ns in rendered.configs.keys() {
        let name = format!("{ns}.json");
        assert_eq!(
            std::fs::read_to_string(out.join(&name)).unwrap(),
            std::fs::read_to_string(case.join("expected").join(&name)).unwrap()
        );
    }
    std::fs::remove_dir_all(&out).unwrap();
}
