#!/usr/bin/env python3
"""An independent verifier of safe-run run reports, written from docs/evidence.md alone.

It shares no code with the Rust verifier (crates/sr-evidence/src/verify.rs). It checks:

* integrity.digest: sha256 of RFC 8785 (JCS) canonical JSON of the report without its
  `integrity` member, written `sha256:<hex>`;
* integrity.eventsHead equals timeline.head;
* the Ed25519 signature (base64 in integrity.signature) over the UTF-8 bytes of the digest
  string, with the public key the verifier trusts (SPKI PEM or base64 of the raw 32 bytes),
  and integrity.keyid equals the first 16 hex digits of sha256 of that raw key;
* the event log: every line is the JCS of its object, `hash` is sha256 of JCS of the object
  without `hash`, `prev` links from the genesis value, `seq` runs 0, 1, 2, ...; the last hash
  and the count equal timeline.head and timeline.count;
* the outputs (files relative to the report's directory): size and sha256;
* the mount manifests (section `mounts`, when present): each manifest digest over its entries.

Host files (inputs with absolute paths) are not re-hashed: this is a third party's check.

Usage: verify_report.py REPORT --key PUBKEY [--events FILE]
Exit status: 0 when everything verifies, 1 when something does not, 2 for usage errors.
Ed25519 comes from the `cryptography` package (scripts/setup.sh installs it into .venv/).
"""

import argparse
import base64
import hashlib
import json
import math
import os
import re
import sys
from decimal import Decimal

GENESIS = "sha256:" + "0" * 64


# ---- RFC 8785 -------------------------------------------------------------------------------


def _jcs_number(n):
    if isinstance(n, bool):
        raise TypeError("bool is not a number")
    if isinstance(n, int):
        if abs(n) > 2**53 - 1:
            raise ValueError(f"integer {n} is not exact in IEEE 754")
        return str(n)
    if not math.isfinite(n):
        raise ValueError("NaN and infinities are not JSON")
    if n == 0:
        return "0"
    # ECMAScript Number::toString (ECMA-262 Number::toString, as RFC 8785 requires): the
    # shortest round-trip digits (Python's repr finds the same ones), then the layout rules.
    sign = "-" if n < 0 else ""
    _, digit_tuple, exp = Decimal(repr(abs(n))).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    k = len(digits)
    point = exp + k  # the decimal point sits after `point` digits
    if k <= point <= 21:
        return sign + digits + "0" * (point - k)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * (-point) + digits
    e = point - 1
    mant = digits if k == 1 else digits[0] + "." + digits[1:]
    return sign + mant + "e" + ("+" if e >= 0 else "-") + str(abs(e))


def _jcs_string(s):
    out = ['"']
    for ch in s:
        c = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif c < 0x20:
            out.append({8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"}.get(c, f"\\u{c:04x}"))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def jcs(value):
    """RFC 8785 canonical form of a parsed JSON value, as UTF-8 bytes."""
    return _jcs(value).encode("utf-8")


def _jcs(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return _jcs_number(v)
    if isinstance(v, str):
        return _jcs_string(v)
    if isinstance(v, list):
        return "[" + ",".join(_jcs(x) for x in v) + "]"
    if isinstance(v, dict):
        keys = sorted(v.keys(), key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(_jcs_string(k) + ":" + _jcs(v[k]) for k in keys) + "}"
    raise TypeError(f"not JSON: {type(v)}")


def sha256_tagged(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---- checks ---------------------------------------------------------------------------------


class Result:
    def __init__(self):
        self.lines = []
        self.failed = False

    def check(self, name, ok, detail):
        self.lines.append(f"{'PASS' if ok else 'FAIL'}  {name}  {detail}")
        if not ok:
            self.failed = True
        return ok


def load_public_key(path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    with open(path, "rb") as f:
        text = f.read().strip()
    if text.startswith(b"-----BEGIN PUBLIC KEY-----"):
        key = serialization.load_pem_public_key(text)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
    else:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return key, raw


def check_signature(res, report, key_path):
    from cryptography.exceptions import InvalidSignature

    integrity = report.get("integrity", {})
    key, raw = load_public_key(key_path)
    keyid = hashlib.sha256(raw).hexdigest()[:16]
    sig = integrity.get("signature")
    if sig is None:
        return res.check("signature", False, "the report is unsigned")
    res.check("keyid", integrity.get("keyid") == keyid,
              f"report keyid {integrity.get('keyid')}, trusted key {keyid}")
    try:
        key.verify(base64.b64decode(sig, validate=True), integrity["digest"].encode("utf-8"))
        return res.check("signature", True, f"ed25519 keyid={keyid}")
    except (InvalidSignature, ValueError) as e:
        return res.check("signature", False, f"does not verify with key {keyid}: {e!r}")


def check_events(res, events_path, timeline):
    try:
        with open(events_path, "rb") as f:
            data = f.read()
    except OSError as e:
        return res.check("events.chain", False, str(e))
    if data and not data.endswith(b"\n"):
        return res.check("events.chain", False, "torn last line")
    prev, count = GENESIS, 0
    for n, line in enumerate(data.split(b"\n")[:-1] if data else []):
        obj = json.loads(line)
        if jcs(obj) != line:
            return res.check("events.chain", False, f"line {n} is not canonical")
        claimed = obj.pop("hash", None)
        if sha256_tagged(jcs(obj)) != claimed:
            return res.check("events.chain", False, f"line {n}: hash does not recompute")
        if obj.get("prev") != prev or obj.get("seq") != n:
            return res.check("events.chain", False, f"line {n}: broken link or seq")
        prev, count = claimed, n + 1
    res.check("events.chain", True, f"{count} events, head {prev}")
    return res.check(
        "events.head",
        prev == timeline.get("head") and count == timeline.get("count"),
        f"chain {count} events head {prev}; report {timeline.get('count')} events head {timeline.get('head')}",
    )


DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def _is_digest(s):
    return isinstance(s, str) and DIGEST.fullmatch(s) is not None


def _streams_ok(p):
    streams = [p.get("stdout"), p.get("stderr"), p.get("stdin")]
    return all(_is_digest(x.get("sha256")) for x in streams if isinstance(x, dict))


def _rebuild_activity(lines):
    """The report's execs and transfers as the chain states them, and what contradicts itself."""
    execs, modes, ended, transfer_ids, transfers, problems = {}, {}, set(), set(), [], []
    for line in lines:
        if not line:
            continue
        event = json.loads(line)
        kind, p = event.get("type"), event.get("payload") or {}
        eid = p.get("execId")
        if kind == "exec.started":
            if eid in execs or eid in ended:
                problems.append(f"exec {eid} started twice or after its end")
            if sha256_tagged(jcs(p.get("argv"))) != p.get("argvDigest"):
                problems.append(f"exec {eid}: argvDigest does not recompute")
            execs[eid] = {"id": eid, "argv": p.get("argv"), "argvDigest": p.get("argvDigest"),
                          "status": {"kind": "lost"}}
            modes[eid] = p.get("stdin")
        elif kind == "exec.exited":
            if eid in ended:
                problems.append(f"exec {eid} ended twice")
            ended.add(eid)
            if not _streams_ok(p):
                problems.append(f"exec {eid}: a malformed stream digest")
            status = p.get("status") or {}
            end = {"status": status, "durationMs": p.get("durationMs"),
                   "stdout": p.get("stdout"), "stderr": p.get("stderr")}
            if p.get("stdin") is not None:
                end["stdin"] = p["stdin"]
            if eid in execs:
                if "argv" in p:
                    problems.append(f"exec {eid} restates its argv at its end")
                if (p.get("stdin") is not None) != (modes.get(eid) == "pipe"):
                    problems.append(f"exec {eid}: a stdin digest its start contradicts")
                execs[eid].update(end)
            elif "argv" in p and status.get("kind") in ("failed", "lost"):
                execs[eid] = {"id": eid, "argv": p["argv"],
                              "argvDigest": sha256_tagged(jcs(p["argv"])), **end}
            else:
                problems.append(f"exec {eid} ended without having started")
        elif kind in ("file.transferred", "file.removed"):
            tid = p.get("transferId")
            if tid in transfer_ids:
                problems.append(f"transfer {tid} uses an id already used")
            transfer_ids.add(tid)
            if kind == "file.transferred":
                if not _is_digest(p.get("sha256")):
                    problems.append(f"transfer {tid}: a malformed digest")
                transfers.append(p)
    return [execs[k] for k in sorted(execs)], sorted(transfers, key=lambda t: t["transferId"]), problems


def _rebuild_pool(lines):
    """The report's pool claim as the chain states it: at most one `sandbox.claimed`, before any
    exec or transfer; and what contradicts that."""
    claim, problems, active = None, [], False
    for line in lines:
        if not line:
            continue
        event = json.loads(line)
        kind, p = event.get("type"), event.get("payload") or {}
        if kind in ("exec.started", "exec.exited", "file.transferred", "file.removed"):
            active = True
        elif kind == "sandbox.claimed":
            if claim is not None or active:
                problems.append("a sandbox is claimed once, before anything ran in it")
            if set(p) != {"template", "waitedMs"}:
                problems.append("a sandbox.claimed payload of another shape")
            claim = p
    return claim, problems


def check_activity(res, events_path, report):
    """The report's execs, transfers and pool claim, rebuilt from the chain; argv digests
    recomputed."""
    try:
        with open(events_path, "rb") as f:
            lines = f.read().split(b"\n")
    except OSError as e:
        return res.check("activity", False, str(e))
    want_execs, want_transfers, problems = _rebuild_activity(lines)
    # Compared as canonical JSON, so `true` and `1` (equal in Python) differ as they do on disk.
    if jcs(want_execs) != jcs(report.get("execs", [])):
        problems.append("the report's execs differ from the chain's")
    if jcs(want_transfers) != jcs(report.get("transfers", [])):
        problems.append("the report's transfers differ from the chain's")
    claim, claim_problems = _rebuild_pool(lines)
    problems.extend(claim_problems)
    if jcs(claim) != jcs(report.get("pool")):
        problems.append("the report's pool differs from the chain's")
    return res.check("activity", not problems,
                     "; ".join(problems) or f"{len(want_execs)} execs, {len(want_transfers)} transfers")


def file_digest(path):
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
            size += len(block)
    return "sha256:" + h.hexdigest(), size


def check_outputs(res, report, run_dir):
    for out in report.get("outputs", []):
        rel = out["path"]
        if os.path.isabs(rel) or ".." in rel.split("/"):
            res.check(f"output:{out['name']}", False, f"path {rel} leaves the run directory")
            continue
        path = os.path.join(run_dir, rel)
        if not os.path.exists(path):
            res.lines.append(f"SKIP  output:{out['name']}  {path} not present")
            continue
        digest, size = file_digest(path)
        res.check(f"output:{out['name']}", digest == out["digest"] and size == out["bytes"],
                  f"{size} bytes {digest}")


def check_mount_manifests(res, report):
    for m in (report.get("mounts") or {}).get("manifests", []):
        entries = m.get("entries", [])
        recomputed = sha256_tagged(jcs(entries))
        res.check(f"mount:{m.get('target')}", recomputed == m.get("manifestDigest"),
                  f"{len(entries)} entries, manifest {recomputed}")


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report")
    ap.add_argument("--key", required=True, help="trusted public key (SPKI PEM or base64)")
    ap.add_argument("--events", help="event log (default: events.jsonl beside the report)")
    args = ap.parse_args(argv)

    res = Result()
    with open(args.report, "rb") as f:
        raw = f.read()
    report = json.loads(raw)
    integrity = report.get("integrity") or {}
    unsealed = {k: v for k, v in report.items() if k != "integrity"}
    digest = sha256_tagged(jcs(unsealed))
    res.check("integrity.algorithm", integrity.get("algorithm") == "sha256+jcs",
              str(integrity.get("algorithm")))
    res.check("integrity.digest", digest == integrity.get("digest"), digest)
    res.check("integrity.eventsHead",
              integrity.get("eventsHead") == report.get("timeline", {}).get("head"),
              str(integrity.get("eventsHead")))
    check_signature(res, report, args.key)
    run_dir = os.path.dirname(os.path.abspath(args.report))
    check_events(res, args.events or os.path.join(run_dir, "events.jsonl"),
                 report.get("timeline", {}))
    check_activity(res, args.events or os.path.join(run_dir, "events.jsonl"), report)
    check_outputs(res, report, run_dir)
    check_mount_manifests(res, report)
    print("\n".join(res.lines))
    print("FAILED" if res.failed else "VERIFIED")
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
