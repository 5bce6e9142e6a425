"""The independent verifier's activity check refuses a chain that contradicts itself.

Run by crates/sr-cli/tests/independent_verifier.rs with the repo's .venv python:
`python -m unittest discover -s tests/independent_verifier`.
"""

import json
import unittest

from verify_report import _rebuild_activity, _rebuild_pool, jcs, sha256_tagged

EMPTY = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def started(eid, stdin="none", argv=("/bin/true",)):
    argv = list(argv)
    return {"type": "exec.started", "payload": {
        "execId": eid, "argv": argv, "argvDigest": sha256_tagged(jcs(argv)), "cwd": None,
        "tty": False, "stdin": stdin, "pid": 2}}


def exited(eid, code=0, **extra):
    payload = {"execId": eid, "status": {"kind": "exited", "code": code}, "durationMs": 1,
               "stdout": {"bytes": 0, "sha256": EMPTY}, "stderr": {"bytes": 0, "sha256": EMPTY},
               "stdin": None}
    payload.update(extra)
    return {"type": "exec.exited", "payload": payload}


def transfer(tid, sha256=EMPTY):
    return {"type": "file.transferred", "payload": {
        "transferId": tid, "direction": "in", "path": "/tmp/x", "kind": "file", "bytes": 0,
        "sha256": sha256}}


def rebuild(*events):
    return _rebuild_activity([json.dumps(e).encode() for e in events])


class ActivityTest(unittest.TestCase):
    def test_a_consistent_chain_rebuilds(self):
        failed = exited(2, argv=["/nope"])
        failed["payload"]["status"] = {"kind": "failed", "code": "SR-RUN-002", "phase": "x"}
        execs, transfers, problems = rebuild(started(1), exited(1, 3), failed, transfer(5))
        self.assertEqual(problems, [])
        self.assertEqual([e["id"] for e in execs], [1, 2])
        self.assertEqual(execs[1]["argvDigest"], sha256_tagged(jcs(["/nope"])))
        self.assertEqual(len(transfers), 1)

    def test_contradictions_are_problems(self):
        forged = started(1)
        forged["payload"]["argv"] = ["/bin/sh"]
        cases = {
            "forged argv": [forged],
            "started twice": [started(1), started(1)],
            "ended twice": [started(1), exited(1), exited(1)],
            "end without start": [exited(9)],
            "stdin without pipe": [started(1), exited(1, stdin={"bytes": 1, "sha256": EMPTY})],
            "pipe without stdin": [started(1, stdin="pipe"), exited(1)],
            "bad digest": [started(1), exited(1, stdout={"bytes": 0, "sha256": "sha256:e3"})],
            "transfer twice": [transfer(1), transfer(1)],
            "bad transfer digest": [transfer(1, "sha256:00")],
        }
        for name, events in cases.items():
            with self.subTest(name):
                self.assertNotEqual(rebuild(*events)[2], [], name)

    def test_a_bool_exit_code_differs_from_the_integer(self):
        execs, _, _ = rebuild(started(1), exited(1, 1))
        edited = json.loads(json.dumps(execs))
        edited[0]["status"]["code"] = True
        # Python says True == 1; the canonical bytes do not.
        self.assertEqual(edited, execs)
        self.assertNotEqual(jcs(edited), jcs(execs))


if __name__ == "__main__":
    unittest.main()


def claimed(template="small", waited_ms=12):
    return {"type": "sandbox.claimed", "payload": {"template": template, "waitedMs": waited_ms}}


def pool(*events):
    return _rebuild_pool([json.dumps(e).encode() for e in events])


class PoolClaimTest(unittest.TestCase):
    def test_a_claim_before_anything_ran_is_the_reports_pool(self):
        self.assertEqual(pool(claimed(), started(1), exited(1)),
                         ({"template": "small", "waitedMs": 12}, []))
        self.assertEqual(pool(started(1), exited(1)), (None, []))

    def test_a_second_or_late_claim_or_another_shape_is_a_problem(self):
        odd = claimed()
        odd["payload"]["by"] = "someone"
        for events in ([claimed(), claimed()], [started(1), claimed()], [transfer(1), claimed()],
                       [odd]):
            _, problems = pool(*events)
            self.assertTrue(problems, events)

