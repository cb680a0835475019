//! Wire types of the "IPVS" generic-netlink family (`linux/ip_vs.h`): its
//! commands and attributes with netlink-packet-core's `Parseable` and
//! `Emitable`, nothing of kproxy's model (that is `super::mapping`).
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

mod dest;
mod service;

pub use dest::*;
pub use service::*;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, ErrorContext, NLA_F_NESTED, Nla, NlaBuffer, NlasIterator,
    Parseable, ParseableParametrized,
};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};

pub const IPVS_GENL_NAME: &str = "IPVS";
/// `IPVS_GENL_VERSION`.
pub const IPVS_GENL_VERSION: u8 = 1;

pub const AF_INET: u16 = libc::AF_INET as u16;
pub const AF_INET6: u16 = libc::AF_INET6 as u16;

pub const IPPROTO_TCP: u16 = 6;
pub const IPPROTO_UDP: u16 = 17;
pub const IPPROTO_SCTP: u16 = 132;

// IPVS_CMD_ATTR_*
const CMD_ATTR_SERVICE: u16 = 1;
pub(crate) const CMD_ATTR_DEST: u16 = 2;
const CMD_ATTR_TIMEOUT_TCP: u16 = 4;
const CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
const CMD_ATTR_TIMEOUT_UDP: u16 = 6;
// IPVS_INFO_ATTR_*: top-level in SET_INFO/GET_INFO messages only, where they
// reuse the numbers of IPVS_CMD_ATTR_SERVICE/DEST.
const INFO_ATTR_VERSION: u16 = 1;
const INFO_ATTR_CONN_TAB_SIZE: u16 = 2;

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

    pub(crate) fn parse(v: &[u8]) -> Self {
        // As the kernel's nla_memcpy: take what is there, zero the rest.
        let mut b = [0u8; 16];
        let n = v.len().min(16);
        b[..n].copy_from_slice(&v[..n]);
        InetAddr(b)
    }
}

pub(crate) fn u16_ne(v: &[u8]) -> Result<u16, DecodeError> {
    let b: [u8; 2] = v
        .get(..2)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| DecodeError::invalid_number(2, v.len()))?;
    Ok(u16::from_ne_bytes(b))
}

pub(crate) fn u16_be(v: &[u8]) -> Result<u16, DecodeError> {
    u16_ne(v).map(|x| u16::from_be_bytes(x.to_ne_bytes()))
}

pub(crate) fn u32_ne(v: &[u8]) -> Result<u32, DecodeError> {
    let b: [u8; 4] = v
        .get(..4)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| DecodeError::invalid_number(4, v.len()))?;
    Ok(u32::from_ne_bytes(b))
}

pub(crate) fn u64_ne(v: &[u8]) -> Result<u64, DecodeError> {
    let b: [u8; 8] = v
        .get(..8)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| DecodeError::invalid_number(8, v.len()))?;
    Ok(u64::from_ne_bytes(b))
}

pub(crate) fn c_string(v: &[u8]) -> Result<String, DecodeError> {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8(v[..end].to_vec()).map_err(DecodeError::from)
}

pub(crate) fn emit_c_string(s: &str, buf: &mut [u8]) {
    buf[..s.len()].copy_from_slice(s.as_bytes());
    buf[s.len()] = 0;
}

pub(crate) fn nested_len<T: Nla>(attrs: &[T]) -> usize {
    attrs.iter().map(Emitable::buffer_len).sum()
}

pub(crate) fn parse_nested<T>(v: &[u8], what: &str) -> Result<Vec<T>, DecodeError>
where
    T: for<'a> Parseable<NlaBuffer<&'a [u8]>>,
{
    NlasIterator::new(v)
        .map(|nla| nla.and_then(|nla| T::parse(&nla)))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("failed to parse {what} attributes"))
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

/// `msg` as a generic-netlink request of family `family` (the id the
/// kernel gave the family's name), ready for the transport to number and send.
pub fn genl_request<P>(family: u16, msg: P) -> NetlinkMessage<GenlMessage<P>>
where
    P: GenlFamily + Emitable + std::fmt::Debug,
{
    let mut genl = GenlMessage::from_payload(msg);
    genl.set_resolved_family_id(family);
    NetlinkMessage::from(genl)
}

/// Encode one whole netlink request: header (`family`, `flags`, `seq`),
/// generic-netlink header, attributes; appended to `out`.
pub fn encode_request<P>(out: &mut Vec<u8>, family: u16, seq: u32, flags: u16, msg: P)
where
    P: GenlFamily + Emitable + std::fmt::Debug,
{
    crate::kernel::netlink::encode(out, seq, flags, &mut genl_request(family, msg));
}

/// Attributes as (type, value) straight off the bytes, nothing decoded.
pub(crate) fn raw_attrs(mut b: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), DecodeError>> {
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

#[cfg(test)]
mod tests;
