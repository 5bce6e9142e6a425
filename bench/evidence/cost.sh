#!/usr/bin/env bash
# Cost of evidence per run: the evidence work of a typical run (open events.jsonl, 15 events
# each written and flushed, one fsync, seal + Ed25519 sign, write run_report.json and fsync it)
# next to the same emits into a sink that records nothing.
#
# When `safe-run run` works on this host, also compares whole runs with the default evidence
# plan and with `evidence: {events: [], sign: false}` side by side (hyperfine).
# Usage: bench/evidence/cost.sh [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/../.."
ITER="${1:-200}"
cargo build --release -q -p sr-evidence --example evidence_bench
./target/release/examples/evidence_bench cost "$ITER"

if cargo build --release -q -p sr-cli 2>/dev/null; then
    WORK="$(mktemp -d /tmp/sr-cost-bench.XXXXXX)"
    trap 'rm -rf "$WORK"' EXIT
    # Same policy twice; the second records no events and does not sign.
    cat > "$WORK/with.yaml" <<'YAML'
version: 1
name: bench-with-evidence
runtime: { command: /bin/true, args: [], timeout: 10s }
mounts: []
YAML
    cat > "$WORK/without.yaml" <<'YAML'
version: 1
name: bench-without-evidence
runtime: { command: /bin/true, args: [], timeout: 10s }
mounts: []
evidence: { events: [], sign: false }
YAML
    export SAFE_RUN_WORKDIR_BASE="$WORK/runs" SAFE_RUN_KEY="$WORK/signing.key"
    if ./target/release/safe-run run --policy "$WORK/with.yaml" >/dev/null 2>&1; then
        hyperfine --warmup 3 --runs 30 \
            "./target/release/safe-run run --policy $WORK/with.yaml" \
            "./target/release/safe-run run --policy $WORK/without.yaml"
    else
        echo "safe-run run is not usable here yet; only the in-process figure above" >&2
    fi
fi
