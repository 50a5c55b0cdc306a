#!/usr/bin/env bash
# `task fleet`: the fleet suite (internal/testkit/fleet) — three workers,
# each with its own containerd, and two gateways over a Redis Sentinel
# group; load spread, a partition, a lost host and Redis failovers. It
# installs what it needs and writes the failure table into
# docs/SCALING.md. About 7 minutes here. CI runs the same suite (without
# the report) from deploy/test.sh.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO"
bash deploy/setup.sh
suite_binaries
go test -tags fleet -count=1 -timeout 20m -v -run '^TestSentinelFleet$' ./internal/testkit/fleet \
  -args -fleet.report="$REPO/docs/SCALING.md" "$@" | grep -v '^        {"level"'
