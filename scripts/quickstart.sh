#!/usr/bin/env bash
# From a fresh clone: install what is missing, build safe-run, validate and run the bundled
# example policy, then verify the signed report it wrote. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
cargo build --release --locked -p sr-cli
bin=target/release/safe-run
policy=${1:-examples/m1_network_none.yaml}

echo "== safe-run validate $policy" >&2
"$bin" validate "$policy"

# A run directory of its own, so the report to verify is the one this run wrote.
export SAFE_RUN_WORKDIR_BASE=${SAFE_RUN_WORKDIR_BASE:-$(mktemp -d /tmp/safe-run-quickstart.XXXXXX)}

echo "== safe-run run --policy $policy" >&2
set +e
"$bin" run --policy "$policy"
status=$?
set -e
echo "(workload exit status: $status)" >&2

report=$(ls -t "$SAFE_RUN_WORKDIR_BASE"/*/run_report.json 2>/dev/null | head -n 1 || true)
if [[ -z "$report" ]]; then
  echo "quickstart: no run_report.json under $SAFE_RUN_WORKDIR_BASE" >&2
  exit 1
fi
echo "== safe-run report verify $report" >&2
"$bin" report verify "$report"
exit "$status"
