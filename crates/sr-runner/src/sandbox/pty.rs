//! Pseudo-terminals for execs with a tty: allocating a pair from a given `ptmx` (inside the
//! sandbox, the private devpts instance the mount plan puts at `/dev/pts`), the window size, and
//! the child side that makes the slave its controlling terminal and stdio.
//!
//! Pid 1 allocates the pair and keeps the master to relay; the exec's child gets the slave. The
//! raw ioctls live in [`super::sys`]; this module is safe code.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl, open};
use nix::sys::stat::Mode;

use super::sys;

/// Major numbers of Unix98 pty slaves: 136 up to 143 (8 x 256 slaves per devpts instance
/// numbering).
const PTY_SLAVE_MAJOR_FIRST: u64 = 136;
const PTY_SLAVE_MAJOR_LAST: u64 = 143;

/// A pseudo-terminal pair. Both ends are close-on-exec and neither is anyone's controlling
/// terminal yet.
#[derive(Debug)]
pub struct Pty {
    /// The side the relay reads output from and writes input to.
    pub master: OwnedFd,
    /// The side the exec gets as its terminal (see [`make_controlling_terminal`]).
    pub slave: OwnedFd,
}

/// An I/O error that keeps its kind and says what was being done, on what, and what to check.
fn context(e: impl Into<io::Error>, what: String, hint: &str) -> io::Error {
    let e = e.into();
    io::Error::new(e.kind(), format!("{what}: {e}; hint: {hint}"))
}

/// Opens a new pty pair from `ptmx` (a devpts `ptmx` node, or `/dev/ptmx`, which Linux resolves
/// to the devpts instance at the `pts` directory beside it).
///
/// The slave is opened through the master (`TIOCGPTPEER`), so it comes from the same instance
/// whatever the paths look like; kernels without it get the slave by name beside `ptmx`,
/// checked to be the master's peer by its device number.
pub fn open_pty(ptmx: &Path) -> io::Result<Pty> {
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = open(ptmx, flags, Mode::empty()).map_err(|e| {
        context(
            e,
            format!("open pty master {}", ptmx.display()),
            "the sandbox's /dev needs its devpts instance (dev/pts, ptmx -> pts/ptmx)",
        )
    })?;
    sys::pty_unlock(master.as_fd()).map_err(|e| {
        context(
            e,
            format!("unlock pty from {}", ptmx.display()),
            "is it a ptmx node?",
        )
    })?;
    let slave = match sys::pty_peer(master.as_fd(), flags.bits()) {
        Ok(slave) => slave,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTTY)) => {
            open_slave_by_name(&master, ptmx, flags)?
        }
        Err(e) => {
            return Err(context(
                e,
                format!("open pty slave from {}", ptmx.display()),
                "the devpts instance may be out of ptys (its max= option)",
            ));
        }
    };
    Ok(Pty { master, slave })
}

/// The slave of `master` opened by its path, for kernels before `TIOCGPTPEER` (4.13).
fn open_slave_by_name(master: &OwnedFd, ptmx: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    let n = sys::pty_number(master.as_fd()).map_err(|e| {
        context(
            e,
            format!("pty number from {}", ptmx.display()),
            "is it a ptmx node?",
        )
    })?;
    let path = slave_path(ptmx, n)?;
    let slave = open(&path, flags | OFlag::O_NOFOLLOW, Mode::empty()).map_err(|e| {
        context(
            e,
            format!("open pty slave {}", path.display()),
            "the devpts instance must be mounted at the pts directory beside ptmx",
        )
    })?;
    let rdev = fs::metadata(format!("/proc/self/fd/{}", slave.as_raw_fd()))
        .map_err(|e| context(e, format!("fstat {}", path.display()), "is /proc mounted?"))?
        .rdev();
    if slave_index(rdev) != Some(n) {
        return Err(io::Error::other(format!(
            "{} is not the slave of pty {n} from {}; hint: another devpts instance is mounted there",
            path.display(),
            ptmx.display()
        )));
    }
    Ok(slave)
}

/// Where slave `n` of the instance behind `ptmx` lives: beside it when `ptmx` is the instance's
/// own node (`.../pts/ptmx`), else in the `pts` directory beside it (`/dev/ptmx`).
fn slave_path(ptmx: &Path, n: u32) -> io::Result<PathBuf> {
    let real = fs::canonicalize(ptmx)
        .map_err(|e| context(e, format!("resolve {}", ptmx.display()), "does it exist?"))?;
    let dir = real
        .parent()
        .ok_or_else(|| io::Error::other(format!("{} has no parent directory", real.display())))?;
    Ok(if dir.file_name().is_some_and(|d| d == "pts") {
        dir.join(n.to_string())
    } else {
        dir.join("pts").join(n.to_string())
    })
}

/// The pty index of a slave device number, `None` for any other device.
fn slave_index(rdev: u64) -> Option<u32> {
    let major = libc::major(rdev) as u64;
    let minor = libc::minor(rdev) as u64;
    (PTY_SLAVE_MAJOR_FIRST..=PTY_SLAVE_MAJOR_LAST)
        .contains(&major)
        .then(|| ((major - PTY_SLAVE_MAJOR_FIRST) * 256 + minor) as u32)
}

/// Sets the window size of the terminal open as `fd` (either end of a pair).
pub fn set_window_size(fd: impl AsFd, rows: u16, cols: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    sys::set_winsize(fd.as_fd(), &size)
}

/// The window size of the terminal open as `fd`: (rows, cols).
pub fn window_size(fd: impl AsFd) -> io::Result<(u16, u16)> {
    let size = sys::get_winsize(fd.as_fd())?;
    Ok((size.ws_row, size.ws_col))
}

/// Gives the slave to the exec's (host) uid and gid, so a program that reopens its terminal by
/// name (`ttyname`, then open) can: pid 1 allocated it, so root owns it until then.
pub fn give_to(slave: &OwnedFd, uid: u32, gid: u32) -> io::Result<()> {
    nix::unistd::fchown(
        slave,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .map_err(|e| {
        context(
            e,
            format!("chown the pty slave to {uid}:{gid}"),
            "pid 1 must still be root",
        )
    })
}

/// The exec's side, in the child between fork and exec: starts a new session, makes `slave`
/// its controlling terminal and its stdin, stdout and stderr. The caller closes `slave` (or
/// lets its close-on-exec do it) afterwards.
///
/// Calling it in a process that already leads a session is fine; in a process group leader
/// that does not, `setsid` fails (EPERM) and so does this.
pub fn make_controlling_terminal(slave: &OwnedFd) -> io::Result<()> {
    let pid = nix::unistd::getpid();
    if let Err(e) = nix::unistd::setsid() {
        if nix::unistd::getsid(None).ok() != Some(pid) {
            return Err(context(
                e,
                "setsid before taking the pty".into(),
                "fork first: a process group leader cannot start a session",
            ));
        }
    }
    sys::set_controlling_terminal(slave.as_fd()).map_err(|e| {
        context(
            e,
            "make the pty the controlling terminal (TIOCSCTTY)".into(),
            "the pty must not be another session's terminal",
        )
    })?;
    let dup = |r: nix::Result<()>, name: &str| {
        r.map_err(|e| {
            context(
                e,
                format!("dup the pty onto {name}"),
                "is the slave still open?",
            )
        })
    };
    dup(nix::unistd::dup2_stdin(slave), "stdin")?;
    dup(nix::unistd::dup2_stdout(slave), "stdout")?;
    dup(nix::unistd::dup2_stderr(slave), "stderr")?;
    // dup2 onto itself leaves the flags alone: a slave that already was fd 0, 1 or 2 would
    // still be close-on-exec and vanish at exec.
    let (stdin, stdout, stderr) = (io::stdin(), io::stdout(), io::stderr());
    for (fd, name) in [
        (stdin.as_fd(), "stdin"),
        (stdout.as_fd(), "stdout"),
        (stderr.as_fd(), "stderr"),
    ] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))
            .map_err(|e| context(e, format!("clear close-on-exec on {name}"), "is it open?"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};

    use super::*;

    /// The host's /dev/ptmx: the same code path as the sandbox's `ptmx -> pts/ptmx`.
    const HOST_PTMX: &str = "/dev/ptmx";

    /// Reads the master until `want` shows up (the slave side may echo or translate).
    fn read_until(master: &mut fs::File, want: &str) -> String {
        let mut seen = String::new();
        let mut buf = [0u8; 256];
        while !seen.contains(want) {
            let n = master.read(&mut buf).unwrap();
            assert!(n > 0, "master closed before {want:?}; saw {seen:?}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        seen
    }

    #[test]
    fn what_the_slave_writes_the_master_reads() {
        let pty = open_pty(Path::new(HOST_PTMX)).unwrap();
        let mut slave = fs::File::from(pty.slave);
        let mut master = fs::File::from(pty.master);
        slave.write_all(b"hello from the slave\n").unwrap();
        // onlcr: the terminal turns the newline into CR LF.
        let seen = read_until(&mut master, "hello from the slave\r\n");
        assert_eq!(seen, "hello from the slave\r\n");
        master.write_all(b"typed\n").unwrap();
        // Canonical mode: one read gives the whole line once its newline arrives.
        let mut buf = [0u8; 64];
        let n = slave.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"typed\n");
    }

    #[test]
    fn both_ends_are_close_on_exec_and_the_slave_is_a_pty_slave() {
        let pty = open_pty(Path::new(HOST_PTMX)).unwrap();
        for fd in [&pty.master, &pty.slave] {
            let flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap());
            assert!(flags.contains(FdFlag::FD_CLOEXEC));
        }
        let n = sys::pty_number(pty.master.as_fd()).unwrap();
        let rdev = fs::metadata(format!("/proc/self/fd/{}", pty.slave.as_raw_fd()))
            .unwrap()
            .rdev();
        assert_eq!(slave_index(rdev), Some(n));
    }

    #[test]
    fn the_window_size_set_on_one_end_is_read_on_the_other() {
        let pty = open_pty(Path::new(HOST_PTMX)).unwrap();
        set_window_size(&pty.master, 24, 80).unwrap();
        assert_eq!(window_size(&pty.slave).unwrap(), (24, 80));
        set_window_size(&pty.slave, 50, 132).unwrap();
        assert_eq!(window_size(&pty.master).unwrap(), (50, 132));
    }

    #[test]
    fn the_slave_by_name_is_the_same_terminal_as_the_peer() {
        let pty = open_pty(Path::new(HOST_PTMX)).unwrap();
        let by_name = open_slave_by_name(
            &pty.master,
            Path::new(HOST_PTMX),
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        )
        .unwrap();
        let mut master = fs::File::from(pty.master);
        fs::File::from(by_name).write_all(b"by name\n").unwrap();
        read_until(&mut master, "by name\r\n");
    }

    #[test]
    fn slave_paths_and_device_numbers() {
        // /dev/ptmx (a node beside pts/) and pts/ptmx (the instance's own node).
        assert_eq!(
            slave_path(Path::new("/dev/ptmx"), 3).unwrap(),
            Path::new("/dev/pts/3")
        );
        assert_eq!(
            slave_path(Path::new("/dev/pts/ptmx"), 7).unwrap(),
            Path::new("/dev/pts/7")
        );
        assert_eq!(slave_index(libc::makedev(136, 3)), Some(3));
        assert_eq!(slave_index(libc::makedev(137, 1)), Some(257));
        assert_eq!(slave_index(libc::makedev(143, 255)), Some(2047));
        assert_eq!(slave_index(libc::makedev(1, 3)), None); // /dev/null
        assert_eq!(slave_index(libc::makedev(5, 2)), None); // ptmx
    }

    #[test]
    fn a_missing_ptmx_names_the_path_and_a_hint() {
        let e = open_pty(Path::new("/nonexistent/ptmx")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let msg = e.to_string();
        assert!(
            msg.contains("/nonexistent/ptmx") && msg.contains("hint"),
            "{msg}"
        );
    }

    #[test]
    fn the_slave_can_be_given_to_the_workload_uid() {
        use std::os::unix::fs::MetadataExt as _;
        if nix::unistd::geteuid().as_raw() != 0 {
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "needs root");
            eprintln!("SKIPPED: the_slave_can_be_given_to_the_workload_uid needs root");
            return;
        }
        let pty = open_pty(Path::new(HOST_PTMX)).unwrap();
        give_to(&pty.slave, 65534, 65534).unwrap();
        let meta = fs::metadata(format!("/proc/self/fd/{}", pty.slave.as_raw_fd())).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    }

    /// Environment variable that turns [`child_takes_the_pty_helper`] from a no-op into the
    /// child side of [`a_child_takes_the_pty_as_controlling_terminal_and_stdio`].
    const CHILD_ENV: &str = "SR_PTY_TEST_CHILD";

    /// The child: its stdin is a pty slave; it takes the pty and reports what it sees through
    /// the pty itself.
    #[test]
    fn child_takes_the_pty_helper() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        let slave = io::stdin().as_fd().try_clone_to_owned().unwrap();
        make_controlling_terminal(&slave).unwrap();
        drop(slave);
        let pid = nix::unistd::getpid();
        let session = nix::unistd::getsid(None).unwrap();
        let terminal_session = nix::sys::termios::tcgetsid(io::stdin()).unwrap();
        let (stdin, stdout, stderr) = (io::stdin(), io::stdout(), io::stderr());
        let mut verdict = Vec::new();
        for (fd, name) in [
            (stdin.as_fd(), "stdin"),
            (stdout.as_fd(), "stdout"),
            (stderr.as_fd(), "stderr"),
        ] {
            let tty = nix::unistd::isatty(fd).unwrap();
            let flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap());
            verdict.push(format!(
                "{name}:{}{}",
                if tty { "tty" } else { "notty" },
                if flags.contains(FdFlag::FD_CLOEXEC) {
                    ",cloexec"
                } else {
                    ""
                }
            ));
        }
        let line = format!(
            "REPORT leader={} ctty={} {}\n",
            session == pid,
            terminal_session == pid,
            verdict.join(" ")
        );
        nix::unistd::write(&stdout, line.as_bytes()).unwrap();
    }

    #[test]
    fn a_child_takes_the_pty_as_controlling_terminal_and_stdio() {
        let pty = open_pty(Path::new(HOST_PTMX)).unwrap();
        let mut child = {
            let mut cmd = Command::new(std::env::current_exe().unwrap());
            cmd.args([
                "--exact",
                "sandbox::pty::tests::child_takes_the_pty_helper",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .stdin(Stdio::from(pty.slave))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
            cmd.spawn().unwrap()
            // The command (and with it this process's copy of the slave) is dropped here, so
            // the master sees a hangup once the child is gone.
        };
        let mut master = fs::File::from(pty.master);
        let mut seen = Vec::new();
        // EIO is how a master reports that every slave descriptor is closed.
        let end = master.read_to_end(&mut seen);
        assert!(
            end.is_ok()
                || end
                    .as_ref()
                    .is_err_and(|e| e.raw_os_error() == Some(libc::EIO)),
            "{end:?}"
        );
        let status = child.wait().unwrap();
        let seen = String::from_utf8_lossy(&seen);
        assert!(status.success(), "child failed: {status}; pty said {seen}");
        assert!(
            seen.contains("REPORT leader=true ctty=true stdin:tty stdout:tty stderr:tty\r\n"),
            "{seen}"
        );
    }
}
