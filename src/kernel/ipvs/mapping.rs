//! Between the IPVS wire types and kproxy's model: the request that carries
//! out an `IpvsOp`, and the `VirtualServer`s and `RealServer`s a dump
//! describes.

use std::net::IpAddr;

use netlink_packet_core::{DecodeError, ErrorContext};

use super::wire::{
    AF_INET, AF_INET6, CMD_ATTR_DEST, DEST_ATTR_ACTIVE_CONNS, DEST_ATTR_ADDR,
    DEST_ATTR_ADDR_FAMILY, DEST_ATTR_FWD_METHOD, DEST_ATTR_INACT_CONNS, DEST_ATTR_PORT,
    DEST_ATTR_WEIGHT, DestAttr, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, InetAddr, IpvsAttr,
    IpvsCmd, IpvsMessage, ServiceAttr, Stats, SvcFlags, raw_attrs, u16_be, u16_ne, u32_ne,
};
use super::{
    DestKey, DestStats, ForwardMethod, IpvsOp, Persistence, Protocol, RealServer, SVC_F_HASHED,
    SVC_F_PERSISTENT, ServiceKey, Timeouts, VirtualServer,
};

pub fn address_family(ip: IpAddr) -> u16 {
    if ip.is_ipv4() { AF_INET } else { AF_INET6 }
}

pub fn protocol_number(p: Protocol) -> u16 {
    match p {
        Protocol::Tcp => IPPROTO_TCP,
        Protocol::Udp => IPPROTO_UDP,
        Protocol::Sctp => IPPROTO_SCTP,
    }
}

pub fn protocol_from_number(n: u16) -> Option<Protocol> {
    match n {
        IPPROTO_TCP => Some(Protocol::Tcp),
        IPPROTO_UDP => Some(Protocol::Udp),
        IPPROTO_SCTP => Some(Protocol::Sctp),
        _ => None,
    }
}

/// The netmask bytes for a persistence mask expressed as kproxy does (an
/// IPv4 mask as a number, e.g. 0xffffff00; an IPv6 prefix length).
pub fn netmask_wire(af: u16, netmask: u32) -> [u8; 4] {
    if af == AF_INET6 {
        netmask.to_ne_bytes()
    } else {
        netmask.to_be_bytes()
    }
}

pub fn netmask_from_wire(af: u16, wire: [u8; 4]) -> u32 {
    if af == AF_INET6 {
        u32::from_ne_bytes(wire)
    } else {
        u32::from_be_bytes(wire)
    }
}

/// The attributes that name a virtual server (what the kernel needs to find it).
pub fn service_id_attrs(key: &ServiceKey) -> Vec<ServiceAttr> {
    vec![
        ServiceAttr::AddressFamily(address_family(key.addr)),
        ServiceAttr::Protocol(protocol_number(key.protocol)),
        ServiceAttr::Addr(InetAddr::from_ip(key.addr)),
        ServiceAttr::Port(key.port),
    ]
}

/// Every attribute NEW_SERVICE/SET_SERVICE requires.
pub fn service_attrs(vs: &VirtualServer) -> Vec<ServiceAttr> {
    let af = address_family(vs.key.addr);
    // Without persistence the kernel still wants a netmask, and refuses an
    // IPv6 one outside 1..=128: send the "whole address" mask, as ipvsadm does.
    let (timeout, netmask) = match vs.persistence {
        Some(p) => (p.timeout, p.netmask),
        None if af == AF_INET6 => (0, 128),
        None => (0, u32::MAX),
    };
    let mut attrs = service_id_attrs(&vs.key);
    attrs.extend([
        ServiceAttr::SchedName(vs.scheduler.clone()),
        // Mask all bits so that an edit sets exactly these flags (persistence
        // off clears the bit). HASHED is never sent: the kernel owns it.
        ServiceAttr::Flags(SvcFlags {
            flags: vs.flags() & !SVC_F_HASHED,
            mask: u32::MAX,
        }),
        ServiceAttr::Timeout(timeout),
        ServiceAttr::Netmask(netmask_wire(af, netmask)),
    ]);
    attrs
}

/// The attributes that name a real server within its virtual server.
pub fn dest_id_attrs(key: &DestKey) -> Vec<DestAttr> {
    vec![
        DestAttr::Addr(InetAddr::from_ip(key.addr)),
        DestAttr::Port(key.port),
        DestAttr::AddressFamily(address_family(key.addr)),
    ]
}

/// Every attribute NEW_DEST/SET_DEST requires.
pub fn dest_attrs(rs: &RealServer) -> Vec<DestAttr> {
    let mut attrs = dest_id_attrs(&rs.key);
    attrs.extend([
        DestAttr::FwdMethod(rs.forward.as_flag()),
        DestAttr::Weight(rs.weight),
        DestAttr::UpperThreshold(0),
        DestAttr::LowerThreshold(0),
    ]);
    attrs
}

/// The request that carries out one operation.
pub fn op_message(op: &IpvsOp) -> IpvsMessage {
    match op {
        IpvsOp::AddService(vs) => IpvsMessage::new(
            IpvsCmd::NewService,
            vec![IpvsAttr::Service(service_attrs(vs))],
        ),
        IpvsOp::EditService(vs) => IpvsMessage::new(
            IpvsCmd::SetService,
            vec![IpvsAttr::Service(service_attrs(vs))],
        ),
        IpvsOp::DelService(k) => IpvsMessage::new(
            IpvsCmd::DelService,
            vec![IpvsAttr::Service(service_id_attrs(k))],
        ),
        IpvsOp::AddDest(k, rs) => IpvsMessage::new(
            IpvsCmd::NewDest,
            vec![
                IpvsAttr::Service(service_id_attrs(k)),
                IpvsAttr::Dest(dest_attrs(rs)),
            ],
        ),
        IpvsOp::EditDest(k, rs) => IpvsMessage::new(
            IpvsCmd::SetDest,
            vec![
                IpvsAttr::Service(service_id_attrs(k)),
                IpvsAttr::Dest(dest_attrs(rs)),
            ],
        ),
        IpvsOp::DelDest(k, d) => IpvsMessage::new(
            IpvsCmd::DelDest,
            vec![
                IpvsAttr::Service(service_id_attrs(k)),
                IpvsAttr::Dest(dest_id_attrs(d)),
            ],
        ),
    }
}

/// The request for the destinations of one service (a dump).
pub fn get_dests_message(key: &ServiceKey) -> IpvsMessage {
    IpvsMessage::new(
        IpvsCmd::GetDest,
        vec![IpvsAttr::Service(service_id_attrs(key))],
    )
}

/// SET_CONFIG for the non-zero timeouts (zero means "leave as is").
pub fn set_config_message(t: Timeouts) -> IpvsMessage {
    let mut attrs = Vec::new();
    if t.tcp != 0 {
        attrs.push(IpvsAttr::TimeoutTcp(t.tcp));
    }
    if t.tcp_fin != 0 {
        attrs.push(IpvsAttr::TimeoutTcpFin(t.tcp_fin));
    }
    if t.udp != 0 {
        attrs.push(IpvsAttr::TimeoutUdp(t.udp));
    }
    IpvsMessage::new(IpvsCmd::SetConfig, attrs)
}

/// Timeouts from a GET_CONFIG reply (absent attributes read as 0).
pub fn timeouts_from(msg: &IpvsMessage) -> Timeouts {
    let mut t = Timeouts::default();
    for a in &msg.attrs {
        match a {
            IpvsAttr::TimeoutTcp(v) => t.tcp = *v,
            IpvsAttr::TimeoutTcpFin(v) => t.tcp_fin = *v,
            IpvsAttr::TimeoutUdp(v) => t.udp = *v,
            _ => {}
        }
    }
    t
}

/// `IPVS_CMD_GET_INFO`'s answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpvsInfo {
    /// `IP_VS_VERSION_CODE`, e.g. 0x010201.
    pub version: u32,
    /// Size of the connection hash table.
    pub conn_tab_size: u32,
}

impl IpvsInfo {
    pub fn from_message(msg: &IpvsMessage) -> Result<Self, DecodeError> {
        let mut version = None;
        let mut size = None;
        for a in &msg.attrs {
            match a {
                IpvsAttr::InfoVersion(v) => version = Some(*v),
                IpvsAttr::InfoConnTabSize(v) => size = Some(*v),
                _ => {}
            }
        }
        Ok(Self {
            version: version.ok_or("IPVS info without IPVS_INFO_ATTR_VERSION")?,
            conn_tab_size: size.ok_or("IPVS info without IPVS_INFO_ATTR_CONN_TAB_SIZE")?,
        })
    }

    /// As `ipvsadm -Ln` prints it: `1.2.1`.
    pub fn version_string(&self) -> String {
        format!(
            "{}.{}.{}",
            (self.version >> 16) & 0xff,
            (self.version >> 8) & 0xff,
            self.version & 0xff
        )
    }
}

/// A service as the kernel described it, with the address family it uses
/// (needed to read its destinations' addresses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpedService {
    pub service: VirtualServer,
    pub af: u16,
    pub stats: Stats,
}

/// Read a service out of its attributes. `Ok(None)` for services kproxy
/// cannot name and never owns: firewall-mark services and protocols other
/// than TCP/UDP/SCTP.
pub fn service_from_attrs(attrs: &[ServiceAttr]) -> Result<Option<DumpedService>, DecodeError> {
    let mut af = None;
    let mut proto = None;
    let mut addr = None;
    let mut port = None;
    let mut fwmark = 0;
    let mut sched = None;
    let mut flags = 0;
    let mut timeout = 0;
    let mut netmask = [0u8; 4];
    let mut stats = None;
    let mut stats64 = None;
    for a in attrs {
        match a {
            ServiceAttr::AddressFamily(v) => af = Some(*v),
            ServiceAttr::Protocol(v) => proto = Some(*v),
            ServiceAttr::Addr(v) => addr = Some(*v),
            ServiceAttr::Port(v) => port = Some(*v),
            ServiceAttr::Fwmark(v) => fwmark = *v,
            ServiceAttr::SchedName(v) => sched = Some(v.clone()),
            ServiceAttr::Flags(f) => flags = f.flags,
            ServiceAttr::Timeout(v) => timeout = *v,
            ServiceAttr::Netmask(v) => netmask = *v,
            ServiceAttr::Stats(s) => stats = Some(*s),
            ServiceAttr::Stats64(s) => stats64 = Some(*s),
            ServiceAttr::PeName(_) | ServiceAttr::Other(_) => {}
        }
    }
    let af = af.ok_or("IPVS service without IPVS_SVC_ATTR_AF")?;
    if fwmark != 0 {
        return Ok(None);
    }
    let Some(protocol) = proto.and_then(protocol_from_number) else {
        return Ok(None);
    };
    let addr = addr.ok_or("IPVS service without IPVS_SVC_ATTR_ADDR")?;
    let Some(ip) = addr.to_ip(af) else {
        return Ok(None);
    };
    let port = port.ok_or("IPVS service without IPVS_SVC_ATTR_PORT")?;
    let scheduler = sched.ok_or("IPVS service without IPVS_SVC_ATTR_SCHED_NAME")?;
    let persistence = (flags & SVC_F_PERSISTENT != 0).then(|| Persistence {
        timeout,
        netmask: netmask_from_wire(af, netmask),
    });
    Ok(Some(DumpedService {
        service: VirtualServer {
            key: ServiceKey {
                addr: ip,
                protocol,
                port,
            },
            scheduler,
            persistence,
            sched_flags: flags & !(SVC_F_PERSISTENT | SVC_F_HASHED),
        },
        af,
        stats: stats64.or(stats).unwrap_or_default(),
    }))
}

/// What a snapshot needs of one destination, however it was read.
struct DestFields {
    af: u16,
    addr: Option<InetAddr>,
    port: Option<u16>,
    fwd: u32,
    weight: u32,
    stats: DestStats,
}

impl DestFields {
    fn new(service_af: u16) -> Self {
        Self {
            af: service_af,
            addr: None,
            port: None,
            fwd: 0,
            weight: 0,
            stats: DestStats::default(),
        }
    }

    fn finish(self) -> Result<(RealServer, DestStats), DecodeError> {
        let af = self.af;
        let addr = self
            .addr
            .ok_or("IPVS destination without IPVS_DEST_ATTR_ADDR")?;
        let ip = addr
            .to_ip(af)
            .ok_or_else(|| DecodeError::from(format!("IPVS destination of unknown family {af}")))?;
        let port = self
            .port
            .ok_or("IPVS destination without IPVS_DEST_ATTR_PORT")?;
        Ok((
            RealServer {
                key: DestKey { addr: ip, port },
                weight: self.weight,
                forward: ForwardMethod::from_flag(self.fwd),
            },
            self.stats,
        ))
    }
}

/// Read a destination out of its attributes. `service_af` is the family its
/// address is in when the kernel does not say (kernels before 4.x).
pub fn dest_from_attrs(
    attrs: &[DestAttr],
    service_af: u16,
) -> Result<(RealServer, DestStats), DecodeError> {
    let mut f = DestFields::new(service_af);
    for a in attrs {
        match a {
            DestAttr::Addr(v) => f.addr = Some(*v),
            DestAttr::Port(v) => f.port = Some(*v),
            DestAttr::AddressFamily(v) => f.af = *v,
            DestAttr::FwdMethod(v) => f.fwd = *v,
            DestAttr::Weight(v) => f.weight = *v,
            DestAttr::ActiveConns(v) => f.stats.active_conns = *v,
            DestAttr::InactiveConns(v) => f.stats.inactive_conns = *v,
            _ => {}
        }
    }
    f.finish()
}

/// A destination straight from one whole NEW_DEST dump message (netlink
/// header included), for the snapshot's hot path: a dump reads every real
/// server of every virtual server, and the typed decode spends most of its
/// time on the twenty counters a snapshot never reads. Reads exactly what
/// `decode_message` + `dest_from_attrs` read (the tests hold them equal).
pub fn dest_from_message(
    msg: &[u8],
    service_af: u16,
) -> Result<(RealServer, DestStats), DecodeError> {
    let len = msg
        .get(..4)
        .map(|l| u32::from_ne_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .ok_or("truncated netlink message")?;
    // netlink header (16 bytes), then the generic-netlink header (4).
    let attrs = msg
        .get(20..len)
        .ok_or("truncated IPVS destination message")?;
    let mut f = DestFields::new(service_af);
    let mut seen = false;
    for a in raw_attrs(attrs) {
        let (kind, value) = a?;
        if kind != CMD_ATTR_DEST {
            continue;
        }
        seen = true;
        for d in raw_attrs(value) {
            let (kind, v) = d?;
            let ctx = || format!("invalid IPVS_DEST_ATTR {kind}");
            match kind {
                DEST_ATTR_ADDR => f.addr = Some(InetAddr::parse(v)),
                DEST_ATTR_PORT => f.port = Some(u16_be(v).with_context(ctx)?),
                DEST_ATTR_ADDR_FAMILY => f.af = u16_ne(v).with_context(ctx)?,
                DEST_ATTR_FWD_METHOD => f.fwd = u32_ne(v).with_context(ctx)?,
                DEST_ATTR_WEIGHT => f.weight = u32_ne(v).with_context(ctx)?,
                DEST_ATTR_ACTIVE_CONNS => f.stats.active_conns = u32_ne(v).with_context(ctx)?,
                DEST_ATTR_INACT_CONNS => f.stats.inactive_conns = u32_ne(v).with_context(ctx)?,
                _ => {}
            }
        }
    }
    if !seen {
        return Err("IPVS message without IPVS_CMD_ATTR_DEST".into());
    }
    f.finish()
}

#[cfg(test)]
#[path = "mapping_tests.rs"]
mod tests;
