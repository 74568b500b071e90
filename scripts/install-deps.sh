#!/usr/bin/env bash
# Installs the Debian packages the tests need, when they are missing. Idempotent and quiet.
#   python3, python3-venv: offline manifest validation (kubernetes-validate from PyPI)
#   iproute2, iptables, curl: the proxy's transparent-capture test in network namespaces
#   (util-linux provides setpriv, present on every Debian)
set -euo pipefail
need=()
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -eq 0 ]; then
  echo "all system packages present"
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
  else
    echo "missing packages (${need[*]}) and no root: tests that need them will say they were skipped"
    exit 0
  fi
fi
echo "installing: ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
