# Shared helpers for deploy/*.sh. Every service runs privately under
# $JOBGATE_STATE with its own port or socket; nothing system-wide is touched.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${JOBGATE_STATE:-/var/lib/jobgate-dev}
REDIS_PORT=${JOBGATE_REDIS_PORT:-6399}
REGISTRY_ADDR=${JOBGATE_REGISTRY:-127.0.0.1:5000}
GATEWAY_ADDR=${JOBGATE_GATEWAY:-127.0.0.1:9100}
CTD_DIR=$STATE/containerd
CTD_SOCK=$CTD_DIR/containerd.sock

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# alive PIDFILE: the process in PIDFILE runs.
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_until() { # wait_until SECONDS CMD...
  local n=$(( $1 * 10 )); shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  "$@"
}

start_redis() {
  mkdir -p "$STATE/redis"
  if alive "$STATE/redis/pid" && redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then return; fi
  say "starting redis-server on 127.0.0.1:$REDIS_PORT (AOF on, noeviction)"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$STATE/redis" \
    --appendonly yes --appendfsync everysec --maxmemory-policy noeviction \
    --daemonize yes --pidfile "$STATE/redis/pid" --logfile "$STATE/redis/redis.log"
  wait_until 10 redis-cli -p "$REDIS_PORT" ping
}

start_containerd() {
  mkdir -p "$CTD_DIR"
  if alive "$CTD_DIR/pid" && [ -S "$CTD_SOCK" ]; then return; fi
  say "starting containerd on $CTD_SOCK"
  cat > "$CTD_DIR/config.toml" <<TOML
version = 2
root = "$CTD_DIR/root"
state = "$CTD_DIR/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CTD_SOCK"
[ttrpc]
  address = "$CTD_SOCK.ttrpc"
TOML
  setsid containerd --config "$CTD_DIR/config.toml" >"$CTD_DIR/containerd.log" 2>&1 < /dev/null &
  echo $! > "$CTD_DIR/pid"
  wait_until 15 ctr --address "$CTD_SOCK" version
}

start_registry() {
  mkdir -p "$STATE/registry/data"
  if alive "$STATE/registry/pid" && curl -fsS "http://$REGISTRY_ADDR/v2/" >/dev/null 2>&1; then return; fi
  say "starting docker-registry on $REGISTRY_ADDR"
  cat > "$STATE/registry/config.yml" <<YML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $STATE/registry/data}
  delete: {enabled: true}
http: {addr: "$REGISTRY_ADDR"}
YML
  setsid docker-registry serve "$STATE/registry/config.yml" >"$STATE/registry/registry.log" 2>&1 < /dev/null &
  echo $! > "$STATE/registry/pid"
  wait_until 15 curl -fsS "http://$REGISTRY_ADDR/v2/"
}

# suite_binaries: build jobgate and its log driver once into a temporary
# directory (removed at exit) for a test suite's subprocesses, and export
# it as JOBGATE_TEST_BINDIR. cgo off: the binaries are static.
suite_binaries() {
  export CGO_ENABLED=0
  SUITE_BINDIR=$(mktemp -d)
  trap 'rm -rf "$SUITE_BINDIR"' EXIT
  go build -o "$SUITE_BINDIR/jobgate" ./cmd/jobgate
  go build -trimpath -ldflags='-s -w' -o "$SUITE_BINDIR/jobgate-logger" ./cmd/jobgate-logger
  export JOBGATE_TEST_BINDIR=$SUITE_BINDIR
}
