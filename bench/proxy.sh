#!/usr/bin/env bash
# Sidecar-pair benchmark (issue 3): client -> proxy A -> proxy B -> 1 KiB nginx backend, on
# loopback, plaintext, for Mizzen, HAProxy and nginx, against the direct path.
#
#   bench/proxy.sh                      # 5 rounds, 10 s per measurement
#   ROUNDS=3 DURATION=5s bench/proxy.sh # quicker
#
# Needs: oha 1.16 (`cargo install oha --version 1.16.0 --locked`), haproxy and nginx (Debian),
# taskset, curl, python3. The load generator is pinned to CPU 0, backend and proxies to CPU 1,
# one worker thread each. Each round runs the pairs in a rotated order. Reported, per pair,
# medians with min-max over rounds:
#   - added p50/p90/p99 latency over direct at 1000 rps, 16 connections (open loop,
#     --latency-correction), and at 4 and 64 connections;
#   - CPU milliseconds per 1000 requests per proxy (time on CPU from /proc/PID/task/*/schedstat,
#     and its user share from utime/stime);
#   - RSS per proxy idle (Mizzen with a config of 100 services) and peak RSS during each
#     measurement (the high-water mark is reset before it);
#   - the highest rate held with zero errors and p90 under 5 ms.
# The pair `hyper-floor` (proxy/examples/hyper_floor.rs, when built) is a bare hyper forwarder:
# what the HTTP library and runtime cost alone, so Mizzen's own share can be read off.
# Ends with Mizzen's figures as ratios to the HAProxy and nginx pairs. Paste the output into
# bench/RESULTS.md (## Proxy) with the date and the machine it prints.
#
#   MTLS=1 bench/proxy.sh               # also the mTLS pairs (issue 6): the proxy-to-proxy hop
#                                       # is mutual TLS with the same certificates for all three
#                                       # (ECDSA P-256 leaves with SPIFFE ids from one root)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mizzen/target}"

ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-10s}"
RATE="${RATE:-1000}"
LOADGEN_CPU="${LOADGEN_CPU:-0}"
SERVER_CPU="${SERVER_CPU:-1}"
BASE_PORT="${BASE_PORT:-18000}"

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

bench_prologue mizzen-bench # MIZZEN (MIZZEN_BIN skips the build), WORK, PIDS, cleanup at exit

P_BACKEND=$BASE_PORT
P_MZ_OUT=$((BASE_PORT + 101)) P_MZ_IN=$((BASE_PORT + 102))
P_HA_OUT=$((BASE_PORT + 201)) P_HA_IN=$((BASE_PORT + 202))
P_NG_OUT=$((BASE_PORT + 301)) P_NG_IN=$((BASE_PORT + 302))
P_MZT_OUT=$((BASE_PORT + 401)) P_MZT_IN=$((BASE_PORT + 402))
P_HAT_OUT=$((BASE_PORT + 501)) P_HAT_IN=$((BASE_PORT + 502))
P_NGT_OUT=$((BASE_PORT + 601)) P_NGT_IN=$((BASE_PORT + 602))
P_FL_OUT=$((BASE_PORT + 701)) P_FL_IN=$((BASE_PORT + 702))
MTLS="${MTLS:-0}"

machine_header
echo "settings: rounds=$ROUNDS duration=$DURATION rate=$RATE loadgen-cpu=$LOADGEN_CPU server-cpu=$SERVER_CPU"

# --- backend: nginx serving 1 KiB -------------------------------------------------------------
mkdir -p "$WORK/www" "$WORK/nginx-tmp"
head -c 1024 /dev/zero | tr '\0' 'x' >"$WORK/www/index.html"
nginx_conf backend "server { listen 127.0.0.1:$P_BACKEND; root $WORK/www; }"
start backend nginx -c "$WORK/backend.conf"

# --- Mizzen pair: outbound (service bench:80) -> inbound -> backend ---------------------------
mkdir -p "$WORK/mizzen-out" "$WORK/mizzen-in" # own directories: the proxy watches its config directory
mizzen_config "$WORK/mizzen-out/config.json" "$P_MZ_IN" 0
echo '{"format":"mizzen.io/proxy-config/v1","namespace":"default"}' >"$WORK/mizzen-in/config.json"
mz_common=(sidecar --no-capture --no-access-log --concurrency 1 --drain-duration 0)
start mz_out env RUST_LOG=warn "$MIZZEN" "${mz_common[@]}" --config "$WORK/mizzen-out/config.json" \
  --outbound "127.0.0.1:$P_MZ_OUT=bench.default.svc.cluster.local:80" \
  --admin 127.0.0.1:$((BASE_PORT + 110)) --health 127.0.0.1:$((BASE_PORT + 111)) --prometheus 127.0.0.1:$((BASE_PORT + 112))
start mz_in env RUST_LOG=warn "$MIZZEN" "${mz_common[@]}" --config "$WORK/mizzen-in/config.json" \
  --inbound "127.0.0.1:$P_MZ_IN=127.0.0.1:$P_BACKEND" \
  --admin 127.0.0.1:$((BASE_PORT + 120)) --health 127.0.0.1:$((BASE_PORT + 121)) --prometheus 127.0.0.1:$((BASE_PORT + 122))

# --- the floor: the same pair from a bare hyper forwarder (no routing, resilience, telemetry) ---
if [ -x "$FLOOR" ]; then
  start fl_out "$FLOOR" "127.0.0.1:$P_FL_OUT" "127.0.0.1:$P_FL_IN"
  start fl_in "$FLOOR" "127.0.0.1:$P_FL_IN" "127.0.0.1:$P_BACKEND"
fi

# --- HAProxy pair -----------------------------------------------------------------------------
haproxy_conf ha_out "$P_HA_OUT" "$P_HA_IN"
haproxy_conf ha_in "$P_HA_IN" "$P_BACKEND"
start ha_out haproxy -f "$WORK/ha_out.cfg"
start ha_in haproxy -f "$WORK/ha_in.cfg"

# --- nginx pair -------------------------------------------------------------------------------
for pair in "ng_out $P_NG_OUT $P_NG_IN" "ng_in $P_NG_IN $P_BACKEND"; do
  set -- $pair
  nginx_conf "$1" "upstream up { server 127.0.0.1:$3; keepalive 64; }
  server { listen 127.0.0.1:$2; location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
  start "$1" nginx -c "$WORK/$1.conf"
done

# --- mTLS pairs (MTLS=1): the same topology, the proxy-to-proxy hop over mutual TLS ---------
if [ "$MTLS" = 1 ]; then
  C="$WORK/certs"
  mesh_certs "$C"

  mkdir -p "$WORK/mizzen-tout" "$WORK/mizzen-tin"
  mizzen_config "$WORK/mizzen-tout/config.json" "$P_MZT_IN" 1
  echo '{"format":"mizzen.io/proxy-config/v1","namespace":"default","inbound":{"peerAuthentication":[{"name":"bench/default","mode":"STRICT"}]}}' >"$WORK/mizzen-tin/config.json"
  start mzt_out env RUST_LOG=warn "$MIZZEN" "${mz_common[@]}" --config "$WORK/mizzen-tout/config.json" \
    --outbound "127.0.0.1:$P_MZT_OUT=bench.default.svc.cluster.local:80" \
    --tls-cert "$C/client.pem" --tls-key "$C/client.key" --tls-roots "$C/root.pem" \
    --admin 127.0.0.1:$((BASE_PORT + 410)) --health 127.0.0.1:$((BASE_PORT + 411)) --prometheus 127.0.0.1:$((BASE_PORT + 412))
  start mzt_in env RUST_LOG=warn "$MIZZEN" "${mz_common[@]}" --config "$WORK/mizzen-tin/config.json" \
    --inbound "127.0.0.1:$P_MZT_IN=127.0.0.1:$P_BACKEND" \
    --tls-cert "$C/server.pem" --tls-key "$C/server.key" --tls-roots "$C/root.pem" \
    --admin 127.0.0.1:$((BASE_PORT + 420)) --health 127.0.0.1:$((BASE_PORT + 421)) --prometheus 127.0.0.1:$((BASE_PORT + 422))

  haproxy_conf hat_out "$P_HAT_OUT" "$P_HAT_IN" "" \
    "ssl crt $C/client.bundle.pem ca-file $C/root.pem verify required alpn http/1.1"
  haproxy_conf hat_in "$P_HAT_IN" "$P_BACKEND" \
    "ssl crt $C/server.bundle.pem ca-file $C/root.pem verify required alpn http/1.1"
  start hat_out haproxy -f "$WORK/hat_out.cfg"
  start hat_in haproxy -f "$WORK/hat_in.cfg"

  nginx_conf ngt_out "upstream up { server 127.0.0.1:$P_NGT_IN; keepalive 64; }
  server { listen 127.0.0.1:$P_NGT_OUT; location / { proxy_pass https://up; proxy_http_version 1.1; proxy_set_header Connection \"\";
    proxy_ssl_certificate $C/client.pem; proxy_ssl_certificate_key $C/client.key;
    proxy_ssl_trusted_certificate $C/root.pem; proxy_ssl_verify on; proxy_ssl_name bench.mesh;
    proxy_ssl_server_name on; proxy_ssl_session_reuse on; } }"
  nginx_conf ngt_in "upstream up { server 127.0.0.1:$P_BACKEND; keepalive 64; }
  server { listen 127.0.0.1:$P_NGT_IN ssl; ssl_certificate $C/server.pem; ssl_certificate_key $C/server.key;
    ssl_client_certificate $C/root.pem; ssl_verify_client on;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
  start ngt_out nginx -c "$WORK/ngt_out.conf"
  start ngt_in nginx -c "$WORK/ngt_in.conf"
  for p in $P_MZT_OUT $P_HAT_OUT $P_NGT_OUT; do wait_port "$p"; done
  for p in $P_MZT_OUT $P_HAT_OUT $P_NGT_OUT; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$p/")
    [ "$code" = 200 ] || { echo "mTLS pair on port $p answers $code, not 200" >&2; exit 1; }
  done
fi

for p in $P_BACKEND $P_MZ_OUT $P_HA_OUT $P_NG_OUT; do wait_port "$p"; done
[ -x "$FLOOR" ] && wait_port "$P_FL_OUT"

declare -A TARGET=([direct]=$P_BACKEND [mizzen]=$P_MZ_OUT [haproxy]=$P_HA_OUT [nginx]=$P_NG_OUT)
declare -A PROXIES=([direct]="" [mizzen]="$PID_mz_out $PID_mz_in" [haproxy]="$PID_ha_out $PID_ha_in" [nginx]="$PID_ng_out $PID_ng_in")
PAIRS=(mizzen haproxy nginx)
if [ -x "$FLOOR" ]; then
  TARGET+=([hyper-floor]=$P_FL_OUT)
  PROXIES+=([hyper-floor]="$PID_fl_out $PID_fl_in")
  PAIRS+=(hyper-floor)
fi
if [ "$MTLS" = 1 ]; then
  TARGET+=([mizzen-mtls]=$P_MZT_OUT [haproxy-mtls]=$P_HAT_OUT [nginx-mtls]=$P_NGT_OUT)
  PROXIES+=([mizzen-mtls]="$PID_mzt_out $PID_mzt_in" [haproxy-mtls]="$PID_hat_out $PID_hat_in" [nginx-mtls]="$PID_ngt_out $PID_ngt_in")
  PAIRS+=(mizzen-mtls haproxy-mtls nginx-mtls)
fi
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"

idle_rss() {
  for pair in "${PAIRS[@]}"; do
    local pids=()
    for p in ${PROXIES[$pair]}; do mapfile -t -O "${#pids[@]}" pids < <(pids_of "$p"); done
    echo "{\"kind\":\"idle\",\"pair\":\"$pair\",\"rss_kib\":$(rss_kib VmRSS "${pids[@]}"),\"proxies\":2}" >>"$RESULTS"
  done
}

holds() { # the last measurement: no errors, p90 under 5 ms, and the offered rate delivered
  tail -1 "$RESULTS" | python3 -c 'import json,sys; r=json.load(sys.stdin); sys.exit(0 if r["errors"]==0 and r["p90"]<5 and r["rps"]>=0.95*r["rate"] else 1)'
}

max_rate() { # pair round: doubles the rate until it no longer holds, then bisects twice (the
  # answer is within a quarter of the last doubling step, not a factor of two)
  local pair=$1 round=$2 good=0 bad=0 rate=1000
  while ((rate <= 64000)); do
    measure "$pair" 16 "$rate" "max$round"
    if holds; then good=$rate rate=$((rate * 2)); else bad=$rate; break; fi
  done
  for _ in 1 2; do
    ((good > 0 && bad > 0)) || break
    rate=$(((good + bad) / 2))
    measure "$pair" 16 "$rate" "max$round"
    if holds; then good=$rate; else bad=$rate; fi
  done
  echo "{\"kind\":\"max\",\"pair\":\"$pair\",\"round\":$round,\"rate\":$good}" >>"$RESULTS"
}

idle_rss
ORDER=(direct "${PAIRS[@]}")
for round in $(seq "$ROUNDS"); do
  echo "round $round: ${ORDER[*]}" >&2
  for pair in "${ORDER[@]}"; do
    for conns in 16 4 64; do measure "$pair" "$conns" "$RATE" "$round"; done
  done
  for pair in "${ORDER[@]}"; do max_rate "$pair" "$round"; done
  ORDER=("${ORDER[@]:1}" "${ORDER[0]}")
done

python3 - "$RESULTS" "${PAIRS[@]}" <<'EOF'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
pairs = sys.argv[2:]
def med(xs): return statistics.median(xs) if xs else float("nan")
def span(xs): return f"{med(xs):.3f} ({min(xs):.3f}-{max(xs):.3f})" if xs else "n/a"
def load(pair, conns, key, rate=None):
    return [r[key] for r in rows if r["kind"] == "load" and r["pair"] == pair and r["conns"] == conns
            and str(r["round"]).isdigit() and (rate is None or r["rate"] == rate)]
print("\n## Added latency over direct, ms (median, min-max over rounds)")
for conns in (16, 4, 64):
    print(f"\n{conns} connections")
    print("| pair | p50 | p90 | p99 | errors |")
    print("|---|---|---|---|---|")
    for p in pairs:
        cells = []
        for q in ("p50", "p90", "p99"):
            added = [a - b for a, b in zip(load(p, conns, q), load("direct", conns, q))]
            cells.append(span(added))
        print(f"| {p} | {' | '.join(cells)} | {sum(load(p, conns, 'errors'))} |")
print("\n## Cost per proxy at 1000 rps, 16 connections")
print("| pair | CPU ms / 1000 req | of it user | idle RSS MiB | peak RSS MiB |")
print("|---|---|---|---|---|")
summary = {}
for p in pairs:
    cpu = load(p, 16, "cpu_ms_per_1000")
    user = load(p, 16, "user_ms_per_1000")
    idle = [r["rss_kib"] / r["proxies"] / 1024 for r in rows if r["kind"] == "idle" and r["pair"] == p]
    peak = [x / 1024 for x in load(p, 16, "hwm_kib")]
    maxr = [r["rate"] for r in rows if r["kind"] == "max" and r["pair"] == p]
    added = [a - b for a, b in zip(load(p, 16, "p50"), load("direct", 16, "p50"))]
    added90 = [a - b for a, b in zip(load(p, 16, "p90"), load("direct", 16, "p90"))]
    summary[p] = dict(p50=med(added), p90=med(added90), cpu=med(cpu), user=med(user), peak=med(peak), max=med(maxr))
    print(f"| {p} | {span(cpu)} | {span(user)} | {span(idle)} | {span(peak)} |")
print("\n## Highest rate with zero errors and p90 < 5 ms (16 connections)")
print("| pair | rps (median, min-max) | peak RSS MiB at the highest rates |")
print("|---|---|---|")
for p in pairs + ["direct"]:
    maxr = [r["rate"] for r in rows if r["kind"] == "max" and r["pair"] == p]
    # Each round's search: the largest per-measurement peak among its rates.
    peaks = [max(r["hwm_kib"] for r in rows if r["kind"] == "load" and r["pair"] == p and r["round"] == f"max{n}") / 1024
             for n in sorted({r["round"] for r in rows if r["kind"] == "max" and r["pair"] == p})]
    print(f"| {p} | {med(maxr):.0f} ({min(maxr)}-{max(maxr)}) | {span(peaks) if p != 'direct' else 'n/a'} |")
for suffix in ("", "-mtls"):
    if "mizzen" + suffix not in summary:
        continue
    print(f"\n## Mizzen{suffix} as a ratio of the reference pairs (lower is better except max rate)")
    print(f"| figure | / haproxy{suffix} | / nginx{suffix} |")
    print("|---|---|---|")
    m = summary["mizzen" + suffix]
    for k, label in (("p50", "added p50"), ("p90", "added p90"), ("cpu", "CPU per 1000 req"), ("user", "of it user"), ("peak", "peak RSS"), ("max", "max rate")):
        r = lambda o: f"{m[k] / summary[o + suffix][k]:.2f}" if summary[o + suffix][k] else "n/a"
        print(f"| {label} | {r('haproxy')} | {r('nginx')} |")
EOF
