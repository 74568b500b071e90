//! The local CA directory: created once with private modes, loaded afterwards.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use mizzen_ca::local::{LOCAL_ROOT_CERT, LOCAL_ROOT_KEY, LocalCaError};
use mizzen_ca::{DEFAULT_ROOT_VALIDITY, DEFAULT_WORKLOAD_TTL, LocalCa};
use mizzen_identity::{CertificateRequest, SpiffeId};

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn created_on_first_use_with_private_modes_then_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mizzen").join("ca");

    let first = LocalCa::open_or_create(&dir, "cluster.local", DEFAULT_ROOT_VALIDITY).unwrap();
    assert!(first.created());
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(LOCAL_ROOT_KEY)), 0o600);
    let key_pem = fs::read_to_string(dir.join(LOCAL_ROOT_KEY)).unwrap();
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));

    let second = LocalCa::open_or_create(&dir, "cluster.local", DEFAULT_ROOT_VALIDITY).unwrap();
    assert!(!second.created());
    assert_eq!(second.root().cert_der(), first.root().cert_der());

    // The loaded root signs leaves that chain to the first run's root.
    let who = SpiffeId::parse("spiffe://cluster.local/ns/demo/sa/web").unwrap();
    let request = CertificateRequest::for_workload(&who).unwrap();
    let issued = second
        .authority()
        .unwrap()
        .sign_workload(&request.csr_pem, &who, DEFAULT_WORKLOAD_TTL)
        .unwrap();
    assert_eq!(issued.roots_pem, first.root().cert_pem());
}

#[test]
fn a_readable_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    LocalCa::open_or_create(&dir, "cluster.local", DEFAULT_ROOT_VALIDITY).unwrap();
    let key = dir.join(LOCAL_ROOT_KEY);
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let err = LocalCa::open_or_create(&dir, "cluster.local", DEFAULT_ROOT_VALIDITY).unwrap_err();
    assert!(matches!(err, LocalCaError::KeyTooOpen(_, 0o644)), "{err}");
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[test]
fn half_written_directory_is_reported_not_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    LocalCa::open_or_create(&dir, "cluster.local", DEFAULT_ROOT_VALIDITY).unwrap();
    fs::remove_file(dir.join(LOCAL_ROOT_CERT)).unwrap();
    let key_before = fs::read(dir.join(LOCAL_ROOT_KEY)).unwrap();
    let err = LocalCa::open_or_create(&dir, "cluster.local", DEFAULT_ROOT_VALIDITY).unwrap_err();
    assert!(matches!(err, LocalCaError::KeyWithoutCert(_)), "{err}");
    assert_eq!(fs::read(dir.join(LOCAL_ROOT_KEY)).unwrap(), key_before);
}
