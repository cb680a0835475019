//! `Links` over rtnetlink: netlink-packet-route messages on one blocking
//! `NETLINK_ROUTE` socket.
//!
//! Why a blocking socket rather than the `rtnetlink` crate's async handle:
//! the `Links` trait is synchronous and is called by the sync loop from inside
//! tokio (`block_in_place`); an adapter-owned runtime would have to be driven
//! from within another runtime's worker, and a blocking socket needs no
//! runtime at all. It also keeps batching explicit: a window of requests goes
//! out in one `send`, and their acknowledgements come back in order, matched
//! by sequence number, so 10,000 addresses cost ~40 system calls, not 20,000.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkBuffer, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::{Links, LocalAddress};
use crate::kernel::KernelError;

/// Requests in flight at once. Each acknowledgement is small, but the kernel
/// drops (ENOBUFS) what does not fit in the socket's receive buffer, so the
/// window is bounded rather than "everything at once".
const WINDOW: usize = 256;
/// Receive buffer for one datagram; dumps come in datagrams of at most 32 KiB.
const RECV_BUF: usize = 1 << 20;
/// `NLMSGERR_ATTR_MSG`: the kernel's text in an extended acknowledgement.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// The kernel's answer to one request.
type Answer = Result<Vec<RouteNetlinkMessage>, Refusal>;

/// A request the kernel refused (or that could not be exchanged).
#[derive(Debug)]
struct Refusal {
    errno: i32,
    /// The kernel's explanation (extended ack), when it gave one.
    text: Option<String>,
}

impl Refusal {
    fn into_error(self, op: &str) -> KernelError {
        let mut e = KernelError::errno(op, self.errno);
        if let Some(text) = self.text {
            e.reason = format!("{} ({text})", e.reason);
        }
        e
    }
}

/// The real links/addresses adapter.
pub struct NetlinkLinks {
    socket: Socket,
    seq: u32,
    rx: Vec<u8>,
}

impl NetlinkLinks {
    /// Open a route netlink socket in the current network namespace.
    pub fn new() -> Result<Self, KernelError> {
        let op = "open a route netlink socket";
        let io = |e: std::io::Error| KernelError::errno(op, e.raw_os_error().unwrap_or(libc::EIO));
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(io)?;
        socket.bind_auto().map_err(io)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(io)?;
        // Errors echo only the request's header, not the whole request, and
        // carry the kernel's text. Both are optional comforts: ignore refusals.
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_ext_ack(true);
        Ok(Self {
            socket,
            seq: 0,
            rx: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Send `requests` (message, extra NLM_F_* flags) and collect one answer
    /// per request, in order. Non-dump requests ask for an acknowledgement.
    fn exchange(&mut self, requests: Vec<(RouteNetlinkMessage, u16)>) -> Vec<Answer> {
        let mut answers = Vec::with_capacity(requests.len());
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            let window: Vec<_> = requests.by_ref().take(WINDOW).collect();
            let first = self.seq.wrapping_add(1);
            let mut buf = Vec::new();
            let count = window.len();
            for (msg, flags) in window {
                self.seq = self.seq.wrapping_add(1);
                // A dump ends with DONE; anything else is asked to end with an ack.
                let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
                let mut nl = NetlinkMessage::from(msg);
                nl.header.flags = NLM_F_REQUEST | flags | if dump { 0 } else { NLM_F_ACK };
                nl.header.sequence_number = self.seq;
                nl.finalize();
                let at = buf.len();
                buf.resize(at + nl.buffer_len(), 0);
                nl.serialize(&mut buf[at..]);
            }
            answers.extend(self.send_and_collect(&buf, first, count));
        }
        answers
    }

    fn send_and_collect(&mut self, buf: &[u8], first: u32, n: usize) -> Vec<Answer> {
        let fail_all = |errno: i32| {
            (0..n)
                .map(|_| Err(Refusal { errno, text: None }))
                .collect::<Vec<_>>()
        };
        if let Err(e) = self.socket.send(buf, 0) {
            return fail_all(e.raw_os_error().unwrap_or(libc::EIO));
        }
        let mut replies: Vec<Vec<RouteNetlinkMessage>> = vec![Vec::new(); n];
        let mut done: Vec<Option<Result<(), Refusal>>> = (0..n).map(|_| None).collect();
        let mut open = n;
        while open > 0 {
            self.rx.clear();
            match self.socket.recv(&mut self.rx, 0) {
                Ok(len) if len > self.rx.len() => {
                    // A datagram larger than the buffer: the rest is lost.
                    let mut all = fail_all(libc::EMSGSIZE);
                    for (i, d) in done.into_iter().enumerate() {
                        if let Some(r) = d {
                            all[i] = r.map(|()| std::mem::take(&mut replies[i]));
                        }
                    }
                    return all;
                }
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return fail_all(e.raw_os_error().unwrap_or(libc::EIO)),
            }
            let mut at = 0;
            while at < self.rx.len() {
                let bytes = &self.rx[at..];
                let Ok(frame) = NetlinkBuffer::new_checked(bytes) else {
                    break;
                };
                let len = frame.length() as usize;
                let seq = frame.sequence_number();
                at += (len + 3) & !3;
                let i = seq.wrapping_sub(first) as usize;
                if i >= n || done[i].is_some() {
                    continue; // an answer to an earlier, abandoned exchange
                }
                let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..len]);
                let outcome = match parsed {
                    Ok(msg) => match msg.payload {
                        NetlinkPayload::InnerMessage(m) => {
                            replies[i].push(m);
                            None
                        }
                        NetlinkPayload::Done(_) => Some(Ok(())),
                        NetlinkPayload::Error(e) => match e.code {
                            None => Some(Ok(())),
                            Some(code) => Some(Err(Refusal {
                                errno: -code.get(),
                                text: ext_ack_text(&e.header),
                            })),
                        },
                        _ => None,
                    },
                    Err(_) => Some(Err(Refusal {
                        errno: libc::EBADMSG,
                        text: Some("undecodable reply".into()),
                    })),
                };
                if let Some(o) = outcome {
                    done[i] = Some(o);
                    open -= 1;
                }
            }
        }
        done.into_iter()
            .zip(replies)
            .map(|(d, r)| d.expect("every request answered").map(|()| r))
            .collect()
    }

    fn one(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Answer {
        self.exchange(vec![(msg, flags)])
            .pop()
            .expect("one answer per request")
    }

    /// The link called `name`, if there is one.
    fn find_link(&mut self, name: &str) -> Result<Option<LinkMessage>, KernelError> {
        let mut req = LinkMessage::default();
        req.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.one(RouteNetlinkMessage::GetLink(req), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })),
            Err(r) if r.errno == libc::ENODEV => Ok(None),
            Err(r) => Err(r.into_error(&format!("look up link {name}"))),
        }
    }

    fn link_index(&mut self, name: &str) -> Result<Option<u32>, KernelError> {
        Ok(self.find_link(name)?.map(|l| l.header.index))
    }

    fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
        what: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, KernelError> {
        self.one(msg, NLM_F_DUMP)
            .map_err(|r| r.into_error(&format!("list {what}")))
    }

    /// Every address, with the index of its link.
    fn all_addresses(&mut self) -> Result<Vec<(u32, IpAddr)>, KernelError> {
        let replies = self.dump(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            "addresses",
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => address_of(&a).map(|ip| (a.header.index, ip)),
                _ => None,
            })
            .collect())
    }

    /// Add or delete `addrs` on `name`, pipelined; one result per address.
    fn change_addresses(
        &mut self,
        name: &str,
        addrs: &[IpAddr],
        add: bool,
    ) -> Vec<Result<(), KernelError>> {
        let op = |a: &IpAddr| match (add, a) {
            (true, IpAddr::V4(_)) => format!("add address {a}/32 to {name}"),
            (true, IpAddr::V6(_)) => format!("add address {a}/128 to {name}"),
            (false, IpAddr::V4(_)) => format!("delete address {a}/32 from {name}"),
            (false, IpAddr::V6(_)) => format!("delete address {a}/128 from {name}"),
        };
        let index = match self.link_index(name) {
            Ok(Some(i)) => i,
            Ok(None) => {
                return addrs
                    .iter()
                    .map(|a| Err(KernelError::errno(op(a), libc::ENODEV)))
                    .collect();
            }
            Err(e) => {
                return addrs
                    .iter()
                    .map(|a| Err(KernelError::new(op(a), e.to_string())))
                    .collect();
            }
        };
        let requests = addrs
            .iter()
            .map(|a| {
                let msg = host_address(index, *a);
                if add {
                    (
                        RouteNetlinkMessage::NewAddress(msg),
                        NLM_F_CREATE | NLM_F_EXCL,
                    )
                } else {
                    (RouteNetlinkMessage::DelAddress(msg), 0)
                }
            })
            .collect();
        self.exchange(requests)
            .into_iter()
            .zip(addrs)
            .map(|(answer, a)| answer.map(|_| ()).map_err(|r| r.into_error(&op(a))))
            .collect()
    }
}

/// An address message for `addr` as a host route (/32 or /128) on link `index`.
fn host_address(index: u32, addr: IpAddr) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.index = index;
    msg.header.scope = AddressScope::Universe;
    match addr {
        IpAddr::V4(_) => {
            msg.header.family = AddressFamily::Inet;
            msg.header.prefix_len = 32;
            // IPv4 names the local address twice: IFA_LOCAL and IFA_ADDRESS.
            msg.attributes.push(AddressAttribute::Local(addr));
        }
        IpAddr::V6(_) => {
            msg.header.family = AddressFamily::Inet6;
            msg.header.prefix_len = 128;
        }
    }
    msg.attributes.push(AddressAttribute::Address(addr));
    msg
}

/// The local address an address message describes (IFA_LOCAL for IPv4, whose
/// IFA_ADDRESS is the peer on point-to-point links; IFA_ADDRESS for IPv6).
fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

/// The text of an extended acknowledgement: after the echoed request header
/// (16 bytes, as NETLINK_CAP_ACK asks), attributes; NLMSGERR_ATTR_MSG is a
/// NUL-terminated string.
fn ext_ack_text(echoed: &[u8]) -> Option<String> {
    let mut rest = echoed.get(16..)?;
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &rest[4..len];
            let text = text.split(|b| *b == 0).next().unwrap_or(text);
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        rest = rest.get((len + 3) & !3..).unwrap_or(&[]);
    }
    None
}

fn link_kind(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k),
            _ => None,
        }),
        _ => None,
    })
}

impl Links for NetlinkLinks {
    fn ensure_dummy(&mut self, name: &str) -> Result<bool, KernelError> {
        if let Some(link) = self.find_link(name)? {
            return match link_kind(&link) {
                Some(InfoKind::Dummy) => Ok(false),
                other => Err(KernelError::new(
                    format!("ensure dummy link {name}"),
                    format!("a link {name} exists and is not a dummy (kind {other:?})"),
                )),
            };
        }
        let mut req = LinkMessage::default();
        req.attributes.push(LinkAttribute::IfName(name.to_string()));
        req.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Dummy,
            )]));
        // Left down, as upstream leaves kube-ipvs0: the kernel still installs
        // local routes for its addresses, and a down link answers no ARP.
        match self.one(RouteNetlinkMessage::NewLink(req), NLM_F_CREATE | NLM_F_EXCL) {
            Ok(_) => Ok(true),
            Err(r) if r.errno == libc::EEXIST => Ok(false),
            Err(r) => Err(r.into_error(&format!("create dummy link {name}"))),
        }
    }

    fn delete_link(&mut self, name: &str) -> Result<bool, KernelError> {
        let Some(index) = self.link_index(name)? else {
            return Ok(false);
        };
        let mut req = LinkMessage::default();
        req.header.index = index;
        match self.one(RouteNetlinkMessage::DelLink(req), 0) {
            Ok(_) => Ok(true),
            Err(r) if r.errno == libc::ENODEV => Ok(false),
            Err(r) => Err(r.into_error(&format!("delete link {name}"))),
        }
    }

    fn link_exists(&mut self, name: &str) -> Result<bool, KernelError> {
        Ok(self.find_link(name)?.is_some())
    }

    fn addresses(&mut self, name: &str) -> Result<BTreeSet<IpAddr>, KernelError> {
        let Some(index) = self.link_index(name)? else {
            return Ok(BTreeSet::new());
        };
        Ok(self
            .all_addresses()?
            .into_iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, ip)| ip)
            .collect())
    }

    fn add_addresses(&mut self, name: &str, addrs: &[IpAddr]) -> Vec<Result<(), KernelError>> {
        self.change_addresses(name, addrs, true)
    }

    fn del_addresses(&mut self, name: &str, addrs: &[IpAddr]) -> Vec<Result<(), KernelError>> {
        self.change_addresses(name, addrs, false)
    }

    fn local_addresses(&mut self) -> Result<Vec<LocalAddress>, KernelError> {
        let names: BTreeMap<u32, String> = self
            .dump(
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
                "links",
            )?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => {
                    let name = l.attributes.iter().find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some(n.clone()),
                        _ => None,
                    })?;
                    Some((l.header.index, name))
                }
                _ => None,
            })
            .collect();
        Ok(self
            .all_addresses()?
            .into_iter()
            .map(|(index, addr)| LocalAddress {
                ifname: names
                    .get(&index)
                    .cloned()
                    .unwrap_or_else(|| format!("if{index}")),
                addr,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    #[test]
    fn host_addresses_are_32_and_128_and_name_the_local_address() {
        let v4 = host_address(7, "10.96.0.1".parse().unwrap());
        assert_eq!(
            (v4.header.family, v4.header.prefix_len, v4.header.index),
            (AddressFamily::Inet, 32, 7)
        );
        assert_eq!(address_of(&v4), Some("10.96.0.1".parse().unwrap()));
        let v6 = host_address(7, "fd00::1".parse().unwrap());
        assert_eq!(
            (v6.header.family, v6.header.prefix_len),
            (AddressFamily::Inet6, 128)
        );
        assert_eq!(address_of(&v6), Some("fd00::1".parse().unwrap()));
    }

    #[test]
    fn ipv4_address_is_the_local_one_not_the_peer() {
        let mut msg = AddressMessage::default();
        msg.attributes
            .push(AddressAttribute::Address("10.0.0.2".parse().unwrap()));
        msg.attributes
            .push(AddressAttribute::Local("10.0.0.1".parse().unwrap()));
        assert_eq!(address_of(&msg), Some("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn host_address_encodes_to_the_kernel_layout() {
        // ifaddrmsg {AF_INET, 32, 0, RT_SCOPE_UNIVERSE, 3}, IFA_LOCAL, IFA_ADDRESS.
        let msg = host_address(3, "10.96.0.10".parse().unwrap());
        let mut bytes = vec![0; msg.buffer_len()];
        msg.emit(&mut bytes);
        assert_eq!(
            bytes,
            [
                2, 32, 0, 0, 3, 0, 0, 0, // header
                8, 0, 2, 0, 10, 96, 0, 10, // IFA_LOCAL
                8, 0, 1, 0, 10, 96, 0, 10, // IFA_ADDRESS
            ]
        );
    }

    #[test]
    fn extended_ack_text_is_read_after_the_echoed_header() {
        let mut echoed = vec![0u8; 16];
        echoed.extend_from_slice(&[4, 0, 3, 0]); // an unrelated empty attribute
        let text = b"Invalid prefix length\0";
        let len = (4 + text.len()) as u16;
        echoed.extend_from_slice(&len.to_ne_bytes());
        echoed.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        echoed.extend_from_slice(text);
        assert_eq!(
            ext_ack_text(&echoed).as_deref(),
            Some("Invalid prefix length")
        );
        assert_eq!(ext_ack_text(&echoed[..16]), None);
    }
}
