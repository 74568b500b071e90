#!/usr/bin/env bash
# Installs what the benchmarks need when it is missing: HAProxy and nginx (reference proxies,
# Debian), taskset (util-linux), curl, python3, and the load generator oha 1.16 (crates.io; about
# 8 minutes to build on 2 cores, installed once into ~/.cargo/bin).
set -euo pipefail
need=()
for pkg in haproxy nginx curl python3; do command -v "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  # The Debian packages start system services; the benchmark runs its own instances.
  for svc in haproxy nginx; do $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true; done
fi
if ! command -v oha >/dev/null 2>&1; then
  echo "installing oha 1.16.0 from crates.io"
  cargo install oha --version 1.16.0 --locked
fi
