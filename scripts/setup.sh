#!/usr/bin/env bash
# Installs what safe-run needs on a Debian host, once: nft (allowlist networking), ip
# (iproute2), python3 (used by examples and tests), QEMU, vhost-device-vsock and the tools of
# `safe-run artifact build` (the microVM backend), bwrap and hyperfine (benchmarks only), and a
# Python venv at .venv/ with the pinned `cryptography` package (the independent report verifier,
# tests/independent_verifier), and the Python SDK (sdk/python) with httpx, pytest and ruff.
# Idempotent: installs only what is missing. Needs root
# for the Debian packages.
set -euo pipefail

need=()
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
# The terminal test of `run -t` (crates/sr-cli/tests/tty_tmux.rs).
command -v tmux >/dev/null 2>&1 || need+=(tmux)
# The TLS test of `safe-run serve` makes a certificate and calls it over HTTPS.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl ca-certificates)
# The microVM backend (docs/microvm.md): QEMU, and what `safe-run artifact build` uses to make
# the guest's images (mkfs.ext4, dpkg-deb; apt-get download fetches Debian's kernel and busybox).
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
command -v depmod >/dev/null 2>&1 || need+=(kmod)
command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg)
# The cgroup v2 guest test (crates/sr-cli/tests/cgroup_v2_guest.rs) strips the debug binaries
# it boots (debugfs, which reads busybox out of the rootfs, comes with e2fsprogs).
command -v strip >/dev/null 2>&1 || need+=(binutils)
# A static guest agent links glibc's static libraries.
[[ -e /usr/lib/x86_64-linux-gnu/libc.a ]] || need+=(libc6-dev)
# Debian splits `python3 -m venv` (ensurepip) into python3-venv.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
if [[ "${SAFE_RUN_SETUP_BENCH:-0}" == 1 ]]; then
  command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
  command -v hyperfine >/dev/null 2>&1 || need+=(hyperfine)
fi

if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing ${need[*]} and not root; install them or rerun as root" >&2
    exit 1
  fi
  echo "setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi

# vhost-device-vsock gives a QEMU guest its virtio-vsock device with Firecracker's hybrid-vsock
# host side (docs/microvm.md). Pinned; built from crates.io into /usr/local/bin.
VHOST_DEVICE_VSOCK_VERSION=0.3.0
if ! /usr/local/bin/vhost-device-vsock --version 2>/dev/null | grep -q " $VHOST_DEVICE_VSOCK_VERSION"; then
  echo "setup: cargo install vhost-device-vsock $VHOST_DEVICE_VSOCK_VERSION (a minute or two)" >&2
  build_dir=$(mktemp -d /tmp/vhost-device-vsock-build.XXXXXX)
  CARGO_TARGET_DIR=$build_dir \
    cargo install --quiet --locked --root /usr/local --version "$VHOST_DEVICE_VSOCK_VERSION" vhost-device-vsock
  rm -rf "$build_dir"
fi

# The independent verifier's venv: Ed25519 from `cryptography`, pinned. Recreated only when the
# pinned version is not what it holds.
CRYPTOGRAPHY_VERSION=48.0.0
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
if ! "$venv/bin/python" -c "import cryptography, sys; sys.exit(cryptography.__version__ != '$CRYPTOGRAPHY_VERSION')" >/dev/null 2>&1; then
  echo "setup: creating $venv with cryptography==$CRYPTOGRAPHY_VERSION" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "cryptography==$CRYPTOGRAPHY_VERSION"
fi
# The Python SDK (sdk/python, editable) and what its tests and lint need, pinned.
PY_TOOLS=("httpx==0.28.1" "pytest==8.3.4" "ruff==0.17.6")
if ! "$venv/bin/python" -c "import httpx, pytest, safe_run" >/dev/null 2>&1 || ! "$venv/bin/ruff" --version >/dev/null 2>&1; then
  echo "setup: installing ${PY_TOOLS[*]} and sdk/python into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${PY_TOOLS[@]}"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -e "$root/sdk/python"
fi
