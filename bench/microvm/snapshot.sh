#!/usr/bin/env bash
# Restore from a snapshot versus a cold boot, side by side in one run (release build, as root,
# after scripts/build-guest.sh): `safe-run artifact snapshot` once, then hyperfine alternates a
# whole `safe-run run` of /bin/true booting cold (snapshots off) and restoring, and the reports
# give each VM's start to agent-ready (`bootMs`: QEMU's start to the agent's setup answer).
# No threshold: figures and the ratio (the goal is restore <= 1/5 of a cold boot).
#
#   bench/microvm/snapshot.sh            # RUNS=10 of each
#   RUNS=20 bench/microvm/snapshot.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-10}
cargo build --release -q -p sr-cli
BIN=$PWD/target/release/safe-run
POLICY=examples/bench_true_microvm.yaml
out=$(mktemp -d /tmp/sr-bench-snap.XXXXXX)
trap 'rm -rf "$out"' EXIT
printf '{"microvm": {"snapshots": ""}}\n' > "$out/cold.json"
printf '{"microvm": {"snapshots": "%s/snapshots"}}\n' "$out" > "$out/warm.json"

SAFE_RUN_CONFIG=$out/warm.json SAFE_RUN_WORKDIR_BASE=$out/runs-made \
  "$BIN" artifact snapshot --policy "$POLICY" --format json > "$out/manifest.json"

hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$out/hf.json" \
  -n boot "env SAFE_RUN_CONFIG=$out/cold.json SAFE_RUN_WORKDIR_BASE=$out/runs-boot $BIN run -q --policy $POLICY" \
  -n snapshot "env SAFE_RUN_CONFIG=$out/warm.json SAFE_RUN_WORKDIR_BASE=$out/runs-snapshot $BIN run -q --policy $POLICY" \
  >/dev/null

python3 - "$out" <<'PY'
import glob, json, statistics, sys
out = sys.argv[1]
hf = {x["command"]: x for x in json.load(open(f"{out}/hf.json"))["results"]}
m = json.load(open(f"{out}/manifest.json"))
def boot_ms(mode):
    ms = []
    for r in glob.glob(f"{out}/runs-{mode}/*/run_report.json"):
        vm = json.load(open(r))["enforcement"]["backend"]["microvm"]
        assert vm["start"] == mode, (r, vm["start"], vm.get("startNote"))
        ms.append(vm["bootMs"])
    return statistics.median(ms), len(ms)
b, nb = boot_ms("boot")
s, ns = boot_ms("snapshot")
print(f"{'what':44s} {'boot ms':>9s} {'snapshot ms':>12s} {'ratio':>6s}")
print(f"{'VMM start to agent ready (median of reports)':44s} {b:9.0f} {s:12.0f} {s / b:6.2f}   ({nb}/{ns} runs)")
hb, hs = hf["boot"]["median"] * 1000, hf["snapshot"]["median"] * 1000
print(f"{'safe-run run /bin/true (hyperfine median)':44s} {hb:9.0f} {hs:12.0f} {hs / hb:6.2f}")
print(f"snapshot: {m['vmstateBytes']} bytes of device state, {m['memoryBytes']} bytes of memory pages; made in {m['bootMs']} ms boot + {m['saveMs']} ms save; its check restore {m['restoreMs']} ms")
PY
