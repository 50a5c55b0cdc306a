#!/usr/bin/env bash
# README command (2): installs what the tests need, then runs vet and every
# test. Integration tests start their own redis-server, containerd and
# registry (internal/testkit/testenv); they fail, never skip, when one is missing.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
bash deploy/setup.sh
echo "==> gofmt"
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
[ -z "$bad" ] || { echo "gofmt needed: $bad"; exit 1; }
echo "==> go vet ./..."
go vet ./...
echo "==> staticcheck ./..."
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
echo "==> go test ./..."
go test -count=1 -p 2 -timeout 20m "$@" ./...
# Benchmarks are not pass/fail on their targets: this smoke run (tiny
# counts) only checks that `task bench` still works.
echo "==> bench smoke (BENCH_SMOKE=1)"
BENCH_SMOKE=1 go test -count=1 -run '^$' -bench . -benchtime 1x -timeout 10m ./bench
