#!/usr/bin/env bash
# Ingress gateway benchmark (issue 7): client --TLS--> gateway --> 1 KiB nginx backend, on
# loopback. Mizzen's gateway mode (`mizzen-proxy gateway`, a Gateway server HTTPS/SIMPLE with a
# VirtualService to the backend's service) against HAProxy, both terminating TLS with the same
# certificate (ECDSA P-256) and sending plaintext HTTP/1.1 to the backend; the direct path
# (plaintext to the backend) is the baseline.
#
#   bench/gateway.sh                      # 5 rounds, 10 s per measurement
#   ROUNDS=3 DURATION=5s bench/gateway.sh # quicker
#
# Same harness as bench/proxy.sh (bench/lib.sh): oha pinned to CPU 0, backend and proxies to
# CPU 1 with one worker thread each, rotated order per round. Reported, per proxy, medians with
# min-max over rounds: added p50/p90/p99 over direct at 1000 rps with 16 and 64 keep-alive
# connections (open loop, --latency-correction); CPU milliseconds per 1000 requests; idle and
# peak RSS. Ends with Mizzen's figures as ratios to HAProxy's. Paste the output into
# bench/RESULTS.md (## Gateway) with the date and the machine it prints.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mizzen/target}"

ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-10s}"
RATE="${RATE:-1000}"
LOADGEN_CPU="${LOADGEN_CPU:-0}"
SERVER_CPU="${SERVER_CPU:-1}"
BASE_PORT="${BASE_PORT:-19000}"
PER_PAIR=1 # one proxy per pair

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

bench_prologue mizzen-gateway-bench # MIZZEN (MIZZEN_BIN skips the build), WORK, PIDS, cleanup at exit

P_BACKEND=$BASE_PORT
P_MZ=$((BASE_PORT + 101))
P_HA=$((BASE_PORT + 201))

machine_header
echo "settings: rounds=$ROUNDS duration=$DURATION rate=$RATE loadgen-cpu=$LOADGEN_CPU server-cpu=$SERVER_CPU"

# --- the certificate both gateways serve --------------------------------------------------------
mkdir -p "$WORK/www" "$WORK/nginx-tmp" "$WORK/mizzen"
gateway_cert "$WORK/credentials/bench-cert"
cat "$WORK/credentials/bench-cert/tls.crt" "$WORK/credentials/bench-cert/tls.key" >"$WORK/haproxy.pem" # HAProxy's crt: certificate then key

# --- backend: nginx serving 1 KiB ---------------------------------------------------------------
head -c 1024 /dev/zero | tr '\0' 'x' >"$WORK/www/index.html"
nginx_conf backend "server { listen 127.0.0.1:$P_BACKEND; root $WORK/www; }"
start backend nginx -c "$WORK/backend.conf"

# --- Mizzen: the gateway section as the operator renders it -------------------------------------
gateway_config "$WORK/mizzen/config.json" "$P_BACKEND"
start mz env RUST_LOG=warn "$MIZZEN" gateway "${GATEWAY_ARGS[@]}" --config "$WORK/mizzen/config.json" \
  --credentials-dir "$WORK/credentials" --port-map "443=127.0.0.1:$P_MZ" \
  --admin 127.0.0.1:$((BASE_PORT + 110)) --health 127.0.0.1:$((BASE_PORT + 111)) --prometheus 127.0.0.1:$((BASE_PORT + 112))

# --- HAProxy ------------------------------------------------------------------------------------
haproxy_conf ha "$P_HA" "$P_BACKEND" "ssl crt $WORK/haproxy.pem alpn h2,http/1.1"
start ha haproxy -f "$WORK/ha.cfg"

wait_port "$P_BACKEND"
for p in $P_MZ $P_HA; do
  for _ in $(seq 100); do
    code=$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$p/" || true)
    [ "$code" = 200 ] && break
    sleep 0.1
  done
  [ "$code" = 200 ] || { echo "the gateway on port $p answers ${code:-nothing}, not 200" >&2; exit 1; }
done

declare -A TARGET=([direct]=$P_BACKEND [mizzen]=$P_MZ [haproxy]=$P_HA)
declare -A PROXIES=([direct]="" [mizzen]="$PID_mz" [haproxy]="$PID_ha")
URL=([mizzen]="https://127.0.0.1:$P_MZ/" [haproxy]="https://127.0.0.1:$P_HA/")
OHA_EXTRA=(--insecure) # self-signed: both gateways are loaded the same way
PAIRS=(mizzen haproxy)
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"

for pair in "${PAIRS[@]}"; do
  mapfile -t pids < <(pids_of "${PROXIES[$pair]}")
  echo "{\"kind\":\"idle\",\"pair\":\"$pair\",\"rss_kib\":$(rss_kib VmRSS "${pids[@]}")}" >>"$RESULTS"
done

ORDER=(direct "${PAIRS[@]}")
for round in $(seq "$ROUNDS"); do
  echo "round $round: ${ORDER[*]}" >&2
  for pair in "${ORDER[@]}"; do
    for conns in 16 64; do measure "$pair" "$conns" "$RATE" "$round"; done
  done
  ORDER=("${ORDER[@]:1}" "${ORDER[0]}")
done

python3 - "$RESULTS" "${PAIRS[@]}" <<'EOF'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
pairs = sys.argv[2:]
def med(xs): return statistics.median(xs) if xs else float("nan")
def span(xs): return f"{med(xs):.3f} ({min(xs):.3f}-{max(xs):.3f})" if xs else "n/a"
def load(pair, conns, key):
    return [r[key] for r in rows if r["kind"] == "load" and r["pair"] == pair and r["conns"] == conns]
def added(pair, conns, q):
    return [a - b for a, b in zip(load(pair, conns, q), load("direct", conns, q))]
print("\n## Added latency over direct (plaintext), ms (median, min-max over rounds)")
for conns in (16, 64):
    print(f"\n{conns} connections, TLS terminated at the gateway")
    print("| gateway | p50 | p90 | p99 | errors |")
    print("|---|---|---|---|---|")
    for p in pairs:
        cells = [span(added(p, conns, q)) for q in ("p50", "p90", "p99")]
        print(f"| {p} | {' | '.join(cells)} | {sum(load(p, conns, 'errors'))} |")
print("\n## Cost at 1000 rps, 16 connections")
print("| gateway | CPU ms / 1000 req | of it user | idle RSS MiB | peak RSS MiB |")
print("|---|---|---|---|---|")
summary = {}
for p in pairs:
    cpu = load(p, 16, "cpu_ms_per_1000")
    user = load(p, 16, "user_ms_per_1000")
    idle = [r["rss_kib"] / 1024 for r in rows if r["kind"] == "idle" and r["pair"] == p]
    peak = [x / 1024 for x in load(p, 16, "hwm_kib")]
    summary[p] = dict(p50=med(added(p, 16, "p50")), p90=med(added(p, 16, "p90")), cpu=med(cpu), user=med(user), peak=med(peak))
    print(f"| {p} | {span(cpu)} | {span(user)} | {span(idle)} | {span(peak)} |")
print("\n## Mizzen as a ratio of HAProxy (lower is better)")
print("| figure | mizzen / haproxy |")
print("|---|---|")
m, h = summary["mizzen"], summary["haproxy"]
for k, label in (("p50", "added p50"), ("p90", "added p90"), ("cpu", "CPU per 1000 req"), ("user", "of it user"), ("peak", "peak RSS")):
    print(f"| {label} | {m[k] / h[k]:.2f} |" if h[k] else f"| {label} | n/a |")
EOF
