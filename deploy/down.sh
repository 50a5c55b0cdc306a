#!/usr/bin/env bash
# Stops what deploy/up.sh started (data under $JOBGATE_STATE is kept).
source "$(dirname "$0")/lib.sh"
for pf in "$STATE/jobgate.pid" "$STATE/registry/pid" "$STATE/redis/pid"; do
  if alive "$pf"; then kill "$(cat "$pf")" && echo "stopped $(basename "$(dirname "$pf")")/$(basename "$pf")"; fi
done
pkill -f "containerd-shim-runc-v2 .*$CTD_SOCK" 2>/dev/null || true
if alive "$CTD_DIR/pid"; then kill "$(cat "$CTD_DIR/pid")" && echo "stopped containerd"; fi
