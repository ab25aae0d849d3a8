#!/usr/bin/env bash
# `make dev` / `make cluster-up`, first second: the system packages the local fleet needs. Installs
# them from Debian when it can (root, or sudo without a password); otherwise stops naming the one
# command to run. Nothing else is installed system-wide (the venvs and .bin/ are the repo's).
set -euo pipefail
need=()
command -v etcd >/dev/null || [[ -x /usr/bin/etcd ]] || need+=(etcd-server)
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3 python3-venv)
if [[ ! -x "$(dirname "$0")/../../.bin/kcp" ]] && ! command -v go >/dev/null; then
  need+=(golang-go)  # the one-time control plane build (go >= 1.26; see e2e/README.md)
fi
(( ${#need[@]} == 0 )) && exit 0
cmd="apt-get update && apt-get install -y ${need[*]}"
if [[ $(id -u) == 0 ]]; then
  echo ">> installing ${need[*]} from Debian"; export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need[@]}" && exit 0
elif sudo -n true 2>/dev/null; then
  echo ">> installing ${need[*]} from Debian (sudo)"
  sudo -n env DEBIAN_FRONTEND=noninteractive sh -c "apt-get update -qq && apt-get install -y -qq ${need[*]}" && exit 0
fi
echo "make dev needs ${need[*]}: run  sudo sh -c '$cmd'  then make dev again" >&2
exit 1
