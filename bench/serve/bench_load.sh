#!/usr/bin/env bash
# `safe-run serve` under load, over its Unix socket only (release build, as root), bounded in
# count and time: exec on live sandboxes (POST .../execs?wait=true of /bin/true) at 1, 8 and 32
# concurrent clients (p50, p99, execs/s), a create served from the warm pool, and the daemon's
# RSS, threads and fds with 100 live sandboxes.
#
#   bench/serve/bench_load.sh                 # 2000 execs per level, at most 30 s each
#   COUNT=5000 SECONDS_PER_LEVEL=60 bench/serve/bench_load.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNT=${COUNT:-2000}
SECONDS_PER_LEVEL=${SECONDS_PER_LEVEL:-30}
cargo build --release -q -p sr-cli
cargo build --release -q -p sr-daemon --example serve_load
BIN=$PWD/target/release/safe-run
LOAD=$PWD/target/release/examples/serve_load
work=$(mktemp -d /tmp/sr-bench-load.XXXXXX)
policy=$'version: 1\nname: bench\nruntime:\n  command: /bin/true\n  args: []\n  timeout: 600s\nmounts: []\nevidence:\n  sign: false\n'
printf '%s' "$policy" > "$work/template.yaml"
cat > "$work/config.json" <<JSON
{"serve": {"templates": {"bench": "$work/template.yaml"}, "maxSandboxes": 110, "maxExecs": 64,
  "requestsPerSecond": 100000, "idleTimeout": null,
  "perToken": {"maxSandboxes": 110, "maxExecs": 64, "requestsPerSecond": 100000}}}
JSON
export SAFE_RUN_CONFIG=$work/config.json SAFE_RUN_WORKDIR_BASE=$work/runs
token=$("$BIN" token create --scopes admin --tokens "$work/tokens.json" 2>/dev/null)
"$BIN" serve --socket "$work/s.sock" --tokens "$work/tokens.json" 2>/dev/null &
daemon=$!
trap 'kill -TERM "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 200); do [ -S "$work/s.sock" ] && break; sleep 0.05; done
api() { curl -s --unix-socket "$work/s.sock" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' "$@"; }
new_id() { api -X POST http://s/v1/sandboxes -d '{"template": "bench"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
ids=()
for _ in $(seq 32); do ids+=("$(new_id)"); done
"$LOAD" "$work/s.sock" "$token" 4 200 10 "${ids[@]}" > /dev/null   # warm-up
: > "$work/levels.txt"
for c in 1 8 32; do
  "$LOAD" "$work/s.sock" "$token" "$c" "$COUNT" "$SECONDS_PER_LEVEL" "${ids[@]}" | tr '\n' ' ' >> "$work/levels.txt"
  echo >> "$work/levels.txt"
done
# Pool-hit creates: the pool refills between creates, so each is served from it.
api -X PUT http://s/v1/pools/bench -d '{"minReady": 4}' > /dev/null
: > "$work/pool.txt"
for _ in $(seq 40); do
  for _ in $(seq 200); do
    ready=$(api http://s/v1/pools | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["ready"])')
    [ "$ready" -ge 4 ] && break; sleep 0.02
  done
  curl -s -o "$work/last.json" -w '%{time_total}\n' --unix-socket "$work/s.sock" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' -X POST http://s/v1/sandboxes -d '{"template": "bench"}' >> "$work/pool.txt"
  ids+=("$(python3 -c 'import json; print(json.load(open("'"$work"'/last.json"))["id"])')")
done
api -X PUT http://s/v1/pools/bench -d '{"minReady": 0}' > /dev/null
# Up to 100 live sandboxes (pooled ones count), then the daemon's footprint.
while [ "$(api 'http://s/v1/sandboxes?state=running' | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" -lt 100 ]; do
  new_id > /dev/null
done
rss=$(awk '/VmRSS/ {print $2}' "/proc/$daemon/status")
threads=$(awk '/Threads/ {print $2}' "/proc/$daemon/status")
fds=$(ls "/proc/$daemon/fd" | wc -l)
python3 - "$work" "$rss" "$threads" "$fds" <<'PY'
import statistics, sys
d, rss, threads, fds = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
print(f"{'exec ?wait=true of /bin/true':30s} {'execs':>6s} {'failed':>6s} {'p50 ms':>8s} {'p99 ms':>8s} {'execs/s':>8s}")
for line in open(f"{d}/levels.txt"):
    v = dict(zip(line.split()[::2], line.split()[1::2]))
    print(f"{'  ' + v['clients'] + ' clients':30s} {v['execs']:>6s} {v['failed']:>6s} {float(v['p50_ms']):8.3f} {float(v['p99_ms']):8.3f} {float(v['per_s']):8.1f}")
pool = sorted(float(x) * 1000 for x in open(f"{d}/pool.txt"))
print(f"{'create from the warm pool':30s} median {statistics.median(pool):.3f} ms, p90 {pool[int(len(pool) * 0.9)]:.3f} ms (curl's own time_total)")
print(f"{'daemon, 100 live sandboxes':30s} RSS {rss / 1024:.1f} MiB, {threads} threads, {fds} fds")
PY
