#!/usr/bin/env bash
# Runs README.md's "Using it" commands, line by line, against the stack
# deploy/up.sh started (it starts it if needed): each must exit as its
# comment says ("exit N", else 0). <RequestId> is the RequestId the last
# command printed. Part of `.ci/run`.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
bash deploy/up.sh >/tmp/jobgate-up.log 2>&1 || { cat /tmp/jobgate-up.log; exit 1; }
block=$(sed -n '/^## Using it/,/^```$/p' README.md | sed '1,/^```sh$/d;/^```$/d')
[ -n "$block" ] || { echo "README.md: no \"Using it\" block"; exit 1; }
last_id=""
n=0
while IFS= read -r line; do
  case "$line" in export\ *|J=*) eval "$line"; continue ;; esac
  cmd=${line%%  #*}                       # the command, without its comment
  cmd=${cmd//<RequestId>/$last_id}
  want=0
  comment=${line#*  #}
  case "$comment" in *"exit 1 if"*|*"exits with"*) ;; *)
    if [[ "$comment" =~ exit\ ([0-9]+) ]]; then want=${BASH_REMATCH[1]}; fi ;;
  esac
  set +e
  out=$(eval "$cmd" 2>/tmp/jobgate-readme.err)
  got=$?
  set -e
  n=$((n + 1))
  if [ "$got" -ne "$want" ]; then
    echo "README command failed (exit $got, want $want): $cmd"
    echo "$out"; cat /tmp/jobgate-readme.err
    exit 1
  fi
  id=$(printf '%s\n' "$out" | grep -oE '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}' | head -1 || true)
  [ -z "$id" ] || last_id=$id
  echo "ok: ${cmd:0:100}"
done <<<"$block"
echo "README: $n commands ran as documented"
