//! The IPVS client: one generic-netlink socket, requests pipelined.
//!
//! Why it is shaped like this:
//! - The kernel handles every message of a `sendmsg` synchronously, inside
//!   that call, and queues one acknowledgement per message on our socket. So
//!   a batch is: encode many requests into one buffer, send it once, then
//!   read the acknowledgements (many per `recvmmsg`). The only limit is the
//!   receive buffer: if the acknowledgements overflow it the kernel drops
//!   them (ENOBUFS), so batches are cut into chunks sized from the buffer we
//!   actually got.
//! - Because the work is done by the time `send` returns, after an ENOBUFS
//!   everything the kernel will ever say about a chunk is already queued:
//!   drain it without blocking, and report the operations whose answer was
//!   lost as such (their outcome is unknown; the next dump tells).
//! - A dump stays open on the socket until its NLMSG_DONE is read, and a
//!   second dump on the same socket is refused (EBUSY) meanwhile, so dumps
//!   are always read to the end, even when a reply cannot be decoded.
//!
//! `IpvsNetlink::connect()` then `apply(&ops)` with only AddService/AddDest
//! operations is the kernel floor the scale benchmark compares against: one
//! socket, one family lookup, the messages, their acks, nothing else (see
//! `bench_10000_services_x_10_dests_client_vs_ipvsadm_restore` in
//! integration/vm_ipvs_netlink.rs).

use std::fmt::Debug;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::{
    DecodeError, Emitable, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkMessage, NetlinkPayload, NlasIterator,
    ParseableParametrized,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_sys::Socket;
use netlink_sys::protocols::NETLINK_GENERIC;

use super::codec::{
    self, IPVS_GENL_NAME, IpvsCmd, IpvsInfo, IpvsMessage, dest_from_message, encode_request,
    get_dests_message, op_message, service_from_attrs,
};
use super::{Ipvs, IpvsOp, IpvsTable, ServiceEntry, Timeouts};
use crate::kernel::KernelError;

/// Bytes we ask for as receive buffer (the kernel doubles it). Acks of one
/// chunk must fit: 8 MiB holds several thousand.
const WANT_RCVBUF: usize = 8 << 20;
/// Bytes we ask for as send buffer: a chunk is sent as one datagram and must
/// fit in it.
const WANT_SNDBUF: usize = 4 << 20;
/// Receive-buffer bytes counted per outstanding acknowledgement. An ack is a
/// ~36-byte message, but the kernel charges the whole socket buffer it sits in
/// (~768 bytes on x86-64, more for errors carrying extended-ack text): count
/// generously, the cost of a smaller chunk is one more send.
const ACK_BUDGET: usize = 2048;
/// Upper bound of one chunk's encoded size.
const MAX_CHUNK_BYTES: usize = 1 << 20;
/// The receive area; cut into slots, one datagram each.
const RX_BYTES: usize = 1 << 20;
/// Slot size when reading acknowledgements (one small datagram each; an
/// error's extended-ack text beyond this is cut, the errno is always kept).
const ACK_SLOT: usize = 1024;
/// Slot size when reading dumps: the kernel fills dump datagrams up to 32 KiB.
const DUMP_SLOT: usize = 64 << 10;
/// A blocking read that sees nothing for this long means the kernel will not
/// answer; fail rather than hang a sync loop.
const RECV_TIMEOUT_SECS: libc::time_t = 30;
/// `NLMSGERR_ATTR_MSG` in an extended acknowledgement.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Retries of a dump the kernel marked inconsistent (NLM_F_DUMP_INTR).
const DUMP_RETRIES: usize = 3;

/// IPVS over generic netlink. See the module notes.
pub struct IpvsNetlink {
    sock: Socket,
    family: u16,
    seq: u32,
    tx: Vec<u8>,
    rx: Vec<u8>,
    /// Messages per pipelined chunk (shrinks after an overrun).
    chunk_msgs: usize,
    chunk_bytes: usize,
    /// When set, every data message of the next request is also kept raw
    /// (for fixtures and debugging: what exactly did the kernel say).
    capture: Option<Vec<Vec<u8>>>,
}

impl Debug for IpvsNetlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpvsNetlink")
            .field("family", &self.family)
            .field("chunk_msgs", &self.chunk_msgs)
            .field("chunk_bytes", &self.chunk_bytes)
            .finish()
    }
}

/// Where a request's data messages go: `Some(message)` for each one, whole,
/// header included; `None` for "start over" (a dump being retried).
type Sink<'a> = dyn FnMut(Option<&[u8]>) -> Result<(), DecodeError> + 'a;

/// One received datagram inside the receive area.
#[derive(Clone, Copy, Debug)]
struct Datagram {
    start: usize,
    len: usize,
    truncated: bool,
}

/// What one netlink message in a reply is.
enum Reply<'a> {
    /// NLMSG_ERROR with code 0.
    Ack,
    /// NLMSG_ERROR with a negative errno, and the extended-ack text if any.
    Error(i32, Option<String>),
    /// NLMSG_DONE, with the dump's final status.
    Done(i32),
    /// A family message (the whole netlink message, header included).
    Data(&'a [u8], u16),
    /// NLMSG_NOOP/OVERRUN: nothing for us.
    Ignore,
}

struct Header {
    len: usize,
    kind: u16,
    flags: u16,
    seq: u32,
}

fn header(b: &[u8]) -> Option<Header> {
    if b.len() < 16 {
        return None;
    }
    Some(Header {
        len: u32::from_ne_bytes(b[0..4].try_into().ok()?) as usize,
        kind: u16::from_ne_bytes(b[4..6].try_into().ok()?),
        flags: u16::from_ne_bytes(b[6..8].try_into().ok()?),
        seq: u32::from_ne_bytes(b[8..12].try_into().ok()?),
    })
}

/// Split a datagram into (sequence number, reply) pairs.
fn replies(mut d: &[u8]) -> impl Iterator<Item = Result<(u32, Reply<'_>), String>> {
    std::iter::from_fn(move || {
        if d.len() < 16 {
            return None;
        }
        let h = match header(d) {
            Some(h) if h.len >= 16 && h.len <= d.len() => h,
            _ => {
                d = &[];
                return Some(Err("malformed netlink message header".into()));
            }
        };
        let msg = &d[..h.len];
        let next = ((h.len + 3) & !3).min(d.len());
        d = &d[next..];
        let body = &msg[16..];
        let code = || {
            body.get(..4)
                .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
        };
        let reply = match h.kind {
            NLMSG_ERROR => match code() {
                Some(0) => Reply::Ack,
                Some(c) => Reply::Error(c, ext_ack_message(h.flags, body)),
                None => return Some(Err("truncated NLMSG_ERROR".into())),
            },
            NLMSG_DONE => Reply::Done(code().unwrap_or(0)),
            k if k >= 0x10 => Reply::Data(msg, h.flags),
            _ => Reply::Ignore,
        };
        Some(Ok((h.seq, reply)))
    })
}

/// The text of an extended acknowledgement (`NLMSGERR_ATTR_MSG`), if the
/// kernel attached one.
fn ext_ack_message(flags: u16, body: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    // errno, then the request's header, then (unless capped) its payload.
    let inner = header(body.get(4..)?)?;
    let skip = 4 + if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        (inner.len + 3) & !3
    };
    let tlvs = body.get(skip..)?;
    NlasIterator::new(tlvs).flatten().find_map(|nla| {
        (nla.kind() == NLMSGERR_ATTR_MSG).then(|| {
            let v = nla.value();
            let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
            String::from_utf8_lossy(&v[..end]).into_owned()
        })
    })
}

fn errno_name(e: i32) -> Option<&'static str> {
    Some(match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::ENOMEM => "ENOMEM",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EINVAL => "EINVAL",
        libc::ERANGE => "ERANGE",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::ENOBUFS => "ENOBUFS",
        libc::EAGAIN => "EAGAIN",
        libc::E2BIG => "E2BIG",
        _ => return None,
    })
}

/// `EEXIST (File exists)`.
fn describe_errno(e: i32) -> String {
    let text = io::Error::from_raw_os_error(e).to_string();
    // std appends " (os error N)"; the name says it better.
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    match errno_name(e) {
        Some(name) => format!("{name} ({text})"),
        None => format!("errno {e} ({text})"),
    }
}

/// What an errno means for an IPVS operation (the kernel reuses a handful of
/// codes; the hint says which object was missing or present).
fn op_hint(op: &IpvsOp, e: i32) -> Option<String> {
    Some(match (op, e) {
        (IpvsOp::AddService(_) | IpvsOp::AddDest(..), libc::EEXIST) => "already exists".into(),
        (IpvsOp::AddService(vs) | IpvsOp::EditService(vs), libc::ENOENT) => format!(
            "scheduler {:?} is not available (no ip_vs_{} module?)",
            vs.scheduler, vs.scheduler
        ),
        (_, libc::ESRCH) => "no such virtual server".into(),
        (IpvsOp::EditDest(..) | IpvsOp::DelDest(..), libc::ENOENT) => "no such real server".into(),
        (IpvsOp::AddDest(..) | IpvsOp::EditDest(..), libc::EINVAL) => {
            "refused (a Masq real server must be of the virtual server's address family)".into()
        }
        _ => return None,
    })
}

fn kernel_error(op: String, errno: i32, hint: Option<String>, ext: Option<String>) -> KernelError {
    let mut reason = describe_errno(errno);
    if let Some(h) = hint {
        reason = format!("{h}: {reason}");
    }
    if let Some(x) = ext {
        reason = format!("{reason}: {x}");
    }
    KernelError {
        op,
        errno: Some(errno),
        reason,
    }
}

fn io_error(op: impl Into<String>, e: &io::Error) -> KernelError {
    let op = op.into();
    match e.raw_os_error() {
        Some(n) => kernel_error(op, n, None, None),
        None => KernelError::new(op, e.to_string()),
    }
}

fn set_int_opt(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> bool {
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a valid pointer.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

fn get_int_opt(fd: RawFd, level: libc::c_int, name: libc::c_int) -> Option<usize> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (r == 0 && value > 0).then_some(value as usize)
}

/// Ask for a big buffer: the FORCE variant passes the sysctl cap (needs
/// CAP_NET_ADMIN, which IPVS needs anyway); otherwise take what the cap gives.
fn grow_buffer(fd: RawFd, force: libc::c_int, plain: libc::c_int, want: usize) -> usize {
    let want = want as libc::c_int;
    if !set_int_opt(fd, libc::SOL_SOCKET, force, want) {
        set_int_opt(fd, libc::SOL_SOCKET, plain, want);
    }
    get_int_opt(fd, libc::SOL_SOCKET, plain).unwrap_or(212_992)
}

/// Receive as many datagrams as are queued (waiting for the first if
/// `block`), each into its own `slot`-byte part of `rx`.
fn recv_batch(fd: RawFd, rx: &mut [u8], slot: usize, block: bool) -> io::Result<Vec<Datagram>> {
    let slots = rx.len() / slot;
    let mut iovs: Vec<libc::iovec> = rx
        .chunks_exact_mut(slot)
        .map(|c| libc::iovec {
            iov_base: c.as_mut_ptr().cast(),
            iov_len: c.len(),
        })
        .collect();
    let mut hdrs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: mmsghdr is plain data; all-zero is a valid empty value.
            let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let flags = if block {
        libc::MSG_WAITFORONE
    } else {
        libc::MSG_DONTWAIT
    };
    loop {
        // SAFETY: every header points at an iovec into `rx`, alive for the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                slots as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(hdrs[..n as usize]
            .iter()
            .enumerate()
            .map(|(i, h)| Datagram {
                start: i * slot,
                len: (h.msg_len as usize).min(slot),
                truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            })
            .collect());
    }
}

fn decode<P>(msg: &[u8]) -> Result<P, DecodeError>
where
    P: ParseableParametrized<[u8], GenlHeader> + Debug,
{
    match NetlinkMessage::<GenlMessage<P>>::deserialize(msg)?.payload {
        NetlinkPayload::InnerMessage(m) => Ok(m.payload),
        other => Err(format!("unexpected netlink payload {other:?}").into()),
    }
}

impl IpvsNetlink {
    /// Open the socket and resolve the IPVS family. When the kernel has no
    /// IPVS (module not loaded, not built, no generic netlink) the error's
    /// `is_unsupported()` is true, so the caller can fall back.
    pub fn connect() -> Result<Self, KernelError> {
        const OP: &str = "open a generic netlink socket for IPVS";
        let mut sock = Socket::new(NETLINK_GENERIC).map_err(|e| io_error(OP, &e))?;
        sock.bind_auto().map_err(|e| io_error(OP, &e))?;
        let fd = sock.as_raw_fd();
        let rcvbuf = grow_buffer(fd, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, WANT_RCVBUF);
        let sndbuf = grow_buffer(fd, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, WANT_SNDBUF);
        // Small acks (no echo of the request) and the kernel's error text:
        // both optional, older kernels lack them.
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_ext_ack(true);
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT_SECS,
            tv_usec: 0,
        };
        // SAFETY: setsockopt reads a timeval from a valid pointer.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        let mut me = Self {
            sock,
            family: 0,
            seq: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as u32)
                .unwrap_or(1),
            tx: Vec::with_capacity(64 << 10),
            rx: vec![0; RX_BYTES],
            chunk_msgs: (rcvbuf / ACK_BUDGET).max(1),
            // The kernel refuses a datagram above sndbuf - 32 bytes.
            chunk_bytes: (sndbuf / 2).clamp(4096, MAX_CHUNK_BYTES),
            capture: None,
        };
        me.family = me.resolve_family()?;
        Ok(me)
    }

    fn resolve_family(&mut self) -> Result<u16, KernelError> {
        let op = format!("resolve generic netlink family {IPVS_GENL_NAME}");
        let req = GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(IPVS_GENL_NAME.into())],
        };
        let replies = self
            .request::<GenlCtrl>(&|| op.clone(), req, false)
            .map_err(|mut e| {
                if e.errno == Some(libc::ENOENT) {
                    e.reason = format!(
                        "the kernel has no IPVS (is the ip_vs module loaded?): {}",
                        e.reason
                    );
                }
                e
            })?;
        replies
            .iter()
            .flat_map(|m| m.nlas.iter())
            .find_map(|a| match a {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| KernelError::new(op, "the kernel's answer has no family id"))
    }

    /// The generic-netlink family id the kernel gave IPVS.
    pub fn family_id(&self) -> u16 {
        self.family
    }

    /// How many requests one pipelined chunk carries at most (diagnostics).
    pub fn chunk_len(&self) -> usize {
        self.chunk_msgs
    }

    /// Shrink the socket's receive buffer to `rcvbuf` bytes and send at most
    /// `chunk_msgs` requests per chunk: for tests that make acknowledgements
    /// overflow on purpose, and benchmarks that study the chunk size.
    pub fn limit_pipeline(&mut self, chunk_msgs: usize, rcvbuf: usize) {
        set_int_opt(
            self.sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            rcvbuf as libc::c_int,
        );
        self.chunk_msgs = chunk_msgs.max(1);
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send_tx(&self) -> io::Result<()> {
        loop {
            match self.sock.send(&self.tx, 0) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// One request, answered by data messages and then an ack (or, for a
    /// dump, NLMSG_DONE). Returns the decoded data messages.
    fn request<P>(
        &mut self,
        op: &dyn Fn() -> String,
        payload: P,
        dump: bool,
    ) -> Result<Vec<P>, KernelError>
    where
        P: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + Debug + Clone,
    {
        let mut out = Vec::new();
        self.request_each(op, payload, dump, &mut |m| match m {
            Some(m) => {
                out.push(decode::<P>(m)?);
                Ok(())
            }
            None => {
                out.clear();
                Ok(())
            }
        })?;
        Ok(out)
    }

    /// Like `request`, but hands each data message (whole, header included)
    /// to `sink` undecoded; `sink(None)` means "start over" (the kernel
    /// flagged the dump inconsistent and it is being retried).
    fn request_each<P>(
        &mut self,
        op: &dyn Fn() -> String,
        payload: P,
        dump: bool,
        sink: &mut Sink<'_>,
    ) -> Result<(), KernelError>
    where
        P: GenlFamily + Emitable + Debug + Clone,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Some(c) = self.capture.as_mut() {
                c.clear();
            }
            if attempt > 1 {
                sink(None).map_err(|e| KernelError::new(op(), e.to_string()))?;
            }
            match self.request_once(op, payload.clone(), dump, sink)? {
                false => return Ok(()),
                true if attempt < DUMP_RETRIES => continue,
                true => {
                    return Err(KernelError::new(
                        op(),
                        "the table kept changing during the dump (NLM_F_DUMP_INTR)",
                    ));
                }
            }
        }
    }

    /// Returns whether the kernel flagged the dump as interrupted.
    fn request_once<P>(
        &mut self,
        op: &dyn Fn() -> String,
        payload: P,
        dump: bool,
        sink: &mut Sink<'_>,
    ) -> Result<bool, KernelError>
    where
        P: GenlFamily + Emitable + Debug,
    {
        let seq = self.next_seq();
        let flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { NLM_F_ACK };
        self.tx.clear();
        encode_request(&mut self.tx, self.family, seq, flags, payload);
        self.send_tx().map_err(|e| io_error(op(), &e))?;

        let fd = self.sock.as_raw_fd();
        let mut interrupted = false;
        // Keep reading to the end even after a failure (see the module notes).
        let mut failure: Option<KernelError> = None;
        loop {
            let dgrams = match recv_batch(fd, &mut self.rx, DUMP_SLOT, true) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(KernelError::new(
                        op(),
                        format!("no answer from the kernel within {RECV_TIMEOUT_SECS}s"),
                    ));
                }
                Err(e) => return Err(io_error(op(), &e)),
            };
            for d in dgrams {
                let bytes = &self.rx[d.start..d.start + d.len];
                if d.truncated {
                    failure.get_or_insert_with(|| {
                        KernelError::new(op(), "a reply was larger than the receive buffer")
                    });
                }
                for r in replies(bytes) {
                    let (s, reply) = match r {
                        Ok(x) => x,
                        Err(e) => {
                            failure.get_or_insert_with(|| KernelError::new(op(), e));
                            continue;
                        }
                    };
                    if s != seq {
                        // A late answer to an earlier request: not ours.
                        continue;
                    }
                    match reply {
                        Reply::Ack | Reply::Done(0..) => {
                            return match failure {
                                Some(f) => Err(f),
                                None => Ok(interrupted),
                            };
                        }
                        Reply::Error(c, ext) => return Err(kernel_error(op(), -c, None, ext)),
                        Reply::Done(c) => return Err(kernel_error(op(), -c, None, None)),
                        Reply::Data(msg, mflags) => {
                            interrupted |= mflags & NLM_F_DUMP_INTR != 0;
                            if let Some(c) = self.capture.as_mut() {
                                c.push(msg.to_vec());
                            }
                            if let Err(e) = sink(Some(msg)) {
                                failure.get_or_insert_with(|| {
                                    KernelError::new(
                                        op(),
                                        format!("cannot decode the kernel's reply: {e}"),
                                    )
                                });
                            }
                        }
                        Reply::Ignore => {}
                    }
                }
            }
        }
    }

    /// Send one IPVS request (a dump if `dump`) and return the kernel's data
    /// messages byte for byte, netlink header included.
    pub fn raw_request(
        &mut self,
        msg: IpvsMessage,
        dump: bool,
    ) -> Result<Vec<Vec<u8>>, KernelError> {
        let op = || format!("raw IPVS request {:?}", msg.cmd);
        self.capture = Some(Vec::new());
        let r = self.request(&op, msg.clone(), dump);
        let raw = self.capture.take().unwrap_or_default();
        r.map(|_| raw)
    }

    /// `IPVS_CMD_GET_INFO`: the version `ipvsadm -Ln` prints and the
    /// connection table size.
    pub fn info(&mut self) -> Result<IpvsInfo, KernelError> {
        let op = || "get IPVS info".to_string();
        let replies = self.request(&op, IpvsMessage::new(IpvsCmd::GetInfo, vec![]), false)?;
        let msg = replies
            .first()
            .ok_or_else(|| KernelError::new(op(), "the kernel sent no info"))?;
        IpvsInfo::from_message(msg)
            .map_err(|e| KernelError::new(op(), format!("cannot decode the kernel's reply: {e}")))
    }

    /// Send `msgs` as fast as the socket allows, each acknowledged on its own;
    /// one result per message, in order. `ops` names them in errors.
    fn pipeline(&mut self, ops: &[IpvsOp]) -> Vec<Result<(), KernelError>> {
        let mut results: Vec<Option<Result<(), KernelError>>> = vec![None; ops.len()];
        let fd = self.sock.as_raw_fd();
        let mut start = 0;
        while start < ops.len() {
            // Encode one chunk with consecutive sequence numbers.
            self.tx.clear();
            let base = self.seq.wrapping_add(1);
            let mut end = start;
            while end < ops.len() && end - start < self.chunk_msgs {
                let before = self.tx.len();
                let seq = base.wrapping_add((end - start) as u32);
                let flags = NLM_F_REQUEST | NLM_F_ACK;
                encode_request(&mut self.tx, self.family, seq, flags, op_message(&ops[end]));
                if self.tx.len() > self.chunk_bytes && end > start {
                    self.tx.truncate(before);
                    break;
                }
                end += 1;
            }
            let count = end - start;
            self.seq = base.wrapping_add(count as u32 - 1);

            if let Err(e) = self.send_tx() {
                for i in start..end {
                    results[i] = Some(Err(io_error(ops[i].to_string(), &e)));
                }
                start = end;
                continue;
            }

            let mut pending = count;
            let mut overrun = false;
            while pending > 0 {
                match recv_batch(fd, &mut self.rx, ACK_SLOT, !overrun) {
                    Ok(dgrams) => {
                        for d in dgrams {
                            let bytes = &self.rx[d.start..d.start + d.len];
                            for (seq, reply) in replies(bytes).flatten() {
                                let idx = seq.wrapping_sub(base) as usize;
                                if idx >= count || results[start + idx].is_some() {
                                    continue;
                                }
                                let i = start + idx;
                                let r = match reply {
                                    Reply::Ack => Ok(()),
                                    Reply::Error(c, ext) => {
                                        let op = &ops[i];
                                        Err(kernel_error(op.to_string(), -c, op_hint(op, -c), ext))
                                    }
                                    // Set commands answer with an ack only.
                                    _ => continue,
                                };
                                results[i] = Some(r);
                                pending -= 1;
                            }
                        }
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => overrun = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        for i in start..end {
                            if results[i].is_none() {
                                results[i] = Some(Err(io_error(ops[i].to_string(), &e)));
                            }
                        }
                        break;
                    }
                }
            }
            for i in start..end {
                if results[i].is_none() {
                    let reason = if overrun {
                        "acknowledgement lost: the socket receive buffer overflowed \
                         (ENOBUFS); the operation may or may not have been applied"
                    } else {
                        "no acknowledgement from the kernel; the operation may or may \
                         not have been applied"
                    };
                    results[i] = Some(Err(KernelError {
                        op: ops[i].to_string(),
                        errno: overrun.then_some(libc::ENOBUFS),
                        reason: reason.into(),
                    }));
                }
            }
            if overrun {
                self.chunk_msgs = (self.chunk_msgs / 2).max(1);
            }
            start = end;
        }
        results
            .into_iter()
            .map(|r| r.expect("every operation has a result"))
            .collect()
    }
}

impl Ipvs for IpvsNetlink {
    fn dump(&mut self) -> Result<IpvsTable, KernelError> {
        let list = || "list virtual servers".to_string();
        let replies = self.request(&list, IpvsMessage::new(IpvsCmd::GetService, vec![]), true)?;
        let mut services = Vec::with_capacity(replies.len());
        for m in &replies {
            let Some(attrs) = m.service() else { continue };
            match service_from_attrs(attrs) {
                Ok(Some(s)) => services.push(s),
                Ok(None) => {}
                Err(e) => {
                    return Err(KernelError::new(
                        list(),
                        format!("cannot decode a virtual server: {e}"),
                    ));
                }
            }
        }
        let mut table = IpvsTable::default();
        for s in services {
            let key = s.service.key;
            let op = || format!("list real servers of {key}");
            let mut entry = ServiceEntry::new(s.service);
            let af = s.af;
            self.request_each(&op, get_dests_message(&key), true, &mut |m| {
                match m {
                    Some(m) => {
                        let (rs, stats) = dest_from_message(m, af)?;
                        entry.dests.insert(rs.key, rs);
                        entry.stats.insert(rs.key, stats);
                    }
                    None => {
                        entry.dests.clear();
                        entry.stats.clear();
                    }
                }
                Ok(())
            })?;
            table.services.insert(key, entry);
        }
        Ok(table)
    }

    fn apply(&mut self, ops: &[IpvsOp]) -> Vec<Result<(), KernelError>> {
        self.pipeline(ops)
    }

    fn flush(&mut self) -> Result<(), KernelError> {
        let op = || "flush IPVS table".to_string();
        self.request(&op, IpvsMessage::new(IpvsCmd::Flush, vec![]), false)
            .map(|_| ())
    }

    fn set_timeouts(&mut self, t: Timeouts) -> Result<(), KernelError> {
        let op = || {
            format!(
                "set IPVS timeouts tcp {} tcpfin {} udp {}",
                t.tcp, t.tcp_fin, t.udp
            )
        };
        self.request(&op, codec::set_config_message(t), false)
            .map(|_| ())
    }

    fn timeouts(&mut self) -> Result<Timeouts, KernelError> {
        let op = || "get IPVS timeouts".to_string();
        let replies = self.request(&op, IpvsMessage::new(IpvsCmd::GetConfig, vec![]), false)?;
        replies
            .first()
            .map(codec::timeouts_from)
            .ok_or_else(|| KernelError::new(op(), "the kernel sent no configuration"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nlmsg(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let len = 16 + body.len();
        let mut m = Vec::new();
        m.extend((len as u32).to_ne_bytes());
        m.extend(kind.to_ne_bytes());
        m.extend(flags.to_ne_bytes());
        m.extend(seq.to_ne_bytes());
        m.extend(0u32.to_ne_bytes());
        m.extend(body);
        m.resize((m.len() + 3) & !3, 0);
        m
    }

    #[test]
    fn an_error_with_extended_ack_text_keeps_errno_and_text() {
        // errno, the capped request header, then NLMSGERR_ATTR_MSG "bad attr".
        let mut body = (-libc::EINVAL).to_ne_bytes().to_vec();
        body.extend(nlmsg(0x20, NLM_F_REQUEST | NLM_F_ACK, 9, &[]));
        let text = b"bad attr\0";
        body.extend(((4 + text.len()) as u16).to_ne_bytes());
        body.extend(NLMSGERR_ATTR_MSG.to_ne_bytes());
        body.extend(text);
        let d = nlmsg(NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, 9, &body);
        let got: Vec<_> = replies(&d).collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 1);
        match &got[0] {
            (9, Reply::Error(c, Some(t))) => {
                assert_eq!(*c, -libc::EINVAL);
                assert_eq!(t, "bad attr");
            }
            _ => panic!("not an error with text"),
        }
    }

    #[test]
    fn a_dump_datagram_splits_into_its_messages() {
        let mut d = nlmsg(0x20, 2, 5, &[4, 1, 0, 0]);
        d.extend(nlmsg(0x20, 2, 5, &[4, 1, 0, 0, 8, 0, 1, 0, 1, 0, 0, 0]));
        d.extend(nlmsg(NLMSG_DONE, 2, 5, &0i32.to_ne_bytes()));
        d.extend(nlmsg(NLMSG_ERROR, 0, 6, &0i32.to_ne_bytes()));
        let kinds: Vec<_> = replies(&d)
            .map(|r| match r.unwrap() {
                (5, Reply::Data(m, _)) => format!("data{}", m.len()),
                (5, Reply::Done(0)) => "done".into(),
                (6, Reply::Ack) => "ack".into(),
                _ => "other".into(),
            })
            .collect();
        assert_eq!(kinds, ["data20", "data28", "done", "ack"]);
    }

    #[test]
    fn a_lying_length_is_an_error_not_a_panic() {
        let mut d = nlmsg(0x20, 0, 1, &[0; 8]);
        d[0] = 200;
        let r: Vec<_> = replies(&d).collect();
        assert_eq!(r.len(), 1);
        assert!(r[0].is_err());
    }

    #[test]
    fn errors_name_the_errno_and_what_it_means_for_the_operation() {
        let k = super::super::ServiceKey {
            addr: "10.96.0.1".parse().unwrap(),
            protocol: super::super::Protocol::Tcp,
            port: 80,
        };
        let op = IpvsOp::DelService(k);
        let e = kernel_error(op.to_string(), libc::ESRCH, op_hint(&op, libc::ESRCH), None);
        assert_eq!(e.errno, Some(libc::ESRCH));
        assert_eq!(
            e.to_string(),
            "delete virtual server TCP 10.96.0.1:80: no such virtual server: ESRCH (No such process)"
        );
    }
}
