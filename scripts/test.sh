#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this). Run as root: the sandbox,
# cgroup and network tests create real namespaces, cgroups and nftables tables. With CI=true a
# test that cannot run (no root, missing kernel feature) fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== ruff (Python)" >&2
.venv/bin/ruff check sdk/python tests/independent_verifier

# The microVM tests boot the guest these build (static agent, kernel, initramfs, rootfs).
./scripts/build-guest.sh

echo "== cargo test" >&2
cargo test --workspace --locked --no-fail-fast

# The SDK's tests start the debug safe-run that cargo test has just built.
echo "== pytest (Python SDK against a real safe-run serve)" >&2
.venv/bin/python -m pytest -q sdk/python/tests
