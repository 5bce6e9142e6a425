//! Every `unsafe` block of the runner, each with its justification, except the libnftables
//! calls of [`crate::network::libnft`] (a foreign library, kept beside the network code).
//!
//! The rest of the sandbox uses safe wrappers (nix, landlock, seccompiler). What is left here are
//! the calls those crates do not wrap: `fork` (unsafe by nature), `_exit`, the capability
//! prctls and `capset`, the Landlock ABI probe, `close_range`, the loopback ioctl, the
//! signal-disposition reset before exec, the terminal ioctls of [`super::pty`], and the
//! pre-exec hook that puts a VMM's chain under its host seccomp filter.
#![allow(unsafe_code)]

use std::io;

use nix::unistd::ForkResult;

/// `fork(2)`.
///
/// Only ever called by the sandbox init (`safe-run __init`) and its pid 1, and by the deferred
/// network releaser's detaching process (`safe-run __release-network detach`), which are
/// single-threaded: each is a freshly exec'd process that dispatches before anything (clap,
/// std's runtime helpers, a logger) can start a thread, and none starts one before it forks.
/// So the child cannot inherit a lock held by another thread.
pub fn fork() -> io::Result<ForkResult> {
    // SAFETY: the calling process is single-threaded (see above); the child runs on as that
    // one thread (setup code, then an exec or `_exit`; the releaser's worker, its release).
    unsafe { nix::unistd::fork() }.map_err(io::Error::from)
}

/// `_exit(2)`: leaves a forked child without running atexit handlers or flushing buffers
/// shared with the parent.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` takes a plain integer and never returns; it is async-signal-safe.
    unsafe { libc::_exit(code) }
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Highest capability number the kernel knows (`/proc/sys/kernel/cap_last_cap`), 40 if unknown.
fn cap_last_cap() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Drops every capability from the bounding set, clears the ambient set, and empties the
/// effective, permitted and inheritable sets. Returns the number of bounding-set entries dropped.
pub fn drop_all_capabilities() -> io::Result<u64> {
    let n = drop_bounding_set()?;
    clear_capability_sets()?;
    Ok(n)
}

/// Drops every capability from the bounding set (needs CAP_SETPCAP), so no exec can gain one
/// back. Returns the number of entries dropped.
pub fn drop_bounding_set() -> io::Result<u64> {
    let last = cap_last_cap();
    for cap in 0..=last {
        // SAFETY: PR_CAPBSET_DROP takes an integer capability number; no pointers.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if ret < 0 {
            let err = io::Error::last_os_error();
            // EINVAL: the kernel does not know this capability; nothing to drop.
            if err.raw_os_error() != Some(libc::EINVAL) {
                return Err(err);
            }
        }
    }
    Ok(last + 1)
}

/// Clears the ambient set and empties the effective, permitted and inheritable sets (only
/// lowers: works without privilege).
pub fn clear_capability_sets() -> io::Result<()> {
    // SAFETY: integer arguments only.
    check(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    })?;
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: `header` and `data` are valid, properly laid out (repr(C)) for version 3, which
    // expects two data elements; the kernel only reads `data`.
    check(unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        ) as libc::c_int
    })
}

/// The Landlock ABI version of the running kernel, or the errno that says why there is none.
pub fn landlock_abi() -> Result<i32, i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attr and size 0 and the VERSION flag, the syscall only returns an
    // integer; it reads no memory.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::ENOSYS))
    } else {
        Ok(ret as i32)
    }
}

/// Marks every file descriptor from 3 up close-on-exec, so nothing the init inherited by
/// accident reaches the workload.
pub fn cloexec_from_3() -> io::Result<()> {
    // SAFETY: integer arguments only; CLOSE_RANGE_CLOEXEC closes nothing, it only sets flags.
    check(unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) as libc::c_int
    })
}

/// Makes `fds` the only descriptors above stderr, as 3, 4, ... in order, closing every other
/// one: a forked worker must not hold what it inherited by accident (the control socket, other
/// transfers' pipes, an exec's stdin), or those would not see EOF while it lives.
pub fn keep_only_fds(fds: Vec<std::os::fd::OwnedFd>) -> io::Result<Vec<std::os::fd::OwnedFd>> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // First above every target, so no dup2 below overwrites one still to be moved.
    let mut high = Vec::with_capacity(fds.len());
    for fd in &fds {
        let raw = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(1024))
            .map_err(io::Error::from)?;
        // SAFETY: F_DUPFD_CLOEXEC just returned this new descriptor; nothing else owns it.
        high.push(unsafe { OwnedFd::from_raw_fd(raw) });
    }
    drop(fds);
    let mut placed = Vec::with_capacity(high.len());
    for (i, fd) in high.iter().enumerate() {
        let target = 3 + i as i32;
        // SAFETY: `target` is below every descriptor in `high` and was just freed (or never
        // owned by a live Rust object: the originals were dropped above and everything else
        // there is closed below); dup2 gives the returned OwnedFd sole ownership of it.
        placed.push(unsafe { nix::unistd::dup2_raw(fd, target) }.map_err(io::Error::from)?);
    }
    drop(high);
    let first_free = 3 + placed.len() as u32;
    // SAFETY: integer arguments only; no live Rust object owns a descriptor from
    // `first_free` up (the copies in `high` were dropped).
    check(unsafe {
        libc::syscall(libc::SYS_close_range, first_free, u32::MAX, 0u32) as libc::c_int
    })?;
    Ok(placed)
}

/// Brings the loopback interface of the current network namespace up (SIOCSIFFLAGS), so a
/// `network: none` sandbox still has a working 127.0.0.1.
pub fn loopback_up() -> io::Result<()> {
    use std::os::fd::AsRawFd;

    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq with a NUL-terminated name; the kernel writes the flags
    // into the union it owns for the duration of the call.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
    // SAFETY: reading the flags member SIOCGIFFLAGS just filled in.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: as above; the kernel reads the ifreq.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) })
}

/// Restores the default disposition of every signal and unblocks them all, so the workload
/// starts like a process started from a clean shell. Needed because the init is a Rust program
/// whose runtime ignores SIGPIPE, and ignored dispositions survive `execve`: without this,
/// `producer | head -1` inside the sandbox would never see SIGPIPE.
pub fn reset_signals() -> io::Result<()> {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: a zeroed sigaction with SIG_DFL as handler and an empty mask is a valid
        // argument; the old action is not requested (null).
        let ret = unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = libc::SIG_DFL;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut())
        };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINVAL) {
                return Err(err);
            }
            // EINVAL: glibc refuses its reserved real-time signals (32, 33) even though they
            // can be inherited as ignored; the kernel call accepts them.
            reset_reserved_signal(sig)?;
        }
    }
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )
    .map_err(io::Error::from)
}

/// `rt_sigaction(sig, SIG_DFL)` through the raw system call, for the signals glibc reserves.
fn reset_reserved_signal(sig: libc::c_int) -> io::Result<()> {
    /// The kernel's `struct sigaction` on x86-64 and aarch64: handler, flags, restorer, mask.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let act = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: `act` is a valid kernel sigaction (SIG_DFL, no flags, empty mask) that outlives
    // the call; the old action is not requested (null); 8 is the size of the kernel's sigset.
    check(unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            &act as *const KernelSigaction,
            std::ptr::null_mut::<KernelSigaction>(),
            8usize,
        ) as libc::c_int
    })
}

/// `ioctl(fd, TIOCSPTLCK, &0)`: unlocks the slave of a pty master (what `unlockpt(3)` does).
pub fn pty_unlock(master: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int through the pointer, which points at a live local.
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) })
}

/// `ioctl(fd, TIOCGPTN)`: the index of a pty master's slave in its devpts instance.
pub fn pty_number(master: std::os::fd::BorrowedFd<'_>) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int through the pointer, which points at a live local.
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) })?;
    Ok(n)
}

/// `ioctl(fd, TIOCGPTPEER, flags)` (Linux 4.13+): opens a pty master's slave without a path
/// lookup, so no other devpts instance or swapped path can answer instead.
pub fn pty_peer(
    master: std::os::fd::BorrowedFd<'_>,
    flags: libc::c_int,
) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: TIOCGPTPEER takes the open flags as an integer argument; no memory is passed.
    let fd = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    check(fd)?;
    // SAFETY: on success the ioctl returned a new file descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// `ioctl(fd, TIOCSWINSZ)`: sets a terminal's window size (the kernel sends SIGWINCH to its
/// foreground process group when it changes).
pub fn set_winsize(fd: std::os::fd::BorrowedFd<'_>, size: &libc::winsize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: TIOCSWINSZ reads one winsize through the pointer, which points at a live value.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCSWINSZ,
            size as *const libc::winsize,
        )
    })
}

/// `ioctl(fd, TIOCGWINSZ)`: a terminal's window size.
pub fn get_winsize(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<libc::winsize> {
    use std::os::fd::AsRawFd;
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize through the pointer, which points at a live local.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCGWINSZ,
            &mut size as *mut libc::winsize,
        )
    })?;
    Ok(size)
}

/// `ioctl(fd, TIOCSCTTY, 0)`: makes the terminal the calling session leader's controlling
/// terminal, without stealing it from another session.
pub fn set_controlling_terminal(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal); no memory is passed.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0 as libc::c_int) })
}

/// Attaches to the existing TAP device `name` (`TUNSETIFF` on a fresh `/dev/net/tun`
/// descriptor, `IFF_TAP | IFF_NO_PI`) and returns the descriptor, for a VMM that gets it as
/// `-netdev tap,fd=N`: the VMM then needs neither `/dev/net/tun` nor the host's network
/// namespace. Needs CAP_NET_ADMIN (the runner is root); the device must exist (the network
/// hook creates it).
pub fn tap_attach(name: &str) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;

    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.bytes().any(|b| b == 0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not an interface name"),
        ));
    }
    let tun: std::os::fd::OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?
        .into();
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: `req` is a valid ifreq with a NUL-terminated name (zeroed beyond it, the name is
    // shorter than IFNAMSIZ); TUNSETIFF reads it and writes the name back into it.
    check(unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF as _, &mut req) })?;
    Ok(tun)
}

/// Makes `cmd`'s child install `programs` (seccomp filters, in order) as the last step before
/// it execs, after every hook registered before this one (e.g. descriptor mappings): the
/// filters then cover the program `cmd` runs and everything it execs or starts. Sets
/// no_new_privs, which seccomp requires of a process without CAP_SYS_ADMIN.
///
/// The runner is multi-threaded, so the hook, which runs between fork and exec, does only
/// async-signal-safe work: the programs were compiled before (the closure owns them, copied
/// into the child by fork, and never frees them there), and the hook makes the `prctl` and
/// `seccomp` calls through `seccompiler::apply_filter`, which allocates nothing; its errors are
/// turned into an `io::Error` without allocating either (std reports it as the spawn's error).
pub fn seccomp_before_exec(
    cmd: &mut std::process::Command,
    programs: Vec<seccompiler::BpfProgram>,
) {
    use std::os::unix::process::CommandExt;
    let hook = move || {
        for p in &programs {
            seccompiler::apply_filter(p).map_err(|e| match e {
                seccompiler::Error::Prctl(e) | seccompiler::Error::Seccomp(e) => e,
                _ => io::Error::from_raw_os_error(libc::EINVAL),
            })?;
        }
        Ok(())
    };
    // SAFETY: the hook only reads memory it owns and makes the two system calls above (no
    // allocation, no lock, nothing another thread of the parent could have held at fork).
    unsafe {
        cmd.pre_exec(hook);
    }
}
