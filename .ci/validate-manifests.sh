#!/usr/bin/env bash
# Validates manifests/ offline, since no API server runs here to refuse them:
#   1. every object against the Kubernetes OpenAPI schemas (kubernetes-validate --strict, so
#      unknown fields fail too), for the oldest and the newest Kubernetes Mizzen supports;
#   2. the CRDs (manifests/01-crds.yaml and crds/*.yaml) against the API server's
#      structural-schema rules (../shared/tools/check-crd-structural.py).
# Installs its Python tools into a venv under ${MIZZEN_CACHE:-$HOME/.cache/mizzen} the first
# time. Exits non-zero on any failure.
set -euo pipefail
root="$(git -C "$(dirname "$0")" rev-parse --show-toplevel 2>/dev/null || (cd "$(dirname "$0")/.." && pwd))"
cd "$root"

# kubernetes-validate 1.37.0 bundles the schemas of Kubernetes 1.25 to 1.37; Mizzen supports
# 1.30 (native sidecars, matchLabelKeys, unhealthyPodEvictionPolicy) and later.
KV_VERSION=1.37.0
K8S_VERSIONS=(1.30.0 1.37.0)
cache="${MIZZEN_CACHE:-$HOME/.cache/mizzen}"
venv="$cache/venv"
kv="$venv/bin/kubernetes-validate"

if ! { [ -x "$kv" ] && [ "$("$kv" --version 2>/dev/null)" = "$KV_VERSION" ] \
    && "$venv/bin/python" -c 'import yaml' 2>/dev/null; }; then
  echo "installing kubernetes-validate==$KV_VERSION and PyYAML into $venv"
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KV_VERSION" PyYAML
fi

shopt -s nullglob
manifests=(manifests/*.yaml)
if [ ${#manifests[@]} -eq 0 ]; then
  echo "FAIL: no manifests/*.yaml; generate them with: cargo run -p mizzenctl -- install --out-dir manifests" >&2
  exit 1
fi

failed=0
for k8s in "${K8S_VERSIONS[@]}"; do
  echo "==> kubernetes-validate $KV_VERSION --strict -k $k8s: ${manifests[*]}"
  out="$("$kv" --strict -k "$k8s" "${manifests[@]}" 2>&1)" || failed=1
  [ -n "$out" ] && printf '%s\n' "$out"
  # Every object here is a built-in kind, so a missing schema (a WARN, exit 0 in
  # kubernetes-validate) means a wrong apiVersion or kind: count it as a failure.
  if grep -q '^WARN' <<<"$out"; then
    echo "FAIL: kubernetes-validate found no schema for some object above (wrong apiVersion or kind?)" >&2
    failed=1
  fi
  objects="$("$venv/bin/python" - "${manifests[@]}" <<'PY'
import sys, yaml
print(sum(1 for p in sys.argv[1:] for d in yaml.safe_load_all(open(p)) if d))
PY
)"
  echo "    $objects objects in ${#manifests[@]} files checked against Kubernetes $k8s"
done

# The injector's golden outputs must be valid objects too (for Deployments and Jobs, the whole
# object). future-fields.injected.yaml carries fields no schema knows, on purpose: no --strict.
injected=(webhook/testdata/inject/*.injected.yaml)
for k8s in "${K8S_VERSIONS[@]}"; do
  [ ${#injected[@]} -gt 0 ] || { echo "FAIL: no webhook/testdata/inject/*.injected.yaml" >&2; failed=1; break; }
  echo "==> kubernetes-validate -k $k8s: ${#injected[@]} injected golden files (webhook/testdata/inject)"
  for f in "${injected[@]}"; do
    strict=--strict; [[ "$f" == */future-fields.injected.yaml ]] && strict=
    out="$("$kv" $strict -k "$k8s" "$f" 2>&1)" || failed=1
    if grep -Eq '^(WARN|ERROR)' <<<"$out"; then printf '%s\n' "$out"; failed=1; fi
  done
done

checker="$root/../shared/tools/check-crd-structural.py"
crd_files=()
if [ -s manifests/01-crds.yaml ]; then
  crd_files+=(manifests/01-crds.yaml)
else
  echo "SKIPPED: manifests/01-crds.yaml is empty or missing, so no CRDs to check there yet"
fi
crd_files+=(crds/*.yaml)
if [ ${#crd_files[@]} -eq 0 ]; then
  echo "SKIPPED: structural-schema check: no CRD YAML yet (manifests/01-crds.yaml, crds/*.yaml)"
elif [ ! -f "$checker" ]; then
  echo "FAIL: $checker not found (the shared/ directory belongs beside the repository clone)" >&2
  failed=1
else
  echo "==> check-crd-structural.py: ${crd_files[*]}"
  "$venv/bin/python" "$checker" "${crd_files[@]}" || failed=1
fi

# The observability add-ons (manifests/addons/*.yaml, applied on their own: `kubectl apply -f
# manifests/` does not descend into addons/) are built-in kinds too: --strict, no WARN. The
# Prometheus configuration their ConfigMap carries must parse as one (promtool, when installed,
# checks it fully).
addons=(manifests/addons/*.yaml)
if [ ${#addons[@]} -eq 0 ]; then
  echo "SKIPPED: no manifests/addons/*.yaml"
else
  for k8s in "${K8S_VERSIONS[@]}"; do
    echo "==> kubernetes-validate $KV_VERSION --strict -k $k8s: ${addons[*]}"
    out="$("$kv" --strict -k "$k8s" "${addons[@]}" 2>&1)" || failed=1
    [ -n "$out" ] && printf '%s\n' "$out"
    if grep -q '^WARN' <<<"$out"; then
      echo "FAIL: kubernetes-validate found no schema for some add-on object above" >&2
      failed=1
    fi
  done
  promdir="$(mktemp -d)"
  echo "==> the Prometheus configuration in manifests/addons"
  "$venv/bin/python" - "$promdir" "${addons[@]}" <<'PY' || failed=1
import os, re, sys, yaml
out, paths = sys.argv[1], sys.argv[2:]
problems, found = [], 0
for path in paths:
    for doc in yaml.safe_load_all(open(path)):
        if not doc or doc.get("kind") != "ConfigMap" or "prometheus.yml" not in doc.get("data", {}):
            continue
        found += 1
        where = f"{path}: ConfigMap {doc['metadata']['name']}: prometheus.yml"
        text = doc["data"]["prometheus.yml"]
        open(os.path.join(out, f"prometheus-{found}.yml"), "w").write(text)
        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as e:
            problems.append(f"{where}: not YAML: {e}")
            continue
        jobs = [job.get("job_name") for job in config.get("scrape_configs", [])]
        if not jobs or len(jobs) != len(set(jobs)) or not all(jobs):
            problems.append(f"{where}: job names missing or repeated: {jobs}")
        for job in config.get("scrape_configs", []):
            for rule in job.get("relabel_configs", []):
                if not isinstance(rule, dict):
                    problems.append(f"{where}: job {job.get('job_name')}: a relabel rule is not a mapping: {rule!r}")
                    continue
                try:
                    re.compile(rule.get("regex", "(.*)"))
                except re.error as e:
                    problems.append(f"{where}: job {job.get('job_name')}: regex {rule.get('regex')!r}: {e}")
if not found:
    problems.append("no ConfigMap with a prometheus.yml in manifests/addons")
for p in problems:
    print(f"FAIL: {p}", file=sys.stderr)
print(f"    {found} Prometheus configuration(s) parsed")
sys.exit(1 if problems else 0)
PY
  if command -v promtool >/dev/null 2>&1; then
    for f in "$promdir"/*.yml; do promtool check config --syntax-only "$f" || failed=1; done
  else
    echo "    promtool not installed: the scrape configuration was parsed, not checked by Prometheus"
  fi
  rm -rf "$promdir"
fi

if [ "$failed" -ne 0 ]; then
  echo "FAIL: manifests did not validate" >&2
  exit 1
fi
echo "OK: manifests validate against Kubernetes ${K8S_VERSIONS[*]}"
