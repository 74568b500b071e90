//! The toolbox of Mizzen's end-to-end suite. The scenarios live in `tests/`; they run against
//! the cluster of the current kubeconfig (the kind cluster `e2e/kind.sh` creates, with Mizzen
//! installed and the images loaded) and are left out of the workspace's default test run.
//!
//! - [`cluster`]: the client, and a namespace per test that is deleted when the test ends;
//! - [`manifests`]: the suite's YAML (demo app, Istio fixtures), edited and server-side applied;
//! - [`wait`]: bounded polling (rollouts, conditions);
//! - [`traffic`]: requests with `curl` from a client pod or from the host, and background load;
//! - [`metrics`]: Prometheus text read through the API server's pod proxy.

pub mod cluster;
pub mod manifests;
pub mod metrics;
pub mod traffic;
pub mod wait;

use std::path::PathBuf;

/// A path inside the repository (`e2e/fixtures/...`, `manifests/...`).
pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}
