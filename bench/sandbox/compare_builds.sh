#!/usr/bin/env bash
# Two safe-run builds side by side in one hyperfine run: what a change costs per run.
# Workloads: /bin/true and `python3 -c pass` under the default sandbox policy, and /bin/true
# under an allowlist policy with one egress rule (to a documentation address that is never
# contacted: /bin/true sends nothing). Needs root, hyperfine, two release binaries.
#
#   bench/sandbox/compare_builds.sh OLD_BIN NEW_BIN        # 40 runs each, 5 warm-up
#   RUNS=100 bench/sandbox/compare_builds.sh OLD NEW
set -euo pipefail
cd "$(dirname "$0")/../.."
OLD=${1:?usage: compare_builds.sh OLD_BIN NEW_BIN}
NEW=${2:?usage: compare_builds.sh OLD_BIN NEW_BIN}
RUNS=${RUNS:-40}
WORK=$(mktemp -d /tmp/sr-compare.XXXXXX)
export SAFE_RUN_WORKDIR_BASE="$WORK/runs" SAFE_RUN_ARCHIVE="$WORK/archive.db"
cat > "$WORK/py.yaml" <<'YAML'
version: 1
name: bench-python
runtime: { command: /usr/bin/python3, args: ["-c", "pass"] }
mounts: []
evidence: { sign: false }
YAML
cat > "$WORK/allow.yaml" <<'YAML'
version: 1
name: bench-allowlist
runtime: { command: /bin/true, args: [] }
mounts: []
network:
  mode: allowlist
  egress: [ { cidr: 192.0.2.1/32, protocol: tcp, ports: [443] } ]
evidence: { sign: false }
YAML
for name in true py allow; do
  case $name in
    true) pol=examples/bench_true.yaml ;;
    py) pol="$WORK/py.yaml" ;;
    allow) pol="$WORK/allow.yaml" ;;
  esac
  hyperfine -N --warmup 5 --runs "$RUNS" --export-json "$WORK/$name.json" \
    -n "old $name" "$OLD run -q --policy $pol" -n "new $name" "$NEW run -q --policy $pol" >/dev/null
done
python3 - "$WORK" <<'PY'
import json, sys, os
work = sys.argv[1]
print(f"{'workload':10s} {'old median':>11s} {'new median':>11s} {'new/old':>8s}")
for name in ("true", "py", "allow"):
    r = {x["command"].split()[0]: x for x in json.load(open(os.path.join(work, name + ".json")))["results"]}
    o, n = r["old"]["median"] * 1000, r["new"]["median"] * 1000
    print(f"{name:10s} {o:9.2f} ms {n:9.2f} ms {n / o:7.2f}x")
PY
rm -rf "$WORK"
