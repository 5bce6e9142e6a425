#!/usr/bin/env bash
# Times `safe-run report verify` on a run with 100,000 events (goal: under 1 s).
#
# Generates the run with the sr-evidence example `evidence_bench` (a signed report, a real
# events.jsonl, stdout/stderr), then runs hyperfine on the release `safe-run` binary, and on the
# in-process verifier as a cross-check. Usage: bench/evidence/verify_100k.sh [N_EVENTS]
set -euo pipefail
cd "$(dirname "$0")/../.."
N="${1:-100000}"
WORK="$(mktemp -d /tmp/sr-verify-bench.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

cargo build --release -q -p sr-evidence --example evidence_bench
./target/release/examples/evidence_bench gen "$WORK" "$N"
ls -l "$WORK/run"

if cargo build --release -q -p sr-cli 2>/dev/null; then
    ./target/release/safe-run report verify "$WORK/run/run_report.json" --key "$WORK/signing.pub"
    hyperfine --warmup 2 --runs 10 \
        "./target/release/safe-run report verify $WORK/run/run_report.json --key $WORK/signing.pub"
else
    echo "safe-run does not build right now; timing the in-process verifier only" >&2
fi
hyperfine --warmup 2 --runs 10 "./target/release/examples/evidence_bench verify $WORK"
