"""The SDK against a real daemon: commands (waiting, streamed, in the background), files,
errors, the report, and the async client."""

import asyncio

import pytest

from safe_run import AsyncSandbox, CommandHandle, SafeRunError, Sandbox

POLICY = "version: 1\nname: sdk\nruntime:\n  command: /bin/true\n  args: []\n  timeout: 60s\nmounts: []\n"


def test_commands_files_and_the_report(daemon):
    with Sandbox.create(policy=POLICY, token=daemon["token"], socket=daemon["socket"]) as sbx:
        r = sbx.commands.run("echo hi; echo oops >&2; exit 3")
        assert (r.exit_code, r.stdout, r.stderr) == (3, "hi\n", "oops\n")
        assert sbx.commands.run(["/bin/cat"], stdin="piped").stdout == "piped"
        seen = []
        r = sbx.commands.run("echo one; echo two", on_stdout=seen.append)
        assert "".join(seen) == "one\ntwo\n" and r.exit_code == 0

        sbx.files.write("/tmp/data.bin", b"\x00\x01bytes", mode=0o600)
        assert sbx.files.read("/tmp/data.bin") == b"\x00\x01bytes"
        assert any(e["name"] == "data.bin" for e in sbx.files.list("/tmp"))
        assert sbx.commands.run("stat -c %a /tmp/data.bin").stdout == "600\n"
        sbx.files.remove("/tmp/data.bin")
        with pytest.raises(SafeRunError) as e:
            sbx.files.read("/tmp/data.bin")
        assert e.value.status == 404
        with pytest.raises(SafeRunError) as e:
            sbx.files.write("/etc/evil", b"x")
        assert e.value.status == 403

        h = sbx.commands.run("read l; echo got $l", background=True)
        assert isinstance(h, CommandHandle)
        h.send_stdin("line\n", close=True)
        assert h.wait().stdout == "got line\n"
        sleeper = sbx.commands.run(["/bin/sleep", "30"], background=True)
        sleeper.kill(15)
        ended = sleeper.wait()
        assert (ended.status, ended.signal) == ("signaled", 15)
    report = sbx.report()
    assert report["schemaVersion"] == "safe-run/run-report/v1"
    assert len(report["execs"]) == 6
    assert [t["direction"] for t in report["transfers"]] == ["in", "out"]
    assert daemon["token"] not in str(report)


def test_a_template_with_a_timeout_env_and_labels(daemon):
    with Sandbox.create(
        template="small",
        timeout=30,
        env={"GREETING": "hello"},
        metadata={"job": "sdk-test"},
        token=daemon["token"],
        socket=daemon["socket"],
    ) as sbx:
        assert sbx.from_pool is False  # no warm pool configured: made for this call
        assert sbx.commands.run("echo $GREETING").stdout == "hello\n"
        info = sbx.info()
        assert info["template"] == "small" and info["metadata"] == {"job": "sdk-test"}
        assert 0 < info["endsAtMs"] - info["createdAtMs"] <= 30_000
    with pytest.raises(ValueError):
        Sandbox.create(policy=POLICY, template="small", token=daemon["token"])
    with pytest.raises(ValueError):
        Sandbox.create(token=daemon["token"])


def test_a_bad_policy_is_a_precise_error(daemon):
    with pytest.raises(SafeRunError) as e:
        Sandbox.create(
            policy="version: 1\nname: x\nruntime: {command: nope, args: []}\nmounts: []\n",
            token=daemon["token"],
            socket=daemon["socket"],
        )
    assert e.value.status == 422
    assert e.value.code.startswith("SR-POL-") and e.value.path == "runtime.command"


def test_a_wrong_token_is_refused(daemon):
    with pytest.raises(SafeRunError) as e:
        Sandbox.create(policy=POLICY, token="srt_wrong", socket=daemon["socket"])
    assert e.value.status == 401


def test_the_async_client(daemon):
    async def go():
        sbx = await AsyncSandbox.create(
            policy=POLICY, token=daemon["token"], socket=daemon["socket"]
        )
        r = await sbx.run("echo async")
        templated = await AsyncSandbox.create(
            template="small", env={"X": "y"}, token=daemon["token"], socket=daemon["socket"]
        )
        assert (await templated.run("echo $X")).stdout == "y\n"
        await templated.kill()
        await templated.aclose()
        await sbx.write_file("/tmp/a", b"A")
        data = await sbx.read_file("/tmp/a")
        await sbx.kill()
        report = await sbx.report()
        await sbx.aclose()
        return r, data, report

    r, data, report = asyncio.run(go())
    assert (r.stdout, data) == ("async\n", b"A")
    assert len(report["execs"]) == 1
