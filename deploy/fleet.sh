#!/usr/bin/env bash
# `task fleet`: the fleet suites (internal/testkit/fleet) — three workers,
# each with its own containerd, and two gateways over a Redis Sentinel
# group (load spread, a partition, a lost host, Redis failovers) and over
# a Redis Cluster (the same but the partition, plus a resharding under
# load). It installs what it needs and writes both failure tables into
# docs/SCALING.md. About 6–8 minutes here. CI runs the same suites
# (without the report) from deploy/test.sh.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO"
bash deploy/setup.sh
suite_binaries
go test -tags fleet -count=1 -timeout 20m -v -run '^(TestSentinelFleet|TestClusterFleet)$' ./internal/testkit/fleet \
  -args -fleet.report="$REPO/docs/SCALING.md" "$@" | grep -v '^        {"level"'
