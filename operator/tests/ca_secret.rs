//! The root CA Secret `mizzen-ca` planned over a root's whole life: first start, publication of
//! a new root in the last fifth, its promotion after the propagation time, the old root's
//! retirement after the overlap, and a plugged-in `cacerts` that is never rotated.

use std::time::{Duration, SystemTime};

use mizzen_ca::root::{PLUGIN_CA_CERT, PLUGIN_CA_KEY, PLUGIN_ROOT_CERT};
use mizzen_ca::{Authority, CaError, RootCa, RotationPolicy, node_ca_request};
use mizzen_identity::TrustBundle;
use mizzen_identity::bundle::certs_from_pem;
use mizzen_operator::ca::secret::{
    CA_CERT, CA_KEY, CaPlan, MeshCa, NEXT_CERT, NEXT_KEY, ROOTS, SecretData, Step, plan,
    trust_bundle_pem,
};

const DAY: Duration = Duration::from_secs(24 * 3600);
/// A short root life keeps the arithmetic readable; the rules are fractions of it.
const LIFE: Duration = Duration::from_secs(100 * 24 * 3600);
const SECOND: Duration = Duration::from_secs(1);

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn generate(now: SystemTime) -> Result<RootCa, CaError> {
    RootCa::generate_at("cluster.local", LIFE, now)
}

fn no_generate(_: SystemTime) -> Result<RootCa, CaError> {
    panic!("no root may be generated here")
}

fn policy() -> RotationPolicy {
    RotationPolicy::default()
}

fn text(data: &SecretData, key: &str) -> String {
    String::from_utf8(data[key].clone()).unwrap()
}

fn roots_in(data: &SecretData) -> usize {
    certs_from_pem(&text(data, ROOTS)).unwrap().len()
}

/// Runs the plan on stored data; returns the new data and steps (`None` for Keep).
fn step(data: &SecretData, now: SystemTime) -> Option<(SecretData, Vec<Step>)> {
    match plan(None, Some(data), &policy(), now, generate).unwrap() {
        CaPlan::Keep(ca) => {
            assert_eq!(ca.to_data(), *data, "Keep means the data is unchanged");
            None
        }
        CaPlan::Update(ca, steps) => Some((ca.to_data(), steps)),
        other => panic!("expected Keep or Update, got {other:?}"),
    }
}

fn first_start() -> SecretData {
    match plan(None, None, &policy(), t0(), generate).unwrap() {
        CaPlan::Create(ca) => ca.to_data(),
        other => panic!("expected Create, got {other:?}"),
    }
}

/// Whether a node CA signed by `authority` at `at` verifies to `roots` alone.
fn node_ca_verifies_to(authority: &Authority, roots_pem: &str, at: SystemTime) -> bool {
    let request = node_ca_request("node-a").unwrap();
    let issued = authority
        .sign_node_ca_at(&request.csr_pem, "node-a", Duration::from_secs(3600), at)
        .unwrap();
    let roots = TrustBundle::from_pem(roots_pem).unwrap();
    Authority::from_node_ca(&issued.chain_pem, request.key, roots).is_ok()
}

#[test]
fn first_start_creates_one_root_that_signs_and_is_the_whole_bundle() {
    let data = first_start();
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(keys, [CA_CERT, CA_KEY, ROOTS]);
    assert_eq!(text(&data, ROOTS), text(&data, CA_CERT));
    assert!(text(&data, CA_KEY).contains("BEGIN PRIVATE KEY"));
    let ca = MeshCa::from_data(&data).unwrap();
    assert_eq!(ca.signing_validity().not_after, t0() + LIFE);
    let authority = ca.authority().unwrap();
    assert_eq!(authority.roots().len(), 1);
    assert!(node_ca_verifies_to(&authority, &text(&data, CA_CERT), t0()));
    // Read back the next day: nothing to do.
    assert_eq!(step(&data, t0() + DAY), None);
}

#[test]
fn a_full_rotation_publishes_then_promotes_then_retires() {
    let first = first_start();
    let old = MeshCa::from_data(&first).unwrap().signing_validity();
    let lifetime = old.not_after.duration_since(old.not_before).unwrap();
    let due = old.not_before + lifetime.mul_f64(0.8);

    // Rotation starts exactly in the last fifth.
    assert_eq!(step(&first, due - SECOND), None);
    let (published, steps) = step(&first, due).unwrap();
    assert_eq!(steps, [Step::Published]);
    assert_eq!(
        text(&published, CA_CERT),
        text(&first, CA_CERT),
        "the old root still signs"
    );
    assert_eq!(text(&published, CA_KEY), text(&first, CA_KEY));
    assert!(published.contains_key(NEXT_CERT) && published.contains_key(NEXT_KEY));
    assert_eq!(roots_in(&published), 2, "both roots are trusted");
    let ca = MeshCa::from_data(&published).unwrap();
    let new = ca.next_validity().unwrap();
    let expected_end = due + LIFE;
    assert!(
        new.not_after <= expected_end && new.not_after + SECOND > expected_end,
        "the new root lives a full life from now"
    );
    // Chains still end at the old root, and the handed-out bundle holds both.
    let authority = ca.authority().unwrap();
    assert_eq!(authority.roots().len(), 2);
    assert!(node_ca_verifies_to(&authority, &text(&first, CA_CERT), due));
    assert!(!node_ca_verifies_to(
        &authority,
        &text(&published, NEXT_CERT),
        due
    ));

    // The new root signs once it has had the propagation time to reach every proxy.
    let promote_at = new.not_before + policy().propagation;
    assert_eq!(step(&published, promote_at - SECOND), None);
    let (promoted, steps) = step(&published, promote_at).unwrap();
    assert_eq!(steps, [Step::Promoted]);
    assert_eq!(text(&promoted, CA_CERT), text(&published, NEXT_CERT));
    assert_eq!(text(&promoted, CA_KEY), text(&published, NEXT_KEY));
    assert!(!promoted.contains_key(NEXT_CERT) && !promoted.contains_key(NEXT_KEY));
    assert_eq!(roots_in(&promoted), 2, "the old root is still trusted");
    let authority = MeshCa::from_data(&promoted).unwrap().authority().unwrap();
    assert!(node_ca_verifies_to(
        &authority,
        &text(&published, NEXT_CERT),
        promote_at
    ));

    // The old root leaves the bundle when the overlap is over, not before.
    let retire_at = new.not_before + policy().propagation + policy().overlap;
    assert_eq!(step(&promoted, retire_at - SECOND), None);
    let (retired, steps) = step(&promoted, retire_at).unwrap();
    assert_eq!(steps, [Step::Retired(1)]);
    assert_eq!(text(&retired, ROOTS), text(&retired, CA_CERT));
    assert_eq!(step(&retired, retire_at + DAY), None);
}

#[test]
fn an_operator_down_past_expiry_catches_up_in_one_pass() {
    let first = first_start();
    let (data, steps) = step(&first, t0() + LIFE + DAY).unwrap();
    // The expired root cannot sign, so the new one signs at once and the old one goes.
    assert_eq!(steps, [Step::Published, Step::Promoted, Step::Retired(1)]);
    assert_eq!(roots_in(&data), 1);
    assert_ne!(text(&data, CA_CERT), text(&first, CA_CERT));
}

#[test]
fn a_missing_roots_pem_is_repaired_from_the_signing_root() {
    let mut data = first_start();
    data.remove(ROOTS);
    let (repaired, steps) = step(&data, t0() + DAY).unwrap();
    assert_eq!(steps, [Step::Repaired]);
    assert_eq!(text(&repaired, ROOTS), text(&repaired, CA_CERT));
}

#[test]
fn a_plugged_in_ca_is_only_read_never_rotated() {
    let user = RootCa::generate_at("example.com", LIFE, t0()).unwrap();
    let cacerts: SecretData = [
        (PLUGIN_CA_CERT, user.cert_pem()),
        (PLUGIN_CA_KEY, user.key_pem()),
        (PLUGIN_ROOT_CERT, user.cert_pem()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_bytes()))
    .collect();
    let stored = first_start();
    // Long past the last fifth of the user's root, and even with an old mizzen-ca around.
    for now in [t0() + DAY, t0() + LIFE.mul_f64(0.9), t0() + LIFE + DAY] {
        for stored in [None, Some(&stored)] {
            match plan(Some(&cacerts), stored, &policy(), now, no_generate).unwrap() {
                CaPlan::Plugin(plugin) => assert_eq!(plugin.root_cert_pem, user.cert_pem()),
                other => panic!("expected Plugin, got {other:?}"),
            }
        }
    }
    assert_eq!(
        trust_bundle_pem(Some(&cacerts), Some(&stored)),
        Some(user.cert_pem())
    );
}

#[test]
fn a_broken_plugged_in_ca_is_refused_naming_the_key() {
    let cacerts: SecretData = [(PLUGIN_ROOT_CERT.to_string(), b"x".to_vec())].into();
    let err = plan(Some(&cacerts), None, &policy(), t0(), no_generate).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Secret cacerts: plug-in CA: `ca-cert.pem` is missing"
    );
}

#[test]
fn the_trust_bundle_is_roots_pem_then_ca_crt() {
    let first = first_start();
    let (published, _) = step(&first, t0() + LIFE.mul_f64(0.85)).unwrap();
    assert_eq!(
        trust_bundle_pem(None, Some(&published)),
        Some(text(&published, ROOTS))
    );
    let mut old_layout = first.clone();
    old_layout.remove(ROOTS);
    assert_eq!(
        trust_bundle_pem(None, Some(&old_layout)),
        Some(text(&first, CA_CERT))
    );
    assert_eq!(trust_bundle_pem(None, None), None);
}
