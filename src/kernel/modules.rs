//! Kernel modules IPVS mode needs, loaded with `modprobe` when missing.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use super::KernelError;

/// What kproxy needs from the module loader.
pub trait Modules: Send {
    /// Whether `name` is loaded (or built into the kernel).
    fn is_loaded(&mut self, name: &str) -> bool;
    fn load(&mut self, name: &str) -> Result<(), KernelError>;
}

/// The modules IPVS mode needs for `scheduler` (`rr`, `wrr`, `sh`, ...).
pub fn ipvs_modules(scheduler: &str) -> Vec<String> {
    vec![
        "ip_vs".to_string(),
        format!("ip_vs_{scheduler}"),
        "nf_conntrack".to_string(),
    ]
}

/// Load whichever of `ipvs_modules(scheduler)` is missing; returns those loaded.
/// The first failure stops and names the module.
pub fn ensure_ipvs_modules(
    modules: &mut dyn Modules,
    scheduler: &str,
) -> Result<Vec<String>, KernelError> {
    let mut loaded = Vec::new();
    for name in ipvs_modules(scheduler) {
        if !modules.is_loaded(&name) {
            modules.load(&name)?;
            loaded.push(name);
        }
    }
    Ok(loaded)
}

/// Whether the kernel has IPVS right now (module loaded or built in).
pub fn ipvs_present() -> bool {
    Path::new("/proc/net/ip_vs").exists()
}

/// The running kernel's modules: /sys/module shows loaded ones (and built-in
/// ones that have parameters); `modprobe` loads.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemModules;

impl Modules for SystemModules {
    fn is_loaded(&mut self, name: &str) -> bool {
        if name == "ip_vs" && ipvs_present() {
            return true;
        }
        Path::new("/sys/module").join(name).exists()
    }

    fn load(&mut self, name: &str) -> Result<(), KernelError> {
        let op = format!("load kernel module {name}");
        let out = Command::new("modprobe")
            .arg("--")
            .arg(name)
            .output()
            .map_err(|e| KernelError::new(&op, format!("cannot run modprobe: {e}")))?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let reason = match stderr.trim() {
            "" => format!("modprobe failed ({})", out.status),
            text => text.to_string(),
        };
        Err(KernelError::new(op, reason))
    }
}

/// In-memory modules: `available` can be loaded, anything else fails.
#[derive(Debug, Default, Clone)]
pub struct ModulesTwin {
    pub loaded: BTreeSet<String>,
    pub available: BTreeSet<String>,
    /// Every load attempt, in order.
    pub attempts: Vec<String>,
}

impl Modules for ModulesTwin {
    fn is_loaded(&mut self, name: &str) -> bool {
        self.loaded.contains(name)
    }

    fn load(&mut self, name: &str) -> Result<(), KernelError> {
        self.attempts.push(name.to_string());
        if !self.available.contains(name) {
            return Err(KernelError::new(
                format!("load kernel module {name}"),
                format!("modprobe: FATAL: Module {name} not found"),
            ));
        }
        self.loaded.insert(name.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_missing_modules_are_loaded_including_the_scheduler() {
        let mut twin = ModulesTwin {
            loaded: set(&["nf_conntrack"]),
            available: set(&["ip_vs", "ip_vs_wrr", "nf_conntrack"]),
            ..Default::default()
        };
        let loaded = ensure_ipvs_modules(&mut twin, "wrr").unwrap();
        assert_eq!(loaded, ["ip_vs", "ip_vs_wrr"]);
        assert_eq!(twin.attempts, ["ip_vs", "ip_vs_wrr"]);
        assert!(ensure_ipvs_modules(&mut twin, "wrr").unwrap().is_empty());
    }

    #[test]
    fn a_missing_scheduler_module_is_an_error_naming_it() {
        let mut twin = ModulesTwin {
            available: set(&["ip_vs", "nf_conntrack"]),
            ..Default::default()
        };
        let e = ensure_ipvs_modules(&mut twin, "nosuch").unwrap_err();
        assert!(e.to_string().contains("ip_vs_nosuch"), "{e}");
    }
}
