//! The netfilter conntrack sysctls kube-proxy sets at start-up, as
//! upstream v1.36.3 computes and applies them (pkg/proxy/conntrack/
//! sysctls.go, called from server_linux.go platformSetup):
//!
//! - `nf_conntrack_max` = max-per-core × CPUs, at least `--conntrack-min`,
//!   at most 1Mi (that cap wins over the minimum); not touched when
//!   max-per-core is 0. After it, the conntrack hash table is grown to
//!   max/4 buckets when smaller (`/sys/module/nf_conntrack/parameters/
//!   hashsize`, global to the host).
//! - the TCP established / close-wait and UDP timeouts, in whole seconds,
//!   when greater than 0; `nf_conntrack_tcp_be_liberal=1` when asked.
//!
//! Each value is written only when it differs (an unreadable value is
//! written). Every failure, the hash size included, is an error: upstream
//! refuses to start ("could not set conntrack parameters from kube-proxy
//! configuration"); v1.36 no longer has the read-only-sysfs leniency of
//! older releases.

use super::KernelError;
use super::sysctl::{ProcSysctl, Sysctl};
use crate::config::Config;

pub const MAX: &str = "net/netfilter/nf_conntrack_max";
pub const TCP_ESTABLISHED: &str = "net/netfilter/nf_conntrack_tcp_timeout_established";
pub const TCP_CLOSE_WAIT: &str = "net/netfilter/nf_conntrack_tcp_timeout_close_wait";
pub const TCP_BE_LIBERAL: &str = "net/netfilter/nf_conntrack_tcp_be_liberal";
pub const UDP: &str = "net/netfilter/nf_conntrack_udp_timeout";
pub const UDP_STREAM: &str = "net/netfilter/nf_conntrack_udp_timeout_stream";

/// Where the hash size lives, and its name there.
pub const MODULE_PARAMETERS: &str = "/sys/module/nf_conntrack/parameters";
pub const HASHSIZE: &str = "hashsize";

/// Upstream's cap on a scaled nf_conntrack_max.
pub const MAX_LIMIT: i64 = 1 << 20;

/// nf_conntrack_max for `ncpu` CPUs; 0 means leave it as it is.
pub fn conntrack_max(c: &Config, ncpu: usize) -> i64 {
    let per_core = i64::from(c.conntrack.max_per_core);
    if per_core <= 0 {
        return 0;
    }
    let scaled = per_core.saturating_mul(ncpu as i64);
    if scaled > MAX_LIMIT {
        return MAX_LIMIT;
    }
    scaled.max(i64::from(c.conntrack.min))
}

/// The sysctls to set, in upstream's order, as (path under /proc/sys, value).
pub fn conntrack_settings(c: &Config, ncpu: usize) -> Vec<(&'static str, i64)> {
    let ct = &c.conntrack;
    let mut out = Vec::new();
    let max = conntrack_max(c, ncpu);
    if max > 0 {
        out.push((MAX, max));
    }
    for (name, d) in [
        (TCP_ESTABLISHED, ct.tcp_established_timeout),
        (TCP_CLOSE_WAIT, ct.tcp_close_wait_timeout),
    ] {
        if !d.is_zero() {
            out.push((name, d.as_secs() as i64));
        }
    }
    if ct.tcp_be_liberal {
        out.push((TCP_BE_LIBERAL, 1));
    }
    for (name, d) in [(UDP, ct.udp_timeout), (UDP_STREAM, ct.udp_stream_timeout)] {
        if !d.is_zero() {
            out.push((name, d.as_secs() as i64));
        }
    }
    out
}

/// Write `value` unless `name` already has it; true when written.
fn set_int(sysctl: &mut dyn Sysctl, name: &str, value: i64) -> Result<bool, KernelError> {
    let current = sysctl.get(name).ok();
    if current.and_then(|v| v.trim().parse::<i64>().ok()) == Some(value) {
        return Ok(false);
    }
    sysctl.set(name, &value.to_string())?;
    Ok(true)
}

/// Apply `settings` (from `conntrack_settings`): `sysctl` is /proc/sys,
/// `params` the nf_conntrack module's parameters. Returns what was changed
/// (`name=value`); the first failure stops and is returned.
pub fn apply_conntrack_settings(
    sysctl: &mut dyn Sysctl,
    params: &mut dyn Sysctl,
    settings: &[(&str, i64)],
) -> Result<Vec<String>, KernelError> {
    let mut changed = Vec::new();
    for &(name, value) in settings {
        if set_int(sysctl, name, value)? {
            changed.push(format!("{name}={value}"));
        }
        if name == MAX {
            let raw = params.get(HASHSIZE)?;
            let hashsize: i64 = raw.trim().parse().map_err(|_| {
                KernelError::new(
                    format!("read {MODULE_PARAMETERS}/{HASHSIZE}"),
                    format!("{raw:?} is not a number"),
                )
            })?;
            if hashsize < value / 4 {
                params.set(HASHSIZE, &(value / 4).to_string())?;
                changed.push(format!("{MODULE_PARAMETERS}/{HASHSIZE}={}", value / 4));
            }
        }
    }
    Ok(changed)
}

/// Apply `config`'s conntrack settings to this host's kernel.
pub fn apply_conntrack(config: &Config) -> Result<Vec<String>, KernelError> {
    let ncpu = crate::config::system::detect_num_cpu();
    apply_conntrack_settings(
        &mut ProcSysctl::default(),
        &mut ProcSysctl::with_root(MODULE_PARAMETERS),
        &conntrack_settings(config, ncpu),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::kernel::sysctl::SysctlTwin;

    fn kernel() -> SysctlTwin {
        SysctlTwin::with(&[
            ("net.netfilter.nf_conntrack_max", "65536"),
            (
                "net.netfilter.nf_conntrack_tcp_timeout_established",
                "432000",
            ),
            ("net.netfilter.nf_conntrack_tcp_timeout_close_wait", "60"),
            ("net.netfilter.nf_conntrack_tcp_be_liberal", "0"),
            ("net.netfilter.nf_conntrack_udp_timeout", "30"),
            ("net.netfilter.nf_conntrack_udp_timeout_stream", "120"),
        ])
    }

    #[test]
    fn max_follows_upstream() {
        let mut c = Config::default();
        // 32768 per core: 4 CPUs give the 131072 minimum, 8 give 262144.
        assert_eq!(conntrack_max(&c, 1), 131072);
        assert_eq!(conntrack_max(&c, 4), 131072);
        assert_eq!(conntrack_max(&c, 8), 262144);
        // The 1Mi cap wins over everything, the minimum included.
        assert_eq!(conntrack_max(&c, 64), MAX_LIMIT);
        c.conntrack.min = 2_000_000;
        assert_eq!(conntrack_max(&c, 64), MAX_LIMIT);
        assert_eq!(conntrack_max(&c, 2), 2_000_000);
        c.conntrack.max_per_core = 0;
        assert_eq!(
            conntrack_max(&c, 8),
            0,
            "0 leaves it and ignores the minimum"
        );
    }

    #[test]
    fn settings_of_the_defaults_and_of_every_flag() {
        let c = Config::default();
        assert_eq!(
            conntrack_settings(&c, 8),
            [
                (MAX, 262144),
                (TCP_ESTABLISHED, 86400),
                (TCP_CLOSE_WAIT, 3600)
            ]
        );
        let mut c = Config::default();
        c.conntrack.max_per_core = 0;
        c.conntrack.tcp_established_timeout = Duration::ZERO;
        c.conntrack.tcp_close_wait_timeout = Duration::from_millis(1500);
        c.conntrack.tcp_be_liberal = true;
        c.conntrack.udp_timeout = Duration::from_secs(15);
        c.conntrack.udp_stream_timeout = Duration::from_secs(90);
        assert_eq!(
            conntrack_settings(&c, 8),
            [
                (TCP_CLOSE_WAIT, 1),
                (TCP_BE_LIBERAL, 1),
                (UDP, 15),
                (UDP_STREAM, 90)
            ]
        );
    }

    #[test]
    fn only_differences_are_written_and_the_hash_grows() {
        let mut sys = kernel();
        let mut params = SysctlTwin::with(&[("hashsize", "16384")]);
        let settings = conntrack_settings(&Config::default(), 8);
        let changed = apply_conntrack_settings(&mut sys, &mut params, &settings).unwrap();
        assert_eq!(
            changed,
            [
                "net/netfilter/nf_conntrack_max=262144",
                "/sys/module/nf_conntrack/parameters/hashsize=65536",
                "net/netfilter/nf_conntrack_tcp_timeout_established=86400",
                "net/netfilter/nf_conntrack_tcp_timeout_close_wait=3600",
            ]
        );
        assert_eq!(sys.values["net.netfilter.nf_conntrack_udp_timeout"], "30");
        // A second pass changes nothing; a big enough table is left alone.
        assert!(
            apply_conntrack_settings(&mut sys, &mut params, &settings)
                .unwrap()
                .is_empty()
        );
        let mut params = SysctlTwin::with(&[("hashsize", "1000000")]);
        let mut sys = kernel();
        apply_conntrack_settings(&mut sys, &mut params, &settings).unwrap();
        assert!(params.writes.is_empty());
    }

    #[test]
    fn failures_are_errors_the_hash_size_included() {
        let settings = conntrack_settings(&Config::default(), 8);
        // No nf_conntrack: the sysctl cannot be written.
        let e = apply_conntrack_settings(
            &mut SysctlTwin::default(),
            &mut SysctlTwin::default(),
            &settings,
        )
        .unwrap_err();
        assert!(e.to_string().contains("nf_conntrack_max"), "{e}");
        // nf_conntrack_max set, the hash size unreadable: still an error.
        let e = apply_conntrack_settings(&mut kernel(), &mut SysctlTwin::default(), &settings)
            .unwrap_err();
        assert!(e.to_string().contains("hashsize"), "{e}");
        let mut bad = SysctlTwin::with(&[("hashsize", "lots")]);
        assert!(apply_conntrack_settings(&mut kernel(), &mut bad, &settings).is_err());
    }

    #[test]
    fn proc_files_under_a_root() {
        let dir = tempfile::tempdir().unwrap();
        let net = dir.path().join("net/netfilter");
        std::fs::create_dir_all(&net).unwrap();
        std::fs::write(net.join("nf_conntrack_max"), "65536\n").unwrap();
        let params_dir = dir.path().join("params");
        std::fs::create_dir_all(&params_dir).unwrap();
        std::fs::write(params_dir.join("hashsize"), "1024\n").unwrap();
        let mut c = Config::default();
        c.conntrack.tcp_established_timeout = Duration::ZERO;
        c.conntrack.tcp_close_wait_timeout = Duration::ZERO;
        apply_conntrack_settings(
            &mut ProcSysctl::with_root(dir.path()),
            &mut ProcSysctl::with_root(&params_dir),
            &conntrack_settings(&c, 2),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(net.join("nf_conntrack_max")).unwrap(),
            "131072"
        );
        assert_eq!(
            std::fs::read_to_string(params_dir.join("hashsize")).unwrap(),
            "32768"
        );
    }
}
