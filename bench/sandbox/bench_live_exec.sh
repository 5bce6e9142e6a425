#!/usr/bin/env bash
# Exec on a live sandbox versus a fresh `safe-run run` versus bubblewrap versus bare exec, for
# /bin/true, side by side in one run (release builds). Needs root, bwrap and hyperfine.
#
#   bench/sandbox/bench_live_exec.sh              # 300 live execs; 60 hyperfine runs each
#   N=1000 RUNS=100 bench/sandbox/bench_live_exec.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-300}
RUNS=${RUNS:-60}
cargo build --release -q -p sr-cli
cargo build --release -q -p sr-runner --example live_exec_bench
BIN=target/release/safe-run
LIVE=target/release/examples/live_exec_bench
export SAFE_RUN_WORKDIR_BASE=${SAFE_RUN_WORKDIR_BASE:-$(mktemp -d /tmp/sr-bench.XXXXXX)}
BWRAP="bwrap --unshare-all --die-with-parent --ro-bind /usr /usr --ro-bind /etc /etc --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/lib64 /lib64 --symlink usr/sbin /sbin --proc /proc --dev /dev /bin/true"
hyperfine -N --warmup 10 --runs "$RUNS" --export-json "$SAFE_RUN_WORKDIR_BASE/hf.json" \
  -n bare /bin/true -n bwrap "$BWRAP" -n safe-run-run "$BIN run -q --policy examples/bench_true.yaml" >/dev/null
"$LIVE" examples/bench_true.yaml "$N" > "$SAFE_RUN_WORKDIR_BASE/live.txt"
python3 - "$SAFE_RUN_WORKDIR_BASE/hf.json" "$SAFE_RUN_WORKDIR_BASE/live.txt" <<'PY'
import json, sys
r = {x["command"]: x["median"] * 1000 for x in json.load(open(sys.argv[1]))["results"]}
live = dict(l.split() for l in open(sys.argv[2]))
bw = r["bwrap"]
print(f"{'what':28s} {'ms':>9s} {'x bwrap':>8s}")
for k in ("bare", "bwrap", "safe-run-run"):
    print(f"{k + ' (median)':28s} {r[k]:9.3f} {r[k] / bw:8.2f}")
print(f"{'live sandbox create':28s} {float(live['create_ms']):9.3f}")
for p in ("p50", "p90", "p99", "max"):
    v = float(live[f"exec_{p}_ms"])
    print(f"{'exec on live sandbox ' + p:28s} {v:9.3f} {v / bw:8.2f}")
PY
