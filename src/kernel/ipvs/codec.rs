//! Codec for the "IPVS" generic-netlink family (`linux/ip_vs.h`).
//!
//! Pure: bytes in, typed messages out, and back. No socket here, so every
//! message kind is unit-tested with golden bytes on any host (including one
//! whose kernel has no IPVS).
//!
//! Wire facts the kernel relies on:
//! - ports are big-endian (`__be16`);
//! - addresses are always 16 bytes (`union nf_inet_addr`), an IPv4 address
//!   taking the first 4 and the rest zero; the address family travels in its
//!   own attribute;
//! - service flags are a `{flags, mask}` pair in host order;
//! - the persistence netmask is `__be32`: an IPv4 mask in network order, but
//!   for IPv6 a prefix length stored as a plain host-order u32;
//! - replies use nested attributes without `NLA_F_NESTED`; we set it on what
//!   we send (the kernel masks it off) and accept both.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, ErrorContext, NLA_F_NESTED, Nla, NlaBuffer, NlasIterator,
    Parseable, ParseableParametrized,
};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};

use super::{
    DestKey, DestStats, ForwardMethod, IpvsOp, Persistence, Protocol, RealServer, SVC_F_HASHED,
    SVC_F_PERSISTENT, ServiceKey, Timeouts, VirtualServer,
};

/// `IPVS_GENL_NAME`.
pub const IPVS_GENL_NAME: &str = "IPVS";
/// `IPVS_GENL_VERSION`.
pub const IPVS_GENL_VERSION: u8 = 1;

pub const AF_INET: u16 = libc::AF_INET as u16;
pub const AF_INET6: u16 = libc::AF_INET6 as u16;

const IPPROTO_TCP: u16 = 6;
const IPPROTO_UDP: u16 = 17;
const IPPROTO_SCTP: u16 = 132;

// IPVS_CMD_ATTR_*
const CMD_ATTR_SERVICE: u16 = 1;
const CMD_ATTR_DEST: u16 = 2;
const CMD_ATTR_TIMEOUT_TCP: u16 = 4;
const CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
const CMD_ATTR_TIMEOUT_UDP: u16 = 6;
// IPVS_INFO_ATTR_*: top-level in SET_INFO/GET_INFO messages only, where they
// reuse the numbers of IPVS_CMD_ATTR_SERVICE/DEST.
const INFO_ATTR_VERSION: u16 = 1;
const INFO_ATTR_CONN_TAB_SIZE: u16 = 2;

// IPVS_SVC_ATTR_*
const SVC_ATTR_AF: u16 = 1;
const SVC_ATTR_PROTOCOL: u16 = 2;
const SVC_ATTR_ADDR: u16 = 3;
const SVC_ATTR_PORT: u16 = 4;
const SVC_ATTR_FWMARK: u16 = 5;
const SVC_ATTR_SCHED_NAME: u16 = 6;
const SVC_ATTR_FLAGS: u16 = 7;
const SVC_ATTR_TIMEOUT: u16 = 8;
const SVC_ATTR_NETMASK: u16 = 9;
const SVC_ATTR_STATS: u16 = 10;
const SVC_ATTR_PE_NAME: u16 = 11;
const SVC_ATTR_STATS64: u16 = 12;

// IPVS_DEST_ATTR_*
const DEST_ATTR_ADDR: u16 = 1;
const DEST_ATTR_PORT: u16 = 2;
const DEST_ATTR_FWD_METHOD: u16 = 3;
const DEST_ATTR_WEIGHT: u16 = 4;
const DEST_ATTR_U_THRESH: u16 = 5;
const DEST_ATTR_L_THRESH: u16 = 6;
const DEST_ATTR_ACTIVE_CONNS: u16 = 7;
const DEST_ATTR_INACT_CONNS: u16 = 8;
const DEST_ATTR_PERSIST_CONNS: u16 = 9;
const DEST_ATTR_STATS: u16 = 10;
const DEST_ATTR_ADDR_FAMILY: u16 = 11;
const DEST_ATTR_STATS64: u16 = 12;
const DEST_ATTR_TUN_TYPE: u16 = 13;
const DEST_ATTR_TUN_PORT: u16 = 14;
const DEST_ATTR_TUN_FLAGS: u16 = 15;

// IPVS_STATS_ATTR_*
const STATS_ATTR_CONNS: u16 = 1;
const STATS_ATTR_INPKTS: u16 = 2;
const STATS_ATTR_OUTPKTS: u16 = 3;
const STATS_ATTR_INBYTES: u16 = 4;
const STATS_ATTR_OUTBYTES: u16 = 5;
const STATS_ATTR_CPS: u16 = 6;
const STATS_ATTR_INPPS: u16 = 7;
const STATS_ATTR_OUTPPS: u16 = 8;
const STATS_ATTR_INBPS: u16 = 9;
const STATS_ATTR_OUTBPS: u16 = 10;

/// `IPVS_CMD_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpvsCmd {
    NewService,
    SetService,
    DelService,
    GetService,
    NewDest,
    SetDest,
    DelDest,
    GetDest,
    NewDaemon,
    DelDaemon,
    GetDaemon,
    SetConfig,
    GetConfig,
    SetInfo,
    GetInfo,
    Zero,
    Flush,
    /// A command this codec does not know (a newer kernel).
    Other(u8),
}

impl From<IpvsCmd> for u8 {
    fn from(c: IpvsCmd) -> u8 {
        match c {
            IpvsCmd::NewService => 1,
            IpvsCmd::SetService => 2,
            IpvsCmd::DelService => 3,
            IpvsCmd::GetService => 4,
            IpvsCmd::NewDest => 5,
            IpvsCmd::SetDest => 6,
            IpvsCmd::DelDest => 7,
            IpvsCmd::GetDest => 8,
            IpvsCmd::NewDaemon => 9,
            IpvsCmd::DelDaemon => 10,
            IpvsCmd::GetDaemon => 11,
            IpvsCmd::SetConfig => 12,
            IpvsCmd::GetConfig => 13,
            IpvsCmd::SetInfo => 14,
            IpvsCmd::GetInfo => 15,
            IpvsCmd::Zero => 16,
            IpvsCmd::Flush => 17,
            IpvsCmd::Other(v) => v,
        }
    }
}

impl From<u8> for IpvsCmd {
    fn from(v: u8) -> Self {
        match v {
            1 => IpvsCmd::NewService,
            2 => IpvsCmd::SetService,
            3 => IpvsCmd::DelService,
            4 => IpvsCmd::GetService,
            5 => IpvsCmd::NewDest,
            6 => IpvsCmd::SetDest,
            7 => IpvsCmd::DelDest,
            8 => IpvsCmd::GetDest,
            9 => IpvsCmd::NewDaemon,
            10 => IpvsCmd::DelDaemon,
            11 => IpvsCmd::GetDaemon,
            12 => IpvsCmd::SetConfig,
            13 => IpvsCmd::GetConfig,
            14 => IpvsCmd::SetInfo,
            15 => IpvsCmd::GetInfo,
            16 => IpvsCmd::Zero,
            17 => IpvsCmd::Flush,
            other => IpvsCmd::Other(other),
        }
    }
}

/// A `union nf_inet_addr`: 16 bytes whatever the family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InetAddr(pub [u8; 16]);

impl InetAddr {
    pub fn from_ip(ip: IpAddr) -> Self {
        let mut b = [0u8; 16];
        match ip {
            IpAddr::V4(a) => b[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => b = a.octets(),
        }
        InetAddr(b)
    }

    /// The address as the family says to read it; `None` for a family that
    /// is neither IPv4 nor IPv6.
    pub fn to_ip(&self, af: u16) -> Option<IpAddr> {
        match af {
            AF_INET => {
                let [a, b, c, d, ..] = self.0;
                Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
            }
            AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(self.0))),
            _ => None,
        }
    }

    fn parse(v: &[u8]) -> Self {
        // As the kernel's nla_memcpy: take what is there, zero the rest.
        let mut b = [0u8; 16];
        let n = v.len().min(16);
        b[..n].copy_from_slice(&v[..n]);
        InetAddr(b)
    }
}

/// `struct ip_vs_flags`: only the bits set in `mask` are changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SvcFlags {
    pub flags: u32,
    pub mask: u32,
}

/// Traffic counters (`IPVS_SVC_ATTR_STATS`/`STATS64`, and the DEST ones).
///
/// The 32-bit flavour carries `conns`, packets and rates as u32 and bytes
/// as u64; the 64-bit flavour carries everything as u64. Both decode here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stats {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

impl Stats {
    fn fields(&self) -> [(u16, u64); 10] {
        [
            (STATS_ATTR_CONNS, self.conns),
            (STATS_ATTR_INPKTS, self.inpkts),
            (STATS_ATTR_OUTPKTS, self.outpkts),
            (STATS_ATTR_INBYTES, self.inbytes),
            (STATS_ATTR_OUTBYTES, self.outbytes),
            (STATS_ATTR_CPS, self.cps),
            (STATS_ATTR_INPPS, self.inpps),
            (STATS_ATTR_OUTPPS, self.outpps),
            (STATS_ATTR_INBPS, self.inbps),
            (STATS_ATTR_OUTBPS, self.outbps),
        ]
    }

    fn width(kind: u16, wide: bool) -> usize {
        if wide || kind == STATS_ATTR_INBYTES || kind == STATS_ATTR_OUTBYTES {
            8
        } else {
            4
        }
    }

    fn value_len(&self, wide: bool) -> usize {
        self.fields()
            .iter()
            .map(|(k, _)| 4 + Self::width(*k, wide))
            .sum()
    }

    fn emit(&self, buf: &mut [u8], wide: bool) {
        let mut at = 0;
        for (kind, v) in self.fields() {
            let w = Self::width(kind, wide);
            let len = (4 + w) as u16;
            buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
            buf[at + 2..at + 4].copy_from_slice(&kind.to_ne_bytes());
            if w == 8 {
                buf[at + 4..at + 12].copy_from_slice(&v.to_ne_bytes());
            } else {
                buf[at + 4..at + 8].copy_from_slice(&(v as u32).to_ne_bytes());
            }
            at += 4 + w;
        }
    }

    fn parse(v: &[u8]) -> Result<Self, DecodeError> {
        let mut s = Stats::default();
        for nla in NlasIterator::new(v) {
            let nla = nla.context("stats attribute")?;
            let val = match nla.value().len() {
                4 => u32_ne(nla.value())? as u64,
                8 => u64_ne(nla.value())?,
                // IPVS_STATS_ATTR_PAD is empty; anything else unknown is skipped.
                _ => continue,
            };
            match nla.kind() {
                STATS_ATTR_CONNS => s.conns = val,
                STATS_ATTR_INPKTS => s.inpkts = val,
                STATS_ATTR_OUTPKTS => s.outpkts = val,
                STATS_ATTR_INBYTES => s.inbytes = val,
                STATS_ATTR_OUTBYTES => s.outbytes = val,
                STATS_ATTR_CPS => s.cps = val,
                STATS_ATTR_INPPS => s.inpps = val,
                STATS_ATTR_OUTPPS => s.outpps = val,
                STATS_ATTR_INBPS => s.inbps = val,
                STATS_ATTR_OUTBPS => s.outbps = val,
                _ => {}
            }
        }
        Ok(s)
    }
}

fn u16_ne(v: &[u8]) -> Result<u16, DecodeError> {
    let b: [u8; 2] = v
        .get(..2)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| DecodeError::invalid_number(2, v.len()))?;
    Ok(u16::from_ne_bytes(b))
}

fn u16_be(v: &[u8]) -> Result<u16, DecodeError> {
    u16_ne(v).map(|x| u16::from_be_bytes(x.to_ne_bytes()))
}

fn u32_ne(v: &[u8]) -> Result<u32, DecodeError> {
    let b: [u8; 4] = v
        .get(..4)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| DecodeError::invalid_number(4, v.len()))?;
    Ok(u32::from_ne_bytes(b))
}

fn u64_ne(v: &[u8]) -> Result<u64, DecodeError> {
    let b: [u8; 8] = v
        .get(..8)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| DecodeError::invalid_number(8, v.len()))?;
    Ok(u64::from_ne_bytes(b))
}

fn c_string(v: &[u8]) -> Result<String, DecodeError> {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8(v[..end].to_vec()).map_err(DecodeError::from)
}

fn emit_c_string(s: &str, buf: &mut [u8]) {
    buf[..s.len()].copy_from_slice(s.as_bytes());
    buf[s.len()] = 0;
}

fn nested_len<T: Nla>(attrs: &[T]) -> usize {
    attrs.iter().map(Emitable::buffer_len).sum()
}

fn parse_nested<T>(v: &[u8], what: &str) -> Result<Vec<T>, DecodeError>
where
    T: for<'a> Parseable<NlaBuffer<&'a [u8]>>,
{
    NlasIterator::new(v)
        .map(|nla| nla.and_then(|nla| T::parse(&nla)))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("failed to parse {what} attributes"))
}

/// `IPVS_SVC_ATTR_*`: one attribute inside `IPVS_CMD_ATTR_SERVICE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceAttr {
    AddressFamily(u16),
    /// IPPROTO_* number.
    Protocol(u16),
    Addr(InetAddr),
    /// Host order here; big-endian on the wire.
    Port(u16),
    Fwmark(u32),
    SchedName(String),
    Flags(SvcFlags),
    /// Persistence timeout, seconds.
    Timeout(u32),
    /// The `__be32` netmask exactly as on the wire (see the module notes).
    Netmask([u8; 4]),
    Stats(Stats),
    PeName(String),
    Stats64(Stats),
    Other(DefaultNla),
}

impl Nla for ServiceAttr {
    fn value_len(&self) -> usize {
        match self {
            ServiceAttr::AddressFamily(_) | ServiceAttr::Protocol(_) | ServiceAttr::Port(_) => 2,
            ServiceAttr::Addr(_) => 16,
            ServiceAttr::Fwmark(_) | ServiceAttr::Timeout(_) | ServiceAttr::Netmask(_) => 4,
            ServiceAttr::SchedName(s) | ServiceAttr::PeName(s) => s.len() + 1,
            ServiceAttr::Flags(_) => 8,
            ServiceAttr::Stats(s) => s.value_len(false),
            ServiceAttr::Stats64(s) => s.value_len(true),
            ServiceAttr::Other(n) => n.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            ServiceAttr::AddressFamily(_) => SVC_ATTR_AF,
            ServiceAttr::Protocol(_) => SVC_ATTR_PROTOCOL,
            ServiceAttr::Addr(_) => SVC_ATTR_ADDR,
            ServiceAttr::Port(_) => SVC_ATTR_PORT,
            ServiceAttr::Fwmark(_) => SVC_ATTR_FWMARK,
            ServiceAttr::SchedName(_) => SVC_ATTR_SCHED_NAME,
            ServiceAttr::Flags(_) => SVC_ATTR_FLAGS,
            ServiceAttr::Timeout(_) => SVC_ATTR_TIMEOUT,
            ServiceAttr::Netmask(_) => SVC_ATTR_NETMASK,
            ServiceAttr::Stats(_) => SVC_ATTR_STATS | NLA_F_NESTED,
            ServiceAttr::PeName(_) => SVC_ATTR_PE_NAME,
            ServiceAttr::Stats64(_) => SVC_ATTR_STATS64 | NLA_F_NESTED,
            ServiceAttr::Other(n) => n.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            ServiceAttr::AddressFamily(v) | ServiceAttr::Protocol(v) => {
                buf[..2].copy_from_slice(&v.to_ne_bytes())
            }
            ServiceAttr::Port(p) => buf[..2].copy_from_slice(&p.to_be_bytes()),
            ServiceAttr::Addr(a) => buf[..16].copy_from_slice(&a.0),
            ServiceAttr::Fwmark(v) | ServiceAttr::Timeout(v) => {
                buf[..4].copy_from_slice(&v.to_ne_bytes())
            }
            ServiceAttr::Netmask(m) => buf[..4].copy_from_slice(m),
            ServiceAttr::SchedName(s) | ServiceAttr::PeName(s) => emit_c_string(s, buf),
            ServiceAttr::Flags(f) => {
                buf[..4].copy_from_slice(&f.flags.to_ne_bytes());
                buf[4..8].copy_from_slice(&f.mask.to_ne_bytes());
            }
            ServiceAttr::Stats(s) => s.emit(buf, false),
            ServiceAttr::Stats64(s) => s.emit(buf, true),
            ServiceAttr::Other(n) => n.emit_value(buf),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for ServiceAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        let ctx = |name: &str| format!("invalid IPVS_SVC_ATTR_{name}");
        Ok(match buf.kind() {
            SVC_ATTR_AF => ServiceAttr::AddressFamily(u16_ne(v).with_context(|| ctx("AF"))?),
            SVC_ATTR_PROTOCOL => ServiceAttr::Protocol(u16_ne(v).with_context(|| ctx("PROTOCOL"))?),
            SVC_ATTR_ADDR => ServiceAttr::Addr(InetAddr::parse(v)),
            SVC_ATTR_PORT => ServiceAttr::Port(u16_be(v).with_context(|| ctx("PORT"))?),
            SVC_ATTR_FWMARK => ServiceAttr::Fwmark(u32_ne(v).with_context(|| ctx("FWMARK"))?),
            SVC_ATTR_SCHED_NAME => {
                ServiceAttr::SchedName(c_string(v).with_context(|| ctx("SCHED_NAME"))?)
            }
            SVC_ATTR_FLAGS => ServiceAttr::Flags(SvcFlags {
                flags: u32_ne(v).with_context(|| ctx("FLAGS"))?,
                mask: u32_ne(v.get(4..).unwrap_or(&[])).with_context(|| ctx("FLAGS"))?,
            }),
            SVC_ATTR_TIMEOUT => ServiceAttr::Timeout(u32_ne(v).with_context(|| ctx("TIMEOUT"))?),
            SVC_ATTR_NETMASK => ServiceAttr::Netmask(
                v.get(..4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| DecodeError::invalid_number(4, v.len()))
                    .with_context(|| ctx("NETMASK"))?,
            ),
            SVC_ATTR_STATS => ServiceAttr::Stats(Stats::parse(v).with_context(|| ctx("STATS"))?),
            SVC_ATTR_PE_NAME => ServiceAttr::PeName(c_string(v).with_context(|| ctx("PE_NAME"))?),
            SVC_ATTR_STATS64 => {
                ServiceAttr::Stats64(Stats::parse(v).with_context(|| ctx("STATS64"))?)
            }
            _ => ServiceAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// `IPVS_DEST_ATTR_*`: one attribute inside `IPVS_CMD_ATTR_DEST`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DestAttr {
    Addr(InetAddr),
    /// Host order here; big-endian on the wire.
    Port(u16),
    /// `IP_VS_CONN_F_*` forwarding method (and other connection flags).
    FwdMethod(u32),
    Weight(u32),
    UpperThreshold(u32),
    LowerThreshold(u32),
    ActiveConns(u32),
    InactiveConns(u32),
    PersistConns(u32),
    Stats(Stats),
    AddressFamily(u16),
    Stats64(Stats),
    TunType(u8),
    /// Host order here; big-endian on the wire.
    TunPort(u16),
    TunFlags(u16),
    Other(DefaultNla),
}

impl Nla for DestAttr {
    fn value_len(&self) -> usize {
        match self {
            DestAttr::Addr(_) => 16,
            DestAttr::Port(_)
            | DestAttr::AddressFamily(_)
            | DestAttr::TunPort(_)
            | DestAttr::TunFlags(_) => 2,
            DestAttr::TunType(_) => 1,
            DestAttr::FwdMethod(_)
            | DestAttr::Weight(_)
            | DestAttr::UpperThreshold(_)
            | DestAttr::LowerThreshold(_)
            | DestAttr::ActiveConns(_)
            | DestAttr::InactiveConns(_)
            | DestAttr::PersistConns(_) => 4,
            DestAttr::Stats(s) => s.value_len(false),
            DestAttr::Stats64(s) => s.value_len(true),
            DestAttr::Other(n) => n.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            DestAttr::Addr(_) => DEST_ATTR_ADDR,
            DestAttr::Port(_) => DEST_ATTR_PORT,
            DestAttr::FwdMethod(_) => DEST_ATTR_FWD_METHOD,
            DestAttr::Weight(_) => DEST_ATTR_WEIGHT,
            DestAttr::UpperThreshold(_) => DEST_ATTR_U_THRESH,
            DestAttr::LowerThreshold(_) => DEST_ATTR_L_THRESH,
            DestAttr::ActiveConns(_) => DEST_ATTR_ACTIVE_CONNS,
            DestAttr::InactiveConns(_) => DEST_ATTR_INACT_CONNS,
            DestAttr::PersistConns(_) => DEST_ATTR_PERSIST_CONNS,
            DestAttr::Stats(_) => DEST_ATTR_STATS | NLA_F_NESTED,
            DestAttr::AddressFamily(_) => DEST_ATTR_ADDR_FAMILY,
            DestAttr::Stats64(_) => DEST_ATTR_STATS64 | NLA_F_NESTED,
            DestAttr::TunType(_) => DEST_ATTR_TUN_TYPE,
            DestAttr::TunPort(_) => DEST_ATTR_TUN_PORT,
            DestAttr::TunFlags(_) => DEST_ATTR_TUN_FLAGS,
            DestAttr::Other(n) => n.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            DestAttr::Addr(a) => buf[..16].copy_from_slice(&a.0),
            DestAttr::Port(p) | DestAttr::TunPort(p) => buf[..2].copy_from_slice(&p.to_be_bytes()),
            DestAttr::AddressFamily(v) | DestAttr::TunFlags(v) => {
                buf[..2].copy_from_slice(&v.to_ne_bytes())
            }
            DestAttr::TunType(v) => buf[0] = *v,
            DestAttr::FwdMethod(v)
            | DestAttr::Weight(v)
            | DestAttr::UpperThreshold(v)
            | DestAttr::LowerThreshold(v)
            | DestAttr::ActiveConns(v)
            | DestAttr::InactiveConns(v)
            | DestAttr::PersistConns(v) => buf[..4].copy_from_slice(&v.to_ne_bytes()),
            DestAttr::Stats(s) => s.emit(buf, false),
            DestAttr::Stats64(s) => s.emit(buf, true),
            DestAttr::Other(n) => n.emit_value(buf),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for DestAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        let ctx = |name: &str| format!("invalid IPVS_DEST_ATTR_{name}");
        Ok(match buf.kind() {
            DEST_ATTR_ADDR => DestAttr::Addr(InetAddr::parse(v)),
            DEST_ATTR_PORT => DestAttr::Port(u16_be(v).with_context(|| ctx("PORT"))?),
            DEST_ATTR_FWD_METHOD => {
                DestAttr::FwdMethod(u32_ne(v).with_context(|| ctx("FWD_METHOD"))?)
            }
            DEST_ATTR_WEIGHT => DestAttr::Weight(u32_ne(v).with_context(|| ctx("WEIGHT"))?),
            DEST_ATTR_U_THRESH => {
                DestAttr::UpperThreshold(u32_ne(v).with_context(|| ctx("U_THRESH"))?)
            }
            DEST_ATTR_L_THRESH => {
                DestAttr::LowerThreshold(u32_ne(v).with_context(|| ctx("L_THRESH"))?)
            }
            DEST_ATTR_ACTIVE_CONNS => {
                DestAttr::ActiveConns(u32_ne(v).with_context(|| ctx("ACTIVE_CONNS"))?)
            }
            DEST_ATTR_INACT_CONNS => {
                DestAttr::InactiveConns(u32_ne(v).with_context(|| ctx("INACT_CONNS"))?)
            }
            DEST_ATTR_PERSIST_CONNS => {
                DestAttr::PersistConns(u32_ne(v).with_context(|| ctx("PERSIST_CONNS"))?)
            }
            DEST_ATTR_STATS => DestAttr::Stats(Stats::parse(v).with_context(|| ctx("STATS"))?),
            DEST_ATTR_ADDR_FAMILY => {
                DestAttr::AddressFamily(u16_ne(v).with_context(|| ctx("ADDR_FAMILY"))?)
            }
            DEST_ATTR_STATS64 => {
                DestAttr::Stats64(Stats::parse(v).with_context(|| ctx("STATS64"))?)
            }
            DEST_ATTR_TUN_TYPE => DestAttr::TunType(
                *v.first()
                    .ok_or_else(|| DecodeError::invalid_number(1, 0))
                    .with_context(|| ctx("TUN_TYPE"))?,
            ),
            DEST_ATTR_TUN_PORT => DestAttr::TunPort(u16_be(v).with_context(|| ctx("TUN_PORT"))?),
            DEST_ATTR_TUN_FLAGS => DestAttr::TunFlags(u16_ne(v).with_context(|| ctx("TUN_FLAGS"))?),
            _ => DestAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// A top-level attribute of an IPVS message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpvsAttr {
    Service(Vec<ServiceAttr>),
    Dest(Vec<DestAttr>),
    TimeoutTcp(u32),
    TimeoutTcpFin(u32),
    TimeoutUdp(u32),
    /// `IPVS_INFO_ATTR_VERSION` (only in GET_INFO/SET_INFO messages).
    InfoVersion(u32),
    /// `IPVS_INFO_ATTR_CONN_TAB_SIZE` (only in GET_INFO/SET_INFO messages).
    InfoConnTabSize(u32),
    Other(DefaultNla),
}

impl Nla for IpvsAttr {
    fn value_len(&self) -> usize {
        match self {
            IpvsAttr::Service(a) => nested_len(a),
            IpvsAttr::Dest(a) => nested_len(a),
            IpvsAttr::TimeoutTcp(_)
            | IpvsAttr::TimeoutTcpFin(_)
            | IpvsAttr::TimeoutUdp(_)
            | IpvsAttr::InfoVersion(_)
            | IpvsAttr::InfoConnTabSize(_) => 4,
            IpvsAttr::Other(n) => n.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            IpvsAttr::Service(_) => CMD_ATTR_SERVICE | NLA_F_NESTED,
            IpvsAttr::Dest(_) => CMD_ATTR_DEST | NLA_F_NESTED,
            IpvsAttr::TimeoutTcp(_) => CMD_ATTR_TIMEOUT_TCP,
            IpvsAttr::TimeoutTcpFin(_) => CMD_ATTR_TIMEOUT_TCP_FIN,
            IpvsAttr::TimeoutUdp(_) => CMD_ATTR_TIMEOUT_UDP,
            IpvsAttr::InfoVersion(_) => INFO_ATTR_VERSION,
            IpvsAttr::InfoConnTabSize(_) => INFO_ATTR_CONN_TAB_SIZE,
            IpvsAttr::Other(n) => n.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            IpvsAttr::Service(a) => a.as_slice().emit(buf),
            IpvsAttr::Dest(a) => a.as_slice().emit(buf),
            IpvsAttr::TimeoutTcp(v)
            | IpvsAttr::TimeoutTcpFin(v)
            | IpvsAttr::TimeoutUdp(v)
            | IpvsAttr::InfoVersion(v)
            | IpvsAttr::InfoConnTabSize(v) => buf[..4].copy_from_slice(&v.to_ne_bytes()),
            IpvsAttr::Other(n) => n.emit_value(buf),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> ParseableParametrized<NlaBuffer<&'a T>, IpvsCmd> for IpvsAttr {
    fn parse_with_param(buf: &NlaBuffer<&'a T>, cmd: IpvsCmd) -> Result<Self, DecodeError> {
        let v = buf.value();
        let info = matches!(cmd, IpvsCmd::GetInfo | IpvsCmd::SetInfo);
        Ok(match buf.kind() {
            INFO_ATTR_VERSION if info => {
                IpvsAttr::InfoVersion(u32_ne(v).context("invalid IPVS_INFO_ATTR_VERSION")?)
            }
            INFO_ATTR_CONN_TAB_SIZE if info => IpvsAttr::InfoConnTabSize(
                u32_ne(v).context("invalid IPVS_INFO_ATTR_CONN_TAB_SIZE")?,
            ),
            CMD_ATTR_SERVICE => IpvsAttr::Service(parse_nested(v, "IPVS_CMD_ATTR_SERVICE")?),
            CMD_ATTR_DEST => IpvsAttr::Dest(parse_nested(v, "IPVS_CMD_ATTR_DEST")?),
            CMD_ATTR_TIMEOUT_TCP => {
                IpvsAttr::TimeoutTcp(u32_ne(v).context("invalid IPVS_CMD_ATTR_TIMEOUT_TCP")?)
            }
            CMD_ATTR_TIMEOUT_TCP_FIN => {
                IpvsAttr::TimeoutTcpFin(u32_ne(v).context("invalid IPVS_CMD_ATTR_TIMEOUT_TCP_FIN")?)
            }
            CMD_ATTR_TIMEOUT_UDP => {
                IpvsAttr::TimeoutUdp(u32_ne(v).context("invalid IPVS_CMD_ATTR_TIMEOUT_UDP")?)
            }
            _ => IpvsAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// One IPVS generic-netlink message (the part after the genl header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpvsMessage {
    pub cmd: IpvsCmd,
    pub attrs: Vec<IpvsAttr>,
}

impl IpvsMessage {
    pub fn new(cmd: IpvsCmd, attrs: Vec<IpvsAttr>) -> Self {
        Self { cmd, attrs }
    }

    /// The nested service attributes, if the message carries them.
    pub fn service(&self) -> Option<&[ServiceAttr]> {
        self.attrs.iter().find_map(|a| match a {
            IpvsAttr::Service(s) => Some(s.as_slice()),
            _ => None,
        })
    }

    /// The nested destination attributes, if the message carries them.
    pub fn dest(&self) -> Option<&[DestAttr]> {
        self.attrs.iter().find_map(|a| match a {
            IpvsAttr::Dest(d) => Some(d.as_slice()),
            _ => None,
        })
    }
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }

    fn command(&self) -> u8 {
        self.cmd.into()
    }

    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        nested_len(&self.attrs)
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let cmd = IpvsCmd::from(header.cmd);
        let attrs = NlasIterator::new(buf)
            .map(|nla| nla.and_then(|nla| IpvsAttr::parse_with_param(&nla, cmd)))
            .collect::<Result<Vec<_>, _>>()
            .context("failed to parse IPVS message attributes")?;
        Ok(Self { cmd, attrs })
    }
}

/// Decode one whole netlink message (header included) of the IPVS family.
pub fn decode_message(bytes: &[u8]) -> Result<IpvsMessage, DecodeError> {
    match NetlinkMessage::<GenlMessage<IpvsMessage>>::deserialize(bytes)?.payload {
        NetlinkPayload::InnerMessage(m) => Ok(m.payload),
        other => Err(format!("not an IPVS message: {other:?}").into()),
    }
}

/// Encode one whole netlink request: header (`family`, `flags`, `seq`),
/// generic-netlink header, attributes; appended to `out`. Generic so that the
/// controller's GETFAMILY goes out the same way.
pub fn encode_request<P>(out: &mut Vec<u8>, family: u16, seq: u32, flags: u16, msg: P)
where
    P: GenlFamily + Emitable + std::fmt::Debug,
{
    let mut genl = GenlMessage::from_payload(msg);
    genl.set_resolved_family_id(family);
    let mut nl = NetlinkMessage::from(genl);
    nl.header.flags = flags;
    nl.header.sequence_number = seq;
    nl.finalize();
    let start = out.len();
    out.resize(start + nl.buffer_len(), 0);
    nl.serialize(&mut out[start..]);
}

// ---------------------------------------------------------------------------
// Between the kernel's attributes and kproxy's types.

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

/// Attributes as (type, value) straight off the bytes, nothing decoded.
fn raw_attrs(mut b: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), DecodeError>> {
    std::iter::from_fn(move || {
        if b.is_empty() {
            return None;
        }
        let len = b
            .get(..2)
            .map(|l| u16::from_ne_bytes([l[0], l[1]]) as usize);
        match len {
            Some(len) if len >= 4 && len <= b.len() => {
                let kind = u16::from_ne_bytes([b[2], b[3]]) & !(NLA_F_NESTED | 0x4000);
                let value = &b[4..len];
                b = &b[((len + 3) & !3).min(b.len())..];
                Some(Ok((kind, value)))
            }
            _ => {
                b = &[];
                Some(Err(DecodeError::from("malformed netlink attribute")))
            }
        }
    })
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
#[path = "codec_tests.rs"]
mod tests;
