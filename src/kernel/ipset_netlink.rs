//! ipsets over nfnetlink (NETLINK_NETFILTER, subsystem
//! NFNL_SUBSYS_IPSET) on kproxy's netlink transport, without the `ipset`
//! program: every set's header (type and member count) in one dump, and one
//! set's members in `ipset save`'s text form.
//!
//! Constants are those of the kernel's
//! include/uapi/linux/netfilter/ipset/ip_set.h. Every request carries
//! IPSET_ATTR_PROTOCOL, at the version the kernel answered to
//! IPSET_CMD_PROTOCOL (capped at the one this module speaks).
//!
//! Writes (`restore`) run the same scripts `ipset restore -exist` takes, as
//! requests (see `write`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    DecodeError, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_sys::protocols::NETLINK_NETFILTER;

use super::KernelError;
use super::ipset::{Ipsets, LiveSet, SetHeader};
use super::netlink::{Exchange, NetlinkError, NetlinkSocket};

/// `NFNL_SUBSYS_IPSET` (linux/netfilter/nfnetlink.h).
pub const NFNL_SUBSYS_IPSET: u16 = 6;
/// `IPSET_PROTOCOL`: the newest protocol this module speaks.
pub const IPSET_PROTOCOL: u8 = 7;
/// `IPSET_PROTOCOL_MIN`.
pub const IPSET_PROTOCOL_MIN: u8 = 6;

pub const IPSET_CMD_PROTOCOL: u8 = 1;
pub const IPSET_CMD_LIST: u8 = 7;

pub const IPSET_ATTR_PROTOCOL: u16 = 1;
pub const IPSET_ATTR_SETNAME: u16 = 2;
pub const IPSET_ATTR_TYPENAME: u16 = 3;
pub const IPSET_ATTR_FAMILY: u16 = 5;
pub const IPSET_ATTR_FLAGS: u16 = 6;
pub const IPSET_ATTR_DATA: u16 = 7;
pub const IPSET_ATTR_ADT: u16 = 8;

// Inside IPSET_ATTR_DATA.
pub const IPSET_ATTR_IP: u16 = 1;
pub const IPSET_ATTR_IP_TO: u16 = 2;
pub const IPSET_ATTR_CIDR: u16 = 3;
pub const IPSET_ATTR_PORT: u16 = 4;
pub const IPSET_ATTR_PORT_TO: u16 = 5;
pub const IPSET_ATTR_PROTO: u16 = 7;
pub const IPSET_ATTR_HASHSIZE: u16 = 18;
pub const IPSET_ATTR_MAXELEM: u16 = 19;
pub const IPSET_ATTR_BUCKETSIZE: u16 = 21;
pub const IPSET_ATTR_ELEMENTS: u16 = 24;
pub const IPSET_ATTR_IP2: u16 = 20;
pub const IPSET_ATTR_CIDR2: u16 = 21;

// Inside IPSET_ATTR_IP / IPSET_ATTR_IP2.
pub const IPSET_ATTR_IPADDR_IPV4: u16 = 1;
pub const IPSET_ATTR_IPADDR_IPV6: u16 = 2;

/// `IPSET_FLAG_LIST_HEADER`: list headers only, no members.
pub const IPSET_FLAG_LIST_HEADER: u32 = 1 << 2;

/// `NLA_F_NESTED`, `NLA_F_NET_BYTEORDER`.
pub const NLA_F_NESTED: u16 = 1 << 15;
pub const NLA_F_NET_BYTEORDER: u16 = 1 << 14;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

/// `NFPROTO_IPV4`, `NFPROTO_IPV6`, `NFPROTO_UNSPEC`.
const NFPROTO_UNSPEC: u8 = 0;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

/// One ipset request: nfgenmsg plus already encoded attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpsetRequest {
    pub cmd: u8,
    pub family: u8,
    pub attrs: Vec<u8>,
}

impl NetlinkSerializable for IpsetRequest {
    fn message_type(&self) -> u16 {
        (NFNL_SUBSYS_IPSET << 8) | u16::from(self.cmd)
    }
    fn buffer_len(&self) -> usize {
        4 + self.attrs.len()
    }
    fn serialize(&self, buffer: &mut [u8]) {
        // nfgenmsg: family, NFNETLINK_V0, res_id 0.
        buffer[..4].copy_from_slice(&[self.family, 0, 0, 0]);
        buffer[4..4 + self.attrs.len()].copy_from_slice(&self.attrs);
    }
}

/// Append one attribute, padded to 4 bytes.
pub fn put_attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + (4 - len % 4) % 4, 0);
}

fn message(request: IpsetRequest) -> NetlinkMessage<IpsetRequest> {
    NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::InnerMessage(request),
    )
}

/// IPSET_CMD_PROTOCOL: which protocol versions the kernel speaks.
pub fn protocol_request() -> IpsetRequest {
    let mut attrs = Vec::new();
    put_attr(&mut attrs, IPSET_ATTR_PROTOCOL, &[IPSET_PROTOCOL]);
    IpsetRequest {
        cmd: IPSET_CMD_PROTOCOL,
        family: NFPROTO_UNSPEC,
        attrs,
    }
}

/// IPSET_CMD_LIST of every set, headers only (`ipset list -t`).
pub fn headers_request(protocol: u8) -> IpsetRequest {
    let mut attrs = Vec::new();
    put_attr(&mut attrs, IPSET_ATTR_PROTOCOL, &[protocol]);
    put_attr(
        &mut attrs,
        IPSET_ATTR_FLAGS | NLA_F_NET_BYTEORDER,
        &IPSET_FLAG_LIST_HEADER.to_be_bytes(),
    );
    IpsetRequest {
        cmd: IPSET_CMD_LIST,
        family: NFPROTO_UNSPEC,
        attrs,
    }
}

/// IPSET_CMD_LIST of one set, with its members (`ipset save SET`).
pub fn members_request(protocol: u8, name: &str) -> IpsetRequest {
    let mut attrs = Vec::new();
    put_attr(&mut attrs, IPSET_ATTR_PROTOCOL, &[protocol]);
    let mut n = name.as_bytes().to_vec();
    n.push(0);
    put_attr(&mut attrs, IPSET_ATTR_SETNAME, &n);
    IpsetRequest {
        cmd: IPSET_CMD_LIST,
        family: NFPROTO_UNSPEC,
        attrs,
    }
}

/// The attributes in `buf`: (type without flags, value).
pub fn attrs(mut buf: &[u8]) -> Result<Vec<(u16, &[u8])>, DecodeError> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return Err(format!(
                "ipset attribute {kind} of length {len} in {} bytes",
                buf.len()
            )
            .into());
        }
        out.push((kind, &buf[4..len]));
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    Ok(out)
}

/// The ipset attributes of one reply (after the netlink header and nfgenmsg).
fn message_attrs(msg: &[u8]) -> Result<Vec<(u16, &[u8])>, DecodeError> {
    if msg.len() < 20 {
        return Err(format!("ipset reply of {} bytes", msg.len()).into());
    }
    let len = (u32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize).min(msg.len());
    let body = msg
        .get(20..len)
        .ok_or_else(|| format!("ipset reply whose header claims {len} bytes"))?;
    attrs(body)
}

fn cstr(v: &[u8]) -> String {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

fn be16(v: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(v.get(..2)?.try_into().ok()?))
}

fn ip_of(nested: &[u8]) -> Result<Option<IpAddr>, DecodeError> {
    for (kind, v) in attrs(nested)? {
        match kind {
            IPSET_ATTR_IPADDR_IPV4 if v.len() >= 4 => {
                return Ok(Some(
                    Ipv4Addr::from(<[u8; 4]>::try_from(&v[..4]).unwrap()).into(),
                ));
            }
            IPSET_ATTR_IPADDR_IPV6 if v.len() >= 16 => {
                return Ok(Some(
                    Ipv6Addr::from(<[u8; 16]>::try_from(&v[..16]).unwrap()).into(),
                ));
            }
            _ => {}
        }
    }
    Ok(None)
}

/// A protocol number as `ipset save` names it.
fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        p => p.to_string(),
    }
}

/// One member (an IPSET_ATTR_DATA inside IPSET_ATTR_ADT) in `ipset save`'s
/// text form: `ip[/cidr][,proto:port][,ip2[/cidr2]]`, or `port` for
/// bitmap:port.
pub fn entry_text(set_type: &str, data: &[u8]) -> Result<String, DecodeError> {
    let (mut ip, mut cidr, mut port, mut proto, mut ip2, mut cidr2) =
        (None, None, None, None, None, None);
    for (kind, v) in attrs(data)? {
        match kind {
            IPSET_ATTR_IP => ip = ip_of(v)?,
            IPSET_ATTR_CIDR => cidr = v.first().copied(),
            IPSET_ATTR_PORT => port = be16(v),
            IPSET_ATTR_PROTO => proto = v.first().copied(),
            IPSET_ATTR_IP2 => ip2 = ip_of(v)?,
            IPSET_ATTR_CIDR2 => cidr2 = v.first().copied(),
            _ => {}
        }
    }
    let with_prefix = |ip: IpAddr, cidr: Option<u8>| {
        let full = if ip.is_ipv4() { 32 } else { 128 };
        match cidr {
            Some(c) if c != full => format!("{ip}/{c}"),
            _ => ip.to_string(),
        }
    };
    let missing = || DecodeError::from(format!("{set_type} member without its fields"));
    let mut text = String::new();
    if set_type.starts_with("bitmap:port") {
        return Ok(port.ok_or_else(missing)?.to_string());
    }
    let ip = ip.ok_or_else(missing)?;
    text.push_str(&with_prefix(ip, cidr));
    if set_type.contains(",port") || set_type.starts_with("hash:ip,port") {
        let port = port.ok_or_else(missing)?;
        text.push_str(&format!(",{}:{port}", proto_name(proto.unwrap_or(6))));
    }
    if let Some(ip2) = ip2 {
        text.push(',');
        text.push_str(&with_prefix(ip2, cidr2));
    }
    Ok(text)
}

fn family_name(f: u8) -> Option<&'static str> {
    match f {
        NFPROTO_IPV4 => Some("inet"),
        NFPROTO_IPV6 => Some("inet6"),
        _ => None,
    }
}

/// What one list reply says about its set.
#[derive(Debug, Default)]
struct ListPart {
    name: String,
    set_type: String,
    family: u8,
    /// The header's create data, if this part carries it.
    header: Option<BTreeMap<u16, Vec<u8>>>,
    entries: Vec<Vec<u8>>,
}

fn list_part(msg: &[u8]) -> Result<ListPart, DecodeError> {
    let mut part = ListPart::default();
    for (kind, v) in message_attrs(msg)? {
        match kind {
            IPSET_ATTR_SETNAME => part.name = cstr(v),
            IPSET_ATTR_TYPENAME => part.set_type = cstr(v),
            IPSET_ATTR_FAMILY => part.family = v.first().copied().unwrap_or(0),
            IPSET_ATTR_DATA => {
                part.header = Some(
                    attrs(v)?
                        .into_iter()
                        .map(|(k, v)| (k, v.to_vec()))
                        .collect(),
                )
            }
            IPSET_ATTR_ADT => {
                for (k, d) in attrs(v)? {
                    if k == IPSET_ATTR_DATA {
                        part.entries.push(d.to_vec());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(part)
}

/// `create` options after the type, as far as the header tells them.
fn options(set_type: &str, family: u8, header: &BTreeMap<u16, Vec<u8>>) -> Vec<String> {
    let mut out = Vec::new();
    if set_type.starts_with("bitmap:port") {
        if let (Some(from), Some(to)) = (
            header.get(&IPSET_ATTR_PORT).and_then(|v| be16(v)),
            header.get(&IPSET_ATTR_PORT_TO).and_then(|v| be16(v)),
        ) {
            out.extend(["range".to_string(), format!("{from}-{to}")]);
        }
        return out;
    }
    if let Some(f) = family_name(family) {
        out.extend(["family".to_string(), f.to_string()]);
    }
    for (name, kind) in [
        ("hashsize", IPSET_ATTR_HASHSIZE),
        ("maxelem", IPSET_ATTR_MAXELEM),
    ] {
        if let Some(n) = header.get(&kind).and_then(|v| be32(v)) {
            out.extend([name.to_string(), n.to_string()]);
        }
    }
    if let Some(b) = header.get(&IPSET_ATTR_BUCKETSIZE).and_then(|v| v.first()) {
        out.extend(["bucketsize".to_string(), b.to_string()]);
    }
    out
}

/// Decode the replies of a headers dump.
pub fn headers_from(replies: &[Vec<u8>]) -> Result<BTreeMap<String, SetHeader>, DecodeError> {
    let mut out = BTreeMap::new();
    for r in replies {
        let part = list_part(r)?;
        if let Some(h) = part.header {
            let entries = h
                .get(&IPSET_ATTR_ELEMENTS)
                .and_then(|v| be32(v))
                .unwrap_or(0);
            out.insert(
                part.name,
                SetHeader {
                    set_type: part.set_type,
                    entries: entries as usize,
                },
            );
        }
    }
    Ok(out)
}

/// Decode the replies of one set's members dump.
pub fn set_from(replies: &[Vec<u8>]) -> Result<LiveSet, DecodeError> {
    let mut set = LiveSet::default();
    for r in replies {
        let part = list_part(r)?;
        if set.set_type.is_empty() {
            set.set_type = part.set_type.clone();
        }
        if let Some(h) = &part.header {
            set.options = options(&part.set_type, part.family, h);
        }
        for e in &part.entries {
            set.entries.insert(entry_text(&set.set_type, e)?);
        }
    }
    Ok(set)
}

/// ipsets over nfnetlink.
#[derive(Debug)]
pub struct IpsetNetlink {
    socket: NetlinkSocket,
    protocol: u8,
    /// Newest kernel revision per (set type, family), asked once.
    revisions: BTreeMap<(String, u8), u8>,
}

impl IpsetNetlink {
    /// Open the socket and agree on a protocol version with the kernel.
    pub fn connect() -> Result<Self, KernelError> {
        let op = "open a netfilter netlink socket for ipsets";
        let mut socket =
            NetlinkSocket::open(NETLINK_NETFILTER).map_err(|e| e.kernel_error(op, None))?;
        let mut replies = Vec::new();
        socket
            .request(message(protocol_request()), Exchange::Ack, &mut |m| {
                if let Some(m) = m {
                    replies.push(m.to_vec());
                }
                Ok(())
            })
            .map_err(|e| {
                e.kernel_error(
                    "ask the ipset protocol version",
                    Some("is the ip_set module available?".into()),
                )
            })?;
        let mut kernel = IPSET_PROTOCOL_MIN;
        for r in &replies {
            for (kind, v) in message_attrs(r).map_err(|e| KernelError::new(op, e.to_string()))? {
                if kind == IPSET_ATTR_PROTOCOL {
                    kernel = v.first().copied().unwrap_or(kernel);
                }
            }
        }
        Ok(Self {
            socket,
            protocol: kernel.clamp(IPSET_PROTOCOL_MIN, IPSET_PROTOCOL),
            revisions: BTreeMap::new(),
        })
    }

    /// The replies of one dump, byte for byte.
    pub fn raw_dump(
        &mut self,
        request: IpsetRequest,
        op: &str,
    ) -> Result<Vec<Vec<u8>>, KernelError> {
        self.dump(request).map_err(|e| e.kernel_error(op, None))
    }

    fn dump(&mut self, request: IpsetRequest) -> Result<Vec<Vec<u8>>, NetlinkError> {
        let mut raw = Vec::new();
        self.socket
            .request(message(request), Exchange::Dump, &mut |m| {
                match m {
                    Some(m) => raw.push(m.to_vec()),
                    None => raw.clear(),
                }
                Ok(())
            })?;
        Ok(raw)
    }

    /// The protocol version in use.
    pub fn protocol(&self) -> u8 {
        self.protocol
    }
}

impl Ipsets for IpsetNetlink {
    fn headers(&mut self) -> Result<BTreeMap<String, SetHeader>, KernelError> {
        let op = "list ipset headers";
        let raw = self.raw_dump(headers_request(self.protocol), op)?;
        headers_from(&raw).map_err(|e| KernelError::new(op, e.to_string()))
    }

    fn save_set(&mut self, name: &str) -> Result<LiveSet, KernelError> {
        let op = format!("ipset save {name}");
        let raw = match self.dump(members_request(self.protocol, name)) {
            Ok(raw) => raw,
            Err(e) if e.errno() == Some(libc::ENOENT) => {
                return Err(KernelError::new(op, "no such set"));
            }
            Err(e) => return Err(e.kernel_error(op, None)),
        };
        if raw.is_empty() {
            return Err(KernelError::new(op, "no such set"));
        }
        set_from(&raw).map_err(|e| KernelError::new(op, e.to_string()))
    }

    fn restore(&mut self, script: &str) -> Result<(), KernelError> {
        self.restore_script(script)
    }
}

#[path = "ipset_netlink_write.rs"]
pub mod write;

#[cfg(test)]
#[path = "ipset_netlink_tests.rs"]
mod tests;
