//! The workload's output streams under their limit (`runtime.output`, docs/run.md).
//!
//! [`StreamCut`] is the pure part: over the chunks a stream produces, it says which bytes are
//! kept and when the limit is first passed. [`tee`] is the thread that drains one pipe into the
//! saved copy (`stdout.log`/`stderr.log`) and the terminal through it. Past the limit the tee
//! keeps reading and discards what it reads, so the workload never blocks on a full pipe, and
//! it tells the runner once (`on_cut`); what the run does then (go on, or kill) is the runner's
//! decision, not the tee's.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};
use sr_bundle::{OutputAction, OutputPlan};

use crate::outcome::StreamFacts;

/// A terminal shared by the stderr tee and the notices of both tees (a notice about stdout
/// goes to stderr, between whole chunks of the workload's own stderr).
pub type SharedTerminal = Arc<Mutex<Box<dyn Write + Send>>>;

/// How much of a stream has been seen and kept against its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCut {
    limit: u64,
    seen: u64,
    kept: u64,
}

/// What to do with one chunk.
#[derive(Debug, PartialEq, Eq)]
pub struct Take<'a> {
    /// The part of the chunk that is kept (written to the saved copy and the terminal).
    pub keep: &'a [u8],
    /// True for the one chunk with which the stream first passes its limit.
    pub crossed: bool,
}

impl StreamCut {
    /// A stream that keeps at most `limit` bytes.
    pub fn new(limit: u64) -> Self {
        StreamCut {
            limit,
            seen: 0,
            kept: 0,
        }
    }

    /// Accounts for `chunk` and returns the part of it to keep.
    pub fn take<'a>(&mut self, chunk: &'a [u8]) -> Take<'a> {
        let was_truncated = self.truncated();
        let room = self.limit.saturating_sub(self.kept);
        let n = usize::try_from(room).map_or(chunk.len(), |room| room.min(chunk.len()));
        self.seen = self.seen.saturating_add(chunk.len() as u64);
        self.kept += n as u64;
        Take {
            keep: chunk.get(..n).unwrap_or_default(),
            crossed: !was_truncated && self.truncated(),
        }
    }

    /// Bytes seen so far, kept or not.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Bytes kept so far (never more than the limit).
    pub fn kept(&self) -> u64 {
        self.kept
    }

    /// Whether bytes were discarded.
    pub fn truncated(&self) -> bool {
        self.seen > self.kept
    }
}

/// The one line printed on the terminal's stderr when `stream` is cut.
pub fn cut_notice(stream: &str, plan: &OutputPlan) -> String {
    let then = match plan.on_limit {
        OutputAction::Truncate => "the rest is discarded and the run goes on",
        OutputAction::Kill => "the run is stopped (runtime.output.onLimit: kill)",
    };
    format!(
        "safe-run: {stream} cut at its limit of {} bytes (runtime.output.maxBytes); {then}\n",
        plan.max_bytes
    )
}

/// One stream's tee: where it reads, writes and reports.
pub struct Tee {
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    /// The read end of the workload's pipe.
    pub from: File,
    /// The saved copy.
    pub path: PathBuf,
    /// Where the kept bytes are streamed as they come.
    pub terminal: SharedTerminal,
    /// Where the cut notice goes (the terminal's stderr).
    pub notices: SharedTerminal,
    /// The limit.
    pub plan: OutputPlan,
}

fn write_locked(t: &SharedTerminal, bytes: &[u8]) {
    let mut t = t.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // A closed terminal must not stop the saved copy.
    let _ = t.write_all(bytes).and_then(|()| t.flush());
}

/// Starts the tee thread. `on_cut` is called once, when the stream first passes its limit.
pub fn tee(
    spec: Tee,
    on_cut: impl FnOnce() + Send + 'static,
) -> JoinHandle<Result<StreamFacts, String>> {
    std::thread::spawn(move || {
        let Tee {
            stream,
            mut from,
            path,
            terminal,
            notices,
            plan,
        } = spec;
        let mut file = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut hasher = Sha256::new();
        let mut cut = StreamCut::new(plan.max_bytes);
        let mut on_cut = Some(on_cut);
        let mut buf = vec![0u8; 64 * 1024];
        let mut file_err = None;
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.to_string()),
            };
            let take = cut.take(buf.get(..n).unwrap_or_default());
            if !take.keep.is_empty() {
                hasher.update(take.keep);
                write_locked(&terminal, take.keep);
                if file_err.is_none()
                    && let Err(e) = file.write_all(take.keep)
                {
                    file_err = Some(e.to_string());
                }
            }
            if take.crossed {
                write_locked(&notices, cut_notice(stream, &plan).as_bytes());
                if let Some(f) = on_cut.take() {
                    f();
                }
            }
        }
        if let Some(e) = file_err {
            return Err(format!("{}: {e}", path.display()));
        }
        Ok(StreamFacts {
            path,
            size: cut.kept(),
            sha256: format!("sha256:{}", hex::encode(hasher.finalize())),
            seen: cut.seen(),
            truncated: cut.truncated(),
            limit_bytes: plan.max_bytes,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` through a cut of `limit`; returns what was kept and the index of the
    /// chunk that crossed.
    fn run(limit: u64, chunks: &[&[u8]]) -> (Vec<u8>, Vec<usize>, StreamCut) {
        let mut cut = StreamCut::new(limit);
        let mut kept = Vec::new();
        let mut crossed = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let t = cut.take(c);
            kept.extend_from_slice(t.keep);
            if t.crossed {
                crossed.push(i);
            }
        }
        (kept, crossed, cut)
    }

    #[test]
    fn under_the_limit_everything_is_kept() {
        let (kept, crossed, cut) = run(10, &[b"abc", b"", b"defg"]);
        assert_eq!(kept, b"abcdefg");
        assert!(crossed.is_empty());
        assert_eq!((cut.seen(), cut.kept(), cut.truncated()), (7, 7, false));
    }

    #[test]
    fn exactly_the_limit_is_not_a_cut() {
        let (kept, crossed, cut) = run(6, &[b"abc", b"def", b""]);
        assert_eq!(kept, b"abcdef");
        assert!(crossed.is_empty());
        assert!(!cut.truncated());
    }

    #[test]
    fn the_chunk_that_passes_the_limit_is_split_and_crosses_once() {
        let (kept, crossed, cut) = run(5, &[b"abc", b"defg", b"hij", b"k"]);
        assert_eq!(kept, b"abcde");
        assert_eq!(crossed, vec![1]);
        assert_eq!((cut.seen(), cut.kept(), cut.truncated()), (11, 5, true));
    }

    #[test]
    fn a_limit_reached_exactly_crosses_with_the_next_byte() {
        let (kept, crossed, _) = run(3, &[b"abc", b"d", b"e"]);
        assert_eq!(kept, b"abc");
        assert_eq!(crossed, vec![1]);
    }

    #[test]
    fn eight_mib_under_one_mib_in_pipe_sized_chunks() {
        let chunk = vec![7u8; 65536];
        let chunks: Vec<&[u8]> = (0..128).map(|_| chunk.as_slice()).collect();
        let (kept, crossed, cut) = run(1 << 20, &chunks);
        assert_eq!(kept.len(), 1 << 20);
        assert_eq!(crossed, vec![16]);
        assert_eq!(cut.seen(), 8 << 20);
    }

    proptest::proptest! {
        /// However a stream is split into chunks, the kept bytes are its first `limit` bytes,
        /// every byte is seen, and the limit is crossed at most once.
        #[test]
        fn any_chunking_keeps_the_prefix(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
            cuts in proptest::collection::vec(0usize..2048, 0..16),
            limit in 0u64..2100,
        ) {
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            points.push(0);
            points.push(data.len());
            points.sort_unstable();
            let chunks: Vec<&[u8]> = points.windows(2).map(|w| &data[w[0]..w[1]]).collect();
            let (kept, crossed, cut) = run(limit, &chunks);
            let want = data.len().min(usize::try_from(limit).unwrap());
            proptest::prop_assert_eq!(&kept[..], &data[..want]);
            proptest::prop_assert_eq!(cut.seen(), data.len() as u64);
            proptest::prop_assert_eq!(cut.truncated(), data.len() as u64 > limit);
            proptest::prop_assert_eq!(crossed.len(), usize::from(cut.truncated()));
        }
    }

    #[test]
    fn notices_name_the_stream_the_limit_and_the_action() {
        let plan = OutputPlan {
            max_bytes: 1024,
            on_limit: OutputAction::Kill,
        };
        let n = cut_notice("stdout", &plan);
        assert!(n.contains("stdout") && n.contains("1024 bytes") && n.contains("kill"));
        assert!(n.ends_with('\n') && n.matches('\n').count() == 1);
    }
}
