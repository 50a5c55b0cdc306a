#!/usr/bin/env bash
# `task chaos`: the chaos suite (internal/testkit/chaos). It installs what
# it needs, runs two gateways and two workers under mixed load while it
# kills each process, containerd, a broker and Redis in turn, and writes
# the tables into docs/RELIABILITY.md. About 10 minutes here.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO"
bash deploy/setup.sh
suite_binaries
go test -tags chaos -count=1 -timeout 30m -v -run '^TestChaos$' ./internal/testkit/chaos \
  -args -chaos.report="$REPO/docs/RELIABILITY.md" "$@" | grep -v '^        {"level"'
