#!/usr/bin/env bash
# Webhook benchmark: 100 concurrent HTTPS clients (one keep-alive connection each) send pod
# AdmissionReviews to /inject on loopback. The server is pinned to core 1 (`taskset -c 1`, so
# its runtime has one worker), the load generator to core 0. Three runs:
#   1. closed loop: each client sends its next review as soon as the last is answered (the most
#      one core serves);
#   2. and 3. open loop at 1,000 and 2,000 reviews/s in total, latency counted from when each
#      review was due.
# The issue asks for p99 < 10 ms and >= 1,000 reviews/s on one core. Release build.
# Environment: SECONDS_PER_RUN (default 20), PORT (default 18443). Figures go into
# bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mizzen/target}"
seconds="${SECONDS_PER_RUN:-20}"
port="${PORT:-18443}"

echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "command: bench/webhook.sh (SECONDS_PER_RUN=$seconds)"
cargo build --release --locked -q -p mizzen-webhook --bin mizzen-webhook --example loadgen
bin="$CARGO_TARGET_DIR/release"

work="$(mktemp -d)"
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/examples/loadgen" write-cert "$work"
RUST_LOG=warn taskset -c 1 "$bin/mizzen-webhook" --listen "127.0.0.1:$port" \
  --tls-cert "$work/tls.crt" --tls-key "$work/tls.key" \
  --proxy-image ghcr.io/mizzen-mesh/mizzen-proxy:bench >"$work/server.log" 2>&1 &
server=$!

status=0
for rate in 0 1000 2000; do
  echo
  taskset -c 0 "$bin/examples/loadgen" run --addr "127.0.0.1:$port" --ca "$work/ca.crt" \
    --clients 100 --seconds "$seconds" --rate "$rate" || status=1
done
kill -0 "$server" 2>/dev/null || { echo "the webhook died:"; cat "$work/server.log"; exit 1; }
echo
echo "server RSS: $(awk '/VmHWM/ {print $2 " kB (peak)"}' "/proc/$server/status")"
exit "$status"
