//! The kernel modules the initramfs brings (Debian's cloud kernel builds virtio, vsock and
//! virtio_blk as modules): the list in /etc/safe-run/modules, and loading it with
//! `finit_module`. The list is in load order already (the artifact builder resolved the
//! dependencies), so the agent needs no modules.dep logic.

use std::ffi::CString;
use std::fs::File;
use std::path::Path;

use nix::errno::Errno;
use nix::kmod::{ModuleInitFlags, finit_module};

use crate::error::AgentError;

/// Where the initramfs keeps the list.
pub const LIST_PATH: &str = "/etc/safe-run/modules";

const PHASE: &str = "boot.modules";

/// Parses the list: one absolute path per line; blank lines and `#` comments are skipped.
pub fn parse_list(text: &str) -> Result<Vec<String>, AgentError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !line.starts_with('/') || line.split('/').any(|c| c == "..") {
            return Err(AgentError::new(
                PHASE,
                format!(
                    "{LIST_PATH} line {}: {line:?} is not an absolute path",
                    n + 1
                ),
            ));
        }
        out.push(line.to_owned());
    }
    Ok(out)
}

/// A module's name as the report shows it: the file name without `.ko` (and any compression
/// suffix after it).
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    match file.find(".ko") {
        Some(i) => file[..i].to_owned(),
        None => file.to_owned(),
    }
}

/// Loads every module in `paths`, in order. A module the kernel already has (`EEXIST`: built
/// in, or loaded twice) is fine. Returns their names.
pub fn load_all(paths: &[String]) -> Result<Vec<String>, AgentError> {
    let params = CString::default();
    let mut names = Vec::with_capacity(paths.len());
    for path in paths {
        let file = File::open(Path::new(path))
            .map_err(|e| AgentError::io(PHASE, format!("opening {path}"), &e))?;
        match finit_module(&file, &params, ModuleInitFlags::empty()) {
            Ok(()) | Err(Errno::EEXIST) => names.push(module_name(path)),
            Err(e) => return Err(AgentError::sys(PHASE, format!("loading {path}"), e)),
        }
    }
    Ok(names)
}

/// Reads the list and loads it; no list means nothing to load (a kernel with the drivers
/// built in).
pub fn load_from_list() -> Result<Vec<String>, AgentError> {
    let text = match std::fs::read_to_string(LIST_PATH) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AgentError::io(PHASE, format!("reading {LIST_PATH}"), &e)),
    };
    load_all(&parse_list(&text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_keeps_its_order_and_skips_blanks_and_comments() {
        let text = "/lib/modules/6.1.0-28-cloud-amd64/kernel/drivers/virtio/virtio_ring.ko\n\n# vsock\n  /lib/modules/6.1.0-28-cloud-amd64/kernel/net/vmw_vsock/vsock.ko  \n";
        let list = parse_list(text).map_err(|e| e.to_string());
        assert_eq!(
            list,
            Ok(vec![
                "/lib/modules/6.1.0-28-cloud-amd64/kernel/drivers/virtio/virtio_ring.ko".to_owned(),
                "/lib/modules/6.1.0-28-cloud-amd64/kernel/net/vmw_vsock/vsock.ko".to_owned(),
            ])
        );
    }

    #[test]
    fn relative_or_climbing_paths_are_refused_with_their_line() {
        for (text, line) in [("a.ko", 1), ("/ok.ko\n/lib/../x.ko", 2)] {
            match parse_list(text) {
                Err(e) => assert!(e.message.contains(&format!("line {line}")), "{e}"),
                Ok(l) => panic!("{text:?} accepted: {l:?}"),
            }
        }
    }

    #[test]
    fn names_drop_the_directory_and_suffix() {
        assert_eq!(module_name("/lib/modules/x/virtio_pci.ko"), "virtio_pci");
        assert_eq!(module_name("/m/virtio_net.ko.xz"), "virtio_net");
        assert_eq!(module_name("plain"), "plain");
    }

    #[test]
    fn a_missing_module_file_is_a_clear_error() {
        let e = load_all(&["/nonexistent/sr-agent-test.ko".to_owned()]);
        match e {
            Err(e) => {
                assert_eq!(e.phase, "boot.modules");
                assert!(
                    e.message.contains("opening /nonexistent/sr-agent-test.ko"),
                    "{e}"
                );
            }
            Ok(n) => panic!("loaded {n:?}"),
        }
    }
}
