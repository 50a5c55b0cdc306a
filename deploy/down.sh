#!/usr/bin/env bash
# Stops what deploy/up.sh started (data under $JOBGATE_STATE is kept).
source "$(dirname "$0")/lib.sh"
for pf in "$STATE/jobgate.pid" "$STATE/registry/pid" "$STATE/redis/pid"; do
  if alive "$pf"; then kill "$(cat "$pf")" && echo "stopped $(basename "$(dirname "$pf")")/$(basename "$pf")"; fi
done
pkill -f "containerd-shim-runc-v2 .*$CTD_SOCK" 2>/dev/null || true
if alive "$CTD_DIR/pid"; then kill "$(cat "$CTD_DIR/pid")" && echo "stopped containerd"; fi
# The jobs' bridge network (network: bridge): its bridge and jobgate's
# nftables tables outlive a worker (its jobs may still run), not the stack.
if command -v nft >/dev/null; then
  nft delete table inet jobgate 2>/dev/null || true
  nft delete table bridge jobgate 2>/dev/null || true
fi
ip link del jobgate0 2>/dev/null || true
