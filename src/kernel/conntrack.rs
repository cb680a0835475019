//! Connection-tracking entries: list the entries of one L4 protocol in one
//! family's table, and delete a batch of them, over ctnetlink
//! (NETLINK_NETFILTER, subsystem NFNL_SUBSYS_CTNETLINK) on kproxy's netlink
//! transport. The messages are `netlink-packet-netfilter`'s; the few
//! attributes it leaves raw (CTA_ID, CTA_ZONE, CTA_FILTER) are encoded here.
//!
//! Why it is shaped like this:
//! - The dump asks the kernel to filter by L4 protocol (CTA_FILTER with
//!   CTA_FILTER_FLAG_CTA_PROTO_NUM, Linux 5.8 and later), so a node with a
//!   million TCP entries does not send them all to find its UDP ones. An
//!   older kernel ignores the attribute and dumps everything; the decoder
//!   drops what was not asked for either way.
//! - A delete names the entry by its original tuple and zone, as the kernel
//!   looks entries up, plus its CTA_ID: an entry that timed out and was
//!   created again by new traffic since the dump (which the current rules
//!   then translated) is not the one we meant, and the kernel refuses the
//!   delete with ENOENT instead of dropping it.
//! - All deletes go out pipelined on one socket, acknowledged one by one: an
//!   entry that is already gone (ENOENT) is not an error, it is what we
//!   wanted.

use std::fmt;
use std::net::IpAddr;

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, NLA_TYPE_MASK, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NetlinkSerializable, Nla,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol as L4, Tuple as NlTuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::protocols::NETLINK_NETFILTER;

use super::KernelError;
use super::netlink::{Exchange, NetlinkError, NetlinkSocket};
use crate::net::{IpFamily, Protocol};

/// `CTA_ID` (`enum ctattr_type`, linux/netfilter/nfnetlink_conntrack.h):
/// the entry's id, big-endian u32.
pub const CTA_ID: u16 = 12;
/// `CTA_ZONE`: the entry's zone, big-endian u16 (absent for zone 0).
pub const CTA_ZONE: u16 = 18;
/// `CTA_FILTER`: nested filter flags for a dump.
pub const CTA_FILTER: u16 = 25;
/// `CTA_FILTER_ORIG_FLAGS` inside CTA_FILTER: which original-tuple
/// attributes to match (host-order u32).
pub const CTA_FILTER_ORIG_FLAGS: u16 = 1;
/// `CTA_FILTER_FLAG_CTA_PROTO_NUM`, from the kernel's
/// net/netfilter/nf_conntrack_netlink.c (libnetfilter_conntrack carries the
/// same value): match the L4 protocol number.
pub const CTA_FILTER_FLAG_CTA_PROTO_NUM: u32 = 1 << 3;
/// `NLA_F_NESTED`.
const NESTED: u16 = 1 << 15;
/// `NFNETLINK_V0`.
const NFNETLINK_V0: u8 = 0;

/// Addresses and ports of one direction of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
}

/// One conntrack entry, as far as kproxy reads it: the original tuple (what
/// the client sent: `--orig-dst` is the Service address) and the reply tuple
/// (what comes back: `--reply-src` is the endpoint the kernel translated to).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    pub protocol: Protocol,
    pub orig: Tuple,
    pub reply: Tuple,
    pub zone: u16,
    /// The kernel's id of the entry (every kernel since 2.6 sends it).
    pub id: Option<u32>,
}

impl Flow {
    pub fn family(&self) -> IpFamily {
        IpFamily::of(&self.orig.src)
    }
}

fn endpoint(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {} reply from {}",
            self.protocol,
            endpoint(self.orig.src, self.orig.src_port),
            endpoint(self.orig.dst, self.orig.dst_port),
            endpoint(self.reply.src, self.reply.src_port),
        )?;
        if self.zone != 0 {
            write!(f, " zone {}", self.zone)?;
        }
        Ok(())
    }
}

/// What a batch of deletes did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Entries the kernel deleted.
    pub deleted: usize,
    /// Entries that were gone already (timed out, or replaced since the dump).
    pub gone: usize,
    /// Deletes that failed otherwise, one per entry.
    pub errors: Vec<KernelError>,
}

/// The conntrack table of this network namespace.
pub trait Conntrack: Send {
    /// The entries of `protocol` in `family`'s table.
    fn list(&mut self, family: IpFamily, protocol: Protocol) -> Result<Vec<Flow>, KernelError>;
    /// Delete `flows`, as one batch.
    fn delete(&mut self, flows: &[Flow]) -> Deleted;
}

/// A shared adapter (tests keep a handle to look inside a twin).
impl<T: Conntrack> Conntrack for std::sync::Arc<std::sync::Mutex<T>> {
    fn list(&mut self, family: IpFamily, protocol: Protocol) -> Result<Vec<Flow>, KernelError> {
        self.lock().unwrap().list(family, protocol)
    }
    fn delete(&mut self, flows: &[Flow]) -> Deleted {
        self.lock().unwrap().delete(flows)
    }
}

fn nf_family(family: IpFamily) -> NetfilterProtoFamily {
    match family {
        IpFamily::V4 => NetfilterProtoFamily::IPv4,
        IpFamily::V6 => NetfilterProtoFamily::IPv6,
    }
}

fn l4(protocol: Protocol) -> L4 {
    match protocol {
        Protocol::Tcp => L4::Tcp,
        Protocol::Udp => L4::Udp,
        Protocol::Sctp => L4::Sctp,
    }
}

/// A ctnetlink request: the crate's message, then attributes it cannot
/// express, already encoded (its raw attributes lose NLA_F_NESTED, which the
/// kernel's strict parsing of CTA_FILTER requires).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub message: NetfilterMessage,
    pub extra: Vec<u8>,
}

impl NetlinkSerializable for Request {
    fn message_type(&self) -> u16 {
        NetlinkSerializable::message_type(&self.message)
    }

    fn buffer_len(&self) -> usize {
        <NetfilterMessage as Emitable>::buffer_len(&self.message) + self.extra.len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        let n = <NetfilterMessage as Emitable>::buffer_len(&self.message);
        self.message.emit(&mut buffer[..n]);
        buffer[n..n + self.extra.len()].copy_from_slice(&self.extra);
    }
}

fn request(family: IpFamily, msg: ConntrackMessage, extra: Vec<u8>) -> NetlinkMessage<Request> {
    let message = NetfilterMessage::new(
        NetfilterHeader::new(nf_family(family), NFNETLINK_V0, 0),
        msg,
    );
    NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::InnerMessage(Request { message, extra }),
    )
}

/// One attribute, header and padding included.
fn raw_attr(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut out = Vec::with_capacity((len + 3) & !3);
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize((len + 3) & !3, 0);
    out
}

/// `IPCTNL_MSG_CT_GET` to dump `family`'s entries of `protocol` (the
/// transport adds NLM_F_DUMP).
pub fn dump_request(family: IpFamily, protocol: Protocol) -> NetlinkMessage<Request> {
    let flags = raw_attr(
        CTA_FILTER_ORIG_FLAGS,
        &CTA_FILTER_FLAG_CTA_PROTO_NUM.to_ne_bytes(),
    );
    request(
        family,
        ConntrackMessage::Get(vec![ConntrackAttribute::CtaTupleOrig(vec![
            NlTuple::Proto(vec![ProtoTuple::Protocol(l4(protocol))]),
        ])]),
        raw_attr(CTA_FILTER | NESTED, &flags),
    )
}

fn tuple_attrs(t: &Tuple, protocol: Protocol) -> Vec<NlTuple> {
    vec![
        NlTuple::Ip(vec![
            IPTuple::SourceAddress(t.src),
            IPTuple::DestinationAddress(t.dst),
        ]),
        NlTuple::Proto(vec![
            ProtoTuple::Protocol(l4(protocol)),
            ProtoTuple::SourcePort(t.src_port),
            ProtoTuple::DestinationPort(t.dst_port),
        ]),
    ]
}

/// `IPCTNL_MSG_CT_DELETE` of one entry: its original tuple, zone and id.
pub fn delete_request(flow: &Flow) -> NetlinkMessage<Request> {
    let mut attrs = vec![ConntrackAttribute::CtaTupleOrig(tuple_attrs(
        &flow.orig,
        flow.protocol,
    ))];
    if flow.zone != 0 {
        attrs.push(ConntrackAttribute::Other(DefaultNla::new(
            CTA_ZONE,
            flow.zone.to_be_bytes().to_vec(),
        )));
    }
    if let Some(id) = flow.id {
        attrs.push(ConntrackAttribute::Other(DefaultNla::new(
            CTA_ID,
            id.to_be_bytes().to_vec(),
        )));
    }
    request(flow.family(), ConntrackMessage::Delete(attrs), Vec::new())
}

/// One direction's tuple, or None when an address or port is missing (ICMP
/// and the other protocols without ports).
fn tuple_from(attrs: &[NlTuple]) -> Option<(L4, Tuple)> {
    let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, None, None, None);
    for a in attrs {
        match a {
            NlTuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            NlTuple::Proto(ps) => {
                for p in ps {
                    match p {
                        ProtoTuple::Protocol(n) => proto = Some(*n),
                        ProtoTuple::SourcePort(n) => sport = Some(*n),
                        ProtoTuple::DestinationPort(n) => dport = Some(*n),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some((
        proto?,
        Tuple {
            src: src?,
            dst: dst?,
            src_port: sport?,
            dst_port: dport?,
        },
    ))
}

fn raw_value(nla: &DefaultNla) -> (u16, Vec<u8>) {
    let mut v = vec![0; nla.value_len()];
    nla.emit_value(&mut v);
    (nla.kind() & NLA_TYPE_MASK, v)
}

/// The entry in one dump message (header included), or None when it is not
/// a TCP, UDP or SCTP entry with both tuples.
pub fn flow_from_message(msg: &[u8]) -> Result<Option<Flow>, DecodeError> {
    let nf = match NetlinkMessage::<NetfilterMessage>::deserialize(msg)?.payload {
        NetlinkPayload::InnerMessage(m) => m,
        other => return Err(format!("unexpected netlink payload {other:?}").into()),
    };
    let attrs = match nf.inner {
        NetfilterMessageInner::Conntrack(
            ConntrackMessage::New(a) | ConntrackMessage::Get(a) | ConntrackMessage::Delete(a),
        ) => a,
        _ => return Ok(None),
    };
    let (mut orig, mut reply, mut zone, mut id) = (None, None, 0, None);
    for a in &attrs {
        match a {
            ConntrackAttribute::CtaTupleOrig(t) => orig = tuple_from(t),
            ConntrackAttribute::CtaTupleReply(t) => reply = tuple_from(t),
            ConntrackAttribute::Other(nla) => match raw_value(nla) {
                (CTA_ZONE, v) if v.len() == 2 => zone = u16::from_be_bytes([v[0], v[1]]),
                (CTA_ID, v) if v.len() == 4 => {
                    id = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
                }
                _ => {}
            },
            _ => {}
        }
    }
    let (Some((proto, orig)), Some((_, reply))) = (orig, reply) else {
        return Ok(None);
    };
    let protocol = match proto {
        L4::Tcp => Protocol::Tcp,
        L4::Udp => Protocol::Udp,
        L4::Sctp => Protocol::Sctp,
        _ => return Ok(None),
    };
    Ok(Some(Flow {
        protocol,
        orig,
        reply,
        zone,
        id,
    }))
}

/// Conntrack over ctnetlink.
#[derive(Debug)]
pub struct ConntrackNetlink {
    socket: NetlinkSocket,
}

impl ConntrackNetlink {
    /// Open the socket. A kernel without nfnetlink refuses it
    /// (EPROTONOSUPPORT: `is_unsupported()`).
    pub fn connect() -> Result<Self, KernelError> {
        let socket = NetlinkSocket::open(NETLINK_NETFILTER)
            .map_err(|e| e.kernel_error("open a netfilter netlink socket for conntrack", None))?;
        Ok(Self { socket })
    }

    /// The dump's data messages byte for byte (golden tests, diagnostics).
    pub fn raw_dump(
        &mut self,
        family: IpFamily,
        protocol: Protocol,
    ) -> Result<Vec<Vec<u8>>, KernelError> {
        let mut raw = Vec::new();
        self.socket
            .request(dump_request(family, protocol), Exchange::Dump, &mut |m| {
                match m {
                    Some(m) => raw.push(m.to_vec()),
                    None => raw.clear(),
                }
                Ok(())
            })
            .map_err(|e| {
                e.kernel_error(format!("list {family} {protocol} conntrack entries"), None)
            })?;
        Ok(raw)
    }
}

/// What an errno means when listing (the ctnetlink module is missing).
fn list_hint(e: &NetlinkError) -> Option<String> {
    match e.errno() {
        Some(libc::EINVAL | libc::EOPNOTSUPP) => {
            Some("is the nf_conntrack_netlink module available?".into())
        }
        _ => None,
    }
}

impl Conntrack for ConntrackNetlink {
    fn list(&mut self, family: IpFamily, protocol: Protocol) -> Result<Vec<Flow>, KernelError> {
        let mut out = Vec::new();
        self.socket
            .request(dump_request(family, protocol), Exchange::Dump, &mut |m| {
                match m {
                    Some(m) => out.extend(
                        flow_from_message(m)?
                            .filter(|f| f.protocol == protocol && f.family() == family),
                    ),
                    None => out.clear(),
                }
                Ok(())
            })
            .map_err(|e| {
                let hint = list_hint(&e);
                e.kernel_error(format!("list {family} {protocol} conntrack entries"), hint)
            })?;
        Ok(out)
    }

    fn delete(&mut self, flows: &[Flow]) -> Deleted {
        let mut done = Deleted::default();
        let results = self
            .socket
            .pipeline(flows.len(), |i| delete_request(&flows[i]));
        for (r, flow) in results.into_iter().zip(flows) {
            match r {
                Ok(()) => done.deleted += 1,
                Err(e) if e.errno() == Some(libc::ENOENT) => done.gone += 1,
                Err(e) => done
                    .errors
                    .push(e.kernel_error(format!("delete conntrack entry {flow}"), None)),
            }
        }
        done
    }
}

#[path = "conntrack_twin.rs"]
pub mod twin;

#[cfg(test)]
#[path = "conntrack_tests.rs"]
mod tests;
