//! `Links` over the `rtnetlink` crate: netlink-packet-route messages, built
//! with rtnetlink's builders where it has them, on the netlink-proto
//! connection rtnetlink runs on (`rtnetlink::proto`).
//!
//! Why it is shaped like this:
//! - The `Links` trait is synchronous and is called both from inside tokio
//!   (the sync loop runs syncs under `block_in_place`) and from plain threads
//!   with no runtime. So the adapter owns its runtime: a dedicated thread
//!   runs a current-thread tokio runtime with the connection, each call hands
//!   that thread a job over a channel and waits for the answer. It never
//!   `block_on`s a caller's runtime, and needs none.
//! - Batches stay batches: adding or deleting many addresses sends a window
//!   of `WINDOW` requests as one datagram (the kernel handles them all inside
//!   that send) and reads their acknowledgements, one result per address, in
//!   order. rtnetlink's `Handle` sends one request per datagram and waits a
//!   turn of the connection for each, which makes 10,000 addresses several
//!   times slower; its connection handle's `request_batch` does not. The
//!   window is bounded, and the receive buffer grown, so that the
//!   acknowledgements always fit: an overflow would lose them (ENOBUFS).
//! - Requests are answered as whole netlink messages rather than through each
//!   builder's `execute()`: a refusal's extended-ack text can only be read
//!   with the NLMSG_ERROR message's own flags (NLM_F_CAPPED, NLM_F_ACK_TLVS),
//!   which `execute()` drops.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use futures::stream::StreamExt;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::AsyncSocket;
use netlink_sys::protocols::NETLINK_ROUTE;
use rtnetlink::proto::{ConnectionHandle, sys::SocketAddr};
use rtnetlink::{LinkDummy, LinkUnspec};
use tokio::sync::mpsc;

use super::{Links, LocalAddress};
use crate::kernel::KernelError;
use crate::kernel::netlink::{
    RECV_TIMEOUT_SECS, WANT_RCVBUF, ext_ack_message, grow_receive_buffer,
};

/// The connection's handle: requests in, answers out as streams.
type Handle = ConnectionHandle<RouteNetlinkMessage>;

/// Requests per datagram. Each acknowledgement is small, but the kernel
/// drops (ENOBUFS) what does not fit in the socket's receive buffer, so the
/// window is bounded rather than "everything at once".
const WINDOW: usize = 256;

/// Work for the connection's thread.
type Job = Box<dyn FnOnce(Handle) -> LocalBoxFuture<'static, ()> + Send>;

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

    fn unanswered() -> Self {
        Refusal {
            errno: libc::ETIMEDOUT,
            text: Some(format!(
                "no answer from the kernel within {RECV_TIMEOUT_SECS}s; \
                 the operation may or may not have been applied"
            )),
        }
    }

    fn stopped() -> Self {
        Refusal {
            errno: libc::EIO,
            text: Some("the rtnetlink connection has stopped".into()),
        }
    }
}

/// The real links/addresses adapter.
pub struct NetlinkLinks {
    jobs: Option<mpsc::UnboundedSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl NetlinkLinks {
    /// Open a route netlink connection in the current network namespace,
    /// served by a thread of its own.
    pub fn new() -> Result<Self, KernelError> {
        let op = "open a route netlink socket";
        let (jobs, queue) = mpsc::unbounded_channel();
        let (ready_tx, ready) = std_mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("kproxy-rtnetlink".into())
            .spawn(move || serve(queue, ready_tx))
            .map_err(|e| KernelError::errno(op, e.raw_os_error().unwrap_or(libc::EIO)))?;
        match ready.recv() {
            Ok(Ok(())) => Ok(Self {
                jobs: Some(jobs),
                thread: Some(thread),
            }),
            Ok(Err(errno)) => {
                let _ = thread.join();
                Err(KernelError::errno(op, errno))
            }
            Err(_) => Err(KernelError::new(op, "the rtnetlink thread ended at start")),
        }
    }

    /// Run `work` on the connection's thread and wait for its result.
    fn run<T, F, Fut>(&self, op: &str, work: F) -> Result<T, KernelError>
    where
        T: Send + 'static,
        F: FnOnce(Handle) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let (tx, rx) = std_mpsc::sync_channel(1);
        let job: Job = Box::new(move |handle| {
            Box::pin(async move {
                let _ = tx.send(work(handle).await);
            })
        });
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        match sent.then(|| rx.recv().ok()).flatten() {
            Some(t) => Ok(t),
            None => Err(Refusal::stopped().into_error(op)),
        }
    }
}

impl Drop for NetlinkLinks {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop, and with it the runtime.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The connection's thread: a current-thread runtime with the connection
/// spawned on it, running jobs one after the other until the queue closes.
fn serve(mut queue: mpsc::UnboundedReceiver<Job>, ready: std_mpsc::SyncSender<Result<(), i32>>) {
    let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(libc::EIO);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(errno(e)));
            return;
        }
    };
    runtime.block_on(async move {
        let (mut connection, handle, _) = match rtnetlink::proto::new_connection(NETLINK_ROUTE) {
            Ok(c) => c,
            Err(e) => {
                let _ = ready.send(Err(errno(e)));
                return;
            }
        };
        let socket = connection.socket_mut().socket_mut();
        // Errors echo only the request's header, not the whole request, and
        // carry the kernel's text. Both are optional comforts (each reply's
        // flags say what it holds): ignore refusals.
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_ext_ack(true);
        grow_receive_buffer(socket.as_raw_fd(), WANT_RCVBUF);
        // Acknowledgements are what a batch's results are read from.
        connection.set_forward_ack(true);
        tokio::spawn(connection);
        let _ = ready.send(Ok(()));
        while let Some(job) = queue.recv().await {
            job(handle.clone()).await;
        }
    });
}

/// What an NLMSG_ERROR with a non-zero code says.
fn refusal(flags: u16, code: i32, after_errno: &[u8]) -> Refusal {
    Refusal {
        errno: -code,
        text: ext_ack_message(flags, after_errno),
    }
}

/// Send one request (`flags` beyond NLM_F_REQUEST; anything but a dump also
/// asks for an acknowledgement) and collect its answer.
async fn exchange(handle: Handle, msg: RouteNetlinkMessage, flags: u16) -> Answer {
    let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | flags | if dump { 0 } else { NLM_F_ACK };
    let mut replies = handle
        .request(req, SocketAddr::new(0, 0))
        .map_err(|_| Refusal::stopped())?;
    let collect = async move {
        let mut out = Vec::new();
        // An ack ends the answer; NLMSG_DONE ends the stream unforwarded.
        while let Some(reply) = replies.next().await {
            match reply.payload {
                NetlinkPayload::InnerMessage(m) => out.push(m),
                NetlinkPayload::Error(e) => match e.code {
                    None => break,
                    Some(code) => return Err(refusal(reply.header.flags, code.get(), &e.header)),
                },
                NetlinkPayload::Overrun(_) => {
                    return Err(Refusal {
                        errno: libc::ENOBUFS,
                        text: None,
                    });
                }
                _ => {}
            }
        }
        Ok(out)
    };
    tokio::time::timeout(Duration::from_secs(RECV_TIMEOUT_SECS), collect)
        .await
        .unwrap_or_else(|_| Err(Refusal::unanswered()))
}

/// Send `msgs` as one datagram, each asking for an acknowledgement (plus
/// `flags`); one result per message, in order.
async fn exchange_batch(
    handle: &Handle,
    msgs: Vec<RouteNetlinkMessage>,
    flags: u16,
) -> Vec<Result<(), Refusal>> {
    let count = msgs.len();
    let requests = msgs.into_iter().map(|m| {
        let mut req = NetlinkMessage::from(m);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        req
    });
    let Ok(mut replies) = handle.request_batch(requests, SocketAddr::new(0, 0)) else {
        return (0..count).map(|_| Err(Refusal::stopped())).collect();
    };
    let collect = async move {
        let mut answers = Vec::with_capacity(count);
        while let Some(reply) = replies.next().await {
            if let NetlinkPayload::Error(e) = reply.payload {
                let answer = match e.code {
                    None => Ok(()),
                    Some(code) => Err(refusal(reply.header.flags, code.get(), &e.header)),
                };
                answers.push((reply.header.sequence_number, answer));
            }
        }
        answers
    };
    match tokio::time::timeout(Duration::from_secs(RECV_TIMEOUT_SECS), collect).await {
        // The connection numbers a batch's messages consecutively, so once
        // every one is answered, sequence order is request order.
        Ok(mut answers) if answers.len() == count => {
            answers.sort_by_key(|(seq, _)| *seq);
            answers.into_iter().map(|(_, a)| a).collect()
        }
        _ => (0..count).map(|_| Err(Refusal::unanswered())).collect(),
    }
}

/// The link called `name`, if there is one.
async fn find_link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, KernelError> {
    let req = LinkUnspec::new_with_name(name).build();
    match exchange(handle.clone(), RouteNetlinkMessage::GetLink(req), 0).await {
        Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(l),
            _ => None,
        })),
        Err(r) if r.errno == libc::ENODEV => Ok(None),
        Err(r) => Err(r.into_error(&format!("look up link {name}"))),
    }
}

async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, KernelError> {
    Ok(find_link(handle, name).await?.map(|l| l.header.index))
}

async fn dump(
    handle: &Handle,
    msg: RouteNetlinkMessage,
    what: &str,
) -> Result<Vec<RouteNetlinkMessage>, KernelError> {
    exchange(handle.clone(), msg, NLM_F_DUMP)
        .await
        .map_err(|r| r.into_error(&format!("list {what}")))
}

/// Every address, with the index of its link.
async fn all_addresses(handle: &Handle) -> Result<Vec<(u32, IpAddr)>, KernelError> {
    let msg = RouteNetlinkMessage::GetAddress(AddressMessage::default());
    Ok(dump(handle, msg, "addresses")
        .await?
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) => address_of(&a).map(|ip| (a.header.index, ip)),
            _ => None,
        })
        .collect())
}

/// Every link's name, by index.
async fn link_names(handle: &Handle) -> Result<BTreeMap<u32, String>, KernelError> {
    let msg = RouteNetlinkMessage::GetLink(LinkMessage::default());
    Ok(dump(handle, msg, "links")
        .await?
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
        .collect())
}

/// What adding or deleting `a` on `name` is called in errors.
fn address_op(add: bool, name: &str, a: &IpAddr) -> String {
    match (add, a) {
        (true, IpAddr::V4(_)) => format!("add address {a}/32 to {name}"),
        (true, IpAddr::V6(_)) => format!("add address {a}/128 to {name}"),
        (false, IpAddr::V4(_)) => format!("delete address {a}/32 from {name}"),
        (false, IpAddr::V6(_)) => format!("delete address {a}/128 from {name}"),
    }
}

/// Add or delete `addrs` on `name`, pipelined; one result per address.
async fn change_addresses(
    handle: Handle,
    name: String,
    addrs: Vec<IpAddr>,
    add: bool,
) -> Vec<Result<(), KernelError>> {
    let op = |a: &IpAddr| address_op(add, &name, a);
    let index = match link_index(&handle, &name).await {
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
    let mut answers = Vec::with_capacity(addrs.len());
    for window in addrs.chunks(WINDOW) {
        let msgs = window
            .iter()
            .map(|a| {
                let msg = host_address(index, *a);
                if add {
                    RouteNetlinkMessage::NewAddress(msg)
                } else {
                    RouteNetlinkMessage::DelAddress(msg)
                }
            })
            .collect();
        let flags = if add { NLM_F_CREATE | NLM_F_EXCL } else { 0 };
        answers.extend(exchange_batch(&handle, msgs, flags).await);
    }
    answers
        .into_iter()
        .zip(&addrs)
        .map(|(answer, a)| answer.map_err(|r| r.into_error(&op(a))))
        .collect()
}

async fn ensure_dummy(handle: Handle, name: String) -> Result<bool, KernelError> {
    if let Some(link) = find_link(&handle, &name).await? {
        return match link_kind(&link) {
            Some(InfoKind::Dummy) => Ok(false),
            other => Err(KernelError::new(
                format!("ensure dummy link {name}"),
                format!("a link {name} exists and is not a dummy (kind {other:?})"),
            )),
        };
    }
    // Left down, as upstream leaves kube-ipvs0: the kernel still installs
    // local routes for its addresses, and a down link answers no ARP.
    let req = LinkDummy::new(&name).build();
    let flags = NLM_F_CREATE | NLM_F_EXCL;
    match exchange(handle, RouteNetlinkMessage::NewLink(req), flags).await {
        Ok(_) => Ok(true),
        Err(r) if r.errno == libc::EEXIST => Ok(false),
        Err(r) => Err(r.into_error(&format!("create dummy link {name}"))),
    }
}

async fn delete_link(handle: Handle, name: String) -> Result<bool, KernelError> {
    let Some(index) = link_index(&handle, &name).await? else {
        return Ok(false);
    };
    let req = LinkUnspec::new_with_index(index).build();
    match exchange(handle, RouteNetlinkMessage::DelLink(req), 0).await {
        Ok(_) => Ok(true),
        Err(r) if r.errno == libc::ENODEV => Ok(false),
        Err(r) => Err(r.into_error(&format!("delete link {name}"))),
    }
}

async fn link_addresses(handle: Handle, name: String) -> Result<BTreeSet<IpAddr>, KernelError> {
    let Some(index) = link_index(&handle, &name).await? else {
        return Ok(BTreeSet::new());
    };
    Ok(all_addresses(&handle)
        .await?
        .into_iter()
        .filter(|(i, _)| *i == index)
        .map(|(_, ip)| ip)
        .collect())
}

async fn local_addresses(handle: Handle) -> Result<Vec<LocalAddress>, KernelError> {
    let names = link_names(&handle).await?;
    Ok(all_addresses(&handle)
        .await?
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

fn link_kind(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k),
            _ => None,
        }),
        _ => None,
    })
}

/// One result per address, each naming its own operation, when the whole
/// batch could not even be handed over.
fn fail_each(
    add: bool,
    name: &str,
    addrs: &[IpAddr],
    e: &KernelError,
) -> Vec<Result<(), KernelError>> {
    addrs
        .iter()
        .map(|a| Err(KernelError::new(address_op(add, name, a), e.reason.clone())))
        .collect()
}

impl NetlinkLinks {
    fn change(&mut self, name: &str, addrs: &[IpAddr], add: bool) -> Vec<Result<(), KernelError>> {
        let (owned_name, owned) = (name.to_string(), addrs.to_vec());
        let verb = if add {
            "add addresses to"
        } else {
            "delete addresses from"
        };
        self.run(&format!("{verb} {name}"), move |h| {
            change_addresses(h, owned_name, owned, add)
        })
        .unwrap_or_else(|e| fail_each(add, name, addrs, &e))
    }
}

impl Links for NetlinkLinks {
    fn ensure_dummy(&mut self, name: &str) -> Result<bool, KernelError> {
        let owned = name.to_string();
        self.run(&format!("ensure dummy link {name}"), move |h| {
            ensure_dummy(h, owned)
        })?
    }

    fn delete_link(&mut self, name: &str) -> Result<bool, KernelError> {
        let owned = name.to_string();
        self.run(&format!("delete link {name}"), move |h| {
            delete_link(h, owned)
        })?
    }

    fn link_exists(&mut self, name: &str) -> Result<bool, KernelError> {
        let owned = name.to_string();
        self.run(&format!("look up link {name}"), move |h| async move {
            find_link(&h, &owned).await.map(|l| l.is_some())
        })?
    }

    fn addresses(&mut self, name: &str) -> Result<BTreeSet<IpAddr>, KernelError> {
        let owned = name.to_string();
        self.run(&format!("list addresses of {name}"), move |h| {
            link_addresses(h, owned)
        })?
    }

    fn add_addresses(&mut self, name: &str, addrs: &[IpAddr]) -> Vec<Result<(), KernelError>> {
        self.change(name, addrs, true)
    }

    fn del_addresses(&mut self, name: &str, addrs: &[IpAddr]) -> Vec<Result<(), KernelError>> {
        self.change(name, addrs, false)
    }

    fn local_addresses(&mut self) -> Result<Vec<LocalAddress>, KernelError> {
        self.run("list local addresses", local_addresses)?
    }
}

#[cfg(test)]
#[path = "netlink_tests.rs"]
mod tests;
