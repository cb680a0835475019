//! Destination ("real server") attributes (`IPVS_DEST_ATTR_*`).

use netlink_packet_core::{
    DecodeError, DefaultNla, ErrorContext, NLA_F_NESTED, Nla, NlaBuffer, Parseable,
};

use super::{InetAddr, Stats, u16_be, u16_ne, u32_ne};

// IPVS_DEST_ATTR_*
pub(crate) const DEST_ATTR_ADDR: u16 = 1;
pub(crate) const DEST_ATTR_PORT: u16 = 2;
pub(crate) const DEST_ATTR_FWD_METHOD: u16 = 3;
pub(crate) const DEST_ATTR_WEIGHT: u16 = 4;
pub(crate) const DEST_ATTR_U_THRESH: u16 = 5;
pub(crate) const DEST_ATTR_L_THRESH: u16 = 6;
pub(crate) const DEST_ATTR_ACTIVE_CONNS: u16 = 7;
pub(crate) const DEST_ATTR_INACT_CONNS: u16 = 8;
pub(crate) const DEST_ATTR_PERSIST_CONNS: u16 = 9;
pub(crate) const DEST_ATTR_STATS: u16 = 10;
pub(crate) const DEST_ATTR_ADDR_FAMILY: u16 = 11;
pub(crate) const DEST_ATTR_STATS64: u16 = 12;
pub(crate) const DEST_ATTR_TUN_TYPE: u16 = 13;
pub(crate) const DEST_ATTR_TUN_PORT: u16 = 14;
pub(crate) const DEST_ATTR_TUN_FLAGS: u16 = 15;

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
