//! Kernel parameters (sysctls) through /proc/sys, behind a trait so the IPVS
//! proxier can be exercised without a kernel.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::KernelError;

/// Read and write sysctls by their dotted (`net.ipv4.ip_forward`) or slashed
/// (`net/ipv4/ip_forward`) name.
pub trait Sysctl: Send {
    fn get(&mut self, name: &str) -> Result<String, KernelError>;
    fn set(&mut self, name: &str, value: &str) -> Result<(), KernelError>;
}

/// Set `name` to `value` unless it already has it; true when it was written.
pub fn ensure(sysctl: &mut dyn Sysctl, name: &str, value: i64) -> Result<bool, KernelError> {
    let current = sysctl.get(name)?;
    if current.trim().parse::<i64>().ok() == Some(value) {
        return Ok(false);
    }
    sysctl.set(name, &value.to_string())?;
    Ok(true)
}

/// `IPVS connection reuse`: the kernel versions between which upstream
/// kube-proxy sets `net.ipv4.vs.conn_reuse_mode=0`. Before 4.1 the sysctl does
/// not exist; from 5.9 on the kernel's own fix makes the default right, and
/// upstream leaves it as it is.
const CONN_REUSE_FROM: (u32, u32) = (4, 1);
const CONN_REUSE_FIXED: (u32, u32) = (5, 9);

/// The sysctls IPVS mode needs, as upstream kube-proxy sets them, for a
/// kernel of version `kernel` (major, minor).
pub fn ipvs_settings(kernel: (u32, u32), strict_arp: bool) -> Vec<(&'static str, i64)> {
    let mut want = vec![("net.ipv4.vs.conntrack", 1)];
    if kernel >= CONN_REUSE_FROM && kernel < CONN_REUSE_FIXED {
        want.push(("net.ipv4.vs.conn_reuse_mode", 0));
    }
    want.extend([
        ("net.ipv4.vs.expire_nodest_conn", 1),
        ("net.ipv4.vs.expire_quiescent_template", 1),
        ("net.ipv4.ip_forward", 1),
    ]);
    if strict_arp {
        want.extend([
            ("net.ipv4.conf.all.arp_ignore", 1),
            ("net.ipv4.conf.all.arp_announce", 2),
        ]);
    }
    want
}

/// Apply `ipvs_settings`; returns the names that had to be changed.
pub fn apply_ipvs_settings(
    sysctl: &mut dyn Sysctl,
    kernel: (u32, u32),
    strict_arp: bool,
) -> Result<Vec<&'static str>, KernelError> {
    let mut changed = Vec::new();
    for (name, value) in ipvs_settings(kernel, strict_arp) {
        if ensure(sysctl, name, value)? {
            changed.push(name);
        }
    }
    Ok(changed)
}

/// (major, minor) of a kernel release string such as `6.1.0-56-amd64`.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The running kernel's (major, minor), from /proc/sys/kernel/osrelease.
pub fn running_kernel() -> Result<(u32, u32), KernelError> {
    let op = "read the kernel version";
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_err(|e| KernelError::new(op, e.to_string()))?;
    parse_release(release.trim())
        .ok_or_else(|| KernelError::new(op, format!("cannot parse {:?}", release.trim())))
}

/// Sysctls of the calling process's network namespace, under /proc/sys.
#[derive(Debug, Clone)]
pub struct ProcSysctl {
    root: PathBuf,
}

impl Default for ProcSysctl {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/proc/sys"),
        }
    }
}

impl ProcSysctl {
    /// Sysctls under another root (tests use a temporary directory).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, name: &str) -> PathBuf {
        if name.contains('/') {
            self.root.join(name)
        } else {
            self.root.join(name.replace('.', "/"))
        }
    }
}

fn io_error(op: String, e: std::io::Error) -> KernelError {
    match e.raw_os_error() {
        Some(errno) => KernelError::errno(op, errno),
        None => KernelError::new(op, e.to_string()),
    }
}

impl Sysctl for ProcSysctl {
    fn get(&mut self, name: &str) -> Result<String, KernelError> {
        let path = self.path(name);
        std::fs::read_to_string(&path)
            .map(|v| v.trim_end().to_string())
            .map_err(|e| io_error(format!("read sysctl {name} ({})", path.display()), e))
    }

    fn set(&mut self, name: &str, value: &str) -> Result<(), KernelError> {
        let path = self.path(name);
        std::fs::write(&path, value)
            .map_err(|e| io_error(format!("set sysctl {name}={value} ({})", path.display()), e))
    }
}

/// In-memory sysctls: unknown names fail like a missing /proc/sys file.
#[derive(Debug, Default, Clone)]
pub struct SysctlTwin {
    pub values: BTreeMap<String, String>,
    /// Every write, in order.
    pub writes: Vec<(String, String)>,
}

impl SysctlTwin {
    pub fn with(values: &[(&str, &str)]) -> Self {
        Self {
            values: values
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            writes: Vec::new(),
        }
    }

    fn key(name: &str) -> String {
        name.replace('/', ".")
    }
}

impl Sysctl for SysctlTwin {
    fn get(&mut self, name: &str) -> Result<String, KernelError> {
        self.values
            .get(&Self::key(name))
            .cloned()
            .ok_or_else(|| KernelError::errno(format!("read sysctl {name}"), libc::ENOENT))
    }

    fn set(&mut self, name: &str, value: &str) -> Result<(), KernelError> {
        let key = Self::key(name);
        let Some(slot) = self.values.get_mut(&key) else {
            return Err(KernelError::errno(
                format!("set sysctl {name}={value}"),
                libc::ENOENT,
            ));
        };
        *slot = value.to_string();
        self.writes.push((key, value.to_string()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> SysctlTwin {
        SysctlTwin::with(&[
            ("net.ipv4.vs.conntrack", "0"),
            ("net.ipv4.vs.conn_reuse_mode", "1"),
            ("net.ipv4.vs.expire_nodest_conn", "0"),
            ("net.ipv4.vs.expire_quiescent_template", "0"),
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.arp_ignore", "0"),
            ("net.ipv4.conf.all.arp_announce", "0"),
        ])
    }

    #[test]
    fn conn_reuse_mode_is_set_only_between_4_1_and_5_9() {
        let has = |k| {
            ipvs_settings(k, false)
                .iter()
                .any(|(n, _)| *n == "net.ipv4.vs.conn_reuse_mode")
        };
        assert!(!has((4, 0)));
        assert!(has((4, 1)));
        assert!(has((5, 8)));
        assert!(!has((5, 9)));
        assert!(!has((6, 1)));
    }

    #[test]
    fn only_differing_values_are_written() {
        let mut twin = defaults();
        let changed = apply_ipvs_settings(&mut twin, (6, 1), false).unwrap();
        assert_eq!(
            changed,
            [
                "net.ipv4.vs.conntrack",
                "net.ipv4.vs.expire_nodest_conn",
                "net.ipv4.vs.expire_quiescent_template"
            ]
        );
        assert_eq!(twin.values["net.ipv4.vs.conn_reuse_mode"], "1");
        assert_eq!(twin.values["net.ipv4.conf.all.arp_ignore"], "0");
        // A second pass changes nothing.
        assert!(
            apply_ipvs_settings(&mut twin, (6, 1), false)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn strict_arp_and_old_kernels() {
        let mut twin = defaults();
        apply_ipvs_settings(&mut twin, (5, 4), true).unwrap();
        assert_eq!(twin.values["net.ipv4.vs.conn_reuse_mode"], "0");
        assert_eq!(twin.values["net.ipv4.conf.all.arp_ignore"], "1");
        assert_eq!(twin.values["net.ipv4.conf.all.arp_announce"], "2");
    }

    #[test]
    fn a_missing_sysctl_is_an_error_naming_it() {
        let mut twin = SysctlTwin::default();
        let e = ensure(&mut twin, "net.ipv4.vs.conntrack", 1).unwrap_err();
        assert_eq!(e.errno, Some(libc::ENOENT));
        assert!(e.to_string().contains("net.ipv4.vs.conntrack"), "{e}");
    }

    #[test]
    fn kernel_releases_parse() {
        assert_eq!(parse_release("6.1.0-56-amd64"), Some((6, 1)));
        assert_eq!(parse_release("5.10.0"), Some((5, 10)));
        assert_eq!(parse_release("4.19"), Some((4, 19)));
        assert_eq!(parse_release("garbage"), None);
    }

    #[test]
    fn proc_sysctl_reads_and_writes_files_under_its_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("net/ipv4")).unwrap();
        std::fs::write(dir.path().join("net/ipv4/ip_forward"), "0\n").unwrap();
        let mut s = ProcSysctl::with_root(dir.path());
        assert_eq!(s.get("net.ipv4.ip_forward").unwrap(), "0");
        assert!(ensure(&mut s, "net/ipv4/ip_forward", 1).unwrap());
        assert_eq!(s.get("net.ipv4.ip_forward").unwrap(), "1");
        let e = s.get("net.ipv4.vs.conntrack").unwrap_err();
        assert!(e.to_string().contains("net.ipv4.vs.conntrack"), "{e}");
    }
}
