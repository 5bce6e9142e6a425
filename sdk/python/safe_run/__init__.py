"""Python client for `safe-run serve` (docs/serve.md).

    from safe_run import Sandbox

    with Sandbox.create(policy=POLICY_YAML, token=TOKEN) as sbx:
        r = sbx.commands.run("echo hi")
        print(r.stdout, r.exit_code)
        sbx.files.write("/tmp/x", b"data")
    # leaving the block ends the sandbox; sbx.report() is its signed run report

The daemon is reached on its Unix socket (``socket=``, default /run/safe-run/serve.sock, or
$SAFE_RUN_SOCKET) or a loopback URL (``url=``); ``token=`` defaults to $SAFE_RUN_TOKEN.
"""

from ._client import (
    AsyncSandbox,
    CommandHandle,
    CommandResult,
    SafeRunError,
    Sandbox,
)

__all__ = ["AsyncSandbox", "CommandHandle", "CommandResult", "SafeRunError", "Sandbox"]
