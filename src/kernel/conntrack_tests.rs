use super::*;

/// The bytes of `msg` as the transport sends them (sequence number 0).
fn bytes(mut msg: NetlinkMessage<Request>) -> Vec<u8> {
    msg.finalize();
    let mut b = vec![0; msg.buffer_len()];
    msg.serialize(&mut b);
    b
}

/// One dump message as Linux 6.18 sent it, byte for byte, for the UDP entry
/// `127.0.0.1:40001 -> 10.96.0.10:53` translated by an iptables DNAT rule to
/// `127.0.0.1:5353` (what `conntrack -L` printed as `udp 17 29
/// src=127.0.0.1 dst=10.96.0.10 sport=40001 dport=53 [UNREPLIED]
/// src=127.0.0.1 dst=127.0.0.1 sport=5353 dport=40001 mark=0 use=1`).
const KERNEL_UDP_ENTRY: &[u8] = &[
    0xa4, 0x00, 0x00, 0x00, 0x00, 0x01, 0x22, 0x00, 0xcc, 0xbe, 0x0e, 0x6b, 0xb5, 0x18, 0x00, 0x00,
    0x02, 0x00, 0x00, 0x00, 0x34, 0x00, 0x01, 0x80, 0x14, 0x00, 0x01, 0x80, 0x08, 0x00, 0x01, 0x00,
    0x7f, 0x00, 0x00, 0x01, 0x08, 0x00, 0x02, 0x00, 0x0a, 0x60, 0x00, 0x0a, 0x1c, 0x00, 0x02, 0x80,
    0x05, 0x00, 0x01, 0x00, 0x11, 0x00, 0x00, 0x00, 0x06, 0x00, 0x02, 0x00, 0x9c, 0x41, 0x00, 0x00,
    0x06, 0x00, 0x03, 0x00, 0x00, 0x35, 0x00, 0x00, 0x34, 0x00, 0x02, 0x80, 0x14, 0x00, 0x01, 0x80,
    0x08, 0x00, 0x01, 0x00, 0x7f, 0x00, 0x00, 0x01, 0x08, 0x00, 0x02, 0x00, 0x7f, 0x00, 0x00, 0x01,
    0x1c, 0x00, 0x02, 0x80, 0x05, 0x00, 0x01, 0x00, 0x11, 0x00, 0x00, 0x00, 0x06, 0x00, 0x02, 0x00,
    0x14, 0xe9, 0x00, 0x00, 0x06, 0x00, 0x03, 0x00, 0x9c, 0x41, 0x00, 0x00, 0x08, 0x00, 0x03, 0x00,
    0x00, 0x00, 0x01, 0xa8, 0x08, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x0c, 0x00,
    0xcb, 0x72, 0xb4, 0xdd, 0x08, 0x00, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x07, 0x00,
    0x00, 0x00, 0x00, 0x1d,
];

fn kernel_udp_flow() -> Flow {
    Flow {
        protocol: Protocol::Udp,
        orig: Tuple {
            src: "127.0.0.1".parse().unwrap(),
            dst: "10.96.0.10".parse().unwrap(),
            src_port: 40001,
            dst_port: 53,
        },
        reply: Tuple {
            src: "127.0.0.1".parse().unwrap(),
            dst: "127.0.0.1".parse().unwrap(),
            src_port: 5353,
            dst_port: 40001,
        },
        zone: 0,
        id: Some(0xcb72_b4dd),
    }
}

#[test]
fn decodes_the_kernels_dump_message() {
    assert_eq!(
        flow_from_message(KERNEL_UDP_ENTRY).unwrap(),
        Some(kernel_udp_flow())
    );
    assert_eq!(
        kernel_udp_flow().to_string(),
        "UDP 127.0.0.1:40001 -> 10.96.0.10:53 reply from 127.0.0.1:5353"
    );
}

#[test]
fn dump_request_asks_the_kernel_to_filter_by_protocol() {
    // The kernel accepted exactly these bytes and left a UDP entry out of a
    // TCP dump (Linux 6.18).
    #[rustfmt::skip]
    let want = [
        0x30, 0, 0, 0, 0x01, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // nlmsghdr: CTNETLINK<<8 | CT_GET
        0x02, 0, 0, 0,                                           // nfgenmsg: AF_INET, v0, res_id 0
        0x10, 0, 0x01, 0x80,                                     // CTA_TUPLE_ORIG | NESTED
        0x0c, 0, 0x02, 0x80,                                     //   CTA_TUPLE_PROTO | NESTED
        0x05, 0, 0x01, 0, 0x11, 0, 0, 0,                         //     CTA_PROTO_NUM 17
        0x0c, 0, 0x19, 0x80,                                     // CTA_FILTER | NESTED
        0x08, 0, 0x01, 0, 0x08, 0, 0, 0,                         //   ORIG_FLAGS PROTO_NUM
    ];
    assert_eq!(bytes(dump_request(IpFamily::V4, Protocol::Udp)), want);
    let sctp = bytes(dump_request(IpFamily::V6, Protocol::Sctp));
    assert_eq!(sctp[16], 10, "AF_INET6");
    assert_eq!(sctp[32], 132, "IPPROTO_SCTP");
}

#[test]
fn delete_request_names_the_original_tuple_and_the_id() {
    // Deleted the kernel's entry above (Linux 6.18); the same request with
    // another id was refused with ENOENT.
    #[rustfmt::skip]
    let want = [
        0x50, 0, 0, 0, 0x02, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // CTNETLINK<<8 | CT_DELETE
        0x02, 0, 0, 0,
        0x34, 0, 0x01, 0x80,                                     // CTA_TUPLE_ORIG
        0x14, 0, 0x01, 0x80,                                     //   CTA_TUPLE_IP
        0x08, 0, 0x01, 0, 127, 0, 0, 1,                          //     V4_SRC
        0x08, 0, 0x02, 0, 10, 96, 0, 10,                         //     V4_DST
        0x1c, 0, 0x02, 0x80,                                     //   CTA_TUPLE_PROTO
        0x05, 0, 0x01, 0, 0x11, 0, 0, 0,                         //     NUM 17
        0x06, 0, 0x02, 0, 0x9c, 0x41, 0, 0,                      //     SRC_PORT 40001
        0x06, 0, 0x03, 0, 0x00, 0x35, 0, 0,                      //     DST_PORT 53
        0x08, 0, 0x0c, 0, 0xcb, 0x72, 0xb4, 0xdd,                // CTA_ID
    ];
    assert_eq!(bytes(delete_request(&kernel_udp_flow())), want);
}

#[test]
fn delete_request_carries_a_zone_and_ipv6_addresses() {
    let flow = Flow {
        protocol: Protocol::Sctp,
        orig: Tuple {
            src: "fd00::1".parse().unwrap(),
            dst: "fd00:96::a".parse().unwrap(),
            src_port: 1,
            dst_port: 2,
        },
        reply: Tuple {
            src: "fd00:244::5".parse().unwrap(),
            dst: "fd00::1".parse().unwrap(),
            src_port: 2,
            dst_port: 1,
        },
        zone: 7,
        id: None,
    };
    let b = bytes(delete_request(&flow));
    assert_eq!(b[16], 10, "AF_INET6");
    // CTA_TUPLE_IP: V6_SRC (3) and V6_DST (4), 16 bytes each.
    assert_eq!(&b[28..32], &[0x14, 0, 0x03, 0]);
    assert_eq!(&b[48..52], &[0x14, 0, 0x04, 0]);
    // The zone, big-endian, after the tuple; no id.
    assert_eq!(&b[b.len() - 8..], &[0x06, 0, 0x12, 0, 0, 7, 0, 0]);
    // A dump message of that entry, zone included, decodes to it.
    let dumped = request(
        IpFamily::V6,
        ConntrackMessage::New(vec![
            ConntrackAttribute::CtaTupleOrig(tuple_attrs(&flow.orig, flow.protocol)),
            ConntrackAttribute::CtaTupleReply(tuple_attrs(&flow.reply, flow.protocol)),
            ConntrackAttribute::Other(DefaultNla::new(CTA_ZONE, vec![0, 7])),
        ]),
        Vec::new(),
    );
    assert_eq!(flow_from_message(&bytes(dumped)).unwrap(), Some(flow));
    // A message without a reply tuple (the delete request itself) is not an entry.
    assert_eq!(flow_from_message(&b).unwrap(), None);
}

#[test]
fn truncated_or_garbled_messages_are_refused_never_a_panic() {
    for cut in 0..KERNEL_UDP_ENTRY.len() {
        let mut m = KERNEL_UDP_ENTRY[..cut].to_vec();
        if m.len() >= 4 {
            m[..4].copy_from_slice(&(cut as u32).to_ne_bytes());
        }
        let _ = flow_from_message(&m);
    }
    // Every byte flipped in turn: decoded or refused, never a panic.
    for i in 0..KERNEL_UDP_ENTRY.len() {
        for x in [0x00, 0xff, 0x80] {
            let mut m = KERNEL_UDP_ENTRY.to_vec();
            m[i] = x;
            let _ = flow_from_message(&m);
        }
    }
}

#[test]
fn twin_deletes_by_tuple_and_zone_and_refuses_a_stale_id() {
    use super::twin::ConntrackTwin;
    let flow = kernel_udp_flow();
    let mut twin = ConntrackTwin::new(vec![flow]);
    assert_eq!(twin.list(IpFamily::V4, Protocol::Tcp).unwrap(), vec![]);
    assert_eq!(twin.list(IpFamily::V6, Protocol::Udp).unwrap(), vec![]);
    assert_eq!(twin.list(IpFamily::V4, Protocol::Udp).unwrap(), vec![flow]);
    let mut other = flow;
    other.id = Some(1);
    let d = twin.delete(&[other]);
    assert_eq!((d.deleted, d.gone), (0, 1));
    let d = twin.delete(&[flow, flow]);
    assert_eq!((d.deleted, d.gone), (1, 1));
    assert!(twin.entries.is_empty());
    assert_eq!(twin.batches, vec![1, 2]);
}

/// A dump message of `flow`, as the kernel lists an entry.
fn dumped(flow: &Flow) -> Vec<u8> {
    let mut attrs = vec![
        ConntrackAttribute::CtaTupleOrig(tuple_attrs(&flow.orig, flow.protocol)),
        ConntrackAttribute::CtaTupleReply(tuple_attrs(&flow.reply, flow.protocol)),
        ConntrackAttribute::Other(DefaultNla::new(CTA_ZONE, flow.zone.to_be_bytes().to_vec())),
    ];
    if let Some(id) = flow.id {
        attrs.push(ConntrackAttribute::Other(DefaultNla::new(
            CTA_ID,
            id.to_be_bytes().to_vec(),
        )));
    }
    bytes(request(
        flow.family(),
        ConntrackMessage::New(attrs),
        Vec::new(),
    ))
}

#[test]
fn fuzz_conntrack_entries_decode_or_fail_without_panic() {
    let seeds = vec![
        KERNEL_UDP_ENTRY.to_vec(),
        bytes(delete_request(&kernel_udp_flow())),
        bytes(dump_request(IpFamily::V6, Protocol::Sctp)),
    ];
    crate::testing::fuzz(
        "conntrack entries",
        20_000,
        crate::testing::replies(seeds),
        |m| {
            let _ = flow_from_message(&m);
            Ok(())
        },
    );
}

#[test]
fn fuzz_conntrack_entries_read_back_as_listed() {
    use proptest::prelude::*;
    let ip = |v6: bool| -> BoxedStrategy<std::net::IpAddr> {
        if v6 {
            any::<[u8; 16]>().prop_map(std::net::IpAddr::from).boxed()
        } else {
            any::<[u8; 4]>().prop_map(std::net::IpAddr::from).boxed()
        }
    };
    let tuple = move |v6: bool| {
        (ip(v6), ip(v6), any::<u16>(), any::<u16>()).prop_map(|(src, dst, sp, dp)| Tuple {
            src,
            dst,
            src_port: sp,
            dst_port: dp,
        })
    };
    let flow = any::<bool>().prop_flat_map(move |v6| {
        (
            prop::sample::select(vec![Protocol::Tcp, Protocol::Udp, Protocol::Sctp]),
            tuple(v6),
            tuple(v6),
            any::<u16>(),
            any::<Option<u32>>(),
        )
            .prop_map(|(protocol, orig, reply, zone, id)| Flow {
                protocol,
                orig,
                reply,
                zone,
                id,
            })
    });
    crate::testing::fuzz("conntrack round trip", 3_000, flow, |flow| {
        prop_assert_eq!(flow_from_message(&dumped(&flow)).unwrap(), Some(flow));
        Ok(())
    });
}
