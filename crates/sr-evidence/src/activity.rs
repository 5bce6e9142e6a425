//! What ran in a sandbox, what moved in and out of it, and where the sandbox came from: the
//! typed payloads of `exec.started`, `exec.exited`, `file.transferred`, `file.removed` and
//! `sandbox.claimed`, and the [`Ledger`] that turns a chain's events into the report's `execs`,
//! `transfers` and `pool`. The chain writer feeds the ledger each event
//! it writes (so the report lists exactly what the chain holds); `report verify` rebuilds it from
//! events.jsonl and compares, so a report whose list differs from its own chain (an exit code
//! edited, an exec dropped, a digest changed) fails. The ledger also refuses a chain that
//! contradicts itself: an argv digest that does not recompute, an exec that ends twice or without
//! a start, a stdin digest on an exec that had no stdin, a malformed digest, a transfer id used
//! twice.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical::{is_digest, jcs, sha256_tagged};
use crate::events::{self, EventType};

/// `sha256:` of the RFC 8785 canonical JSON of `argv`: what `exec.started` states.
pub fn argv_digest(argv: &[String]) -> String {
    // A list of strings always encodes; the fallback is never reached.
    sha256_tagged(&jcs(&argv).unwrap_or_default())
}

/// What an exec's stdin was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StdinMode {
    /// `/dev/null`.
    None,
    /// A pipe the client writes into (or the terminal, for a tty exec).
    Pipe,
}

/// `exec.started`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecStarted {
    /// The exec's id in its sandbox.
    pub exec_id: u64,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// [`argv_digest`] of `argv`.
    pub argv_digest: String,
    /// Working directory asked for (`null`: the policy's).
    pub cwd: Option<String>,
    /// Whether it got a terminal.
    pub tty: bool,
    /// Its stdin.
    pub stdin: StdinMode,
    /// Its pid inside the sandbox.
    pub pid: u32,
}

/// How an exec ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum ExecStatus {
    /// It exited.
    Exited {
        /// Exit code.
        code: i32,
    },
    /// A signal killed it.
    Signaled {
        /// Signal number.
        signal: i32,
    },
    /// Its own timeout killed its tree.
    TimedOut,
    /// It never started.
    Failed {
        /// The stable SR code.
        code: String,
        /// Where it failed.
        phase: String,
    },
    /// The sandbox ended before the exec's end was reported.
    Lost,
}

/// One stream's size and digest as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamDigest {
    /// Bytes kept.
    pub bytes: u64,
    /// `sha256:` of the kept bytes.
    pub sha256: String,
    /// Whether bytes were dropped at the output limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// `exec.exited`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecExited {
    /// The exec's id.
    pub exec_id: u64,
    /// Program and arguments, only for an exec that never started (it has no `exec.started`
    /// to say them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// How it ended.
    pub status: ExecStatus,
    /// How long it ran.
    pub duration_ms: u64,
    /// Its stdout.
    pub stdout: StreamDigest,
    /// Its stderr.
    pub stderr: StreamDigest,
    /// What its stdin was given, when it had one.
    pub stdin: Option<StreamDigest>,
}

/// Which way a transfer went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// Into the sandbox (a put).
    In,
    /// Out of it (a get).
    Out,
}

/// What a transfer moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TransferKind {
    /// One regular file's bytes.
    File,
    /// A directory as a tar stream (`bytes` and `sha256` are the stream's).
    Tar,
}

/// `file.transferred`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileTransferred {
    /// The request's id in its sandbox.
    pub transfer_id: u64,
    /// In or out.
    pub direction: Direction,
    /// The path inside the sandbox.
    pub path: String,
    /// A file or a tar stream.
    pub kind: TransferKind,
    /// Bytes moved.
    pub bytes: u64,
    /// `sha256:` of them.
    pub sha256: String,
}

/// `file.removed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileRemoved {
    /// The request's id.
    pub transfer_id: u64,
    /// The path inside the sandbox.
    pub path: String,
}

/// `sandbox.claimed`, and the report's `pool`: the sandbox was made ahead for a warm pool and
/// handed out from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolClaim {
    /// The operator's template it was made from.
    pub template: String,
    /// How long it had been ready in the pool when it was handed out.
    pub waited_ms: u64,
}

/// What the report lists of a chain's activity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Activity {
    /// Every exec, by id.
    pub execs: Vec<ExecRecord>,
    /// Every transfer, by id.
    pub transfers: Vec<FileTransferred>,
    /// The pool claim, when the sandbox came from a warm pool.
    pub pool: Option<PoolClaim>,
}

/// One exec as the report lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecRecord {
    /// The exec's id.
    pub id: u64,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// `sha256:` of their canonical JSON.
    pub argv_digest: String,
    /// How it ended (`lost` when the chain has no end for it).
    pub status: ExecStatus,
    /// How long it ran (absent when the chain has no end for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Its stdout (absent when the chain has no end for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<StreamDigest>,
    /// Its stderr (absent when the chain has no end for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<StreamDigest>,
    /// Its stdin, when it had one and the chain has its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<StreamDigest>,
}

/// The ledger's problem with a chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// A payload does not have its type's shape.
    #[error("event {seq} ({ty}): {reason}")]
    Malformed {
        /// Position in the chain.
        seq: u64,
        /// Event type.
        ty: String,
        /// Why.
        reason: String,
    },
    /// The events contradict each other or themselves.
    #[error("event {seq}: {what} {id} {problem}")]
    Inconsistent {
        /// Position in the chain.
        seq: u64,
        /// `exec` or `transfer`.
        what: &'static str,
        /// The exec's or transfer's id.
        id: u64,
        /// What is wrong.
        problem: &'static str,
    },
}

/// Builds the report's lists from the chain's events, in order.
#[derive(Debug, Default)]
pub struct Ledger {
    execs: BTreeMap<u64, (ExecRecord, Option<StdinMode>)>,
    ended: BTreeSet<u64>,
    transfer_ids: BTreeSet<u64>,
    transfers: Vec<FileTransferred>,
    pool: Option<PoolClaim>,
    problem: Option<LedgerError>,
}

impl Ledger {
    /// Takes the event at position `seq` of the chain.
    pub fn feed(&mut self, seq: u64, ty: &str, payload: &Value) {
        if self.problem.is_some() {
            return;
        }
        if let Err(e) = self.take(seq, ty, payload) {
            self.problem = Some(e);
        }
    }

    fn take(&mut self, seq: u64, ty: &str, payload: &Value) -> Result<(), LedgerError> {
        let exec_problem = |id: u64, problem: &'static str| LedgerError::Inconsistent {
            seq,
            what: "exec",
            id,
            problem,
        };
        let digests_well_formed = |id: u64, streams: &[Option<&StreamDigest>]| match streams
            .iter()
            .flatten()
            .all(|s| is_digest(&s.sha256))
        {
            true => Ok(()),
            false => Err(exec_problem(id, "has a malformed stream digest")),
        };
        match EventType::parse(ty) {
            Some(events::EXEC_STARTED) => {
                let s: ExecStarted = parse(seq, ty, payload)?;
                if self.execs.contains_key(&s.exec_id) || self.ended.contains(&s.exec_id) {
                    return Err(exec_problem(s.exec_id, "started twice or after its end"));
                }
                if s.argv_digest != argv_digest(&s.argv) {
                    return Err(exec_problem(
                        s.exec_id,
                        "has an argv digest that does not recompute",
                    ));
                }
                let record = ExecRecord {
                    id: s.exec_id,
                    argv: s.argv,
                    argv_digest: s.argv_digest,
                    status: ExecStatus::Lost,
                    duration_ms: None,
                    stdout: None,
                    stderr: None,
                    stdin: None,
                };
                self.execs.insert(s.exec_id, (record, Some(s.stdin)));
            }
            Some(events::EXEC_EXITED) => {
                let x: ExecExited = parse(seq, ty, payload)?;
                let id = x.exec_id;
                if !self.ended.insert(id) {
                    return Err(exec_problem(id, "ended twice"));
                }
                digests_well_formed(id, &[Some(&x.stdout), Some(&x.stderr), x.stdin.as_ref()])?;
                let never_ran = matches!(x.status, ExecStatus::Failed { .. } | ExecStatus::Lost);
                match (self.execs.get_mut(&id), x.argv) {
                    (Some(_), Some(_)) => {
                        return Err(exec_problem(id, "restates its argv at its end"));
                    }
                    (Some((r, mode)), None) => {
                        if x.stdin.is_some() != (*mode == Some(StdinMode::Pipe)) {
                            return Err(exec_problem(
                                id,
                                "has a stdin digest that its start contradicts",
                            ));
                        }
                        r.status = x.status;
                        r.duration_ms = Some(x.duration_ms);
                        r.stdout = Some(x.stdout);
                        r.stderr = Some(x.stderr);
                        r.stdin = x.stdin;
                    }
                    // An exec that never started (a missing program, a sandbox gone before it
                    // began) ends without a start and says its argv there.
                    (None, Some(argv)) if never_ran => {
                        let record = ExecRecord {
                            id,
                            argv_digest: argv_digest(&argv),
                            argv,
                            status: x.status,
                            duration_ms: Some(x.duration_ms),
                            stdout: Some(x.stdout),
                            stderr: Some(x.stderr),
                            stdin: x.stdin,
                        };
                        self.execs.insert(id, (record, None));
                    }
                    (None, _) => return Err(exec_problem(id, "ended without having started")),
                }
            }
            Some(events::FILE_TRANSFERRED) => {
                let t: FileTransferred = parse(seq, ty, payload)?;
                self.claim_transfer(seq, t.transfer_id)?;
                if !is_digest(&t.sha256) {
                    return Err(LedgerError::Inconsistent {
                        seq,
                        what: "transfer",
                        id: t.transfer_id,
                        problem: "has a malformed digest",
                    });
                }
                self.transfers.push(t);
            }
            Some(events::FILE_REMOVED) => {
                let r: FileRemoved = parse(seq, ty, payload)?;
                self.claim_transfer(seq, r.transfer_id)?;
            }
            Some(events::SANDBOX_CLAIMED) => {
                let c: PoolClaim = parse(seq, ty, payload)?;
                if self.pool.is_some() || !self.execs.is_empty() || !self.transfer_ids.is_empty() {
                    return Err(LedgerError::Malformed {
                        seq,
                        ty: ty.to_owned(),
                        reason: "a sandbox is claimed once, before anything ran in it".into(),
                    });
                }
                self.pool = Some(c);
            }
            _ => {}
        }
        Ok(())
    }

    fn claim_transfer(&mut self, seq: u64, id: u64) -> Result<(), LedgerError> {
        match self.transfer_ids.insert(id) {
            true => Ok(()),
            false => Err(LedgerError::Inconsistent {
                seq,
                what: "transfer",
                id,
                problem: "uses an id already used",
            }),
        }
    }

    /// The lists, sorted by id (an exec with no end in the chain is `lost`), and the claim.
    pub fn finish(self) -> Result<Activity, LedgerError> {
        if let Some(p) = self.problem {
            return Err(p);
        }
        let mut transfers = self.transfers;
        transfers.sort_by_key(|t| t.transfer_id);
        Ok(Activity {
            execs: self.execs.into_values().map(|(r, _)| r).collect(),
            transfers,
            pool: self.pool,
        })
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    seq: u64,
    ty: &str,
    payload: &Value,
) -> Result<T, LedgerError> {
    T::deserialize(payload).map_err(|e| LedgerError::Malformed {
        seq,
        ty: ty.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn started(id: u64) -> Value {
        let argv = vec!["/bin/true".to_owned()];
        json!({"execId": id, "argv": argv, "argvDigest": argv_digest(&argv), "cwd": null, "tty": false, "stdin": "none", "pid": 2})
    }

    fn exited(id: u64, code: i32) -> Value {
        json!({"execId": id, "status": {"kind": "exited", "code": code}, "durationMs": 3,
               "stdout": {"bytes": 0, "sha256": EMPTY}, "stderr": {"bytes": 0, "sha256": EMPTY}, "stdin": null})
    }

    fn transfer(id: u64, sha256: &str) -> Value {
        json!({"transferId": id, "direction": "in", "path": "/tmp/x", "kind": "file", "bytes": 0, "sha256": sha256})
    }

    fn activity(events_in: &[(EventType, Value)]) -> Result<Activity, LedgerError> {
        let mut l = Ledger::default();
        for (seq, (ty, p)) in events_in.iter().enumerate() {
            l.feed(seq as u64 + 10, ty.as_str(), p);
        }
        l.finish()
    }

    fn ledger(
        events_in: &[(EventType, Value)],
    ) -> Result<(Vec<ExecRecord>, Vec<FileTransferred>), LedgerError> {
        activity(events_in).map(|a| (a.execs, a.transfers))
    }

    #[test]
    fn a_pool_claim_is_kept_once_and_only_before_any_activity() {
        let claim = json!({"template": "small", "waitedMs": 812});
        let a = activity(&[
            (events::SANDBOX_CLAIMED, claim.clone()),
            (events::EXEC_STARTED, started(1)),
            (events::EXEC_EXITED, exited(1, 0)),
        ])
        .unwrap();
        assert_eq!(
            a.pool,
            Some(PoolClaim {
                template: "small".into(),
                waited_ms: 812
            })
        );
        assert_eq!(activity(&[]).unwrap().pool, None);
        let refused: [&[(EventType, Value)]; 4] = [
            &[
                (events::SANDBOX_CLAIMED, claim.clone()),
                (events::SANDBOX_CLAIMED, claim.clone()),
            ],
            &[
                (events::EXEC_STARTED, started(1)),
                (events::SANDBOX_CLAIMED, claim.clone()),
            ],
            &[
                (events::FILE_TRANSFERRED, transfer(1, EMPTY)),
                (events::SANDBOX_CLAIMED, claim.clone()),
            ],
            &[(events::SANDBOX_CLAIMED, json!({"template": "small"}))],
        ];
        for events_in in refused {
            assert!(activity(events_in).is_err(), "{events_in:?}");
        }
    }

    #[test]
    fn execs_and_transfers_come_out_sorted_and_a_missing_end_is_lost() {
        let failed = json!({"execId": 4, "argv": ["/nope"], "status": {"kind": "failed", "code": "SR-RUN-002", "phase": "launch.exec"},
                            "durationMs": 0, "stdout": {"bytes": 0, "sha256": EMPTY}, "stderr": {"bytes": 0, "sha256": EMPTY}, "stdin": null});
        let (execs, transfers) = ledger(&[
            (events::EXEC_STARTED, started(2)),
            (events::EXEC_STARTED, started(1)),
            (events::RESOURCE_SAMPLE, json!({})),
            (events::EXEC_EXITED, exited(1, 7)),
            (events::FILE_TRANSFERRED, transfer(3, EMPTY)),
            (events::EXEC_EXITED, failed),
        ])
        .unwrap();
        assert_eq!(
            execs.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![1, 2, 4]
        );
        assert_eq!(execs[0].status, ExecStatus::Exited { code: 7 });
        assert_eq!(execs[1].status, ExecStatus::Lost);
        // A lost exec states nothing the chain does not have.
        let lost = serde_json::to_value(&execs[1]).unwrap();
        assert!(
            lost.get("durationMs").is_none() && lost.get("stdout").is_none(),
            "{lost}"
        );
        assert_eq!(execs[2].argv_digest, argv_digest(&["/nope".to_owned()]));
        assert!(matches!(execs[2].status, ExecStatus::Failed { .. }));
        assert_eq!(transfers.len(), 1);
        assert_eq!(transfers[0].direction, Direction::In);
    }

    #[test]
    fn an_inconsistent_chain_is_refused() {
        let mut forged = started(1);
        forged["argv"] = json!(["/bin/sh"]);
        let mut piped = started(1);
        piped["stdin"] = json!("pipe");
        let mut with_stdin = exited(1, 0);
        with_stdin["stdin"] = json!({"bytes": 1, "sha256": EMPTY});
        let mut bad_digest = exited(1, 0);
        bad_digest["stdout"]["sha256"] = json!("sha256:e3");
        let mut restated = exited(1, 0);
        restated["argv"] = json!(["/bin/true"]);
        let cases: Vec<(&str, Vec<(EventType, Value)>)> = vec![
            (
                "started twice",
                vec![
                    (events::EXEC_STARTED, started(1)),
                    (events::EXEC_STARTED, started(1)),
                ],
            ),
            (
                "end without start",
                vec![(events::EXEC_EXITED, exited(9, 0))],
            ),
            (
                "ended twice",
                vec![
                    (events::EXEC_STARTED, started(1)),
                    (events::EXEC_EXITED, exited(1, 0)),
                    (events::EXEC_EXITED, exited(1, 0)),
                ],
            ),
            (
                "malformed",
                vec![(events::EXEC_STARTED, json!({"execId": "one"}))],
            ),
            ("forged argv", vec![(events::EXEC_STARTED, forged)]),
            (
                "stdin digest without stdin",
                vec![
                    (events::EXEC_STARTED, started(1)),
                    (events::EXEC_EXITED, with_stdin),
                ],
            ),
            (
                "pipe without stdin digest",
                vec![
                    (events::EXEC_STARTED, piped),
                    (events::EXEC_EXITED, exited(1, 0)),
                ],
            ),
            (
                "bad stream digest",
                vec![
                    (events::EXEC_STARTED, started(1)),
                    (events::EXEC_EXITED, bad_digest),
                ],
            ),
            (
                "argv restated",
                vec![
                    (events::EXEC_STARTED, started(1)),
                    (events::EXEC_EXITED, restated),
                ],
            ),
            (
                "bad transfer digest",
                vec![(events::FILE_TRANSFERRED, transfer(1, "sha256:00"))],
            ),
            (
                "transfer id twice",
                vec![
                    (events::FILE_TRANSFERRED, transfer(1, EMPTY)),
                    (
                        events::FILE_REMOVED,
                        json!({"transferId": 1, "path": "/tmp/x"}),
                    ),
                ],
            ),
            (
                "bool exit code",
                vec![
                    (events::EXEC_STARTED, started(1)),
                    (
                        events::EXEC_EXITED,
                        json!({"execId": 1, "status": {"kind": "exited", "code": true}, "durationMs": 3,
                    "stdout": {"bytes": 0, "sha256": EMPTY}, "stderr": {"bytes": 0, "sha256": EMPTY}, "stdin": null}),
                    ),
                ],
            ),
        ];
        for (name, events_in) in cases {
            assert!(ledger(&events_in).is_err(), "{name}: {events_in:?}");
        }
    }

    #[test]
    fn a_problem_names_the_chain_position() {
        let err = ledger(&[
            (events::RUN_PREPARE, json!({})),
            (events::EXEC_EXITED, exited(9, 0)),
        ])
        .unwrap_err();
        assert!(
            matches!(err, LedgerError::Inconsistent { seq: 11, id: 9, .. }),
            "{err:?}"
        );
    }
}
