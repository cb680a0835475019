//! kproxy's netlink transport, for the families no maintained crate speaks
//! (IPVS over generic netlink; ipset and conntrack over NETLINK_NETFILTER).
//! Links and addresses go through the `rtnetlink` crate instead.
//!
//! It knows netlink, not the families: a socket of a given protocol,
//! sequence numbers, acknowledgements and extended acknowledgements,
//! multi-part dumps, and pipelined batches. The request builders of each
//! family hand it `NetlinkMessage`s and get back raw replies or one result
//! per request.
//!
//! Why it is shaped like this:
//! - The kernel handles every message of a `sendmsg` synchronously, inside
//!   that call, and queues one acknowledgement per message on our socket. So
//!   a batch is: encode a window of requests into one buffer, send it once,
//!   then read the acknowledgements (many per `recvmmsg`), matched to their
//!   requests by sequence number. The only limit is the receive buffer: if
//!   the acknowledgements overflow it the kernel drops them (ENOBUFS), so the
//!   window is sized from the buffer we actually got.
//! - Because the work is done by the time `send` returns, after an ENOBUFS
//!   everything the kernel will ever say about a window is already queued:
//!   drain it without blocking, and report the requests whose answer was
//!   lost as such (their outcome is unknown; the next dump tells).
//! - A dump stays open on the socket until its NLMSG_DONE is read, and a
//!   second dump on the same socket is refused (EBUSY) meanwhile, so dumps
//!   are always read to the end, even when a reply cannot be decoded.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::{
    DecodeError, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkMessage, NetlinkSerializable, NlasIterator,
};
use netlink_sys::Socket;

use super::KernelError;

/// Bytes we ask for as receive buffer (the kernel doubles it). Acks of one
/// window must fit: 8 MiB holds several thousand.
pub const WANT_RCVBUF: usize = 8 << 20;
/// Bytes we ask for as send buffer: a window is sent as one datagram and must
/// fit in it.
const WANT_SNDBUF: usize = 4 << 20;
/// Receive-buffer bytes counted per outstanding acknowledgement. An ack is a
/// ~36-byte message, but the kernel charges the whole socket buffer it sits in
/// (~768 bytes on x86-64, more for errors carrying extended-ack text): count
/// generously, the cost of a smaller window is one more send.
const ACK_BUDGET: usize = 2048;
/// Upper bound of one window's encoded size.
const MAX_WINDOW_BYTES: usize = 1 << 20;
/// The receive area; cut into slots, one datagram each.
const RX_BYTES: usize = 1 << 20;
/// Slot size when reading acknowledgements (one small datagram each; an
/// error's extended-ack text beyond this is cut, the errno is always kept).
const ACK_SLOT: usize = 1024;
/// Slot size when reading dumps: the kernel fills dump datagrams up to 32 KiB.
const DUMP_SLOT: usize = 64 << 10;
/// A blocking read that sees nothing for this long means the kernel will not
/// answer; fail rather than hang a sync loop.
pub const RECV_TIMEOUT_SECS: u64 = 30;
/// `NLMSGERR_ATTR_MSG` in an extended acknowledgement.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Retries of a dump the kernel marked inconsistent (NLM_F_DUMP_INTR).
const DUMP_RETRIES: usize = 3;
/// `sizeof(struct nlmsghdr)`.
const HEADER_LEN: usize = 16;

/// How a request is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exchange {
    /// Data messages (if any), then an acknowledgement.
    Ack,
    /// A multi-part dump, ended by NLMSG_DONE.
    Dump,
}

/// Why a request did not succeed, as far as netlink can tell. The family's
/// request builders name the operation (`kernel_error`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel refused it: its errno and extended-ack text.
    #[error("{}{}", describe_errno(*errno), ext_ack.as_ref().map(|t| format!(": {t}")).unwrap_or_default())]
    Refused { errno: i32, ext_ack: Option<String> },
    /// A system call on the socket failed.
    #[error("{}", describe_errno(*.0))]
    Os(i32),
    #[error("{0}")]
    Io(String),
    #[error("no answer from the kernel within {RECV_TIMEOUT_SECS}s")]
    Timeout,
    #[error("a reply was larger than the receive buffer")]
    Truncated,
    /// A message whose own lengths do not hold together.
    #[error("{0}")]
    Malformed(&'static str),
    #[error("cannot decode the kernel's reply: {0}")]
    Undecodable(String),
    #[error("the table kept changing during the dump (NLM_F_DUMP_INTR)")]
    KeptChanging,
    #[error(
        "acknowledgement lost: the socket receive buffer overflowed (ENOBUFS); \
         the operation may or may not have been applied"
    )]
    AckLost,
    #[error("no acknowledgement from the kernel; the operation may or may not have been applied")]
    NoAck,
}

impl NetlinkError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Refused { errno, .. } | NetlinkError::Os(errno) => Some(*errno),
            NetlinkError::AckLost => Some(libc::ENOBUFS),
            _ => None,
        }
    }

    /// The adapter error for operation `op`; `hint` says what the errno means
    /// for that operation.
    pub fn kernel_error(self, op: impl Into<String>, hint: Option<String>) -> KernelError {
        let reason = match hint {
            Some(h) => format!("{h}: {self}"),
            None => self.to_string(),
        };
        KernelError {
            op: op.into(),
            errno: self.errno(),
            reason,
        }
    }
}

impl From<io::Error> for NetlinkError {
    fn from(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(n) => NetlinkError::Os(n),
            None => NetlinkError::Io(e.to_string()),
        }
    }
}

/// Where a request's data messages go: `Some(message)` for each one, whole,
/// header included; `None` for "start over" (a dump being retried).
pub type Sink<'a> = dyn FnMut(Option<&[u8]>) -> Result<(), DecodeError> + 'a;

/// What one netlink message in a reply is.
#[derive(Debug, PartialEq, Eq)]
enum Reply<'a> {
    /// NLMSG_ERROR with code 0.
    Ack,
    /// NLMSG_ERROR with a negative errno, and the extended-ack text if any.
    Error(i32, Option<String>),
    /// NLMSG_DONE, with the dump's final status.
    Done(i32),
    /// A data message (whole, header included) and its flags.
    Data(&'a [u8], u16),
    /// NLMSG_NOOP, NLMSG_OVERRUN and other control messages.
    Ignore,
}

/// The fields of a `struct nlmsghdr` the transport reads.
#[derive(Clone, Copy, Debug)]
struct Header {
    len: usize,
    kind: u16,
    flags: u16,
    seq: u32,
}

fn header(b: &[u8]) -> Option<Header> {
    let field = |r: std::ops::Range<usize>| b.get(r);
    Some(Header {
        len: u32::from_ne_bytes(field(0..4)?.try_into().ok()?) as usize,
        kind: u16::from_ne_bytes(field(4..6)?.try_into().ok()?),
        flags: u16::from_ne_bytes(field(6..8)?.try_into().ok()?),
        seq: u32::from_ne_bytes(field(8..12)?.try_into().ok()?),
    })
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// Split a datagram into (sequence number, reply) pairs. A length that
/// points outside the datagram ends the walk with an error.
fn replies(mut d: &[u8]) -> impl Iterator<Item = Result<(u32, Reply<'_>), NetlinkError>> {
    std::iter::from_fn(move || {
        if d.len() < HEADER_LEN {
            return None;
        }
        let h = match header(d) {
            Some(h) if h.len >= HEADER_LEN && h.len <= d.len() => h,
            _ => {
                d = &[];
                return Some(Err(NetlinkError::Malformed(
                    "malformed netlink message header",
                )));
            }
        };
        let msg = &d[..h.len];
        d = &d[align(h.len).min(d.len())..];
        let body = &msg[HEADER_LEN..];
        let code = body
            .get(..4)
            .map(|b| i32::from_ne_bytes(b.try_into().unwrap()));
        let reply = match h.kind {
            NLMSG_ERROR => match code {
                Some(0) => Reply::Ack,
                Some(c) => Reply::Error(c, ext_ack_message(h.flags, &body[4..])),
                None => return Some(Err(NetlinkError::Malformed("truncated NLMSG_ERROR"))),
            },
            NLMSG_DONE => Reply::Done(code.unwrap_or(0)),
            k if k >= 0x10 => Reply::Data(msg, h.flags),
            _ => Reply::Ignore,
        };
        Some(Ok((h.seq, reply)))
    })
}

/// The text of an extended acknowledgement (`NLMSGERR_ATTR_MSG`), if the
/// kernel attached one. `flags` are the NLMSG_ERROR message's own and
/// `after_errno` is its body past the errno: the echoed request, whole or
/// (NLM_F_CAPPED) its header only, then (NLM_F_ACK_TLVS) the attributes.
pub fn ext_ack_message(flags: u16, after_errno: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        HEADER_LEN
    } else {
        align(header(after_errno)?.len)
    };
    let tlvs = after_errno.get(echoed..)?;
    NlasIterator::new(tlvs)
        .map_while(Result::ok)
        .find_map(|nla| {
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

/// Ask for a big receive buffer, returning the size the kernel granted: the
/// FORCE variant passes the sysctl cap (needs CAP_NET_ADMIN, which every
/// kproxy adapter needs anyway); otherwise take what the cap gives.
pub fn grow_receive_buffer(fd: RawFd, want: usize) -> usize {
    grow_buffer(fd, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, want)
}

fn grow_buffer(fd: RawFd, force: libc::c_int, plain: libc::c_int, want: usize) -> usize {
    let want = want as libc::c_int;
    if !set_int_opt(fd, libc::SOL_SOCKET, force, want) {
        set_int_opt(fd, libc::SOL_SOCKET, plain, want);
    }
    get_int_opt(fd, libc::SOL_SOCKET, plain).unwrap_or(212_992)
}

/// One received datagram inside the receive area.
#[derive(Clone, Copy, Debug)]
struct Datagram {
    start: usize,
    len: usize,
    truncated: bool,
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

/// Append `msg` to `out` with the given sequence number and flags.
pub fn encode<T: NetlinkSerializable>(
    out: &mut Vec<u8>,
    seq: u32,
    flags: u16,
    msg: &mut NetlinkMessage<T>,
) {
    msg.header.flags = flags;
    msg.header.sequence_number = seq;
    msg.finalize();
    let start = out.len();
    out.resize(start + msg.buffer_len(), 0);
    msg.serialize(&mut out[start..]);
}

/// One netlink socket of one protocol. See the module notes.
pub struct NetlinkSocket {
    sock: Socket,
    seq: u32,
    tx: Vec<u8>,
    rx: Vec<u8>,
    /// Requests per pipelined window (shrinks after an overrun).
    window_msgs: usize,
    window_bytes: usize,
}

impl std::fmt::Debug for NetlinkSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetlinkSocket")
            .field("window_msgs", &self.window_msgs)
            .field("window_bytes", &self.window_bytes)
            .finish()
    }
}

impl NetlinkSocket {
    /// Open and bind a socket of netlink `protocol` (NETLINK_GENERIC,
    /// NETLINK_NETFILTER, ...), with buffers sized for pipelining.
    pub fn open(protocol: isize) -> Result<Self, NetlinkError> {
        let mut sock = Socket::new(protocol)?;
        sock.bind_auto()?;
        let fd = sock.as_raw_fd();
        let rcvbuf = grow_receive_buffer(fd, WANT_RCVBUF);
        let sndbuf = grow_buffer(fd, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, WANT_SNDBUF);
        // Small acks (no echo of the request) and the kernel's error text:
        // both optional, older kernels lack them; the replies say which they got.
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_ext_ack(true);
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT_SECS as libc::time_t,
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
        Ok(Self {
            sock,
            // Not 0: a late answer to an earlier process's request on a
            // reused port id must not match ours.
            seq: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as u32)
                .unwrap_or(1),
            tx: Vec::with_capacity(64 << 10),
            rx: vec![0; RX_BYTES],
            window_msgs: (rcvbuf / ACK_BUDGET).max(1),
            // The kernel refuses a datagram above sndbuf - 32 bytes.
            window_bytes: (sndbuf / 2).clamp(4096, MAX_WINDOW_BYTES),
        })
    }

    /// How many requests one pipelined window carries at most (diagnostics).
    pub fn window_len(&self) -> usize {
        self.window_msgs
    }

    /// Shrink the socket's receive buffer to `rcvbuf` bytes and send at most
    /// `window_msgs` requests per window: for tests that make acknowledgements
    /// overflow on purpose, and benchmarks that study the window size.
    pub fn limit_window(&mut self, window_msgs: usize, rcvbuf: usize) {
        set_int_opt(
            self.sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            rcvbuf as libc::c_int,
        );
        self.window_msgs = window_msgs.max(1);
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

    /// One request; each data message of its answer goes to `sink` whole,
    /// header included. A dump the kernel flags inconsistent is retried
    /// (`sink(None)` first, to start over).
    pub fn request<T: NetlinkSerializable>(
        &mut self,
        mut msg: NetlinkMessage<T>,
        exchange: Exchange,
        sink: &mut Sink<'_>,
    ) -> Result<(), NetlinkError> {
        let flags = NLM_F_REQUEST
            | match exchange {
                Exchange::Ack => NLM_F_ACK,
                Exchange::Dump => NLM_F_DUMP,
            };
        for attempt in 1..=DUMP_RETRIES {
            if attempt > 1 {
                sink(None).map_err(|e| NetlinkError::Undecodable(e.to_string()))?;
            }
            let seq = self.next_seq();
            self.tx.clear();
            encode(&mut self.tx, seq, flags, &mut msg);
            self.send_tx()?;
            if !self.read_answer(seq, sink)? {
                return Ok(());
            }
        }
        Err(NetlinkError::KeptChanging)
    }

    /// Read the answer to request `seq` to its end; returns whether the
    /// kernel flagged the dump as interrupted.
    fn read_answer(&mut self, seq: u32, sink: &mut Sink<'_>) -> Result<bool, NetlinkError> {
        let fd = self.sock.as_raw_fd();
        let mut interrupted = false;
        // Keep reading to the end even after a failure (see the module notes).
        let mut failure: Option<NetlinkError> = None;
        loop {
            let dgrams = match recv_batch(fd, &mut self.rx, DUMP_SLOT, true) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(NetlinkError::Timeout);
                }
                Err(e) => return Err(e.into()),
            };
            for d in dgrams {
                if d.truncated {
                    failure.get_or_insert(NetlinkError::Truncated);
                }
                for r in replies(&self.rx[d.start..d.start + d.len]) {
                    let (s, reply) = match r {
                        Ok(x) => x,
                        Err(e) => {
                            failure.get_or_insert(e);
                            continue;
                        }
                    };
                    if s != seq {
                        // A late answer to an earlier request: not ours.
                        continue;
                    }
                    match reply {
                        Reply::Ack | Reply::Done(0..) => {
                            return failure.map_or(Ok(interrupted), Err);
                        }
                        Reply::Error(c, ext_ack) => {
                            return Err(NetlinkError::Refused { errno: -c, ext_ack });
                        }
                        Reply::Done(c) => {
                            return Err(NetlinkError::Refused {
                                errno: -c,
                                ext_ack: None,
                            });
                        }
                        Reply::Data(msg, flags) => {
                            interrupted |= flags & NLM_F_DUMP_INTR != 0;
                            if let Err(e) = sink(Some(msg)) {
                                failure.get_or_insert(NetlinkError::Undecodable(e.to_string()));
                            }
                        }
                        Reply::Ignore => {}
                    }
                }
            }
        }
    }

    /// Send `count` requests, `message(i)` building the i-th, as few sends as
    /// the socket allows, each acknowledged on its own; one result per
    /// request, in order. Replies other than acknowledgements are ignored.
    pub fn pipeline<T, F>(&mut self, count: usize, mut message: F) -> Vec<Result<(), NetlinkError>>
    where
        T: NetlinkSerializable,
        F: FnMut(usize) -> NetlinkMessage<T>,
    {
        let mut results: Vec<Option<Result<(), NetlinkError>>> = vec![None; count];
        let mut start = 0;
        while start < count {
            let (base, end) = self.encode_window(start, count, &mut message);
            let window = &mut results[start..end];
            match self.send_tx() {
                Ok(()) => self.collect_acks(base, window),
                Err(e) => window.fill(Some(Err(e.into()))),
            }
            start = end;
        }
        results
            .into_iter()
            .map(|r| r.expect("every request has a result"))
            .collect()
    }

    /// Encode requests `start..` into `tx` with consecutive sequence numbers,
    /// as many as one window holds; returns the first sequence number and the
    /// end of the window.
    fn encode_window<T, F>(&mut self, start: usize, count: usize, message: &mut F) -> (u32, usize)
    where
        T: NetlinkSerializable,
        F: FnMut(usize) -> NetlinkMessage<T>,
    {
        self.tx.clear();
        let base = self.seq.wrapping_add(1);
        let mut end = start;
        while end < count && end - start < self.window_msgs {
            let before = self.tx.len();
            let seq = base.wrapping_add((end - start) as u32);
            encode(
                &mut self.tx,
                seq,
                NLM_F_REQUEST | NLM_F_ACK,
                &mut message(end),
            );
            if self.tx.len() > self.window_bytes && end > start {
                self.tx.truncate(before);
                break;
            }
            end += 1;
        }
        self.seq = base.wrapping_add((end - start) as u32 - 1);
        (base, end)
    }

    /// Read the acknowledgements of one sent window (first sequence number
    /// `base`) into `results`; what the kernel never answered is reported as
    /// lost, and an overrun shrinks the window for next time.
    fn collect_acks(&mut self, base: u32, results: &mut [Option<Result<(), NetlinkError>>]) {
        let fd = self.sock.as_raw_fd();
        let mut pending = results.len();
        let mut overrun = false;
        while pending > 0 {
            match recv_batch(fd, &mut self.rx, ACK_SLOT, !overrun) {
                Ok(dgrams) => {
                    for d in dgrams {
                        for (seq, reply) in replies(&self.rx[d.start..d.start + d.len]).flatten() {
                            let Some(slot @ None) =
                                results.get_mut(seq.wrapping_sub(base) as usize)
                            else {
                                continue;
                            };
                            *slot = Some(match reply {
                                Reply::Ack => Ok(()),
                                Reply::Error(c, ext_ack) => {
                                    Err(NetlinkError::Refused { errno: -c, ext_ack })
                                }
                                _ => continue,
                            });
                            pending -= 1;
                        }
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => overrun = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    let e = NetlinkError::from(e);
                    for r in results.iter_mut().filter(|r| r.is_none()) {
                        *r = Some(Err(e.clone()));
                    }
                    break;
                }
            }
        }
        let lost = if overrun {
            NetlinkError::AckLost
        } else {
            NetlinkError::NoAck
        };
        for r in results.iter_mut().filter(|r| r.is_none()) {
            *r = Some(Err(lost.clone()));
        }
        if overrun {
            self.window_msgs = (self.window_msgs / 2).max(1);
        }
    }
}

#[cfg(test)]
#[path = "netlink_tests.rs"]
mod tests;
