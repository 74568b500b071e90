//! The committed `crds/*.yaml` must be exactly what the Rust types generate.
//! Regenerate with `cargo run -p mizzen-crds --bin crdgen`.

use std::{collections::BTreeSet, fs, path::Path};

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let generated = mizzen_crds::resource::crd_files();
    for (name, yaml) in &generated {
        let committed = fs::read_to_string(dir.join(name)).unwrap_or_else(|e| {
            panic!("crds/{name} is missing ({e}); run `cargo run -p mizzen-crds --bin crdgen`")
        });
        assert!(
            committed == *yaml,
            "crds/{name} drifted from the Rust types; run `cargo run -p mizzen-crds --bin crdgen`"
        );
    }
    let expected: BTreeSet<_> = generated.iter().map(|(n, _)| n.clone()).collect();
    let stale: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") && !expected.contains(n))
        .collect();
    assert!(
        stale.is_empty(),
        "crds/ holds YAML no type generates: {stale:?}"
    );
}

#[test]
fn istio_kinds_serve_three_versions_and_store_v1() {
    for crd in mizzen_crds::resource::crds() {
        let versions: Vec<_> = crd
            .spec
            .versions
            .iter()
            .map(|v| (v.name.as_str(), v.served, v.storage))
            .collect();
        let storage: Vec<_> = versions.iter().filter(|v| v.2).collect();
        assert_eq!(storage.len(), 1, "{:?}", crd.metadata.name);
        if crd.spec.group.ends_with("istio.io") {
            assert_eq!(
                versions,
                [
                    ("v1", true, true),
                    ("v1beta1", true, false),
                    ("v1alpha3", true, false)
                ]
            );
        } else {
            assert_eq!(versions, [("v1alpha1", true, true)]);
        }
        for v in &crd.spec.versions {
            assert!(
                v.subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some(),
                "{:?} has a status subresource",
                crd.metadata.name
            );
        }
    }
}

/// `kubectl apply` (client side) keeps each object in an annotation of at most 256 KiB; a CRD
/// larger than that could not be installed with `kubectl apply -f manifests/`.
#[test]
fn every_crd_fits_in_the_last_applied_annotation() {
    for crd in mizzen_crds::resource::crds() {
        let size = serde_json::to_vec(&crd).unwrap().len();
        assert!(
            size < 200 * 1024,
            "{:?} is {size} bytes as JSON; keep it well under 262144",
            crd.metadata.name
        );
    }
}
