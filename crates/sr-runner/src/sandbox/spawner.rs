//! One long-lived thread that spawns every sandbox init of the process.
//!
//! The kernel sends a child's PDEATHSIG when the *thread* that forked it exits, not the
//! process. A daemon creates sandboxes from many short-lived threads (request handlers, a pool
//! filler); if one of them spawned an init, the sandbox would be killed when that thread
//! ended. So every spawn goes through this thread, which lives as long as the process. The
//! spawn itself is `std::process::Command` (fork + exec at once, safe in a multi-threaded
//! process).

use std::process::{Child, Command};
use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, OnceLock};

type Request = (Command, Sender<std::io::Result<Child>>);

static SPAWNER: OnceLock<Mutex<Option<Sender<Request>>>> = OnceLock::new();

fn start() -> Option<Sender<Request>> {
    let (tx, rx) = mpsc::channel::<Request>();
    std::thread::Builder::new()
        .name("sr-spawner".into())
        .spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        })
        .ok()?;
    Some(tx)
}

fn spawner() -> &'static Mutex<Option<Sender<Request>>> {
    SPAWNER.get_or_init(|| Mutex::new(start()))
}

/// Starts the spawner thread now, if it is not running yet. A process sandbox does so when it
/// is made, before the run starts its other threads: a thread's start waits for the dynamic
/// loader's lock (its TLS), which the network's thread may hold for a millisecond or more
/// while it loads libnftables, and the first spawn would wait with it.
pub fn start_early() {
    spawner();
}

/// Spawns `cmd` on the spawner thread and returns the child.
pub fn spawn(cmd: Command) -> std::io::Result<Child> {
    let sender = spawner()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let Some(sender) = sender else {
        return Err(std::io::Error::other(
            "the spawner thread could not be started",
        ));
    };
    let (tx, rx) = mpsc::channel();
    sender
        .send((cmd, tx))
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_come_from_one_thread_that_outlives_the_caller() {
        let a = std::thread::spawn(|| spawn(Command::new("/bin/true")).map(|mut c| c.wait()))
            .join()
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(a.success());
        let mut cmd = Command::new("/bin/sleep");
        cmd.arg("0.01");
        let mut c = spawn(cmd).unwrap();
        assert!(c.wait().unwrap().success());
    }
}
