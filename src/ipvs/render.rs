//! `ipvsadm -Ln` rendering of an IPVS table, so plans, dry runs and tests
//! read exactly like what operators see on the node.

use std::fmt::Write;
use std::net::IpAddr;

use crate::kernel::ipvs::{IpvsTable, SVC_F_PERSISTENT, ServiceEntry, ServiceKey};

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
    if vs.flags() & SVC_F_PERSISTENT != 0
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
    s
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
