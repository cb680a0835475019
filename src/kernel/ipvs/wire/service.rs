//! Service attributes (`IPVS_SVC_ATTR_*`) and the counters they carry.

use netlink_packet_core::{
    DecodeError, DefaultNla, ErrorContext, NLA_F_NESTED, Nla, NlaBuffer, NlasIterator, Parseable,
};

use super::{InetAddr, c_string, emit_c_string, u16_be, u16_ne, u32_ne, u64_ne};

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

    pub(crate) fn value_len(&self, wide: bool) -> usize {
        self.fields()
            .iter()
            .map(|(k, _)| 4 + Self::width(*k, wide))
            .sum()
    }

    pub(crate) fn emit(&self, buf: &mut [u8], wide: bool) {
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

    pub(crate) fn parse(v: &[u8]) -> Result<Self, DecodeError> {
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
