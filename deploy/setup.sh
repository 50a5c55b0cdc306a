#!/usr/bin/env bash
# Installs what jobgate and its tests need on Debian 12, idempotently:
# redis-server, containerd, runc, docker-registry, rabbitmq-server (for the AMQP
# trigger tests), chromium-headless-shell (the console's browser test), plus curl for
# the scripts.
set -euo pipefail
pkgs=(redis-server containerd runc docker-registry rabbitmq-server curl chromium-headless-shell
  containernetworking-plugins nftables iproute2)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's packages may start system-wide instances on systems with
# systemd; jobgate's scripts never use them (private ports and sockets).
command -v go >/dev/null || { echo "Go is required (https://go.dev/dl/)"; exit 1; }
for b in redis-server containerd containerd-shim-runc-v2 runc docker-registry ctr rabbitmq-server rabbitmqctl chromium-headless-shell; do
  command -v "$b" >/dev/null || { echo "missing $b after install"; exit 1; }
done
