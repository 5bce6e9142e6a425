//! The file operations cgroups need, behind a trait so unit tests run against an in-memory
//! fake that records every write, and the real filesystem.

use std::io;
use std::path::Path;

/// The file operations cgroups need.
pub trait CgroupFs {
    /// Whether the path exists.
    fn exists(&self, path: &Path) -> bool;
    /// Creates a directory (parents must exist). Already existing is not an error.
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    /// Writes a control file.
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;
    /// Reads a control file.
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Removes a cgroup directory.
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// Lists subdirectories' names.
    fn list_dirs(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Sends SIGKILL to a process found in a cgroup (part of the seam so that unit tests never
    /// signal a real pid).
    fn kill(&self, pid: i32);
}

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostFs;

impl CgroupFs for HostFs {
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        match std::fs::create_dir(path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            r => r,
        }
    }
    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        std::fs::write(path, value)
    }
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn rmdir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
    fn list_dirs(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(path)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }
    fn kill(&self, pid: i32) {
        // ESRCH (already gone) is the expected race with an exiting task.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
