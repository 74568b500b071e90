//! `mizzenctl analyze` as a user runs it: the shared Istio fixtures pass together with the
//! Services they need, and each broken file fails with exactly the planted errors.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures() -> PathBuf {
    repo().join("../shared/fixtures/istio")
}

fn analyze(paths: &[PathBuf], extra: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mizzenctl"));
    cmd.arg("analyze");
    for p in paths {
        cmd.arg("-f").arg(p);
    }
    cmd.args(extra).output().expect("mizzenctl runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// What every fixture needs around it: the Services, and serviceb's subsets.
fn base() -> Vec<PathBuf> {
    vec![
        repo().join("examples/services.yaml"),
        fixtures().join("dr-serviceb-subsets.yaml"),
    ]
}

#[test]
fn every_shared_fixture_passes_with_the_services_it_needs() {
    let files = yaml_files(&fixtures());
    assert!(files.len() >= 11, "fixtures found: {files:?}");
    for fixture in files {
        let mut paths = base();
        paths.push(fixture.clone());
        let out = analyze(&paths, &[]);
        let text = stdout(&out);
        assert!(
            out.status.success(),
            "{} failed:\n{text}{}",
            fixture.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains("ERROR"), "{}:\n{text}", fixture.display());
    }
}

#[test]
fn the_examples_directory_is_clean() {
    let out = analyze(&[repo().join("examples")], &[]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text, "", "examples/ should raise nothing at all");
}

#[test]
fn all_fixtures_at_once_only_warn_about_same_named_objects() {
    let mut paths = base();
    paths.push(fixtures());
    let out = analyze(&paths, &[]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    for line in text.lines() {
        assert!(
            line.starts_with("WARN DuplicateResource ") || line.starts_with("WARN Deprecated "),
            "unexpected: {line}"
        );
    }
}

/// Each `# expect: LINE-PREFIX` comment of a broken file must be matched by an ERROR line of the
/// output, and every ERROR line must be expected.
#[test]
fn broken_files_fail_at_the_planted_fields() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/broken");
    let files = yaml_files(&dir);
    assert!(files.len() >= 10);
    for file in files {
        let expects: Vec<String> = fs::read_to_string(&file)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: ").map(str::to_string))
            .collect();
        assert!(
            !expects.is_empty(),
            "{} has no expectations",
            file.display()
        );
        let mut paths = base();
        paths.push(file.clone());
        let out = analyze(&paths, &[]);
        let text = stdout(&out);
        assert!(
            !out.status.success(),
            "{} should fail:\n{text}",
            file.display()
        );
        let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("ERROR")).collect();
        for e in &expects {
            assert!(
                errors.iter().any(|l| l.starts_with(e.as_str())),
                "{}: no line starts with\n  {e}\nin\n{text}",
                file.display()
            );
        }
        for l in &errors {
            assert!(
                expects.iter().any(|e| l.starts_with(e.as_str())),
                "{}: unexpected error\n  {l}",
                file.display()
            );
        }
    }
}

#[test]
fn json_output_carries_the_same_findings() {
    let mut paths = base();
    paths.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/broken/vs-weights.yaml"));
    let out = analyze(&paths, &["-o", "json"]);
    let findings: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let errors: Vec<_> = findings
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "ERROR")
        .collect();
    assert_eq!(errors.len(), 1, "{findings:#}");
    assert_eq!(errors[0]["code"], "InvalidWeight");
    assert_eq!(errors[0]["path"], "spec.http[0].route");
    assert_eq!(errors[0]["object"]["kind"], "VirtualService");
    assert_eq!(errors[0]["object"]["name"], "serviceb");
}

#[test]
fn unreadable_input_is_reported_not_crashed_on() {
    let dir = std::env::temp_dir().join(format!("mizzen-analyze-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    fs::write(&bad, "apiVersion: v1\nkind: [unclosed\n").unwrap();
    let out = analyze(std::slice::from_ref(&bad), &[]);
    let text = stdout(&out);
    assert!(!out.status.success());
    assert!(text.starts_with("ERROR SchemaError File/"), "{text}");
    assert!(text.contains("invalid YAML"), "{text}");
    let missing = analyze(&[dir.join("nope.yaml")], &[]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.yaml"));
    fs::remove_dir_all(&dir).unwrap();
}
