#!/usr/bin/env bash
# From a fresh clone: install what is missing, build safe-run and install it as
# /usr/local/bin/safe-run (SAFE_RUN_BIN_DIR overrides), validate and run an example policy from
# another directory, then verify the signed report it wrote. Run as root.
#   ./scripts/quickstart.sh [POLICY]      (default: examples/m1_network_none.yaml)
set -euo pipefail

# The policy is resolved against the caller's directory before anything changes directory.
policy_arg=${1:-}
if [[ -n "$policy_arg" ]]; then
  policy=$(realpath -- "$policy_arg")
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
policy=${policy:-$repo/examples/m1_network_none.yaml}
cd "$repo"

./scripts/setup.sh
cargo build --release --locked -p sr-cli
bin_dir=${SAFE_RUN_BIN_DIR:-/usr/local/bin}
install -D -m 0755 target/release/safe-run "$bin_dir/safe-run"
# The sandbox init, beside safe-run (without it safe-run re-executes itself, slower).
install -D -m 0755 target/release/safe-run-init "$bin_dir/safe-run-init"
echo "== installed $bin_dir/safe-run and $bin_dir/safe-run-init" >&2
bin="$bin_dir/safe-run"

# A microVM policy boots a guest: build its agent and artifacts once (docs/microvm.md).
if grep -Eq '^[[:space:]]*backend:[[:space:]]*microvm' "$policy"; then
  ./scripts/build-guest.sh "$bin"
fi

# Everything from here runs elsewhere: examples do not depend on the current directory.
cd /
echo "== safe-run validate $policy" >&2
"$bin" validate "$policy"

# A run directory of its own, so the report to verify is the one this run wrote.
export SAFE_RUN_WORKDIR_BASE=${SAFE_RUN_WORKDIR_BASE:-$(mktemp -d /tmp/safe-run-quickstart.XXXXXX)}
result=$SAFE_RUN_WORKDIR_BASE/result.json

echo "== safe-run run $policy --result $result" >&2
set +e
"$bin" run "$policy" --result "$result"
status=$?
set -e
echo "(workload exit status: $status)" >&2

report=$(ls -t "$SAFE_RUN_WORKDIR_BASE"/*/run_report.json 2>/dev/null | head -n 1 || true)
if [[ -z "$report" ]]; then
  echo "quickstart: no run_report.json under $SAFE_RUN_WORKDIR_BASE (see $result)" >&2
  exit 1
fi
echo "== safe-run report verify $(dirname "$report")" >&2
"$bin" report verify "$(dirname "$report")"
exit "$status"
