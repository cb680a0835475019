//! Golden bytes for the wire types alone: messages built attribute by
//! attribute, and replies captured from a real 6.1 kernel (see
//! `raw_kernel_replies_decode` in integration/vm_ipvs_netlink.rs for how
//! `../testdata/*.bin` were made).

use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST};
use pretty_assertions::assert_eq;

use super::*;

const FAMILY: u16 = 0x20;

fn encode(msg: IpvsMessage, seq: u32) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(&mut out, FAMILY, seq, NLM_F_REQUEST | NLM_F_ACK, msg);
    out
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/src/kernel/ipvs/testdata/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn del_dest_attributes_golden_bytes() {
    let msg = IpvsMessage::new(
        IpvsCmd::DelDest,
        vec![
            IpvsAttr::Service(vec![
                ServiceAttr::AddressFamily(AF_INET),
                ServiceAttr::Protocol(IPPROTO_TCP),
                ServiceAttr::Addr(InetAddr::from_ip("10.96.0.1".parse().unwrap())),
                ServiceAttr::Port(80),
            ]),
            IpvsAttr::Dest(vec![
                DestAttr::Addr(InetAddr::from_ip("10.244.0.1".parse().unwrap())),
                DestAttr::Port(8080),
                DestAttr::AddressFamily(AF_INET),
            ]),
        ],
    );
    #[rustfmt::skip]
    let want: &[u8] = &[
        // nlmsghdr: len 108, type = family 0x20, flags REQUEST|ACK, seq 4, pid 0
        0x6c, 0, 0, 0, 0x20, 0, 0x05, 0, 4, 0, 0, 0, 0, 0, 0, 0,
        // genlmsghdr: cmd IPVS_CMD_DEL_DEST (7), version 1
        7, 1, 0, 0,
        // IPVS_CMD_ATTR_SERVICE (1 | NLA_F_NESTED), len 48
        0x30, 0, 0x01, 0x80,
        6, 0, 1, 0, 2, 0, 0, 0,                    // AF_INET
        6, 0, 2, 0, 6, 0, 0, 0,                    // IPPROTO_TCP
        20, 0, 3, 0, 10, 96, 0, 1, 0, 0, 0, 0,     // 10.96.0.1
        0, 0, 0, 0, 0, 0, 0, 0,
        6, 0, 4, 0, 0, 80, 0, 0,                   // port 80, big-endian
        // IPVS_CMD_ATTR_DEST (2 | NLA_F_NESTED), len 40
        0x28, 0, 0x02, 0x80,
        20, 0, 1, 0, 10, 244, 0, 1, 0, 0, 0, 0,    // 10.244.0.1
        0, 0, 0, 0, 0, 0, 0, 0,
        6, 0, 2, 0, 0x1f, 0x90, 0, 0,              // port 8080, big-endian
        6, 0, 11, 0, 2, 0, 0, 0,                   // ADDR_FAMILY AF_INET
    ];
    assert_eq!(encode(msg.clone(), 4), want);
    assert_eq!(decode_message(want).unwrap(), msg);
}

#[test]
fn a_reply_without_nested_flags_decodes_as_one_with_them() {
    // The kernel nests without NLA_F_NESTED; what we send sets it.
    let mut bytes = encode(
        IpvsMessage::new(
            IpvsCmd::NewService,
            vec![IpvsAttr::Service(vec![ServiceAttr::AddressFamily(AF_INET)])],
        ),
        1,
    );
    assert_eq!(bytes[23], 0x80);
    let with_flag = decode_message(&bytes).unwrap();
    bytes[23] = 0;
    assert_eq!(decode_message(&bytes).unwrap(), with_flag);
}

#[test]
fn kernel_replies_re_encode_to_the_same_values() {
    for name in [
        "service_v4_tcp_persistent.bin",
        "service_v6_udp.bin",
        "dest_v4.bin",
        "dest_v6.bin",
        "info.bin",
        "config.bin",
    ] {
        let msg = decode_message(&fixture(name)).unwrap();
        assert_eq!(
            decode_message(&encode(msg.clone(), 1)).unwrap(),
            msg,
            "{name}"
        );
    }
}

#[test]
fn truncated_replies_fail_cleanly() {
    let bytes = fixture("dest_v4.bin");
    for cut in 0..bytes.len() {
        let mut b = bytes[..cut].to_vec();
        if b.len() >= 4 {
            // Keep nlmsg_len truthful so the cut lands inside the attributes.
            let len = (b.len() as u32).to_ne_bytes();
            b[..4].copy_from_slice(&len);
        }
        // Either an error or a (shorter) message, never a panic.
        let _ = decode_message(&b);
    }
    assert!(decode_message(&bytes[..10]).is_err());
}
