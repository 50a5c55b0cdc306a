#!/usr/bin/env bash
# `task fleet`: the fleet suite (internal/testkit/fleet) — three workers,
# each with its own containerd, and two gateways over a Redis Sentinel
# group; load spread, a partition, a lost host and Redis failovers. It
# installs what it needs and writes the failure table into
# docs/SCALING.md. About 4 minutes here. CI runs the same suite (without
# the report) from deploy/test.sh.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
bash deploy/setup.sh
export CGO_ENABLED=0
bindir=$(mktemp -d)
trap 'rm -rf "$bindir"' EXIT
go build -o "$bindir/jobgate" ./cmd/jobgate
go build -trimpath -ldflags='-s -w' -o "$bindir/jobgate-logger" ./cmd/jobgate-logger
export JOBGATE_TEST_BINDIR=$bindir
go test -tags fleet -count=1 -timeout 20m -v -run '^TestSentinelFleet$' ./internal/testkit/fleet \
  -args -fleet.report="$REPO/docs/SCALING.md" "$@" | grep -v '^        {"level"'
