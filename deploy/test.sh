#!/usr/bin/env bash
# README command (2): installs what the tests need, then runs vet and every
# test. Integration tests start their own redis-server, containerd and
# registry (internal/testkit/testenv); they fail, never skip, when one is missing.
set -euo pipefail
# Each phase says when it starts (seconds since this script did).
phase() { echo "==> [$SECONDS s] $*"; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
bash deploy/setup.sh
# One compile of every package serves vet, staticcheck, the tests and the
# binaries: cgo is off throughout (jobgate is a static binary anyway),
# unless the race detector, which needs it, is asked for.
case " $* " in *" -race "*) ;; *) export CGO_ENABLED=0 ;; esac
phase "gofmt"
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
[ -z "$bad" ] || { echo "gofmt needed: $bad"; exit 1; }
phase "go vet ./..."
go vet ./...
phase "build jobgate and jobgate-logger once for every test binary"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bindir=$work/bin
CGO_ENABLED=0 go build -o "$bindir/jobgate" ./cmd/jobgate
# The log driver starts per job: static and stripped, as deploy/up.sh builds it.
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$bindir/jobgate-logger" ./cmd/jobgate-logger
export JOBGATE_TEST_BINDIR=$bindir
# staticcheck and the bench smoke run beside the tests: the integration
# tests spend most of their time waiting on containers and brokers.
# Benchmarks are not pass/fail on their targets: the smoke run (tiny
# counts) only checks that `task bench` still works.
phase "staticcheck and the bench smoke (BENCH_SMOKE=1) in the background"
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./... > "$work/staticcheck.log" 2>&1 &
staticcheck=$!
BENCH_SMOKE=1 go test -count=1 -run '^$' -bench . -benchtime 1x -timeout 10m ./bench > "$work/bench.log" 2>&1 &
bench=$!
phase "go test ./..."
# Integration tests mostly wait on containers and brokers: more of them
# run at once than there are cores (-parallel), four packages at a time
# (the broker crash tests spend most of their minute waiting for asynq's
# lease recovery).
rc=0
go test -count=1 -p 4 -parallel 4 -timeout 20m "$@" ./... || rc=$?
phase "staticcheck ./..."
wait "$staticcheck" || rc=$?
cat "$work/staticcheck.log"
phase "bench smoke (BENCH_SMOKE=1)"
wait "$bench" || rc=$?
cat "$work/bench.log"
phase "done (exit $rc)"
exit "$rc"
