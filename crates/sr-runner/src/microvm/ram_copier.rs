//! Who copies a snapshot's memory image into a restored VM's RAM, and in which cgroup.
//!
//! The kernel charges a page of shared memory to the memory cgroup of the process that first
//! wrote it, and it stays charged there for as long as the page lives. QEMU, whose RAM this
//! is, runs in the run's cgroup, whose limit bounds the VMM; pages the runner wrote would be
//! charged to safe-run's own cgroup instead (tens of MB per restored VM, for as long as it
//! lives), and the run's limit would not see them. So a binary that can host the copier
//! (`safe-run`, through its hidden [`SUBCOMMAND`]) calls [`copy_with`] once; from then on a
//! restore copies like this:
//!
//! 1. it starts `safe-run __copy-guest-memory <image> <size>` (a fresh exec, never a fork of
//!    the multi-threaded runner), the RAM as descriptor [`RAM_FD`], a pipe on stdin and one on
//!    stdout;
//! 2. it attaches that process to the run's cgroup, then writes one byte to its stdin. The
//!    copier writes nothing before that byte (end of file instead: it exits);
//! 3. the copier copies ([`super::memory_image::copy_pages`]) and prints the digest and byte
//!    count as one line; a thread of the runner waits for it. The copier dies with the
//!    runner (`PR_SET_PDEATHSIG`; the runner's spawner thread lives as long as it does), and
//!    the runner's stop waits for a copy under way, so nothing outlives a run.
//!
//! Without a host binary (this library's own tests) the copy runs on a thread of the caller,
//! charged to the caller's cgroup.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread::JoinHandle;

use command_fds::{CommandFdExt, FdMapping};

use super::memory_image::{self, Copied};
use crate::cgroup::{self, RunCgroup};

/// The hidden subcommand of the `safe-run` binary that runs the copier.
pub const SUBCOMMAND: &str = "__copy-guest-memory";
/// The copier's descriptor of the RAM it fills.
const RAM_FD: i32 = 3;

static COPY_WITH: OnceLock<PathBuf> = OnceLock::new();

/// Restores copy their memory images with `program SUBCOMMAND ...` from now on.
pub fn copy_with(program: PathBuf) {
    let _ = COPY_WITH.set(program);
}

/// A copy of a memory image into a RAM, under way; its result once joined.
pub type Copying = JoinHandle<std::io::Result<Copied>>;

/// Starts copying the non-zero pages of `image` into `ram` (`size` bytes each): from a
/// process in `cgroup` when a host binary was given ([`copy_with`]), else on a thread.
pub fn start(
    image: &Path,
    ram: File,
    size: u64,
    cgroup: Option<&RunCgroup>,
) -> std::io::Result<Copying> {
    let Some(program) = COPY_WITH.get() else {
        let image = File::open(image)?;
        return Ok(std::thread::spawn(move || {
            memory_image::copy_pages(&image, &ram, size)
        }));
    };
    let mut cmd = Command::new(program);
    cmd.arg(SUBCOMMAND)
        .arg(image)
        .arg(size.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.fd_mappings(vec![FdMapping {
        parent_fd: ram.into(),
        child_fd: RAM_FD,
    }])
    .map_err(std::io::Error::other)?;
    let mut child = crate::sandbox::spawner::spawn(cmd)?;
    if let Some(cg) = cgroup
        && let Err(e) = cg.attach(&cgroup::HostFs, child.id())
    {
        let _ = child.kill();
        let _ = child.wait();
        return Err(std::io::Error::other(format!(
            "attaching the memory copier to the run's cgroup: {e}"
        )));
    }
    let mut go = child.stdin.take();
    if let Some(Err(e)) = go.as_mut().map(|stdin| stdin.write_all(b"g")) {
        // It died before its go: reaped here, never left a zombie.
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    Ok(std::thread::spawn(move || {
        drop(go);
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out).read_line(&mut line)?;
        }
        let mut errors = String::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_string(&mut errors);
        }
        let status = child.wait()?;
        parse_answer(&line)
            .filter(|_| status.success())
            .ok_or_else(|| {
                std::io::Error::other(format!(
                    "the memory copier failed ({status}): {}",
                    errors.trim()
                ))
            })
    }))
}

/// The copier's line: `<sha256:hex> <bytes>`.
fn parse_answer(line: &str) -> Option<Copied> {
    let (sha256, bytes) = line.trim_end().split_once(' ')?;
    sha256.strip_prefix("sha256:")?;
    Some(Copied {
        sha256: sha256.to_owned(),
        bytes: bytes.parse().ok()?,
    })
}

/// The copier's entry point (`safe-run __copy-guest-memory <image> <size>`); its exit code.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> u8 {
    let args: Vec<std::ffi::OsString> = args.into_iter().collect();
    let (Some(image), Some(size), 2) = (args.first(), args.get(1), args.len()) else {
        eprintln!("usage: safe-run {SUBCOMMAND} <image> <size>");
        return 2;
    };
    let Some(size) = size.to_str().and_then(|s| s.parse::<u64>().ok()) else {
        eprintln!("{SUBCOMMAND}: the size is not a number of bytes");
        return 2;
    };
    // A runner that dies takes its copier with it (before the go, the pipe's end does).
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    // Nothing is written before the runner has put this process in the run's cgroup.
    let mut go = [0u8; 1];
    if !matches!(std::io::stdin().read(&mut go), Ok(1)) {
        return 3;
    }
    // The RAM the runner mapped in, reopened by its path: no descriptor is adopted blindly.
    let ram = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{RAM_FD}"))
    {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_file() && m.len() == size) => f,
        Ok(_) => {
            eprintln!("{SUBCOMMAND}: descriptor {RAM_FD} is not a guest RAM of {size} bytes");
            return 4;
        }
        Err(e) => {
            eprintln!("{SUBCOMMAND}: descriptor {RAM_FD}: {e}");
            return 4;
        }
    };
    let copied = File::open(image).and_then(|image| memory_image::copy_pages(&image, &ram, size));
    match copied {
        Ok(c) => {
            println!("{} {}", c.sha256, c.bytes);
            0
        }
        Err(e) => {
            eprintln!("{SUBCOMMAND}: {}: {e}", Path::new(image).display());
            5
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    #[test]
    fn the_copiers_line_is_read_strictly() {
        let ok = parse_answer("sha256:ab12 4096\n").unwrap();
        assert_eq!((ok.sha256.as_str(), ok.bytes), ("sha256:ab12", 4096));
        for bad in [
            "",
            "sha256:ab12",
            "md5:ab 1",
            "sha256:ab -1",
            "sha256:ab 1 2",
        ] {
            assert_eq!(parse_answer(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn without_a_host_binary_the_copy_runs_on_a_thread() {
        let size = 8 * memory_image::PAGE as u64;
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("memory.bin");
        let f = File::create(&image).unwrap();
        f.set_len(size).unwrap();
        f.write_all_at(&[9u8; memory_image::PAGE], 2 * memory_image::PAGE as u64)
            .unwrap();
        let ram = memory_image::guest_ram(size).unwrap();
        let copied = start(&image, ram.try_clone().unwrap(), size, None)
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        assert_eq!(copied.bytes, memory_image::PAGE as u64);
        let mut page = vec![0u8; memory_image::PAGE];
        ram.read_exact_at(&mut page, 2 * memory_image::PAGE as u64)
            .unwrap();
        assert!(page.iter().all(|b| *b == 9));
    }
}
