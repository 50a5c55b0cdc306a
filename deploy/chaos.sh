#!/usr/bin/env bash
# `task chaos`: the chaos suite (internal/testkit/chaos). It installs what
# it needs, runs two gateways and two workers under mixed load while it
# kills each process, containerd, a broker and Redis in turn, and writes
# the tables into docs/RELIABILITY.md. About 10 minutes here.
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
go test -tags chaos -count=1 -timeout 30m -v -run '^TestChaos$' ./internal/testkit/chaos \
  -args -chaos.report="$REPO/docs/RELIABILITY.md" "$@" | grep -v '^        {"level"'
