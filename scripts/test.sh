#!/usr/bin/env bash
# Mizzen's whole test suite, as CI runs it (.ci/run calls this). Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# One shared target directory outside the clone, so repeated runs and fresh clones reuse builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mizzen/target}"
# No incremental data: a clone at a new path would add its own (gigabytes per clone, never
# reused), and a one-shot build does not gain from it.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
bash scripts/install-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests (unit, golden, CRD drift, manifest drift, loopback, network namespaces)"
# mizzen-e2e needs a kind cluster: e2e/kind.sh runs it below (clippy above still compiles it).
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --exclude mizzen-e2e --locked --no-fail-fast
else
  echo "cargo-nextest not found; using cargo test"
  cargo test --workspace --exclude mizzen-e2e --locked --no-fail-fast
fi

step "manifests and CRDs against the Kubernetes schemas"
bash .ci/validate-manifests.sh

step "kind end-to-end suite"
# kind makes the cluster itself: what it needs is kind, kubectl and a Docker engine that answers.
missing=()
command -v kind >/dev/null 2>&1 || missing+=("kind")
command -v kubectl >/dev/null 2>&1 || missing+=("kubectl")
{ command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; } || missing+=("a running Docker engine")
if [ ${#missing[@]} -eq 0 ]; then
  e2e/kind.sh
else
  echo "SKIPPED: the kind e2e suite (e2e/kind.sh) needs kind, kubectl and a running Docker engine to make its cluster; missing here: $(IFS=,; echo "${missing[*]}" | sed 's/,/, /g')."
fi

step "container images: Dockerfile checks"
python3 scripts/check-dockerfiles.py
if command -v hadolint >/dev/null 2>&1; then
  hadolint images/Dockerfile
else
  echo "SKIPPED: hadolint is not installed, so images/Dockerfile was not linted (the binary and image-name check above ran)"
fi

step "container images: build"
bash scripts/build-images.sh

step "observability add-ons: the Grafana dashboard parses and queries only exported metrics"
python3 scripts/check-dashboard.py
