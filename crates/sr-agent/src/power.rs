//! The end of the VM: every process but pid 1 killed, file systems synced, power off. QEMU
//! runs with `-no-reboot`, so the VM process ends with it. Also the panic hook's last step:
//! a pid 1 that returned or panicked would be a kernel panic instead of a clean stop.

use nix::sys::reboot::{RebootMode, reboot};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Powers the VM off; never returns.
pub fn power_off() -> ! {
    // -1: every process pid 1 may signal, which is every other process.
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    nix::unistd::sync();
    let err = match reboot(RebootMode::RB_POWER_OFF) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    eprintln!("safe-run-agent: power off failed: {}; halting", err.desc());
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// Prints `line` on the console, then powers off.
pub fn fail(line: &str) -> ! {
    eprintln!("{line}");
    eprintln!("safe-run-agent: powering off");
    power_off()
}
