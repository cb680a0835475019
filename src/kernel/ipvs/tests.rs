//! Generated input for the IPVS decoders across `wire` and `mapping`:
//! random bytes and mutations of replies captured from a real kernel
//! (`testdata/*.bin`) and of requests the codec builds.

use netlink_packet_core::{DefaultNla, NLA_TYPE_MASK, NLM_F_ACK, NLM_F_REQUEST, Nla};
use proptest::prelude::*;

use super::mapping::{
    IpvsInfo, dest_attrs, dest_from_attrs, dest_from_message, op_message, service_from_attrs,
    timeouts_from,
};
use super::wire::{
    AF_INET, AF_INET6, DestAttr, IpvsAttr, IpvsCmd, IpvsMessage, ServiceAttr, decode_message,
    encode_request,
};
use super::{DestKey, ForwardMethod, IpvsOp, RealServer, ServiceKey, VirtualServer};
use crate::net::Protocol;

fn encode(msg: IpvsMessage) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(&mut out, 0x20, 1, NLM_F_REQUEST | NLM_F_ACK, msg);
    out
}

/// The kernel's replies of testdata/, and a service and a destination as
/// the codec encodes them.
fn seeds() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/kernel/ipvs/testdata");
    let mut out: Vec<Vec<u8>> = [
        "service_v4_tcp_persistent.bin",
        "service_v6_udp.bin",
        "dest_v4.bin",
        "dest_v6.bin",
        "info.bin",
        "config.bin",
    ]
    .iter()
    .map(|n| std::fs::read(format!("{dir}/{n}")).unwrap())
    .collect();
    let vs = VirtualServer {
        key: ServiceKey {
            addr: "fd00::10".parse().unwrap(),
            protocol: Protocol::Sctp,
            port: 443,
        },
        scheduler: "mh".into(),
        persistence: None,
        sched_flags: 0,
    };
    let rs = RealServer {
        key: DestKey {
            addr: "fd00:1::7".parse().unwrap(),
            port: 8443,
        },
        weight: 3,
        forward: ForwardMethod::Masq,
    };
    out.push(encode(op_message(&IpvsOp::AddService(vs.clone()))));
    out.push(encode(IpvsMessage::new(
        IpvsCmd::NewDest,
        vec![IpvsAttr::Dest(dest_attrs(&rs))],
    )));
    out
}

/// `msg` with the flag bits of attributes this codec does not know cleared:
/// their values round-trip, their flags are the crate's to write.
fn known(msg: &IpvsMessage) -> IpvsMessage {
    fn plain(n: &DefaultNla) -> DefaultNla {
        let mut v = vec![0; n.value_len()];
        n.emit_value(&mut v);
        DefaultNla::new(n.kind() & NLA_TYPE_MASK, v)
    }
    let attrs = msg
        .attrs
        .iter()
        .map(|a| match a {
            IpvsAttr::Other(n) => IpvsAttr::Other(plain(n)),
            IpvsAttr::Service(s) => IpvsAttr::Service(
                s.iter()
                    .map(|a| match a {
                        ServiceAttr::Other(n) => ServiceAttr::Other(plain(n)),
                        a => a.clone(),
                    })
                    .collect(),
            ),
            IpvsAttr::Dest(d) => IpvsAttr::Dest(
                d.iter()
                    .map(|a| match a {
                        DestAttr::Other(n) => DestAttr::Other(plain(n)),
                        a => a.clone(),
                    })
                    .collect(),
            ),
            a => a.clone(),
        })
        .collect();
    IpvsMessage::new(msg.cmd, attrs)
}

#[test]
fn fuzz_ipvs_replies_decode_or_fail_without_panic() {
    crate::testing::fuzz(
        "IPVS replies",
        20_000,
        crate::testing::replies(seeds()),
        |bytes| {
            for af in [AF_INET, AF_INET6, 0] {
                let _ = dest_from_message(&bytes, af);
            }
            let Ok(msg) = decode_message(&bytes) else {
                return Ok(());
            };
            if let Some(attrs) = msg.service() {
                let _ = service_from_attrs(attrs);
            }
            let _ = IpvsInfo::from_message(&msg);
            let _ = timeouts_from(&msg);
            if let Some(attrs) = msg.dest() {
                // The snapshot's fast path reads what the typed decode reads.
                let typed = dest_from_attrs(attrs, AF_INET);
                if let (Ok(typed), Ok(fast)) = (typed, dest_from_message(&bytes, AF_INET)) {
                    prop_assert_eq!(typed, fast);
                }
            }
            // What decodes, re-encodes to the same values (attributes this
            // codec does not know keep their values; their flag bits are
            // the crate's to write).
            let again = decode_message(&encode(msg.clone()));
            prop_assert!(again.is_ok(), "{again:?}");
            let again = again.unwrap();
            prop_assert_eq!(known(&again), known(&msg));
            prop_assert_eq!(decode_message(&encode(again.clone())).ok(), Some(again));
            Ok(())
        },
    );
}

#[test]
fn zero_length_attributes_end_the_walk_with_an_error() {
    use super::wire::raw_attrs;
    // An attribute claiming 0 bytes, then one that would be read next.
    let attrs = [0, 0, 2, 0, 8, 0, 1, 0, 1, 0, 0, 0];
    let walked: Vec<_> = raw_attrs(&attrs).collect();
    assert!(matches!(walked.as_slice(), [Err(_)]), "{walked:?}");
    let mut msg = encode(IpvsMessage::new(IpvsCmd::GetInfo, vec![]));
    msg.extend(attrs);
    let len = (msg.len() as u32).to_ne_bytes();
    msg[..4].copy_from_slice(&len);
    assert!(decode_message(&msg).is_err());
    assert!(dest_from_message(&msg, AF_INET).is_err());
}
