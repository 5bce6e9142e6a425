//! What ran in a sandbox and what moved in and out of it: the typed payloads of `exec.started`,
//! `exec.exited`, `file.transferred` and `file.removed`, and the [`Ledger`] that turns a chain's
//! events into the report's `execs` and `transfers`. The report is built with the ledger from
//! the events as they are written; `report verify` rebuilds it from events.jsonl and compares,
//! so a report whose list differs from its own chain (an exit code edited, an exec dropped, a
//! digest changed) fails.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events;

/// `exec.started`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecStarted {
    /// The exec's id in its sandbox.
    pub exec_id: u64,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// `sha256:` of the RFC 8785 canonical JSON of `argv`.
    pub argv_digest: String,
    /// Working directory asked for (`null`: the policy's).
    pub cwd: Option<String>,
    /// Whether it got a terminal.
    pub tty: bool,
    /// `none` or `pipe`.
    pub stdin: String,
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
    /// `file` (a tar stream would be `tar`).
    pub kind: String,
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
    /// How long it ran.
    pub duration_ms: u64,
    /// Its stdout.
    pub stdout: Option<StreamDigest>,
    /// Its stderr.
    pub stderr: Option<StreamDigest>,
    /// Its stdin.
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
    /// The same exec started twice, or ended without starting, or ended twice.
    #[error("event {seq}: exec {id} {what}")]
    Inconsistent {
        /// Position in the chain.
        seq: u64,
        /// The exec.
        id: u64,
        /// What is wrong.
        what: &'static str,
    },
}

/// Builds the report's lists from the chain's events, in order.
#[derive(Debug, Default)]
pub struct Ledger {
    execs: BTreeMap<u64, ExecRecord>,
    ended: BTreeMap<u64, bool>,
    transfers: Vec<FileTransferred>,
    seq: u64,
    problem: Option<LedgerError>,
}

impl Ledger {
    /// Takes one event.
    pub fn feed(&mut self, ty: &str, payload: &Value) {
        let seq = self.seq;
        self.seq += 1;
        if self.problem.is_some() {
            return;
        }
        if let Err(e) = self.take(seq, ty, payload) {
            self.problem = Some(e);
        }
    }

    fn take(&mut self, seq: u64, ty: &str, payload: &Value) -> Result<(), LedgerError> {
        fn parse<T: serde::de::DeserializeOwned>(
            seq: u64,
            ty: &str,
            payload: &Value,
        ) -> Result<T, LedgerError> {
            serde_json::from_value(payload.clone()).map_err(|e| LedgerError::Malformed {
                seq,
                ty: ty.to_owned(),
                reason: e.to_string(),
            })
        }
        match ty {
            events::EXEC_STARTED => {
                let s: ExecStarted = parse(seq, ty, payload)?;
                if self.execs.contains_key(&s.exec_id) {
                    return Err(LedgerError::Inconsistent {
                        seq,
                        id: s.exec_id,
                        what: "started twice",
                    });
                }
                self.execs.insert(
                    s.exec_id,
                    ExecRecord {
                        id: s.exec_id,
                        argv: s.argv,
                        argv_digest: s.argv_digest,
                        status: ExecStatus::Lost,
                        duration_ms: 0,
                        stdout: None,
                        stderr: None,
                        stdin: None,
                    },
                );
            }
            events::EXEC_EXITED => {
                let x: ExecExited = parse(seq, ty, payload)?;
                // An exec that never started (a missing program) ends without a start.
                if self.ended.insert(x.exec_id, true).is_some() {
                    return Err(LedgerError::Inconsistent {
                        seq,
                        id: x.exec_id,
                        what: "ended twice",
                    });
                }
                match self.execs.get_mut(&x.exec_id) {
                    Some(r) => {
                        r.status = x.status;
                        r.duration_ms = x.duration_ms;
                        r.stdout = Some(x.stdout);
                        r.stderr = Some(x.stderr);
                        r.stdin = x.stdin;
                    }
                    None if matches!(x.status, ExecStatus::Failed { .. }) => {}
                    None => {
                        return Err(LedgerError::Inconsistent {
                            seq,
                            id: x.exec_id,
                            what: "ended without having started",
                        });
                    }
                }
            }
            events::FILE_TRANSFERRED => self.transfers.push(parse(seq, ty, payload)?),
            events::FILE_REMOVED => {
                let _: FileRemoved = parse(seq, ty, payload)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The lists, sorted by id; an exec with no end in the chain is `lost`.
    pub fn finish(self) -> Result<(Vec<ExecRecord>, Vec<FileTransferred>), LedgerError> {
        if let Some(p) = self.problem {
            return Err(p);
        }
        let mut transfers = self.transfers;
        transfers.sort_by_key(|t| t.transfer_id);
        Ok((self.execs.into_values().collect(), transfers))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn started(id: u64) -> Value {
        json!({"execId": id, "argv": ["/bin/true"], "argvDigest": "sha256:aa", "cwd": null, "tty": false, "stdin": "none", "pid": 2})
    }

    fn exited(id: u64, code: i32) -> Value {
        json!({"execId": id, "status": {"kind": "exited", "code": code}, "durationMs": 3,
               "stdout": {"bytes": 0, "sha256": "sha256:e3"}, "stderr": {"bytes": 0, "sha256": "sha256:e3"}, "stdin": null})
    }

    #[test]
    fn execs_and_transfers_come_out_sorted_and_a_missing_end_is_lost() {
        let mut l = Ledger::default();
        l.feed(events::EXEC_STARTED, &started(2));
        l.feed(events::EXEC_STARTED, &started(1));
        l.feed(events::RESOURCE_SAMPLE, &json!({}));
        l.feed(events::EXEC_EXITED, &exited(1, 7));
        l.feed(
            events::FILE_TRANSFERRED,
            &json!({"transferId": 3, "direction": "in", "path": "/tmp/x", "kind": "file", "bytes": 1, "sha256": "sha256:bb"}),
        );
        let failed = json!({"execId": 4, "status": {"kind": "failed", "code": "SR-RUN-002", "phase": "launch.exec"},
                            "durationMs": 0, "stdout": {"bytes": 0, "sha256": "sha256:e3"}, "stderr": {"bytes": 0, "sha256": "sha256:e3"}, "stdin": null});
        l.feed(events::EXEC_EXITED, &failed);
        let (execs, transfers) = l.finish().unwrap();
        assert_eq!(execs.iter().map(|e| e.id).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(execs[0].status, ExecStatus::Exited { code: 7 });
        assert_eq!(execs[1].status, ExecStatus::Lost);
        assert_eq!(transfers.len(), 1);
        assert_eq!(transfers[0].direction, Direction::In);
    }

    #[test]
    fn an_inconsistent_chain_is_refused() {
        for events_in in [
            vec![
                (events::EXEC_STARTED, started(1)),
                (events::EXEC_STARTED, started(1)),
            ],
            vec![(events::EXEC_EXITED, exited(9, 0))],
            vec![
                (events::EXEC_STARTED, started(1)),
                (events::EXEC_EXITED, exited(1, 0)),
                (events::EXEC_EXITED, exited(1, 0)),
            ],
            vec![(events::EXEC_STARTED, json!({"execId": "one"}))],
        ] {
            let mut l = Ledger::default();
            for (ty, p) in &events_in {
                l.feed(ty, p);
            }
            assert!(l.finish().is_err(), "{events_in:?}");
        }
    }
}
