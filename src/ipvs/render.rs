//! `ipvsadm -Ln` rendering of an IPVS table, so plans, dry runs and tests
//! read exactly like what operators see on the node.

use std::fmt::Write;
use std::net::IpAddr;

use crate::kernel::ipvs::{IpvsTable, SVC_F_PERSISTENT, ServiceEntry, ServiceKey};

/// `IP_VS_SVC_F_ONEPACKET` and the scheduler flags `IP_VS_SVC_F_SCHED1..3`
/// (linux/ip_vs.h); `sh` and `mh` call 1 "fallback" and 2 "port".
pub const SVC_F_ONEPACKET: u32 = 0x0004;
pub const SVC_F_SCHED1: u32 = 0x0008;
pub const SVC_F_SCHED2: u32 = 0x0010;
pub const SVC_F_SCHED3: u32 = 0x0020;

pub const HEADER: &str = "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n";

fn addr_port(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// The service line, as `ipvsadm -Ln` prints it.
pub fn service_line(e: &ServiceEntry) -> String {
    let vs = &e.service;
    // ipvsadm pads the protocol to four columns: "TCP  a:p", "SCTP a:p".
    let mut s = format!(
        "{:<4} {} {}",
        vs.key.protocol.api_name(),
        addr_port(vs.key.addr, vs.key.port),
        vs.scheduler
    );
    let flags = vs.flags();
    if let Some(names) = sched_flag_names(&vs.scheduler, flags) {
        let _ = write!(s, " ({names})");
    }
    if flags & SVC_F_PERSISTENT != 0
        && let Some(p) = vs.persistence
    {
        let _ = write!(s, " persistent {}", p.timeout);
        match vs.key.addr {
            IpAddr::V4(_) if p.netmask != 0xffff_ffff => {
                let m = std::net::Ipv4Addr::from(p.netmask);
                let _ = write!(s, " mask {m}");
            }
            IpAddr::V6(_) if p.netmask != 128 => {
                let _ = write!(s, " mask {}", p.netmask);
            }
            _ => {}
        }
    }
    if flags & SVC_F_ONEPACKET != 0 {
        s.push_str(" ops");
    }
    s
}

/// The scheduler flags as ipvsadm names them: by the scheduler's own names
/// for `sh` and `mh`, `flag-N` otherwise, comma-separated; None when no
/// scheduler flag is set.
fn sched_flag_names(scheduler: &str, flags: u32) -> Option<String> {
    let (one, two) = match scheduler {
        "sh" => ("sh-fallback", "sh-port"),
        "mh" => ("mh-fallback", "mh-port"),
        _ => ("flag-1", "flag-2"),
    };
    let names: Vec<&str> = [
        (SVC_F_SCHED1, one),
        (SVC_F_SCHED2, two),
        (SVC_F_SCHED3, "flag-3"),
    ]
    .into_iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, name)| name)
    .collect();
    (!names.is_empty()).then(|| names.join(","))
}

/// Sort order of `ipvsadm -Ln --sort`-like output: protocol, address, port.
fn order(k: &ServiceKey) -> (u8, IpAddr, u16) {
    let p = match k.protocol {
        crate::net::Protocol::Tcp => 0,
        crate::net::Protocol::Udp => 1,
        crate::net::Protocol::Sctp => 2,
    };
    (p, k.addr, k.port)
}

/// The body of `ipvsadm -Ln` (header lines included, version line not).
pub fn render(table: &IpvsTable) -> String {
    let mut out = String::from(HEADER);
    let mut entries: Vec<&ServiceEntry> = table.services.values().collect();
    entries.sort_by_key(|e| order(&e.service.key));
    for e in entries {
        out.push_str(&service_line(e));
        out.push('\n');
        for rs in e.dests.values() {
            let st = e.stats.get(&rs.key).copied().unwrap_or_default();
            let _ = writeln!(
                out,
                "  -> {:<28} {:<7} {:<6} {:<10} {:<10}",
                addr_port(rs.key.addr, rs.key.port),
                rs.forward.ipvsadm_name(),
                rs.weight,
                st.active_conns,
                st.inactive_conns
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::ipvs::{Persistence, VirtualServer};

    fn line(scheduler: &str, sched_flags: u32, persistent: bool) -> String {
        service_line(&ServiceEntry::new(VirtualServer {
            key: ServiceKey {
                addr: "10.96.0.1".parse().unwrap(),
                protocol: crate::net::Protocol::Tcp,
                port: 80,
            },
            scheduler: scheduler.into(),
            persistence: persistent.then_some(Persistence {
                timeout: 10800,
                netmask: 0xffff_ffff,
            }),
            sched_flags,
        }))
    }

    #[test]
    fn scheduler_flags_as_ipvsadm_prints_them() {
        // ipvsadm's print_service_entry: "(flags)" right after the
        // scheduler, named after sh's and mh's own options (ipvsadm -b
        // sh-fallback,sh-port / mh-fallback,mh-port), flag-N for others.
        assert_eq!(
            line("mh", SVC_F_SCHED2, false),
            "TCP  10.96.0.1:80 mh (mh-port)"
        );
        assert_eq!(
            line("mh", SVC_F_SCHED2, true),
            "TCP  10.96.0.1:80 mh (mh-port) persistent 10800"
        );
        assert_eq!(
            line("sh", SVC_F_SCHED1 | SVC_F_SCHED2, false),
            "TCP  10.96.0.1:80 sh (sh-fallback,sh-port)"
        );
        assert_eq!(
            line("rr", SVC_F_SCHED1 | SVC_F_SCHED3, false),
            "TCP  10.96.0.1:80 rr (flag-1,flag-3)"
        );
        assert_eq!(line("rr", 0, false), "TCP  10.96.0.1:80 rr");
    }
}
