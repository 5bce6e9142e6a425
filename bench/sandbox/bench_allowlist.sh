#!/usr/bin/env bash
# /bin/true under `network.mode: none` and under an allowlist with one egress rule, side by
# side in one hyperfine run (release build): what an allowlist costs on the path the user waits
# for. The rule names a documentation address that is never contacted (/bin/true sends
# nothing); no name is resolved. Needs root, nftables, iproute2 and hyperfine.
#
#   bench/sandbox/bench_allowlist.sh            # 60 runs each, 10 warm-up
#   RUNS=100 bench/sandbox/bench_allowlist.sh
#   SAFE_RUN_BIN=/path/to/safe-run bench/sandbox/bench_allowlist.sh    # another build
#
# Then, per phase (medians of RUNS runs of each): bench/sandbox/bench_allowlist.sh --phases
#
# The allowlist run's release (table, veth, ledger) finishes in a detached releaser after
# safe-run has exited (docs/network.md, "Release and recovery"); at the end the script waits
# for every release to finish and checks that no table, link or pending release is left.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-60}
BIN=${SAFE_RUN_BIN:-target/release/safe-run}
[ -x "$BIN" ] || cargo build --release -p sr-cli
# Measure a copy (with its safe-run-init), as bench_true.sh does.
COPY=$(mktemp -d /tmp/sr-bench-bin.XXXXXX)
cp "$BIN" "$COPY/safe-run"
[ -x "$(dirname "$BIN")/safe-run-init" ] && cp "$(dirname "$BIN")/safe-run-init" "$COPY/"
BIN=$COPY/safe-run
WORK=$(mktemp -d /tmp/sr-bench-allow.XXXXXX)
trap 'rm -rf "$WORK" "$COPY"' EXIT
export SAFE_RUN_WORKDIR_BASE="$WORK/runs" SAFE_RUN_ARCHIVE="$WORK/archive.db"
cat > "$WORK/none.yaml" <<'YAML'
version: 1
name: bench-none
runtime: { command: /bin/true, args: [] }
mounts: []
network: { mode: none }
evidence: { sign: false }
YAML
cp examples/bench_allowlist.yaml "$WORK/allow.yaml"

settle() {
  # Every deferred release done (bounded: 30 s), then nothing of these runs left.
  for _ in $(seq 1 300); do
    ls "$WORK"/runs/*/release.pending >/dev/null 2>&1 || break
    sleep 0.1
  done
  local left=0
  for d in "$WORK"/runs/*/; do
    id=$(basename "$d")
    [ -e "$d/release.pending" ] && { echo "pending release left: $id"; left=1; }
    nft list table inet "safe_run_$id" >/dev/null 2>&1 && { echo "table left: $id"; left=1; }
    ip link show "sr${id}h" >/dev/null 2>&1 && { echo "link left: $id"; left=1; }
  done
  [ "$left" = 0 ] && echo "left behind: nothing ($(ls -d "$WORK"/runs/*/ | wc -l) run dirs checked)"
}

if [ "${1:-}" = "--phases" ]; then
  for p in none allow; do
    for _ in $(seq 1 "$RUNS"); do
      $BIN run -q --timings --policy "$WORK/$p.yaml" 2>&1 |
        sed -n "s/^safe-run: timing \([^ ]*\) *\([0-9.]*\) ms$/$p \1 \2/p"
    done
  done | python3 -c '
import sys, statistics, collections
v = collections.defaultdict(list)
for line in sys.stdin:
    p, k, x = line.split()
    v[(k, p)].append(float(x))
keys = sorted({k for k, _ in v})
print("%-18s %9s %10s  (medians, ms)" % ("phase", "none", "allowlist"))
for k in keys:
    a = statistics.median(v[(k, "none")]) if v[(k, "none")] else float("nan")
    b = statistics.median(v[(k, "allow")]) if v[(k, "allow")] else float("nan")
    print(f"{k:18s} {a:9.3f} {b:10.3f}")
'
  settle
  exit 0
fi

hyperfine -N --warmup 10 --runs "$RUNS" --export-json "$WORK/hyperfine.json" \
  -n none "$BIN run -q --policy $WORK/none.yaml" \
  -n allowlist "$BIN run -q --policy $WORK/allow.yaml"
python3 - "$WORK/hyperfine.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
none, allow = (r[k]["median"] * 1000 for k in ("none", "allowlist"))
print(f"none      median {none:7.2f} ms")
print(f"allowlist median {allow:7.2f} ms")
print(f"allowlist - none = {allow - none:+.2f} ms; allowlist / none = {allow / none:.2f}x")
PY
settle
