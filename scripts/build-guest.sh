#!/usr/bin/env bash
# Builds what a microVM boots (docs/microvm.md): the static guest agent `safe-run-agent`, then
# `safe-run artifact build` with it (Debian's cloud kernel, an initramfs, a busybox rootfs) into
# /var/lib/safe-run/artifacts (ARTIFACTS_DIR overrides). Reproducible: the same inputs give the
# same bytes. Needs root and what scripts/setup.sh installs.
#   ./scripts/build-guest.sh [SAFE_RUN_BINARY]     (default: target/debug/safe-run, built here)
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
echo "== safe-run-agent (static, release)" >&2
# crt-static applies to the target only (build scripts stay dynamic): a guest has no libc.
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --quiet --locked --release -p sr-agent --target "$target"
target_dir=${CARGO_TARGET_DIR:-target}
agent=$target_dir/$target/release/safe-run-agent

# apt-get download needs package lists; a machine that never ran `apt-get update` has none.
# (Captured first: under pipefail, grep -q closing the pipe early would fail the pipeline.)
policy=$(apt-cache policy linux-image-cloud-amd64 busybox-static 2>/dev/null || true)
if ! grep -q 'Candidate: [0-9]' <<<"$policy"; then
  echo "== apt-get update (no package lists yet)" >&2
  apt-get update -qq
fi

bin=${1:-}
if [[ -z "$bin" ]]; then
  cargo build --quiet --locked -p sr-cli
  bin=$target_dir/debug/safe-run
fi
out=${ARTIFACTS_DIR:-/var/lib/safe-run/artifacts}
echo "== safe-run artifact build --out $out" >&2
"$bin" artifact build --agent "$agent" --out "$out"
