//! The archive database: the run index and the log's nodes and checkpoints, in one SQLite file.
//!
//! * WAL mode, `busy_timeout` 10 s, `synchronous = FULL` (a signed checkpoint must never name
//!   a leaf that a power loss could take back), foreign keys on. A run's append leaves the WAL
//!   in place on close ([`Archive::open_appending`]); other writers fold it in.
//! * Migrations are numbered by `PRAGMA user_version`; each runs in one `BEGIN IMMEDIATE`
//!   transaction that re-reads the version first, so two processes opening a fresh archive at
//!   once migrate it once. A database newer than this build is refused.
//! * Indexing a run and appending its leaf happen in one `BEGIN IMMEDIATE` transaction: many
//!   runs finishing at once serialize on the write lock and never interleave half-appends.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::checkpoint::Checkpoint;
use crate::error::ArchiveError;
use crate::merkle::{self, Hash, NodeSource};
use crate::record::RunRecord;

/// The schema, one entry per version (`user_version` = index + 1).
const MIGRATIONS: &[&str] = &[
    // v1
    "CREATE TABLE runs (
        run_id TEXT PRIMARY KEY NOT NULL,
        started_at TEXT NOT NULL,
        started_ms INTEGER NOT NULL,
        ended_at TEXT NOT NULL,
        duration_ms INTEGER NOT NULL,
        policy_name TEXT NOT NULL,
        policy_digest TEXT NOT NULL,
        backend TEXT NOT NULL,
        command TEXT NOT NULL,
        command_attested INTEGER NOT NULL,
        status TEXT NOT NULL,
        exit_code INTEGER,
        signal INTEGER,
        limits_hit TEXT NOT NULL,
        blocked TEXT NOT NULL,
        blocked_count INTEGER NOT NULL,
        blocked_packets INTEGER NOT NULL,
        report_digest TEXT NOT NULL,
        integrity_digest TEXT NOT NULL,
        keyid TEXT,
        run_dir TEXT NOT NULL,
        leaf_index INTEGER UNIQUE,
        indexed_at TEXT NOT NULL
    );
    CREATE INDEX runs_started ON runs(started_ms);
    CREATE INDEX runs_status ON runs(status, started_ms);
    CREATE INDEX runs_policy ON runs(policy_name, started_ms);
    CREATE INDEX runs_run_dir ON runs(run_dir);
    CREATE TABLE log_nodes (
        level INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        hash BLOB NOT NULL,
        PRIMARY KEY (level, idx)
    ) WITHOUT ROWID;
    CREATE TABLE checkpoints (
        id INTEGER PRIMARY KEY,
        tree_size INTEGER NOT NULL,
        body TEXT NOT NULL
    );",
];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a statement waits for another process's lock before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// An open archive.
pub struct Archive {
    conn: Connection,
    path: PathBuf,
    /// An appending connection's WAL size past which a commit folds it in and empties it.
    wal_limit: Option<u64>,
}

/// The WAL size past which an appending connection folds the WAL into the database and
/// empties it: 128 pages of 4 KiB, about 15 runs. Small on purpose: every `safe-run run`
/// opens the archive as its only connection, and SQLite then rebuilds the WAL's index by
/// reading and checksumming the whole WAL (its `-shm` is reset by the first connection). At
/// SQLite's own auto-checkpoint size (1,000 pages) that was up to 4 MiB and 2.5 ms per run;
/// the fold it costs instead is about 1 ms once in 15 runs.
pub const WAL_LIMIT_BYTES: u64 = 128 * 4096;

/// A run as the index holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchivedRun {
    /// The facts.
    #[serde(flatten)]
    pub record: RunRecord,
    /// Its leaf in the log.
    pub leaf_index: Option<u64>,
    /// When it was indexed.
    pub indexed_at: String,
}

/// What [`Archive::record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Indexed now; its leaf is at this index and the tree has `tree_size` leaves.
    New {
        /// Leaf index.
        leaf_index: u64,
        /// Tree size after the append.
        tree_size: u64,
    },
    /// It was already indexed with the same report digest.
    Already {
        /// Leaf index.
        leaf_index: u64,
    },
}

impl Recorded {
    /// The run's leaf index.
    pub fn leaf_index(self) -> u64 {
        match self {
            Recorded::New { leaf_index, .. } | Recorded::Already { leaf_index } => leaf_index,
        }
    }
}

/// Filters of [`Archive::list`]; `None` is "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Runs started at or after this time (Unix milliseconds).
    pub since: Option<u64>,
    /// Exit status (`exited`, `timeout`, ...).
    pub status: Option<String>,
    /// Policy name, or policy digest when it starts with `sha256:`.
    pub policy: Option<String>,
    /// Substring of the command line (case-sensitive).
    pub command: Option<String>,
    /// Backend.
    pub backend: Option<String>,
    /// `Some(true)`: only runs with blocked destinations; `Some(false)`: only runs without.
    pub blocked: Option<bool>,
    /// At most this many (newest first); 0 is no limit.
    pub limit: u64,
}

fn store_err(
    path: &Path,
    action: impl Into<String>,
) -> impl FnOnce(rusqlite::Error) -> ArchiveError {
    let path = path.to_owned();
    let action = action.into();
    move |source| ArchiveError::Store {
        path,
        action,
        source,
    }
}

/// The log's nodes as the db holds them.
struct DbNodes<'a>(&'a Connection);

impl NodeSource for DbNodes<'_> {
    type Error = rusqlite::Error;
    fn node(&self, level: u32, index: u64) -> Result<Hash, rusqlite::Error> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT hash FROM log_nodes WHERE level = ?1 AND idx = ?2")?;
        let bytes: Vec<u8> = stmt.query_row(params![level, to_i64(index)], |r| r.get(0))?;
        bytes.try_into().map_err(|_| {
            rusqlite::Error::InvalidColumnType(0, "hash".into(), rusqlite::types::Type::Blob)
        })
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn tree_size_in(conn: &Connection) -> rusqlite::Result<u64> {
    let n: i64 = conn.query_row(
        "SELECT COALESCE(MAX(idx) + 1, 0) FROM log_nodes WHERE level = 0",
        [],
        |r| r.get(0),
    )?;
    Ok(to_u64(n))
}

/// Appends one leaf (O(log n) node writes); returns its index.
fn append_leaf(conn: &Connection, entry: &[u8; 32]) -> rusqlite::Result<u64> {
    let size = tree_size_in(conn)?;
    let nodes = merkle::append_nodes(&DbNodes(conn), size, merkle::leaf_hash(entry))?;
    let mut stmt =
        conn.prepare_cached("INSERT INTO log_nodes (level, idx, hash) VALUES (?1, ?2, ?3)")?;
    for (level, index, hash) in nodes {
        stmt.execute(params![level, to_i64(index), hash.as_slice()])?;
    }
    Ok(size)
}

const RUN_COLUMNS: &str = "run_id, started_at, ended_at, duration_ms, policy_name, policy_digest, backend, command, \
     command_attested, status, exit_code, signal, limits_hit, blocked, blocked_packets, report_digest, \
     integrity_digest, keyid, run_dir, leaf_index, indexed_at";

fn row_to_run(r: &rusqlite::Row<'_>) -> rusqlite::Result<ArchivedRun> {
    let list = |i: usize| -> rusqlite::Result<Vec<String>> {
        let text: String = r.get(i)?;
        Ok(serde_json::from_str(&text).unwrap_or_default())
    };
    Ok(ArchivedRun {
        record: RunRecord {
            run_id: r.get(0)?,
            started_at: r.get(1)?,
            ended_at: r.get(2)?,
            duration_ms: to_u64(r.get(3)?),
            policy_name: r.get(4)?,
            policy_digest: r.get(5)?,
            backend: r.get(6)?,
            command: r.get(7)?,
            command_attested: r.get(8)?,
            status: r.get(9)?,
            exit_code: r.get(10)?,
            signal: r.get(11)?,
            limits_hit: list(12)?,
            blocked: list(13)?,
            blocked_packets: to_u64(r.get(14)?),
            report_digest: r.get(15)?,
            integrity_digest: r.get(16)?,
            keyid: r.get(17)?,
            run_dir: r.get(18)?,
        },
        leaf_index: r.get::<_, Option<i64>>(19)?.map(to_u64),
        indexed_at: r.get(20)?,
    })
}

/// What closing a read-write connection does with the WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// Checkpoint it into the database and delete it (SQLite's default, last connection only).
    Fold,
    /// Leave it for the next connection; fold it in and empty it once a commit finds it
    /// larger than this many bytes.
    Keep(u64),
}

/// Switches the database to WAL (persistent, so later opens only read it). Switching a fresh
/// file needs an exclusive lock, and SQLite answers `SQLITE_BUSY` to that without calling the
/// busy handler when another process is opening the same file at the same moment: retry with a
/// short backoff for as long as the busy timeout would have waited.
fn enable_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
            Ok(_) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

impl Archive {
    /// Opens (creating, 0700 directory) and migrates the archive at `path`. Closing the last
    /// connection folds the WAL into the database file.
    pub fn open(path: &Path) -> Result<Archive, ArchiveError> {
        Archive::open_with(path, Close::Fold)
    }

    /// [`Archive::open`] for a writer on the path a user waits for (`safe-run run`, once per
    /// run): closing leaves the WAL and its index in place instead of folding the WAL into the
    /// database, deleting both files and creating them again at the next open (two fsyncs, two
    /// unlinks and two inode allocations per run, about half of the append's cost here). Every
    /// commit is as durable as with [`Archive::open`] (`synchronous = FULL`: the WAL is synced
    /// before the commit returns). A commit that leaves the WAL larger than [`WAL_LIMIT_BYTES`]
    /// folds it into the database and empties it (`wal_checkpoint(TRUNCATE)`), once in about
    /// 15 runs; SQLite's own auto-checkpoint is off on this connection, because it folds the
    /// WAL without emptying it: the next writer then kept appending, and every commit from
    /// then on paid a checkpoint and a sync of the database while the WAL grew without bound.
    /// Any connection opened with [`Archive::open`] folds the WAL on close.
    pub fn open_appending(path: &Path) -> Result<Archive, ArchiveError> {
        Archive::open_with(path, Close::Keep(WAL_LIMIT_BYTES))
    }

    /// [`Archive::open_appending`] with another WAL limit (tests and benchmarks).
    pub fn open_appending_with_wal_limit(
        path: &Path,
        wal_limit: u64,
    ) -> Result<Archive, ArchiveError> {
        Archive::open_with(path, Close::Keep(wal_limit))
    }

    fn open_with(path: &Path, close: Close) -> Result<Archive, ArchiveError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| ArchiveError::Unreadable {
                    path: parent.to_owned(),
                    reason: format!("cannot create the archive directory: {e}"),
                })?;
        }
        let conn = Connection::open(path).map_err(store_err(path, "open"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(store_err(path, "set busy_timeout"))?;
        enable_wal(&conn).map_err(store_err(path, "enable WAL"))?;
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(store_err(path, "set pragmas"))?;
        let wal_limit = match close {
            Close::Keep(limit) => {
                conn.set_db_config(
                    rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                    true,
                )
                .map_err(store_err(path, "keep the WAL on close"))?;
                conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")
                    .map_err(store_err(path, "set pragmas"))?;
                Some(limit)
            }
            Close::Fold => None,
        };
        let mut archive = Archive {
            conn,
            path: path.to_owned(),
            wal_limit,
        };
        archive.migrate()?;
        Ok(archive)
    }

    /// Opens an existing archive read-only (no WAL switch, no migration), for queries. In a
    /// directory the reader cannot write, SQLite cannot create the WAL index (`-shm`): the file
    /// is then read as immutable, which is exact for a copy (nothing writes it) and refused when
    /// a non-empty `-wal` beside it holds commits that reading it immutable would miss. An
    /// archive of an older schema must be opened once read-write first.
    pub fn open_read_only(path: &Path) -> Result<Archive, ArchiveError> {
        use rusqlite::OpenFlags;
        let open = |target: &str, extra: OpenFlags| {
            let conn = Connection::open_with_flags(
                target,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | extra,
            )
            .map_err(store_err(path, "open read-only"))?;
            conn.busy_timeout(BUSY_TIMEOUT)
                .map_err(store_err(path, "set busy_timeout"))?;
            Ok::<_, ArchiveError>(Archive {
                conn,
                path: path.to_owned(),
                wal_limit: None,
            })
        };
        let target = path.display().to_string();
        let mut archive = open(&target, OpenFlags::empty())?;
        let version = match archive.schema_version() {
            Ok(v) => v,
            Err(ArchiveError::Store {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            }) if e.code == rusqlite::ErrorCode::ReadOnly
                || e.code == rusqlite::ErrorCode::CannotOpen =>
            {
                let mut wal = path.as_os_str().to_owned();
                wal.push("-wal");
                if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
                    return Err(ArchiveError::Unreadable {
                        path: path.to_owned(),
                        reason: "the directory is not writable and a non-empty -wal file holds commits not yet in the database; copy the archive with `sqlite3 DB .backup COPY` and read the copy".into(),
                    });
                }
                let uri = format!("file:{}?immutable=1", uri_path(path));
                archive = open(&uri, OpenFlags::SQLITE_OPEN_URI)?;
                archive.schema_version()?
            }
            Err(e) => return Err(e),
        };
        if version != SCHEMA_VERSION {
            return Err(ArchiveError::TooNew {
                path: path.to_owned(),
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        Ok(archive)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn migrate(&mut self) -> Result<(), ArchiveError> {
        let path = self.path.clone();
        let version =
            |c: &Connection| c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0));
        let current = version(&self.conn).map_err(store_err(&path, "read user_version"))?;
        if current > SCHEMA_VERSION {
            return Err(ArchiveError::TooNew {
                path,
                found: current,
                known: SCHEMA_VERSION,
            });
        }
        if current == SCHEMA_VERSION {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(store_err(&path, "migrate"))?;
        // Another process may have migrated while we waited for the lock.
        let current = version(&tx).map_err(store_err(&path, "read user_version"))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(to_u64(current) as usize) {
            let v = i + 1;
            tx.execute_batch(sql)
                .map_err(store_err(&path, format!("migrate to v{v}")))?;
            tx.execute_batch(&format!("PRAGMA user_version = {v}"))
                .map_err(store_err(&path, format!("migrate to v{v}")))?;
        }
        tx.commit().map_err(store_err(&path, "migrate"))
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, ArchiveError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(store_err(&self.path, "read user_version"))
    }

    /// Indexes a run and appends its leaf, in one transaction. A run already indexed with the
    /// same report digest is left as it is; with another digest it is refused as tampered (the
    /// archive never replaces what it recorded).
    pub fn record(&mut self, rec: &RunRecord) -> Result<Recorded, ArchiveError> {
        let path = self.path.clone();
        let action = format!("index run {}", rec.run_id);
        let entry = rec.entry().map_err(|reason| ArchiveError::Unreadable {
            path: rec.report_path(),
            reason,
        })?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(store_err(&path, action.clone()))?;
        let existing: Option<(String, Option<i64>)> = tx
            .query_row(
                "SELECT report_digest, leaf_index FROM runs WHERE run_id = ?1",
                [&rec.run_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(store_err(&path, action.clone()))?;
        if let Some((digest, leaf)) = existing {
            if digest != rec.report_digest {
                return Err(ArchiveError::Tampered {
                    run_id: rec.run_id.clone(),
                    reason: format!(
                        "its report now has digest {}, the archive recorded {digest}",
                        rec.report_digest
                    ),
                });
            }
            if let Some(leaf) = leaf {
                return Ok(Recorded::Already {
                    leaf_index: to_u64(leaf),
                });
            }
        }
        let leaf_index = append_leaf(&tx, &entry).map_err(store_err(&path, action.clone()))?;
        let now = now_rfc3339();
        tx.execute(
            &format!(
                "INSERT INTO runs ({RUN_COLUMNS}, blocked_count, started_ms) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23) \
                 ON CONFLICT(run_id) DO UPDATE SET leaf_index = excluded.leaf_index"
            ),
            params![
                rec.run_id,
                rec.started_at,
                rec.ended_at,
                to_i64(rec.duration_ms),
                rec.policy_name,
                rec.policy_digest,
                rec.backend,
                rec.command,
                rec.command_attested,
                rec.status,
                rec.exit_code,
                rec.signal,
                serde_json::to_string(&rec.limits_hit).unwrap_or_else(|_| "[]".into()),
                serde_json::to_string(&rec.blocked).unwrap_or_else(|_| "[]".into()),
                to_i64(rec.blocked_packets),
                rec.report_digest,
                rec.integrity_digest,
                rec.keyid,
                rec.run_dir,
                to_i64(leaf_index),
                now,
                to_i64(rec.blocked.len() as u64),
                to_i64(unix_ms(&rec.started_at)),
            ],
        )
        .map_err(store_err(&path, action.clone()))?;
        tx.commit().map_err(store_err(&path, action))?;
        self.fold_large_wal();
        Ok(Recorded::New {
            leaf_index,
            tree_size: leaf_index + 1,
        })
    }

    /// Appends leaves for `entries` without index rows, in one transaction. For importing a
    /// log and for benchmarks; runs are appended by [`Archive::record`].
    pub fn append_entries(&mut self, entries: &[[u8; 32]]) -> Result<u64, ArchiveError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(store_err(&path, "append"))?;
        for e in entries {
            append_leaf(&tx, e).map_err(store_err(&path, "append"))?;
        }
        let size = tree_size_in(&tx).map_err(store_err(&path, "append"))?;
        tx.commit().map_err(store_err(&path, "append"))?;
        self.fold_large_wal();
        Ok(size)
    }

    /// After a commit of an appending connection: folds the WAL into the database and empties
    /// it once it is larger than the connection's limit. The commit is durable already; a fold
    /// that fails or finds readers in the way (`SQLITE_BUSY` after the busy timeout) is left
    /// to a later commit.
    fn fold_large_wal(&self) {
        let Some(limit) = self.wal_limit else {
            return;
        };
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > limit) {
            let _ = self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
    }

    /// The run with this id.
    pub fn get(&self, run_id: &str) -> Result<Option<ArchivedRun>, ArchiveError> {
        self.conn
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?1"),
                [run_id],
                row_to_run,
            )
            .optional()
            .map_err(store_err(&self.path, "read run"))
    }

    /// The run that `what` names: a run id, a run dir, or a report path.
    pub fn resolve(&self, what: &str) -> Result<ArchivedRun, ArchiveError> {
        if let Some(run) = self.get(what)? {
            return Ok(run);
        }
        let p = Path::new(what);
        let dir = if p
            .file_name()
            .is_some_and(|n| n == sr_evidence::report::REPORT_FILE)
        {
            p.parent().unwrap_or(p)
        } else {
            p
        };
        let mut candidates = vec![dir.display().to_string()];
        if let Ok(abs) = std::fs::canonicalize(dir) {
            candidates.push(abs.display().to_string());
        }
        for c in candidates {
            let found = self
                .conn
                .query_row(
                    &format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_dir = ?1"),
                    [&c],
                    row_to_run,
                )
                .optional()
                .map_err(store_err(&self.path, "read run"))?;
            if let Some(run) = found {
                return Ok(run);
            }
        }
        // A run dir named by its id under some other base.
        if let Some(name) = dir.file_name().and_then(|n| n.to_str())
            && let Some(run) = self.get(name)?
        {
            return Ok(run);
        }
        Err(ArchiveError::NotFound {
            what: what.to_owned(),
        })
    }

    /// Runs matching `filter`, newest first.
    pub fn list(&self, filter: &Filter) -> Result<Vec<ArchivedRun>, ArchiveError> {
        let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut add = |clause: &str, v: rusqlite::types::Value| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        use rusqlite::types::Value as V;
        if let Some(s) = &filter.since {
            add(" AND started_ms >= ?", V::Integer(to_i64(*s)));
        }
        if let Some(s) = &filter.status {
            add(" AND status = ?", V::Text(s.clone()));
        }
        if let Some(p) = &filter.policy {
            if p.starts_with("sha256:") {
                add(" AND policy_digest = ?", V::Text(p.clone()));
            } else {
                add(" AND policy_name = ?", V::Text(p.clone()));
            }
        }
        if let Some(c) = &filter.command {
            add(" AND instr(command, ?) > 0", V::Text(c.clone()));
        }
        if let Some(b) = &filter.backend {
            add(" AND backend = ?", V::Text(b.clone()));
        }
        match filter.blocked {
            Some(true) => sql.push_str(" AND blocked_count > 0"),
            Some(false) => sql.push_str(" AND blocked_count = 0"),
            None => {}
        }
        // A substring filter matches few rows: walking the start-time index and fetching every
        // row through it costs twice a plain scan and sort (measured at 100,000 runs), so the
        // `+` keeps the index out of the ordering then.
        if filter.command.is_some() {
            sql.push_str(" ORDER BY +started_ms DESC, run_id DESC");
        } else {
            sql.push_str(" ORDER BY started_ms DESC, run_id DESC");
        }
        if filter.limit > 0 {
            sql.push_str(&format!(" LIMIT {}", filter.limit));
        }
        let mut stmt = self
            .conn
            .prepare(&sql)
            .map_err(store_err(&self.path, "list runs"))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), row_to_run)
            .map_err(store_err(&self.path, "list runs"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(store_err(&self.path, "list runs"))
    }

    /// Number of indexed runs.
    pub fn count(&self) -> Result<u64, ArchiveError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get::<_, i64>(0))
            .map(to_u64)
            .map_err(store_err(&self.path, "count runs"))
    }

    /// Number of leaves in the log.
    pub fn tree_size(&self) -> Result<u64, ArchiveError> {
        tree_size_in(&self.conn).map_err(store_err(&self.path, "read tree size"))
    }

    /// `MTH` of the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, ArchiveError> {
        self.check_size(size)?;
        merkle::root(&DbNodes(&self.conn), size).map_err(store_err(&self.path, "read log"))
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Result<Hash, ArchiveError> {
        DbNodes(&self.conn)
            .node(0, index)
            .map_err(store_err(&self.path, "read log"))
    }

    /// `PATH(index, D[size])`.
    pub fn inclusion_path(&self, index: u64, size: u64) -> Result<Vec<Hash>, ArchiveError> {
        self.check_size(size)?;
        if index >= size {
            return Err(ArchiveError::Proof {
                what: "inclusion proof".into(),
                reason: format!("leaf {index} is not in a tree of {size} leaves"),
            });
        }
        merkle::inclusion_path(&DbNodes(&self.conn), index, size)
            .map_err(store_err(&self.path, "read log"))
    }

    /// `PROOF(old, D[new])`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ArchiveError> {
        self.check_size(new)?;
        if old > new {
            return Err(ArchiveError::Proof {
                what: "consistency proof".into(),
                reason: format!("old size {old} is larger than new size {new}"),
            });
        }
        merkle::consistency_proof(&DbNodes(&self.conn), old, new)
            .map_err(store_err(&self.path, "read log"))
    }

    fn check_size(&self, size: u64) -> Result<(), ArchiveError> {
        let have = self.tree_size()?;
        if size > have {
            return Err(ArchiveError::Proof {
                what: "log".into(),
                reason: format!("this log has {have} leaves, not {size}"),
            });
        }
        Ok(())
    }

    /// Signs a checkpoint of the current tree and stores it.
    pub fn checkpoint(
        &mut self,
        key: &sr_evidence::SigningKey,
    ) -> Result<Checkpoint, ArchiveError> {
        let path = self.path.clone();
        // A read transaction: the size and root belong to one state of the tree.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(store_err(&path, "checkpoint"))?;
        let size = tree_size_in(&tx).map_err(store_err(&path, "checkpoint"))?;
        let root = merkle::root(&DbNodes(&tx), size).map_err(store_err(&path, "checkpoint"))?;
        let cp = Checkpoint::sign(size, &root, &now_rfc3339(), key);
        let body = serde_json::to_string(&cp).unwrap_or_default();
        tx.execute(
            "INSERT INTO checkpoints (tree_size, body) VALUES (?1, ?2)",
            params![to_i64(size), body],
        )
        .map_err(store_err(&path, "store checkpoint"))?;
        tx.commit().map_err(store_err(&path, "store checkpoint"))?;
        Ok(cp)
    }

    /// The newest stored checkpoint.
    pub fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, ArchiveError> {
        let body: Option<String> = self
            .conn
            .query_row(
                "SELECT body FROM checkpoints ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(store_err(&self.path, "read checkpoint"))?;
        Ok(body.and_then(|b| serde_json::from_str(&b).ok()))
    }

    /// Every run whose `run_dir` no longer exists or whose report changed; see
    /// [`crate::check_report`].
    pub fn audit(&self) -> Result<Vec<(ArchivedRun, crate::ReportState)>, ArchiveError> {
        let all = self.list(&Filter::default())?;
        Ok(all
            .into_iter()
            .map(|r| {
                let state = crate::check_report(&r.record, true);
                (r, state)
            })
            .filter(|(_, s)| *s != crate::ReportState::Intact)
            .collect())
    }
}

/// Now, RFC 3339 UTC with milliseconds (the reports' format).
pub fn now_rfc3339() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    sr_evidence::report::rfc3339_from_unix_ms(ms)
}

/// Unix milliseconds of an RFC 3339 time (0 when it does not parse): the sort key, since the
/// reports' strings drop trailing zero fractions and so do not sort as text.
pub fn unix_ms(text: &str) -> u64 {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_or(0, |t| {
            u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
        })
}

/// `path` for a `file:` URI: `%`, `?` and `#` percent-encoded.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.display().to_string().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}
