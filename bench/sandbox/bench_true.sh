#!/usr/bin/env bash
# Start-to-exit of /bin/true and of `python3 -c pass`: bare exec, bubblewrap, and `safe-run run`
# (release build), side by side in one hyperfine run. Needs root (safe-run run), bwrap, hyperfine,
# python3 and GNU time (peak RSS).
#
#   bench/sandbox/bench_true.sh            # 100 runs each, 10 warm-up
#   RUNS=30 bench/sandbox/bench_true.sh
#
# Then, for where safe-run's time goes, per phase (median of 30 runs):
#   bench/sandbox/bench_true.sh --phases
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-100}
BIN=${SAFE_RUN_BIN:-target/release/safe-run}
[ -x "$BIN" ] || cargo build --release -p sr-cli
# Measure a copy (with its safe-run-init): a binary written piecewise by the linker sits in
# smaller page-cache folios than a copied one and loads measurably slower (see compare_builds.sh).
COPY=$(mktemp -d /tmp/sr-bench-bin.XXXXXX)
cp "$BIN" "$COPY/safe-run"
[ -x "$(dirname "$BIN")/safe-run-init" ] && cp "$(dirname "$BIN")/safe-run-init" "$COPY/"
BIN=$COPY/safe-run
export SAFE_RUN_WORKDIR_BASE=${SAFE_RUN_WORKDIR_BASE:-$(mktemp -d /tmp/sr-bench.XXXXXX)}
BWRAP_ARGS="bwrap --unshare-all --die-with-parent --ro-bind /usr /usr --ro-bind /etc /etc --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/lib64 /lib64 --symlink usr/sbin /sbin --proc /proc --dev /dev"
BWRAP="$BWRAP_ARGS /bin/true"
SR="$BIN run -q --policy examples/bench_true.yaml"
PY_POLICY=$(mktemp /tmp/sr-bench-py.XXXXXX.yaml)
cat > "$PY_POLICY" <<'YAML'
version: 1
name: bench-python
runtime: { command: /usr/bin/python3, args: ["-c", "pass"] }
mounts: []
evidence: { sign: false }
YAML

if [ "${1:-}" = "--phases" ]; then
  for _ in $(seq 1 "${RUNS:-30}"); do
    $BIN run -q --timings --policy examples/bench_true.yaml 2>&1 | sed -n 's/^safe-run: timing \([^ ]*\) *\([0-9.]*\) ms$/\1 \2/p'
  done | python3 -c '
import sys, statistics, collections
v = collections.defaultdict(list)
for line in sys.stdin:
    k, x = line.split()
    v[k].append(float(x))
for k in sorted(v):
    print(f"{k:16s} median {statistics.median(v[k]):8.3f} ms  (n={len(v[k])})")
'
  exit 0
fi

hyperfine -N --warmup 10 --runs "$RUNS" --export-json "${SAFE_RUN_WORKDIR_BASE}/hyperfine.json" \
  -n bare /bin/true -n bwrap "$BWRAP" -n safe-run "$SR" \
  -n bare-py "/usr/bin/python3 -c pass" -n bwrap-py "$BWRAP_ARGS /usr/bin/python3 -c pass" \
  -n safe-run-py "$BIN run -q --policy $PY_POLICY"
python3 - "${SAFE_RUN_WORKDIR_BASE}/hyperfine.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
med = {k: v["median"] * 1000 for k, v in r.items()}
for suffix in ("", "-py"):
    for k in ("bare", "bwrap", "safe-run"):
        print(f"{k + suffix:12s} median {med[k + suffix]:7.2f} ms")
    sr, bw, bare = med["safe-run" + suffix], med["bwrap" + suffix], med["bare" + suffix]
    print(f"safe-run{suffix} / bwrap{suffix} = {sr / bw:.2f}x; / bare = {sr / bare:.2f}x")
PY
# Peak RSS of the safe-run process itself (GNU time's %M, KiB), median of 11 runs.
for _ in $(seq 1 11); do /usr/bin/time -f %M $SR 2>&1 >/dev/null | tail -n 1; done | sort -n |
  awk '{v[NR] = $1} END {printf "safe-run peak RSS median %.1f MiB\n", v[int((NR + 1) / 2)] / 1024}'
echo "run dirs left in $SAFE_RUN_WORKDIR_BASE (evidence of every benchmark run)"
