#!/usr/bin/env bash
# README command (1): installs and starts everything privately under
# $JOBGATE_STATE (default /var/lib/jobgate-dev), builds and pushes the
# sample job image, starts `jobgate serve`, invokes the sample function and
# prints its log. Safe to run again: running services are reused and
# jobgate is restarted with a fresh build.
source "$(dirname "$0")/lib.sh"
bash "$REPO/deploy/setup.sh"
mkdir -p "$STATE/bin"

start_redis
start_containerd
start_registry

say "building jobgate and the sample job"
(cd "$REPO" && go build -ldflags="-X github.com/jobgate/jobgate/internal/version.Version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)" -o "$STATE/bin/jobgate" ./cmd/jobgate)
# The log driver runs once per job: static and stripped, it starts faster.
(cd "$REPO" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$STATE/bin/jobgate-logger" ./cmd/jobgate-logger)
(cd "$REPO" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$STATE/bin/hello" ./deploy/samplejob)
(cd "$REPO" && go run ./deploy/pushimage --binary "$STATE/bin/hello" --path /hello --ref "$REGISTRY_ADDR/demo/hello:1")

sed -e "s|@REDIS@|127.0.0.1:$REDIS_PORT|" -e "s|@CONTAINERD@|$CTD_SOCK|" -e "s|@GATEWAY@|$GATEWAY_ADDR|" \
    -e "s|@STATE@|$STATE|" -e "s|@REGISTRY@|$REGISTRY_ADDR|g" "$REPO/deploy/sample/jobgate.yaml" > "$STATE/jobgate.yaml"
"$STATE/bin/jobgate" validate --config "$STATE/jobgate.yaml"

if alive "$STATE/jobgate.pid"; then
  say "stopping the previous jobgate serve"
  kill "$(cat "$STATE/jobgate.pid")"; wait_until 30 bash -c "! kill -0 $(cat "$STATE/jobgate.pid")" || true
fi
say "starting jobgate serve (log: $STATE/jobgate.log)"
setsid "$STATE/bin/jobgate" serve --config "$STATE/jobgate.yaml" >>"$STATE/jobgate.log" 2>&1 < /dev/null &
echo $! > "$STATE/jobgate.pid"
wait_until 30 curl -fsS "http://$GATEWAY_ADDR/readyz"
echo

export JOBGATE_URL="http://$GATEWAY_ADDR"
say "jobgate invoke hello --event deploy/sample/event.json"
out=$("$STATE/bin/jobgate" invoke hello --event "$REPO/deploy/sample/event.json")
echo "$out"
id=$(printf '%s' "$out" | sed -n 's/.*"RequestId": "\([^"]*\)".*/\1/p' | head -1)
say "jobgate logs -f $id"
"$STATE/bin/jobgate" logs -f "$id"
say "jobgate status $id"
"$STATE/bin/jobgate" status "$id"
cat <<MSG

jobgate is running: API http://$GATEWAY_ADDR, config $STATE/jobgate.yaml.
Try:  export JOBGATE_URL=http://$GATEWAY_ADDR
      $STATE/bin/jobgate invoke hello --event - <<<'{"hi":1}'
      $STATE/bin/jobgate ls
      curl -X POST http://$GATEWAY_ADDR/hooks/hello/world -d '{"via":"webhook"}'   # the sample HTTP trigger
Stop: bash deploy/down.sh
MSG
