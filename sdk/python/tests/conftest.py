"""A real `safe-run serve` for the SDK's tests: root, the repo's debug build (or
$SAFE_RUN_BIN), a private socket, token file, run directory and operator config."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
# The operator's template `small` (no warm pool: a create naming it makes one).
TEMPLATE = "version: 1\nname: small\nruntime:\n  command: /bin/true\n  args: []\n  timeout: 60s\nmounts: []\n"


def _binary() -> Path:
    return Path(os.environ.get("SAFE_RUN_BIN", REPO / "target" / "debug" / "safe-run"))


@pytest.fixture(scope="session")
def daemon(tmp_path_factory):
    problem = None
    if os.geteuid() != 0:
        problem = "the SDK tests need root (they start a real safe-run serve)"
    elif not _binary().exists():
        problem = f"{_binary()} is missing (cargo build -p sr-cli first)"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem} (CI=true, so this is a failure)")
        pytest.skip(problem)
    d = tmp_path_factory.mktemp("serve")
    template = d / "small.yaml"
    template.write_text(TEMPLATE)
    config = d / "config.json"
    config.write_text(
        json.dumps(
            {
                "allowedMountPrefixes": [str(d / "share")],
                "serve": {"templates": {"small": str(template)}},
            }
        )
    )
    env = dict(os.environ, SAFE_RUN_CONFIG=str(config), SAFE_RUN_WORKDIR_BASE=str(d / "runs"))
    tokens = d / "tokens.json"
    made = subprocess.run(
        [_binary(), "token", "create", "--scopes", "admin", "--tokens", tokens],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    socket = d / "serve.sock"
    proc = subprocess.Popen(
        [_binary(), "serve", "--socket", socket, "--tokens", tokens],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while not socket.exists():
        assert proc.poll() is None, "safe-run serve exited"
        assert time.monotonic() < deadline, "safe-run serve did not listen"
        time.sleep(0.02)
    yield {"socket": str(socket), "token": made.stdout.strip()}
    proc.terminate()
    assert proc.wait(timeout=30) == 0
