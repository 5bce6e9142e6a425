#!/usr/bin/env bash
# `safe-run run --pool` (a sandbox from a running serve's warm pool) versus a cold
# `safe-run run`, bubblewrap and bare exec, for /bin/true and `python3 -c pass`, side by side in
# one hyperfine run (release build). Starts its own `safe-run serve` on a private socket, with its own tokens,
# config and run directory, and stops it after. Needs root, bwrap, hyperfine and curl.
#
#   bench/sandbox/bench_pool.sh              # 60 runs each, 0.3 s apart (the pool refills)
#   RUNS=100 PACE=0.5 bench/sandbox/bench_pool.sh
#
# Every command is paced the same (hyperfine --prepare "sleep $PACE", not timed), so the pool's
# replenisher (every 250 ms) keeps a sandbox ready; the script prints how many runs the pool
# served, and the phases of a pool run (--timings, medians).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-60}
PACE=${PACE:-0.3}
BIN=${SAFE_RUN_BIN:-target/release/safe-run}
[ -x "$BIN" ] || cargo build --release -p sr-cli
WORK=$(mktemp -d /tmp/sr-bench-pool.XXXXXX)
# A copy, as bench_true.sh measures (a linker-written binary loads slower than a copied one).
cp "$BIN" "$WORK/safe-run"
[ -x "$(dirname "$BIN")/safe-run-init" ] && cp "$(dirname "$BIN")/safe-run-init" "$WORK/"
BIN=$WORK/safe-run
mkdir -m 0700 "$WORK/serve"
cat > "$WORK/config.yaml" <<YAML
runDir: $WORK/runs
serve:
  socket: $WORK/serve/serve.sock
  tokensPath: $WORK/tokens.json
  templates:
    true: $PWD/examples/bench_true.yaml
YAML
export SAFE_RUN_CONFIG=$WORK/config.yaml SAFE_RUN_WORKDIR_BASE=$WORK/runs
SOCK=$WORK/serve/serve.sock
ADMIN=$("$BIN" token create --scopes admin 2>/dev/null)
export SAFE_RUN_TOKEN=$("$BIN" token create --scopes create 2>/dev/null)
"$BIN" serve 2>"$WORK/serve.log" &
SERVE=$!
trap 'kill -TERM $SERVE 2>/dev/null; wait $SERVE 2>/dev/null || true' EXIT
api() { curl -sf --unix-socket "$SOCK" -H "Authorization: Bearer $ADMIN" "$@"; }
for _ in $(seq 1 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
api -X PUT -H 'Content-Type: application/json' -d '{"minReady": 4}' http://serve/v1/pools/true >/dev/null
for _ in $(seq 1 200); do
  api http://serve/v1/pools | grep -q '"ready":4' && break
  sleep 0.05
done
BWRAP="bwrap --unshare-all --die-with-parent --ro-bind /usr /usr --ro-bind /etc /etc --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/lib64 /lib64 --symlink usr/sbin /sbin --proc /proc --dev /dev /bin/true"
hyperfine -N --warmup 3 --runs "$RUNS" --prepare "sleep $PACE" --export-json "$WORK/hf.json" \
  -n bare /bin/true -n bwrap "$BWRAP" \
  -n safe-run "$BIN run -q --policy examples/bench_true.yaml" \
  -n safe-run-pool "$BIN run -q --pool true -- /bin/true" \
  -n safe-run-version "$BIN --version" \
  -n bare-py "/usr/bin/python3 -c pass" -n bwrap-py "${BWRAP% /bin/true} /usr/bin/python3 -c pass" \
  -n safe-run-py "$BIN run -q --policy examples/bench_true.yaml -- /usr/bin/python3 -c pass" \
  -n safe-run-pool-py "$BIN run -q --pool true -- /usr/bin/python3 -c pass" >/dev/null
python3 - "$WORK/hf.json" <<'PY'
import json, sys
r = {x["command"]: x["median"] * 1000 for x in json.load(open(sys.argv[1]))["results"]}
print(f"{'median':20s} {'ms':>8s} {'x bwrap':>8s}")
for suffix in ("", "-py"):
    bw = r["bwrap" + suffix]
    for k in ("bare", "bwrap", "safe-run", "safe-run-pool", "safe-run-version"):
        if k + suffix in r:
            print(f"{k + suffix:20s} {r[k + suffix]:8.2f} {r[k + suffix] / bw:8.2f}")
    pool, cold = r["safe-run-pool" + suffix], r["safe-run" + suffix]
    print(f"safe-run-pool{suffix} / safe-run{suffix} (cold) = {pool / cold:.2f}x")
PY
api "http://serve/v1/sandboxes?state=ended" | python3 -c '
import json, sys
ended = json.load(sys.stdin)
pooled = sum(1 for s in ended if s.get("fromPool"))
print(f"pool runs served from the pool: {pooled} of {len(ended)}")'
for _ in $(seq 1 30); do
  sleep "$PACE"
  "$BIN" run -q --timings --pool true -- /bin/true 2>&1 | sed -n 's/^safe-run: timing \([^ ]*\) *\([0-9.]*\) ms.*$/\1 \2/p'
done | python3 -c '
import sys, statistics, collections
v = collections.defaultdict(list)
for line in sys.stdin:
    k, x = line.split()
    v[k].append(float(x))
for k in v:
    print(f"{k:16s} median {statistics.median(v[k]):8.3f} ms  (n={len(v[k])})")
'
echo "evidence of every run: $WORK/runs"
