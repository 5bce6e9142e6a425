"""The HTTP client behind Sandbox and AsyncSandbox: one request helper each, problem+json
errors raised as SafeRunError, and the exec stream (Server-Sent Events) read line by line."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Self

import httpx

DEFAULT_SOCKET = "/run/safe-run/serve.sock"

Command = str | Sequence[str]


class SafeRunError(Exception):
    """A request the daemon refused: its HTTP status, stable SR code, path and hint."""

    def __init__(self, status: int, body: dict):
        self.status = status
        self.code = body.get("code")
        self.path = body.get("path")
        self.hint = body.get("hint")
        self.detail = body.get("detail", "")
        super().__init__(f"{status} {self.code or ''} {self.detail}".strip())


@dataclass
class CommandResult:
    """How a command ended and what it printed."""

    exit_code: int | None
    stdout: str
    stderr: str
    status: str = "exited"
    signal: int | None = None
    truncated: bool = False


def _result(r: dict) -> CommandResult:
    """A waited-for exec's answer as a CommandResult."""
    return CommandResult(
        exit_code=r.get("exitCode"),
        stdout=r.get("stdout", ""),
        stderr=r.get("stderr", ""),
        status=r.get("status", "exited"),
        signal=r.get("signal"),
        truncated=r.get("truncated", False),
    )


def _argv(cmd: Command) -> list:
    # A string is a shell command line, as agents write them; a list is argv itself.
    if isinstance(cmd, str):
        return ["/bin/sh", "-c", cmd]
    return list(cmd)


def _transport(socket: str | None, url: str | None):
    if url:
        return None, url.rstrip("/")
    path = socket or os.environ.get("SAFE_RUN_SOCKET") or DEFAULT_SOCKET
    return path, "http://safe-run"


def _check(resp: httpx.Response) -> httpx.Response:
    if resp.status_code >= 400:
        try:
            body = resp.json()
        except ValueError:
            body = {"detail": resp.text}
        raise SafeRunError(resp.status_code, body)
    return resp


def _events(lines: Iterator[str]) -> Iterator[tuple]:
    """(id, name, data) for each Server-Sent Event in `lines`."""
    ident, name, data = None, None, None
    for line in lines:
        if line == "":
            if name is not None:
                yield ident, name, data
            ident, name, data = None, None, None
        elif line.startswith("id:"):
            ident = int(line[3:].strip())
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data = json.loads(line[5:].strip())


class CommandHandle:
    """A command running in the background: its stdin, a kill, and its end."""

    def __init__(self, sbx: Sandbox, exec_id: int):
        self._sbx = sbx
        self.id = exec_id

    def _path(self, what: str) -> str:
        return f"/v1/sandboxes/{self._sbx.id}/execs/{self.id}/{what}"

    def send_stdin(self, data: str | bytes, close: bool = False) -> None:
        raw = data.encode() if isinstance(data, str) else data
        q = "?close=true" if close else ""
        self._sbx._request("POST", self._path("stdin") + q, content=raw)

    def kill(self, signal: int = 9) -> None:
        self._sbx._request("POST", self._path("signal"), json={"signal": signal})

    def wait(
        self,
        on_stdout: Callable[[str], None] | None = None,
        on_stderr: Callable[[str], None] | None = None,
    ) -> CommandResult:
        out, err, truncated = [], [], False
        with self._sbx._http.stream(
            "GET", self._path("events"), headers=self._sbx._auth(), timeout=None
        ) as resp:
            if resp.status_code >= 400:
                resp.read()
                _check(resp)
            for _, name, data in _events(resp.iter_lines()):
                if name == "stdout":
                    out.append(data["text"])
                    if on_stdout:
                        on_stdout(data["text"])
                elif name == "stderr":
                    err.append(data["text"])
                    if on_stderr:
                        on_stderr(data["text"])
                elif name == "cut":
                    truncated = True
                elif name == "exit":
                    return CommandResult(
                        exit_code=data.get("exitCode"),
                        stdout="".join(out),
                        stderr="".join(err),
                        status=data.get("status", "lost"),
                        signal=data.get("signal"),
                        truncated=truncated,
                    )
        return CommandResult(None, "".join(out), "".join(err), status="lost", truncated=truncated)


class _Commands:
    def __init__(self, sbx: Sandbox):
        self._sbx = sbx

    def run(
        self,
        cmd: Command,
        *,
        timeout: float | None = None,
        stdin: str | bytes | None = None,
        env: dict | None = None,
        cwd: str | None = None,
        background: bool = False,
        on_stdout: Callable[[str], None] | None = None,
        on_stderr: Callable[[str], None] | None = None,
    ) -> CommandResult | CommandHandle:
        """Runs `cmd` (a shell line or an argv list) and returns how it ended; with
        `background=True` a handle at once; with callbacks, output as it comes."""
        body: dict = {"argv": _argv(cmd), "env": env or {}}
        if cwd:
            body["cwd"] = cwd
        if timeout is not None:
            body["timeoutMs"] = int(timeout * 1000)
        if stdin is not None:
            body["stdin"] = stdin.decode() if isinstance(stdin, bytes) else stdin
        if not background and not on_stdout and not on_stderr:
            url = f"/v1/sandboxes/{self._sbx.id}/execs?wait=true"
            return _result(self._sbx._request("POST", url, json=body).json())
        if background and stdin is None:
            body["stdin"] = ""
            body["keepStdinOpen"] = True
        started = self._sbx._request("POST", f"/v1/sandboxes/{self._sbx.id}/execs", json=body)
        handle = CommandHandle(self._sbx, started.json()["id"])
        if background:
            return handle
        return handle.wait(on_stdout=on_stdout, on_stderr=on_stderr)


class _Files:
    def __init__(self, sbx: Sandbox):
        self._sbx = sbx

    def _path(self, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError(f"{path!r}: paths inside the sandbox are absolute")
        return f"/v1/sandboxes/{self._sbx.id}/files{path}"

    def read(self, path: str) -> bytes:
        return self._sbx._request("GET", self._path(path)).content

    def write(self, path: str, data: str | bytes, mode: int = 0o644) -> dict:
        raw = data.encode() if isinstance(data, str) else data
        return self._sbx._request("PUT", self._path(path) + f"?mode={mode:o}", content=raw).json()

    def list(self, path: str) -> list:
        return self._sbx._request("GET", self._path(path) + "?list=true").json()

    def remove(self, path: str, recursive: bool = False) -> None:
        q = "?recursive=true" if recursive else ""
        self._sbx._request("DELETE", self._path(path) + q)


def _create_body(
    policy: str | None,
    template: str | None,
    timeout: float | None,
    env: dict | None,
    metadata: dict | None,
) -> dict:
    """The body of `POST /v1/sandboxes`: exactly one of a policy and a template."""
    if (policy is None) == (template is None):
        raise ValueError("give exactly one of policy (YAML or JSON text) and template (a name)")
    body: dict = {"policy": policy} if policy is not None else {"template": template}
    if timeout is not None:
        body["timeoutMs"] = int(timeout * 1000)
    if env:
        body["env"] = env
    if metadata:
        body["metadata"] = metadata
    return body


class Sandbox:
    """A live sandbox of a `safe-run serve`. Use `Sandbox.create(...)`."""

    def __init__(self, http: httpx.Client, info: dict, token: str):
        self._http = http
        self.id: str = info["id"]
        # Handed out ready from the template's warm pool, rather than made for this call.
        self.from_pool: bool = bool(info.get("fromPool", False))
        self._token = token
        self.commands = _Commands(self)
        self.files = _Files(self)

    @classmethod
    def create(
        cls,
        policy: str | None = None,
        *,
        template: str | None = None,
        timeout: float | None = None,
        env: dict | None = None,
        metadata: dict | None = None,
        token: str | None = None,
        socket: str | None = None,
        url: str | None = None,
        idempotency_key: str | None = None,
        request_timeout: float = 60.0,
    ) -> Sandbox:
        """Makes a sandbox from `policy` (YAML or JSON text), or takes one of the operator's
        `template` (from its warm pool when one is ready), with an operator token. `timeout`
        (seconds) ends it that long from now, at most at its policy's end; `env` is given to
        every command; `metadata` labels it."""
        body = _create_body(policy, template, timeout, env, metadata)
        uds, base = _transport(socket, url)
        transport = httpx.HTTPTransport(uds=uds) if uds else None
        http = httpx.Client(base_url=base, transport=transport, timeout=request_timeout)
        operator = token or os.environ.get("SAFE_RUN_TOKEN", "")
        headers = {"Authorization": f"Bearer {operator}"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        resp = _check(http.post("/v1/sandboxes", json=body, headers=headers))
        info = resp.json()
        # From here on, the sandbox's own token: it reaches this sandbox only.
        return cls(http, info, info["token"])

    def _auth(self) -> dict:
        return {"Authorization": f"Bearer {self._token}"}

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return _check(self._http.request(method, path, headers=self._auth(), **kw))

    def info(self) -> dict:
        return self._request("GET", f"/v1/sandboxes/{self.id}").json()

    def kill(self) -> dict:
        """Ends the sandbox; its signed report is written."""
        return self._request("DELETE", f"/v1/sandboxes/{self.id}").json()

    def report(self) -> dict:
        """The signed run report (once the sandbox has ended)."""
        return self._request("GET", f"/v1/sandboxes/{self.id}/report").json()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.info().get("state") == "running":
                self.kill()
        finally:
            pass

    def close(self) -> None:
        self._http.close()


class AsyncSandbox:
    """The async twin of Sandbox for the common calls: create, run (waiting), files, kill,
    report."""

    def __init__(self, http: httpx.AsyncClient, info: dict, token: str):
        self._http = http
        self.id: str = info["id"]
        self.from_pool: bool = bool(info.get("fromPool", False))
        self._token = token

    @classmethod
    async def create(
        cls,
        policy: str | None = None,
        *,
        template: str | None = None,
        timeout: float | None = None,
        env: dict | None = None,
        metadata: dict | None = None,
        token: str | None = None,
        socket: str | None = None,
        url: str | None = None,
        request_timeout: float = 60.0,
    ) -> AsyncSandbox:
        """As `Sandbox.create`."""
        body = _create_body(policy, template, timeout, env, metadata)
        uds, base = _transport(socket, url)
        transport = httpx.AsyncHTTPTransport(uds=uds) if uds else None
        http = httpx.AsyncClient(base_url=base, transport=transport, timeout=request_timeout)
        operator = token or os.environ.get("SAFE_RUN_TOKEN", "")
        resp = _check(
            await http.post(
                "/v1/sandboxes",
                json=body,
                headers={"Authorization": f"Bearer {operator}"},
            )
        )
        info = resp.json()
        return cls(http, info, info["token"])

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._token}"}
        return _check(await self._http.request(method, path, headers=headers, **kw))

    async def run(self, cmd: Command, *, stdin: str | None = None) -> CommandResult:
        body: dict = {"argv": _argv(cmd)}
        if stdin is not None:
            body["stdin"] = stdin
        url = f"/v1/sandboxes/{self.id}/execs?wait=true"
        return _result((await self._request("POST", url, json=body)).json())

    async def read_file(self, path: str) -> bytes:
        return (await self._request("GET", f"/v1/sandboxes/{self.id}/files{path}")).content

    async def write_file(self, path: str, data: bytes, mode: int = 0o644) -> dict:
        url = f"/v1/sandboxes/{self.id}/files{path}?mode={mode:o}"
        return (await self._request("PUT", url, content=data)).json()

    async def kill(self) -> dict:
        return (await self._request("DELETE", f"/v1/sandboxes/{self.id}")).json()

    async def report(self) -> dict:
        return (await self._request("GET", f"/v1/sandboxes/{self.id}/report")).json()

    async def aclose(self) -> None:
        await self._http.aclose()


def quote(argv: Sequence[str]) -> str:
    """A shell line for `argv` (for callers that build commands from parts)."""
    return " ".join(shlex.quote(a) for a in argv)
