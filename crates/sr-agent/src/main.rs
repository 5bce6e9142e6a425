//! `safe-run-agent`: the microVM guest's pid 1 and agent (DESIGN.md sections 5 and 6).
//!
//! * As pid 1 ([`pid1`]): boots the guest from the initramfs ([`boot`], [`modules`]), listens on
//!   vsock ([`vsock`]), takes the host's setup line ([`setup`]) and serves the agent protocol
//!   with the process sandbox's own loop ([`session`]); when the host is done, powers off
//!   ([`power`]). Every failure is one console line naming the step, then power off: pid 1
//!   never panics or exits (either would be a kernel panic).
//! * `--listen-unix PATH`: the test mode on an ordinary host: no boot, one connection on a Unix
//!   socket, the same session; the process exits when it ends.

mod boot;
mod cmdline;
mod error;
mod modules;
mod net;
mod power;
mod session;
mod setup;
mod stream;
mod sys;
mod vsock;

use std::os::unix::net::UnixListener;
use std::process::ExitCode;

use error::AgentError;
use session::{Guest, Outcome};

const USAGE: &str = "usage: safe-run-agent (as pid 1 of a safe-run microVM)\n       \
                     safe-run-agent --listen-unix PATH (test mode: serve one connection)";

fn main() -> ExitCode {
    if nix::unistd::getpid().as_raw() == 1 {
        // The kernel passes unknown command-line words as arguments: pid 1 ignores them.
        pid1()
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["--listen-unix", path] => test_mode(path),
        ["--version"] => {
            println!("safe-run-agent {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Serves one connection on a Unix socket at `path`, without booting anything.
fn test_mode(path: &str) -> ExitCode {
    let fail = |e: AgentError| {
        eprintln!("{}", e.console_line());
        ExitCode::from(1)
    };
    let listener = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) => return fail(AgentError::io("test.listen", format!("binding {path}"), &e)),
    };
    let guest = Guest {
        facts: setup::GuestFacts::probe(Vec::new()),
        boot_failure: None,
        pid1: false,
    };
    loop {
        let conn = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) => return fail(AgentError::io("test.listen", "accepting", &e)),
        };
        match session::run(conn.into(), &guest) {
            Outcome::Served => return ExitCode::SUCCESS,
            Outcome::Probe => continue,
            Outcome::Refused(e) => return fail(e),
        }
    }
}

/// The guest's life as pid 1; ends in power off.
fn pid1() -> ! {
    std::panic::set_hook(Box::new(|info| {
        power::fail(&format!("safe-run-agent: SR-RUN-002 agent.panic: {info}"))
    }));
    // Without /dev there is no console to say why: power off is all that is left.
    if boot::kernel_filesystems().is_err() || boot::console().is_err() {
        power::power_off()
    }
    match boot_and_listen() {
        Ok((listener, guest)) => serve_host(&listener, &guest),
        Err(e) => power::fail(&e.console_line()),
    }
}

fn boot_and_listen() -> Result<(vsock::Listener, Guest), AgentError> {
    let text = std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| AgentError::io("boot.cmdline", "reading /proc/cmdline", &e))?;
    let args = cmdline::parse(&text)?;
    let mut loaded = Vec::new();
    if boot::in_initramfs() {
        loaded = modules::load_from_list()?;
        boot::switch_root()?;
    }
    boot::terminals()?;
    boot::raise_fd_limit()?;
    let listener = vsock::Listener::bind(args.agent_port)?;
    let boot_failure = args.net.as_ref().and_then(|n| net::configure(n).err());
    if let Some(e) = &boot_failure {
        eprintln!("{}", e.console_line());
    }
    let guest = Guest {
        facts: setup::GuestFacts::probe(loaded),
        boot_failure,
        pid1: true,
    };
    eprintln!(
        "safe-run-agent {}: kernel {}, listening on vsock port {}",
        env!("CARGO_PKG_VERSION"),
        guest.facts.kernel_release,
        args.agent_port
    );
    Ok((listener, guest))
}

fn serve_host(listener: &vsock::Listener, guest: &Guest) -> ! {
    loop {
        let conn = match listener.accept() {
            Ok(c) => c,
            Err(e) => power::fail(&e.console_line()),
        };
        match session::run(conn, guest) {
            Outcome::Probe => continue,
            Outcome::Served => {
                eprintln!("safe-run-agent: the host is done");
                power::power_off()
            }
            Outcome::Refused(e) => power::fail(&e.console_line()),
        }
    }
}
