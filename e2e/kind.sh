#!/usr/bin/env bash
# Mizzen's end-to-end suite on a kind cluster, in one command:
#
#   e2e/kind.sh                      # create the cluster, install, test, delete the cluster
#   KEEP_CLUSTER=1 e2e/kind.sh       # leave the cluster running afterwards (and reuse it next time)
#
# Needs docker (with a running engine), kind, kubectl, cargo and curl. Steps:
#   1. creates the kind cluster `mizzen-e2e` (e2e/kind-config.yaml) with its own kubeconfig,
#      so the caller's kubeconfig is left alone;
#   2. builds the images with scripts/build-images.sh (operator, webhook, agent, proxy, demo)
#      and `kind load`s them, with the curl image the test clients run;
#   3. installs Mizzen: `kubectl apply --server-side -f manifests/`, a 2-minute workload
#      certificate lifetime on the node agent (the rotation test needs rotations to happen),
#      waits for every rollout and for the webhook's CA bundle, pins the ingress gateway's
#      NodePorts to the ports the kind config publishes;
#   4. deploys the demo app (e2e/manifests/demo.yaml) into the namespace `mizzen-demo`,
#      labelled istio-injection=enabled, and checks that it answers through the mesh;
#   5. runs the Rust scenarios (crate e2e/, `cargo test -p mizzen-e2e`), then, last, the
#      destructive uninstall test;
#   6. deletes the cluster, unless KEEP_CLUSTER=1.
#
# Environment: KIND_CLUSTER_NAME (default mizzen-e2e), KIND_NODE_IMAGE (kindest/node image;
# default: kind's own, which must be Kubernetes 1.29 or newer for native sidecars),
# E2E_TEST_THREADS (parallel scenarios, default 4), KEEP_CLUSTER.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER="${KIND_CLUSTER_NAME:-mizzen-e2e}"
KEEP_CLUSTER="${KEEP_CLUSTER:-0}"
THREADS="${E2E_TEST_THREADS:-4}"
DEMO_NS=mizzen-demo
INGRESS_NS=mizzen-ingress
INGRESS_SVC=mizzen-ingressgateway

step() { printf '\n==> %s\n' "$*"; }
die() { echo "e2e/kind.sh: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required: $2"; }

need docker "https://docs.docker.com/engine/install/"
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need cargo "https://rustup.rs"
need curl "apt-get install curl"
timeout 20 docker info >/dev/null 2>&1 || die "docker is installed but its engine does not answer (docker info)"

# The cluster's own kubeconfig: kept next to the cluster's name so KEEP_CLUSTER runs find it.
KUBECONFIG="${XDG_CACHE_HOME:-$HOME/.cache}/mizzen/kind-$CLUSTER.kubeconfig"
mkdir -p "$(dirname "$KUBECONFIG")"
export KUBECONFIG

cleanup() {
  status=$?
  if [ "$KEEP_CLUSTER" = 1 ]; then
    echo "kept the kind cluster $CLUSTER: export KUBECONFIG=$KUBECONFIG"
  else
    step "deleting the kind cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" || true
  fi
  exit "$status"
}
trap cleanup EXIT

step "kind cluster $CLUSTER"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "reusing the existing cluster $CLUSTER"
  kind export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG"
else
  kind create cluster --name "$CLUSTER" --config e2e/kind-config.yaml \
    --kubeconfig "$KUBECONFIG" ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 180s
fi
kubectl version
server_minor="$(kubectl version -o json | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | tail -1)"
if [ -n "$server_minor" ] && [ "$server_minor" -lt 29 ]; then
  die "the cluster runs Kubernetes 1.$server_minor; native sidecars need 1.29 or newer (set KIND_NODE_IMAGE)"
fi

step "images"
ENGINE=docker bash scripts/build-images.sh
mapfile -t images < <(bash scripts/build-images.sh --list)
demo_image="$(bash scripts/build-images.sh --list demo)"
grep -q "image: $demo_image\$" e2e/manifests/demo.yaml \
  || die "e2e/manifests/demo.yaml does not run $demo_image (the image build-images.sh makes)"
# Third-party images the tests run (the curl clients), loaded so no node pulls them.
mapfile -t extra < <(sed -n 's/^ *image: *\([^ ]*\)$/\1/p' e2e/manifests/*.yaml | grep -v '/mizzen-' | sort -u)
for image in "${extra[@]}"; do
  docker image inspect "$image" >/dev/null 2>&1 || docker pull "$image"
done
for image in "${images[@]}" "${extra[@]}"; do
  docker image inspect "$image" >/dev/null 2>&1 || die "image $image was not built"
  kind load docker-image "$image" --name "$CLUSTER"
done

step "install Mizzen (kubectl apply --server-side -f manifests/)"
kubectl apply --server-side --force-conflicts -f manifests/
kubectl -n mizzen-system set env daemonset/mizzen-agent MIZZEN_WORKLOAD_CERT_TTL=2m
rollouts() {
  local ns="$1" resource
  for resource in $(kubectl -n "$ns" get deployments,daemonsets -o name); do
    kubectl -n "$ns" rollout status "$resource" --timeout=300s
  done
}
rollouts mizzen-system
if kubectl get namespace "$INGRESS_NS" >/dev/null 2>&1; then
  rollouts "$INGRESS_NS"
fi
# The operator writes the webhook's serving certificate and its CA bundle at start; until the
# bundle is in place the API server cannot call the injector (failurePolicy: Fail).
for _ in $(seq 120); do
  bundle="$(kubectl get mutatingwebhookconfiguration mizzen-sidecar-injector \
    -o jsonpath='{.webhooks[0].clientConfig.caBundle}')"
  [ -n "$bundle" ] && break
  sleep 1
done
[ -n "$bundle" ] || die "the operator never wrote the injector's caBundle"

# The gateway's HTTP (80) and HTTPS (443) ports on the NodePorts kind publishes.
kubectl -n "$INGRESS_NS" get service "$INGRESS_SVC" >/dev/null \
  || die "no Service $INGRESS_SVC in $INGRESS_NS: the ingress gateway is missing from manifests/"
patch="["
index=0
for port in $(kubectl -n "$INGRESS_NS" get service "$INGRESS_SVC" -o jsonpath='{.spec.ports[*].port}'); do
  case "$port" in
    80) patch+="{\"op\":\"replace\",\"path\":\"/spec/ports/$index/nodePort\",\"value\":30080}," ;;
    443) patch+="{\"op\":\"replace\",\"path\":\"/spec/ports/$index/nodePort\",\"value\":30443}," ;;
  esac
  index=$((index + 1))
done
[ "$patch" != "[" ] || die "Service $INGRESS_SVC has no port 80 or 443"
kubectl -n "$INGRESS_NS" patch service "$INGRESS_SVC" --type=json -p "${patch%,}]"

step "demo app in the meshed namespace $DEMO_NS"
kubectl create namespace "$DEMO_NS" --dry-run=client -o yaml | kubectl apply --server-side -f -
kubectl label namespace "$DEMO_NS" --overwrite istio-injection=enabled \
  pod-security.kubernetes.io/enforce=privileged
kubectl -n "$DEMO_NS" apply --server-side -f e2e/manifests/demo.yaml
rollouts "$DEMO_NS"
client="$(kubectl -n "$DEMO_NS" get pods -l app=client -o jsonpath='{.items[0].metadata.name}')"
kubectl -n "$DEMO_NS" exec "$client" -c client -- \
  curl -sf --max-time 10 -o /dev/null -w 'productpage through the mesh: %{http_code}\n' \
  http://productpage:9080/productpage

step "scenarios (cargo test -p mizzen-e2e)"
cargo test -p mizzen-e2e --locked --no-fail-fast -- --test-threads "$THREADS"

step "uninstall leaves nothing behind (last: it removes Mizzen)"
kubectl delete namespace "$DEMO_NS" --wait=true --timeout=120s
cargo test -p mizzen-e2e --locked --test uninstall -- --ignored

step "e2e suite passed"
