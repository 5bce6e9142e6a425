//! Which accelerator QEMU gets: KVM where it runs a normal guest, software emulation (TCG)
//! otherwise. Decided once per process from what the host shows, and recorded in the report.
//!
//! `/dev/kvm` alone is not enough: on hosts whose KVM is the nested "PVM" flavour (module
//! `kvm_pvm`) a stock guest kernel dies in emulation, so such a host gets TCG too
//! (../notes on these machines). A host where KVM is usable has `kvm_intel` or `kvm_amd`.

use std::path::Path;
use std::sync::OnceLock;

/// The accelerator and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accel {
    /// `kvm` or `tcg`.
    pub name: &'static str,
    /// Why.
    pub reason: String,
}

/// What the decision reads off the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostKvm {
    /// `/dev/kvm` exists and opens read-write.
    pub dev_kvm_usable: bool,
    /// Loaded modules among `kvm_intel`, `kvm_amd`, `kvm_pvm`.
    pub modules: Vec<String>,
}

/// The decision, pure.
pub fn choose(host: &HostKvm) -> Accel {
    if !host.dev_kvm_usable {
        return Accel {
            name: "tcg",
            reason: "/dev/kvm is absent or not usable: software emulation".into(),
        };
    }
    if host.modules.iter().any(|m| m == "kvm_pvm") {
        return Accel {
            name: "tcg",
            reason: "/dev/kvm is nested PVM (kvm_pvm), which does not run stock guests: software emulation".into(),
        };
    }
    match host
        .modules
        .iter()
        .find(|m| *m == "kvm_intel" || *m == "kvm_amd")
    {
        Some(m) => Accel {
            name: "kvm",
            reason: format!("/dev/kvm with {m}"),
        },
        None => Accel {
            name: "tcg",
            reason: "/dev/kvm without kvm_intel or kvm_amd: software emulation".into(),
        },
    }
}

/// Reads `HostKvm` from `/dev/kvm` and `/sys/module`.
pub fn read_host(dev_kvm: &Path, sys_module: &Path) -> HostKvm {
    let dev_kvm_usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev_kvm)
        .is_ok();
    let modules = ["kvm_intel", "kvm_amd", "kvm_pvm"]
        .iter()
        .filter(|m| sys_module.join(m).exists())
        .map(|m| (*m).to_owned())
        .collect();
    HostKvm {
        dev_kvm_usable,
        modules,
    }
}

/// This host's accelerator, probed once per process.
pub fn host_accel() -> &'static Accel {
    static ACCEL: OnceLock<Accel> = OnceLock::new();
    ACCEL.get_or_init(|| choose(&read_host(Path::new("/dev/kvm"), Path::new("/sys/module"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(usable: bool, modules: &[&str]) -> HostKvm {
        HostKvm {
            dev_kvm_usable: usable,
            modules: modules.iter().map(|m| (*m).to_owned()).collect(),
        }
    }

    #[test]
    fn kvm_only_where_a_normal_guest_runs() {
        assert_eq!(choose(&host(true, &["kvm_intel"])).name, "kvm");
        assert_eq!(choose(&host(true, &["kvm_amd"])).name, "kvm");
        assert_eq!(choose(&host(true, &["kvm_pvm"])).name, "tcg");
        assert_eq!(choose(&host(true, &["kvm_pvm", "kvm_intel"])).name, "tcg");
        assert_eq!(choose(&host(false, &["kvm_intel"])).name, "tcg");
        assert_eq!(choose(&host(true, &[])).name, "tcg");
    }

    #[test]
    fn the_reason_names_pvm() {
        assert!(choose(&host(true, &["kvm_pvm"])).reason.contains("PVM"));
    }
}
