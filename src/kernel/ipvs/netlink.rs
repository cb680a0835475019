//! The IPVS client: request builders for the "IPVS" generic-netlink family
//! over kproxy's netlink transport (`crate::kernel::netlink`), which owns the
//! socket, the sequence numbers, the pipelining and the acknowledgements.
//!
//! `IpvsNetlink::connect()` then `apply(&ops)` with only AddService/AddDest
//! operations is the kernel floor the scale benchmark compares against: one
//! socket, one family lookup, the messages, their acks, nothing else (see
//! `bench_10000_services_x_10_dests_client_vs_ipvsadm_restore` in
//! integration/vm_ipvs_netlink.rs).

use std::fmt::Debug;

use netlink_packet_core::{
    DecodeError, Emitable, NetlinkMessage, NetlinkPayload, ParseableParametrized,
};
use netlink_packet_generic::constants::GENL_ID_CTRL;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_sys::protocols::NETLINK_GENERIC;

use super::mapping::{
    IpvsInfo, dest_from_message, get_dests_message, op_message, service_from_attrs,
    set_config_message, timeouts_from,
};
use super::wire::{IPVS_GENL_NAME, IpvsCmd, IpvsMessage, genl_request};
use super::{Ipvs, IpvsOp, IpvsTable, ServiceEntry, Timeouts};
use crate::kernel::KernelError;
use crate::kernel::netlink::{Exchange, NetlinkError, NetlinkSocket, Sink};

/// IPVS over generic netlink.
#[derive(Debug)]
pub struct IpvsNetlink {
    socket: NetlinkSocket,
    family: u16,
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

/// The adapter error for `op`, with what the kernel's refusal means for it.
fn op_error(op: &IpvsOp, e: NetlinkError) -> KernelError {
    let hint = match &e {
        NetlinkError::Refused { errno, .. } => op_hint(op, *errno),
        _ => None,
    };
    e.kernel_error(op.to_string(), hint)
}

impl IpvsNetlink {
    /// Open the socket and resolve the IPVS family. When the kernel has no
    /// IPVS (module not loaded, not built, no generic netlink) the error's
    /// `is_unsupported()` is true, so the caller can fall back.
    pub fn connect() -> Result<Self, KernelError> {
        let socket = NetlinkSocket::open(NETLINK_GENERIC)
            .map_err(|e| e.kernel_error("open a generic netlink socket for IPVS", None))?;
        let mut me = Self { socket, family: 0 };
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
            .request_decoded(GENL_ID_CTRL, req, Exchange::Ack)
            .map_err(|e| {
                let mut e = e.kernel_error(op.clone(), None);
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
            .flat_map(|m: &GenlCtrl| m.nlas.iter())
            .find_map(|a| match a {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| KernelError::new(op, "the kernel's answer has no family id"))
    }

    /// How many requests one pipelined window carries at most (diagnostics).
    pub fn chunk_len(&self) -> usize {
        self.socket.window_len()
    }

    /// Shrink the socket's receive buffer to `rcvbuf` bytes and send at most
    /// `chunk_msgs` requests per window: for tests that make acknowledgements
    /// overflow on purpose, and benchmarks that study the window size.
    pub fn limit_pipeline(&mut self, chunk_msgs: usize, rcvbuf: usize) {
        self.socket.limit_window(chunk_msgs, rcvbuf);
    }

    /// One request to generic-netlink family `family`, its data messages
    /// decoded.
    fn request_decoded<P>(
        &mut self,
        family: u16,
        payload: P,
        exchange: Exchange,
    ) -> Result<Vec<P>, NetlinkError>
    where
        P: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + Debug,
    {
        let mut out = Vec::new();
        self.socket
            .request(genl_request(family, payload), exchange, &mut |m| {
                match m {
                    Some(m) => out.push(decode::<P>(m)?),
                    None => out.clear(),
                }
                Ok(())
            })?;
        Ok(out)
    }

    /// One IPVS request, its data messages decoded; `op` names it in errors.
    fn request(
        &mut self,
        op: &str,
        msg: IpvsMessage,
        exchange: Exchange,
    ) -> Result<Vec<IpvsMessage>, KernelError> {
        self.request_decoded(self.family, msg, exchange)
            .map_err(|e| e.kernel_error(op, None))
    }

    /// One IPVS request whose data messages go to `sink` undecoded.
    fn request_raw(
        &mut self,
        msg: IpvsMessage,
        exchange: Exchange,
        sink: &mut Sink<'_>,
    ) -> Result<(), NetlinkError> {
        self.socket
            .request(genl_request(self.family, msg), exchange, sink)
    }

    /// Send one IPVS request (a dump if `dump`) and return the kernel's data
    /// messages byte for byte, netlink header included.
    pub fn raw_request(
        &mut self,
        msg: IpvsMessage,
        dump: bool,
    ) -> Result<Vec<Vec<u8>>, KernelError> {
        let op = format!("raw IPVS request {:?}", msg.cmd);
        let exchange = if dump { Exchange::Dump } else { Exchange::Ack };
        let mut raw = Vec::new();
        self.request_raw(msg, exchange, &mut |m| {
            match m {
                Some(m) => raw.push(m.to_vec()),
                None => raw.clear(),
            }
            Ok(())
        })
        .map_err(|e| e.kernel_error(op, None))?;
        Ok(raw)
    }

    /// `IPVS_CMD_GET_INFO`: the version `ipvsadm -Ln` prints and the
    /// connection table size.
    pub fn info(&mut self) -> Result<IpvsInfo, KernelError> {
        let op = "get IPVS info";
        let replies = self.request(
            op,
            IpvsMessage::new(IpvsCmd::GetInfo, vec![]),
            Exchange::Ack,
        )?;
        let msg = replies
            .first()
            .ok_or_else(|| KernelError::new(op, "the kernel sent no info"))?;
        IpvsInfo::from_message(msg)
            .map_err(|e| KernelError::new(op, format!("cannot decode the kernel's reply: {e}")))
    }

    /// The real servers of `entry`'s virtual server, read into `entry`.
    fn dump_dests(&mut self, entry: &mut ServiceEntry, af: u16) -> Result<(), KernelError> {
        let key = entry.service.key;
        self.request_raw(get_dests_message(&key), Exchange::Dump, &mut |m| {
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
        })
        .map_err(|e| e.kernel_error(format!("list real servers of {key}"), None))
    }
}

impl Ipvs for IpvsNetlink {
    fn dump(&mut self) -> Result<IpvsTable, KernelError> {
        let list = "list virtual servers";
        let replies = self.request(
            list,
            IpvsMessage::new(IpvsCmd::GetService, vec![]),
            Exchange::Dump,
        )?;
        let mut services = Vec::with_capacity(replies.len());
        for m in &replies {
            let Some(attrs) = m.service() else { continue };
            match service_from_attrs(attrs) {
                Ok(Some(s)) => services.push(s),
                Ok(None) => {}
                Err(e) => {
                    return Err(KernelError::new(
                        list,
                        format!("cannot decode a virtual server: {e}"),
                    ));
                }
            }
        }
        let mut table = IpvsTable::default();
        for s in services {
            let mut entry = ServiceEntry::new(s.service);
            self.dump_dests(&mut entry, s.af)?;
            table.services.insert(entry.service.key, entry);
        }
        Ok(table)
    }

    fn apply(&mut self, ops: &[IpvsOp]) -> Vec<Result<(), KernelError>> {
        let family = self.family;
        self.socket
            .pipeline(ops.len(), |i| genl_request(family, op_message(&ops[i])))
            .into_iter()
            .zip(ops)
            .map(|(r, op)| r.map_err(|e| op_error(op, e)))
            .collect()
    }

    fn flush(&mut self) -> Result<(), KernelError> {
        self.request(
            "flush IPVS table",
            IpvsMessage::new(IpvsCmd::Flush, vec![]),
            Exchange::Ack,
        )
        .map(|_| ())
    }

    fn set_timeouts(&mut self, t: Timeouts) -> Result<(), KernelError> {
        let op = format!(
            "set IPVS timeouts tcp {} tcpfin {} udp {}",
            t.tcp, t.tcp_fin, t.udp
        );
        self.request(&op, set_config_message(t), Exchange::Ack)
            .map(|_| ())
    }

    fn timeouts(&mut self) -> Result<Timeouts, KernelError> {
        let op = "get IPVS timeouts";
        let replies = self.request(
            op,
            IpvsMessage::new(IpvsCmd::GetConfig, vec![]),
            Exchange::Ack,
        )?;
        replies
            .first()
            .map(timeouts_from)
            .ok_or_else(|| KernelError::new(op, "the kernel sent no configuration"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_errno_and_what_it_means_for_the_operation() {
        let k = super::super::ServiceKey {
            addr: "10.96.0.1".parse().unwrap(),
            protocol: super::super::Protocol::Tcp,
            port: 80,
        };
        let op = IpvsOp::DelService(k);
        let refused = NetlinkError::Refused {
            errno: libc::ESRCH,
            ext_ack: None,
        };
        let e = op_error(&op, refused);
        assert_eq!(e.errno, Some(libc::ESRCH));
        assert_eq!(
            e.to_string(),
            "delete virtual server TCP 10.96.0.1:80: no such virtual server: ESRCH (No such process)"
        );
    }

    #[test]
    fn lost_acknowledgements_carry_no_hint() {
        let k = super::super::ServiceKey {
            addr: "10.96.0.1".parse().unwrap(),
            protocol: super::super::Protocol::Tcp,
            port: 80,
        };
        let e = op_error(&IpvsOp::DelService(k), NetlinkError::AckLost);
        assert_eq!(e.errno, Some(libc::ENOBUFS));
        assert!(e.reason.starts_with("acknowledgement lost"), "{e}");
    }
}
