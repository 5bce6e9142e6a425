//! The host terminal of `safe-run run -t`: raw mode while the sandbox's pty is relayed, its
//! restoration on every way out, the window size, and a watcher that reports size changes.
//!
//! In raw mode the terminal does no line editing, echo or signal generation: every key,
//! Ctrl-C included, reaches the workload's terminal as a byte, and that terminal (inside the
//! sandbox) decides what it means. So the host terminal must come back exactly as it was,
//! whatever ends the run: [`RawMode`] restores it on drop, which covers normal and early
//! returns and panics (the binary unwinds). What a drop cannot cover (`process::exit`, a fatal
//! signal) needs [`RawMode::restore`] called first.

use std::io::{self, IsTerminal};
use std::os::fd::{AsFd, OwnedFd};
use std::thread::JoinHandle;

use nix::sys::termios::{SetArg, Termios, cfmakeraw, tcgetattr, tcsetattr};
use signal_hook::consts::SIGWINCH;
use signal_hook::iterator::{Handle, Signals};

/// Whether `fd` is a terminal.
pub fn is_terminal(fd: impl AsFd) -> bool {
    fd.as_fd().is_terminal()
}

/// Whether this process's stdin is a terminal (what `-t` needs to be useful).
pub fn stdin_is_terminal() -> bool {
    is_terminal(io::stdin())
}

/// The window size of the terminal open as `fd`: `(rows, cols)`, or `None` when it is not a
/// terminal or reports no size (0 x 0, as a fresh pty does).
pub fn window_size(fd: impl AsFd) -> Option<(u16, u16)> {
    sr_runner::sandbox::pty::window_size(fd)
        .ok()
        .filter(|&(rows, cols)| rows > 0 && cols > 0)
}

/// A terminal in raw mode; dropping it puts back the settings it found.
#[derive(Debug)]
pub struct RawMode {
    /// A duplicate of the terminal's fd: the same terminal, with no lifetime tied to the
    /// caller's handle.
    fd: OwnedFd,
    /// The settings before raw mode.
    saved: Termios,
    /// Already restored (by [`RawMode::restore`]).
    restored: bool,
}

impl RawMode {
    /// Puts the terminal open as `fd` into raw mode (`cfmakeraw`). `Ok(None)` when `fd` is not
    /// a terminal: there is nothing to change or restore.
    ///
    /// The switch waits for output already written to drain (`TCSADRAIN`), so text printed
    /// before it is still shown with the old settings.
    pub fn enable(fd: impl AsFd) -> io::Result<Option<RawMode>> {
        let fd = fd.as_fd();
        if !is_terminal(fd) {
            return Ok(None);
        }
        let saved = tcgetattr(fd).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("read the terminal settings: {e}; hint: run without -t"),
            )
        })?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let fd = fd.try_clone_to_owned()?;
        tcsetattr(&fd, SetArg::TCSADRAIN, &raw).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("put the terminal into raw mode: {e}; hint: run without -t"),
            )
        })?;
        Ok(Some(RawMode {
            fd,
            saved,
            restored: false,
        }))
    }

    /// Puts the saved settings back now (idempotent; the drop does nothing afterwards). For
    /// ways out that skip destructors.
    ///
    /// Takes effect at once (`TCSANOW`): restoring must not wait on output a stopped terminal
    /// (Ctrl-S) would never drain.
    pub fn restore(&mut self) -> io::Result<()> {
        if self.restored {
            return Ok(());
        }
        tcsetattr(&self.fd, SetArg::TCSANOW, &self.saved).map_err(io::Error::from)?;
        self.restored = true;
        Ok(())
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            // Nothing else can be done from a destructor; the user has to know why the
            // terminal looks wrong.
            eprintln!(
                "warning: could not restore the terminal settings: {e}; hint: run `stty sane`"
            );
        }
    }
}

/// Watches for window size changes (SIGWINCH) on a thread and reports each new size of a
/// terminal. Closing (or dropping) it stops the thread.
#[derive(Debug)]
pub struct WindowWatcher {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl WindowWatcher {
    /// Starts watching: on every SIGWINCH, `on_resize(rows, cols)` gets the size of the
    /// terminal open as `fd` (skipped when it has none).
    pub fn start<F>(fd: impl AsFd, mut on_resize: F) -> io::Result<WindowWatcher>
    where
        F: FnMut(u16, u16) + Send + 'static,
    {
        let fd = fd.as_fd().try_clone_to_owned()?;
        let mut signals = Signals::new([SIGWINCH])?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("sr-winch".into())
            .spawn(move || {
                // Ends when the handle is closed.
                for _ in signals.forever() {
                    if let Some((rows, cols)) = window_size(&fd) {
                        on_resize(rows, cols);
                    }
                }
            })?;
        Ok(WindowWatcher {
            handle,
            thread: Some(thread),
        })
    }

    /// Stops watching and waits for the thread.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            // A panic in the callback already printed itself; nothing to add.
            let _ = thread.join();
        }
    }
}

impl Drop for WindowWatcher {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::mpsc;

    use nix::pty::{OpenptyResult, openpty};
    use nix::sys::termios::{InputFlags, LocalFlags, OutputFlags};

    use super::*;

    fn pair() -> OpenptyResult {
        openpty(None, None).unwrap()
    }

    fn flags(fd: &OwnedFd) -> (LocalFlags, InputFlags, OutputFlags) {
        let t = tcgetattr(fd).unwrap();
        (t.local_flags, t.input_flags, t.output_flags)
    }

    fn assert_cooked(fd: &OwnedFd) {
        let (l, i, o) = flags(fd);
        assert!(
            l.contains(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG),
            "{l:?}"
        );
        assert!(i.contains(InputFlags::ICRNL), "{i:?}");
        assert!(o.contains(OutputFlags::OPOST), "{o:?}");
    }

    #[test]
    fn raw_mode_is_raw_and_the_drop_restores_every_setting() {
        let pty = pair();
        assert_cooked(&pty.slave);
        let before = tcgetattr(&pty.slave).unwrap();
        let guard = RawMode::enable(&pty.slave)
            .unwrap()
            .expect("a pty is a terminal");
        let (l, i, o) = flags(&pty.slave);
        assert!(
            !l.intersects(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG),
            "{l:?}"
        );
        assert!(!i.intersects(InputFlags::ICRNL | InputFlags::IXON), "{i:?}");
        assert!(!o.contains(OutputFlags::OPOST), "{o:?}");
        drop(guard);
        let after = tcgetattr(&pty.slave).unwrap();
        assert_eq!(after.local_flags, before.local_flags);
        assert_eq!(after.input_flags, before.input_flags);
        assert_eq!(after.output_flags, before.output_flags);
        assert_eq!(after.control_flags, before.control_flags);
        assert_eq!(after.control_chars, before.control_chars);
    }

    #[test]
    fn a_panic_while_raw_still_restores() {
        let pty = pair();
        let slave = pty.slave.try_clone().unwrap();
        let result = std::panic::catch_unwind(move || {
            let _guard = RawMode::enable(&slave).unwrap();
            panic!("the relay failed");
        });
        assert!(result.is_err());
        assert_cooked(&pty.slave);
    }

    #[test]
    fn an_explicit_restore_is_final_and_the_drop_does_not_redo_it() {
        let pty = pair();
        let mut guard = RawMode::enable(&pty.slave).unwrap().unwrap();
        guard.restore().unwrap();
        assert_cooked(&pty.slave);
        // A later change by someone else must survive the guard's drop.
        let mut t = tcgetattr(&pty.slave).unwrap();
        t.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&pty.slave, SetArg::TCSANOW, &t).unwrap();
        guard.restore().unwrap();
        drop(guard);
        assert!(!flags(&pty.slave).0.contains(LocalFlags::ECHO));
    }

    #[test]
    fn not_a_terminal_means_no_raw_mode_and_no_size() {
        let null = std::fs::File::open("/dev/null").unwrap();
        assert!(!is_terminal(&null));
        assert!(RawMode::enable(&null).unwrap().is_none());
        assert_eq!(window_size(&null), None);
        assert!(is_terminal(pair().slave));
    }

    #[test]
    fn window_size_reads_the_size_and_treats_zero_as_none() {
        let pty = pair();
        assert_eq!(window_size(&pty.slave), None);
        sr_runner::sandbox::pty::set_window_size(&pty.master, 24, 80).unwrap();
        assert_eq!(window_size(&pty.slave), Some((24, 80)));
    }

    #[test]
    fn the_watcher_reports_each_new_size_and_stops_when_closed() {
        let pty = pair();
        let (tx, rx) = mpsc::channel();
        let watcher = WindowWatcher::start(&pty.slave, move |rows, cols| {
            let _ = tx.send((rows, cols));
        })
        .unwrap();
        for size in [(30, 100), (40, 120)] {
            sr_runner::sandbox::pty::set_window_size(&pty.master, size.0, size.1).unwrap();
            // This process is not the pty's foreground group, so send the signal ourselves.
            nix::sys::signal::raise(nix::sys::signal::Signal::SIGWINCH).unwrap();
            assert_eq!(rx.recv().unwrap(), size);
        }
        watcher.close();
        // The thread is gone, and with it the callback and its sender.
        assert!(rx.recv().is_err());
    }
}
