#!/usr/bin/env bash
# Sandbox creation over `safe-run serve`, side by side in one run (release build, as root): a
# cold create from a policy text versus a create served from a warm pool, and an exec with
# ?wait=true on a live sandbox; N of each (default 40), medians and the ratio. Loopback only: the
# daemon listens on a private Unix socket.
#
#   bench/serve/bench_create.sh            N=100 bench/serve/bench_create.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-40}
cargo build --release -q -p sr-cli
BIN=$PWD/target/release/safe-run
work=$(mktemp -d /tmp/sr-bench-serve.XXXXXX)
trap 'kill "$daemon" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
policy=$'version: 1\nname: bench\nruntime:\n  command: /bin/true\n  args: []\n  timeout: 300s\nmounts: []\nevidence:\n  sign: false\n'
printf '%s' "$policy" > "$work/template.yaml"
printf '{"serve": {"templates": {"bench": "%s"}, "maxSandboxes": 64}}' "$work/template.yaml" > "$work/config.json"
export SAFE_RUN_CONFIG=$work/config.json SAFE_RUN_WORKDIR_BASE=$work/runs
token=$("$BIN" token create --scopes admin --tokens "$work/tokens.json" 2>/dev/null)
"$BIN" serve --socket "$work/s.sock" --tokens "$work/tokens.json" 2>/dev/null &
daemon=$!
for _ in $(seq 200); do [ -S "$work/s.sock" ] && break; sleep 0.05; done
api() { curl -s --unix-socket "$work/s.sock" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' "$@"; }
timed() { curl -s -o "$work/last.json" -w '%{time_total}\n' --unix-socket "$work/s.sock" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' "$@"; }
body=$(python3 -c 'import json,sys; print(json.dumps({"policy": sys.argv[1]}))' "$policy")
: > "$work/cold.txt"; : > "$work/pool.txt"; : > "$work/exec.txt"
for _ in $(seq "$N"); do
  timed -X POST http://s/v1/sandboxes -d "$body" >> "$work/cold.txt"
  id=$(python3 -c 'import json; print(json.load(open("'"$work"'/last.json"))["id"])')
  timed -X POST "http://s/v1/sandboxes/$id/execs?wait=true" -d '{"argv": ["/bin/true"]}' >> "$work/exec.txt"
  api -X DELETE "http://s/v1/sandboxes/$id" > /dev/null
done
api -X PUT http://s/v1/pools/bench -d '{"minReady": 4}' > /dev/null
for _ in $(seq "$N"); do
  # Wait until the pool is full again, so each create can be served from it.
  for _ in $(seq 200); do
    ready=$(api http://s/v1/pools | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["ready"])')
    [ "$ready" -ge 4 ] && break; sleep 0.02
  done
  timed -X POST http://s/v1/sandboxes -d '{"template": "bench"}' >> "$work/pool.txt"
  id=$(python3 -c 'import json; print(json.load(open("'"$work"'/last.json"))["id"])')
  api -X DELETE "http://s/v1/sandboxes/$id" > /dev/null
done
python3 - "$work" <<'PY'
import statistics, sys
d = sys.argv[1]
med = lambda f: statistics.median(float(x) * 1000 for x in open(f"{d}/{f}.txt"))
cold, pool, ex = med("cold"), med("pool"), med("exec")
print(f"{'what':34s} {'median ms':>10s}")
print(f"{'create, cold (policy text)':34s} {cold:10.3f}")
print(f"{'create, from the warm pool':34s} {pool:10.3f}   {pool / cold:.2f}x cold")
print(f"{'exec /bin/true, ?wait=true':34s} {ex:10.3f}")
PY
