#!/usr/bin/env bash
# The microVM backend beside the process sandbox, in one run (release builds, as root, after
# scripts/build-guest.sh): a whole `safe-run run` of /bin/true on each backend (hyperfine); boot
# to agent-ready and exec round trips on one live VM versus one live sandbox; and the time of
# `safe-run artifact build` with its package cache warm. No threshold: figures and ratios.
#
#   bench/microvm/bench.sh              # RUNS=10 whole runs each, N=100 live execs
#   RUNS=20 N=300 bench/microvm/bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-10}
N=${N:-100}
cargo build --release -q -p sr-cli
cargo build --release -q -p sr-runner --example live_exec_bench
BIN=target/release/safe-run
LIVE=target/release/examples/live_exec_bench
AGENT=${AGENT:-${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/safe-run-agent}
export SAFE_RUN_WORKDIR_BASE=${SAFE_RUN_WORKDIR_BASE:-$(mktemp -d /tmp/sr-bench-vm.XXXXXX)}
out=$SAFE_RUN_WORKDIR_BASE

hyperfine -N --warmup 2 --runs "$RUNS" --export-json "$out/hf.json" \
  -n sandbox "$BIN run -q --policy examples/bench_true.yaml" \
  -n microvm "$BIN run -q --policy examples/bench_true_microvm.yaml" >/dev/null
"$LIVE" examples/bench_true.yaml "$N" > "$out/live_sandbox.txt"
"$LIVE" examples/bench_true_microvm.yaml "$N" > "$out/live_vm.txt"
start=$(date +%s.%N)
"$BIN" artifact build --agent "$AGENT" --out "$out/artifacts" >/dev/null 2>&1
end=$(date +%s.%N)
python3 - "$out" "$start" "$end" <<'PY'
import json, sys
out, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
hf = {x["command"]: x for x in json.load(open(f"{out}/hf.json"))["results"]}
sb = dict(l.split() for l in open(f"{out}/live_sandbox.txt"))
vm = dict(l.split() for l in open(f"{out}/live_vm.txt"))
print(f"{'what':36s} {'sandbox ms':>11s} {'microvm ms':>11s} {'ratio':>7s}")
s, v = hf["sandbox"]["median"] * 1000, hf["microvm"]["median"] * 1000
print(f"{'safe-run run /bin/true (median)':36s} {s:11.1f} {v:11.1f} {v / s:7.1f}")
s, v = float(sb["create_ms"]), float(vm["create_ms"])
print(f"{'create to ready (agent answered)':36s} {s:11.1f} {v:11.1f} {v / s:7.1f}")
for p in ("p50", "p90", "p99", "max"):
    s, v = float(sb[f"exec_{p}_ms"]), float(vm[f"exec_{p}_ms"])
    print(f"{'exec /bin/true on a live one ' + p:36s} {s:11.3f} {v:11.3f} {v / s:7.1f}")
print(f"{'artifact build (package cache warm)':36s} {'':11s} {(end - start) * 1000:11.0f}")
PY
