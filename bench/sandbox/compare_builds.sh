#!/usr/bin/env bash
# Two safe-run builds side by side, interleaved: what a change costs per run.
# Workloads: /bin/true and `python3 -c pass` under the default sandbox policy, and /bin/true
# under an allowlist policy with one egress rule (to a documentation address that is never
# contacted: /bin/true sends nothing). Needs root, python3, two release binaries.
#
#   bench/sandbox/compare_builds.sh OLD_BIN NEW_BIN        # 40 runs each, 5 warm-up
#   RUNS=100 bench/sandbox/compare_builds.sh OLD NEW
set -euo pipefail
cd "$(dirname "$0")/../.."
OLD=${1:?usage: compare_builds.sh OLD_BIN NEW_BIN}
NEW=${2:?usage: compare_builds.sh OLD_BIN NEW_BIN}
RUNS=${RUNS:-40}
WORK=$(mktemp -d /tmp/sr-compare.XXXXXX)
# Each build gets its own run base and archive (set per run below): a build that folds the
# archive's WAL on close would otherwise delete the WAL the other keeps, and the digest cache
# of one would serve the other.
# Both builds are copied (each with the safe-run-init beside it, if it has one), so that both are
# read from files written the same way: a binary written piecewise by the linker sits in smaller
# page-cache folios than a copy and measured ~10% slower than its own copy here.
for side in old new; do
  src=$OLD; [ "$side" = new ] && src=$NEW
  mkdir -p "$WORK/$side"
  cp "$src" "$WORK/$side/safe-run"
  init="$(dirname "$src")/safe-run-init"
  if [ -x "$init" ]; then cp "$init" "$WORK/$side/safe-run-init"; fi
done
OLD=$WORK/old/safe-run
NEW=$WORK/new/safe-run
cat > "$WORK/py.yaml" <<'YAML'
version: 1
name: bench-python
runtime: { command: /usr/bin/python3, args: ["-c", "pass"] }
mounts: []
evidence: { sign: false }
YAML
cp examples/bench_allowlist.yaml "$WORK/allow.yaml"
# Interleaved (old, new, new, old, ...) rather than hyperfine's one block per command: on a
# shared VM the speed drifts by more than the difference measured, and interleaving gives both
# builds the same drift. Each run is timed from spawn to exit.
python3 - "$WORK" "$OLD" "$NEW" "$RUNS" <<'PY'
import os, statistics, subprocess, sys, time
work, old, new, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
policies = {"true": "examples/bench_true.yaml", "py": os.path.join(work, "py.yaml"),
            "allow": os.path.join(work, "allow.yaml")}
def env_of(binary):
    side = os.path.join(work, os.path.basename(os.path.dirname(binary)))
    return dict(os.environ, SAFE_RUN_WORKDIR_BASE=os.path.join(side, "runs"),
                SAFE_RUN_ARCHIVE=os.path.join(side, "archive.db"))
envs = {old: env_of(old), new: env_of(new)}
def once(binary, policy):
    t = time.perf_counter_ns()
    subprocess.run([binary, "run", "-q", "--policy", policy], check=True, env=envs[binary],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter_ns() - t) / 1e6
print(f"{'workload':10s} {'old median':>11s} {'new median':>11s} {'new/old':>8s} {'pairs new<old':>14s}")
for name, policy in policies.items():
    for _ in range(5):
        once(old, policy), once(new, policy)
    o, n = [], []
    for i in range(runs):
        # Alternate which goes first: the run after another one pays for part of its
        # predecessor's deferred teardown (the same binary against itself measured 0.90x
        # in fixed order).
        if i % 2:
            o.append(once(old, policy))
            n.append(once(new, policy))
        else:
            n.append(once(new, policy))
            o.append(once(old, policy))
    mo, mn = statistics.median(o), statistics.median(n)
    wins = sum(b < a for a, b in zip(o, n))
    print(f"{name:10s} {mo:8.2f} ms {mn:8.2f} ms {mn / mo:7.2f}x {wins:8d}/{runs}")
PY
rm -rf "$WORK"
