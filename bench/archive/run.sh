#!/usr/bin/env bash
# Archive figures (issue 15): 100,000 runs indexed one transaction each (per-run append time),
# `report list` over them (in-process and as the `safe-run-verify` process), and the log at
# 1,000,000 leaves (inclusion/consistency proof time and size). Needs no root. Every loop has a
# fixed count; takes a few minutes, mostly the 100,000 fsyncs.
# Usage: bench/archive/run.sh [RUNS] [LEAVES]
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS="${1:-100000}"
LEAVES="${2:-1000000}"
WORK="$(mktemp -d /tmp/sr-archive-bench.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
cargo build --release -q -p sr-archive --example archive_bench --bin safe-run-verify
./target/release/examples/archive_bench "$WORK" "$RUNS" "$LEAVES"

echo "# safe-run-verify report list --archive runs.db (whole process, $RUNS runs indexed)"
for args in "" "--status timeout" "--command job-none" "--limit 0 --format json"; do
    # shellcheck disable=SC2086
    if command -v hyperfine >/dev/null; then
        hyperfine -N -w 3 -r 20 --style basic \
            "./target/release/safe-run-verify report list --archive $WORK/runs.db $args" 2>/dev/null \
            | grep -E 'Time|Range' | sed "s|^|  [$args] |"
    else
        start=$(date +%s%N)
        for _ in $(seq 20); do
            ./target/release/safe-run-verify report list --archive "$WORK/runs.db" $args >/dev/null
        done
        end=$(date +%s%N)
        echo "  [$args] mean $(( (end - start) / 20000000 )) ms over 20 runs"
    fi
done
