#!/usr/bin/env bash
# Instructions per request of Mizzen's outbound proxy, counted by callgrind: deterministic
# where wall-clock time on a shared machine is not, so each change to the request path can be
# measured on its own. Same pair as bench/proxy.sh (client -> outbound -> inbound -> 1 KiB
# nginx backend, a config of 100 services), plaintext; only the outbound proxy runs under
# valgrind. Warm-up requests are made, the counters zeroed, then N requests are counted.
#
#   bench/callgrind.sh                  # 2000 requests, 4 connections
#   N=5000 CONNS=16 bench/callgrind.sh
#   SIDE=in bench/callgrind.sh          # the inbound proxy instead
#   SIDE=gateway bench/callgrind.sh     # the ingress gateway of bench/gateway.sh instead (TLS
#                                       # from the client, plaintext to the backend)
#   TOOL=strace bench/callgrind.sh      # system calls per request (strace -c -f) instead; the
#                                       # warm-up and start are counted too
#   MTLS=1 bench/callgrind.sh           # the proxy-to-proxy hop over mutual TLS (issue 6), with
#                                       # the certificates of `MTLS=1 bench/proxy.sh`
#   CACHE_SIM=1 bench/callgrind.sh      # also simulate the caches (instruction-cache and data
#                                       # misses per request; slower)
#
# Prints instructions per request and leaves the profile (for `callgrind_annotate
# --inclusive=yes`) in $OUT (default /tmp/mizzen-callgrind.out). Needs valgrind, oha, nginx.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mizzen/target}"
export PATH="$HOME/.cargo/bin:$PATH"

N="${N:-2000}"
CONNS="${CONNS:-4}"
WARMUP="${WARMUP:-200}"
SIDE="${SIDE:-out}"
BASE_PORT="${BASE_PORT:-19000}"
OUT="${OUT:-/tmp/mizzen-callgrind.out}"
MTLS="${MTLS:-0}"

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_prologue mizzen-cg # MIZZEN (MIZZEN_BIN skips the build), WORK, PIDS, cleanup at exit

P_BACKEND=$BASE_PORT P_OUT=$((BASE_PORT + 1)) P_IN=$((BASE_PORT + 2))
mkdir -p "$WORK/www" "$WORK/tmp" "$WORK/out" "$WORK/in"
head -c 1024 /dev/zero | tr '\0' 'x' >"$WORK/www/index.html"
cat >"$WORK/backend.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/backend.pid;
error_log $WORK/backend.err warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/tmp; proxy_temp_path $WORK/tmp; fastcgi_temp_path $WORK/tmp;
  uwsgi_temp_path $WORK/tmp; scgi_temp_path $WORK/tmp;
  keepalive_requests 100000;
  server { listen 127.0.0.1:$P_BACKEND; root $WORK/www; }
}
EOF
nginx -c "$WORK/backend.conf" >/dev/null 2>&1 &
PIDS+=($!)

TOOL="${TOOL:-callgrind}"
if [ "$TOOL" = strace ]; then
  cg=(strace -c -f -o "$WORK/strace.txt")
else
  cg=(valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" --dump-instr=no)
  [ "${CACHE_SIM:-0}" = 1 ] && cg+=(--cache-sim=yes)
fi
common=(--no-access-log --concurrency 1 --drain-duration 0)
export RUST_LOG=warn
if [ "$SIDE" = gateway ]; then
  gateway_cert "$WORK/credentials/bench-cert"
  gateway_config "$WORK/gateway.json" "$P_BACKEND"
  # valgrind runs the binary itself (through `env` it would follow no exec).
  "${cg[@]}" "$MIZZEN" gateway "${GATEWAY_ARGS[@]}" --config "$WORK/gateway.json" \
    --credentials-dir "$WORK/credentials" --port-map "443=127.0.0.1:$P_OUT" \
    --admin 127.0.0.1:$((BASE_PORT + 10)) --health 127.0.0.1:$((BASE_PORT + 11)) \
    --prometheus 127.0.0.1:$((BASE_PORT + 12)) >"$WORK/out.log" 2>&1 &
  PIDS+=($!)
  URL="https://127.0.0.1:$P_OUT/" CURL=(curl -sk) OHA=(oha --no-tui --insecure)
else
  mizzen_config "$WORK/out/config.json" "$P_IN" "$MTLS"
  tls_out=() tls_in=()
  if [ "$MTLS" = 1 ]; then
    mesh_certs "$WORK/certs"
    echo '{"format":"mizzen.io/proxy-config/v1","namespace":"default","inbound":{"peerAuthentication":[{"name":"bench/default","mode":"STRICT"}]}}' >"$WORK/in/config.json"
    tls_out=(--tls-cert "$WORK/certs/client.pem" --tls-key "$WORK/certs/client.key" --tls-roots "$WORK/certs/root.pem")
    tls_in=(--tls-cert "$WORK/certs/server.pem" --tls-key "$WORK/certs/server.key" --tls-roots "$WORK/certs/root.pem")
  else
    echo '{"format":"mizzen.io/proxy-config/v1","namespace":"default"}' >"$WORK/in/config.json"
  fi

  out=("$MIZZEN" sidecar --no-capture "${common[@]}" ${tls_out[@]+"${tls_out[@]}"} --config "$WORK/out/config.json"
    --outbound "127.0.0.1:$P_OUT=bench.default.svc.cluster.local:80"
    --admin 127.0.0.1:$((BASE_PORT + 10)) --health 127.0.0.1:$((BASE_PORT + 11)) --prometheus 127.0.0.1:$((BASE_PORT + 12)))
  in=("$MIZZEN" sidecar --no-capture "${common[@]}" ${tls_in[@]+"${tls_in[@]}"} --config "$WORK/in/config.json"
    --inbound "127.0.0.1:$P_IN=127.0.0.1:$P_BACKEND"
    --admin 127.0.0.1:$((BASE_PORT + 20)) --health 127.0.0.1:$((BASE_PORT + 21)) --prometheus 127.0.0.1:$((BASE_PORT + 22)))
  if [ "$SIDE" = in ]; then
    "${out[@]}" >"$WORK/out.log" 2>&1 &
    PIDS+=($!)
    "${cg[@]}" "${in[@]}" >"$WORK/in.log" 2>&1 &
    PIDS+=($!)
  else
    "${cg[@]}" "${out[@]}" >"$WORK/out.log" 2>&1 &
    PIDS+=($!)
    "${in[@]}" >"$WORK/in.log" 2>&1 &
    PIDS+=($!)
  fi
  URL="http://127.0.0.1:$P_OUT/" CURL=(curl -s) OHA=(oha --no-tui)
fi
for _ in $(seq 600); do
  "${CURL[@]}" -o /dev/null "$URL" && break
  sleep 0.1
done
"${OHA[@]}" -n "$WARMUP" -c "$CONNS" "$URL" >/dev/null
if [ "$TOOL" = strace ]; then
  "${OHA[@]}" -n "$N" -c "$CONNS" "$URL" >"$WORK/oha.txt"
  # strace writes its table when the traced proxy exits.
  if [ "$SIDE" = in ]; then tracer=${PIDS[2]}; else tracer=${PIDS[1]}; fi
  kill "$(pgrep -P "$tracer")"
  wait "$tracer" || true
  cp "$WORK/strace.txt" "$OUT"
  cat "$OUT"
  calls=$(awk '$NF == "total" {print $(NF-2)}' "$OUT")
  echo "side=$SIDE requests=$((N + WARMUP)) conns=$CONNS syscalls=$calls per_request=$(python3 -c "print(round($calls / $((N + WARMUP)), 2))")"
  exit 0
fi
callgrind_control -z >/dev/null
"${OHA[@]}" -n "$N" -c "$CONNS" "$URL" >"$WORK/oha.txt"
callgrind_control -d >/dev/null
sleep 1
dump=$(ls -t "$WORK"/cg.out.* 2>/dev/null | head -1 || true)
[ -n "$dump" ] || { echo "no callgrind dump" >&2; exit 1; }
cp "$dump" "$OUT"
ok=$(grep -E '^\s*\[200\]' "$WORK/oha.txt" | awk '{print $2}')
ir=$(awk '/^summary:/ {print $2}' "$OUT")
echo "side=$SIDE requests=$N ok=${ok:-?} conns=$CONNS instructions=$ir per_request=$((ir / N))"
if [ "${CACHE_SIM:-0}" = 1 ]; then
  # events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
  awk -v n="$N" '/^summary:/ {printf "per_request: I1 misses %d, D1 misses %d, LL misses %d\n", $5 / n, ($6 + $7) / n, ($8 + $9 + $10) / n}' "$OUT"
fi
