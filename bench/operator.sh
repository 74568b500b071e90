#!/usr/bin/env bash
# Operator scale benchmark: 1,000 Services x 3 subsets x 2 routes in 50 meshed namespaces.
# Prints full render time, incremental render time after one VirtualService change (both include
# gzip-compressing the pieces of the configs stored compressed, with how many members that took),
# the largest config's JSON size and its stored ConfigMap size (gzip, counted as base64), and
# peak RSS; then render times and sizes at other chunk sizes (services per gzip member). Release
# build (the bench profile). Figures go into bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mizzen/target}"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "command: bench/operator.sh (cargo bench -p mizzen-operator --bench render)"
cargo bench -q -p mizzen-operator --bench render
