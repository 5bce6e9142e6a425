//! A step of attach that runs on a thread of its own while the boundary starts (the table's
//! apply and read-back, the link into a namespace made ahead of the sandbox), until attach or
//! release takes its result.

use std::thread::JoinHandle;

use super::error::NetworkError;

/// A step running on its thread, or its result once waited for.
#[derive(Debug)]
pub(super) enum Background<T> {
    /// Still running (or finished, not yet joined).
    Running(JoinHandle<Result<T, NetworkError>>),
    /// Joined; the result waits to be taken.
    Done(Result<T, NetworkError>),
}

impl<T: Send + 'static> Background<T> {
    /// Runs `work` on a new thread named `name`.
    pub(super) fn start(
        name: &str,
        work: impl FnOnce() -> Result<T, NetworkError> + Send + 'static,
    ) -> std::io::Result<Self> {
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(work)
            .map(Background::Running)
    }

    /// Waits for the thread, if it still runs; the result stays for [`Background::take`].
    pub(super) fn settle(&mut self) {
        let placeholder = Background::Done(Err(NetworkError::Config(String::new())));
        *self = match std::mem::replace(self, placeholder) {
            Background::Running(handle) => Background::Done(join(handle)),
            done => done,
        };
    }

    /// Waits for the thread, if it still runs, and returns its result.
    pub(super) fn take(self) -> Result<T, NetworkError> {
        match self {
            Background::Running(handle) => join(handle),
            Background::Done(result) => result,
        }
    }
}

fn join<T>(handle: JoinHandle<Result<T, NetworkError>>) -> Result<T, NetworkError> {
    let name = handle.thread().name().unwrap_or("network").to_owned();
    handle
        .join()
        .unwrap_or_else(|_| Err(NetworkError::Config(format!("the {name} thread panicked"))))
}
