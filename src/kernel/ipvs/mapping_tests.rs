//! The mapping between kproxy's model and the IPVS wire types: golden bytes
//! for the requests each operation becomes, and the model read out of replies
//! captured from a real 6.1 kernel (see `raw_kernel_replies_decode` in
//! integration/vm_ipvs_netlink.rs for how `testdata/*.bin` were made).

use std::net::IpAddr;

use netlink_packet_core::{DefaultNla, NLM_F_ACK, NLM_F_REQUEST};
use pretty_assertions::assert_eq;

use super::super::wire::*;
use super::*;

const FAMILY: u16 = 0x20;

fn key(addr: &str, protocol: Protocol, port: u16) -> ServiceKey {
    ServiceKey {
        addr: addr.parse().unwrap(),
        protocol,
        port,
    }
}

fn real(addr: &str, port: u16, weight: u32) -> RealServer {
    RealServer {
        key: DestKey {
            addr: addr.parse().unwrap(),
            port,
        },
        weight,
        forward: ForwardMethod::Masq,
    }
}

fn encode(msg: IpvsMessage, seq: u32) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(&mut out, FAMILY, seq, NLM_F_REQUEST | NLM_F_ACK, msg);
    out
}

fn round_trip(msg: IpvsMessage) {
    let bytes = encode(msg.clone(), 7);
    assert_eq!(bytes.len() % 4, 0, "messages are 4-byte aligned");
    assert_eq!(
        u32::from_ne_bytes(bytes[..4].try_into().unwrap()) as usize,
        bytes.len(),
        "nlmsg_len covers the whole message"
    );
    assert_eq!(decode_message(&bytes).unwrap(), msg);
}

#[test]
fn new_service_v4_tcp_persistent_golden_bytes() {
    let vs = VirtualServer {
        key: key("10.96.0.1", Protocol::Tcp, 443),
        scheduler: "wrr".into(),
        persistence: Some(Persistence {
            timeout: 10800,
            netmask: u32::MAX,
        }),
        sched_flags: 0,
    };
    let msg = op_message(&IpvsOp::AddService(vs));
    #[rustfmt::skip]
    let want: &[u8] = &[
        // nlmsghdr: len 104, type = family 0x20, flags REQUEST|ACK, seq 1, pid 0
        0x68, 0, 0, 0, 0x20, 0, 0x05, 0, 1, 0, 0, 0, 0, 0, 0, 0,
        // genlmsghdr: cmd IPVS_CMD_NEW_SERVICE (1), version 1
        1, 1, 0, 0,
        // IPVS_CMD_ATTR_SERVICE (1 | NLA_F_NESTED), len 84
        0x54, 0, 0x01, 0x80,
        // IPVS_SVC_ATTR_AF = AF_INET (2), padded to 4
        6, 0, 1, 0, 2, 0, 0, 0,
        // IPVS_SVC_ATTR_PROTOCOL = IPPROTO_TCP (6)
        6, 0, 2, 0, 6, 0, 0, 0,
        // IPVS_SVC_ATTR_ADDR: 16-byte nf_inet_addr, 10.96.0.1 then zeros
        20, 0, 3, 0, 10, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        // IPVS_SVC_ATTR_PORT = 443, big-endian
        6, 0, 4, 0, 0x01, 0xbb, 0, 0,
        // IPVS_SVC_ATTR_SCHED_NAME = "wrr\0"
        8, 0, 6, 0, b'w', b'r', b'r', 0,
        // IPVS_SVC_ATTR_FLAGS: {flags PERSISTENT, mask all}
        12, 0, 7, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
        // IPVS_SVC_ATTR_TIMEOUT = 10800 (0x2a30)
        8, 0, 8, 0, 0x30, 0x2a, 0, 0,
        // IPVS_SVC_ATTR_NETMASK = 255.255.255.255
        8, 0, 9, 0, 0xff, 0xff, 0xff, 0xff,
    ];
    assert_eq!(encode(msg.clone(), 1), want);
    assert_eq!(decode_message(want).unwrap(), msg);
}

#[test]
fn new_dest_v6_golden_bytes() {
    let k = key("fd00::10", Protocol::Udp, 53);
    let msg = op_message(&IpvsOp::AddDest(k, real("fd00:244::2", 53, 2)));
    #[rustfmt::skip]
    let want: &[u8] = &[
        // nlmsghdr: len 140, type 0x20, REQUEST|ACK, seq 2
        0x8c, 0, 0, 0, 0x20, 0, 0x05, 0, 2, 0, 0, 0, 0, 0, 0, 0,
        // genlmsghdr: IPVS_CMD_NEW_DEST (5), version 1
        5, 1, 0, 0,
        // IPVS_CMD_ATTR_SERVICE (nested), len 48: the service's identity
        0x30, 0, 0x01, 0x80,
        6, 0, 1, 0, 10, 0, 0, 0,                   // AF_INET6
        6, 0, 2, 0, 17, 0, 0, 0,                   // IPPROTO_UDP
        20, 0, 3, 0, 0xfd, 0, 0, 0, 0, 0, 0, 0,    // fd00::10
        0, 0, 0, 0, 0, 0, 0, 0x10,
        6, 0, 4, 0, 0, 53, 0, 0,                   // port 53, big-endian
        // IPVS_CMD_ATTR_DEST (2 | NLA_F_NESTED), len 72
        0x48, 0, 0x02, 0x80,
        20, 0, 1, 0, 0xfd, 0, 0x02, 0x44, 0, 0, 0, 0, // fd00:244::2
        0, 0, 0, 0, 0, 0, 0, 2,
        6, 0, 2, 0, 0, 53, 0, 0,                   // port 53
        6, 0, 11, 0, 10, 0, 0, 0,                  // ADDR_FAMILY AF_INET6
        8, 0, 3, 0, 0, 0, 0, 0,                    // FWD_METHOD Masq
        8, 0, 4, 0, 2, 0, 0, 0,                    // WEIGHT 2
        8, 0, 5, 0, 0, 0, 0, 0,                    // U_THRESH 0
        8, 0, 6, 0, 0, 0, 0, 0,                    // L_THRESH 0
    ];
    assert_eq!(encode(msg.clone(), 2), want);
    assert_eq!(decode_message(want).unwrap(), msg);
}

#[test]
fn every_request_kind_round_trips() {
    let k4 = key("10.96.0.1", Protocol::Tcp, 80);
    let k6 = key("fd00::1", Protocol::Sctp, 9000);
    let sh = VirtualServer {
        key: k6,
        scheduler: "sh".into(),
        persistence: Some(Persistence {
            timeout: 60,
            netmask: 64,
        }),
        sched_flags: 0x18,
    };
    let rr = VirtualServer {
        key: k4,
        scheduler: "rr".into(),
        persistence: None,
        sched_flags: 0,
    };
    let ops = [
        IpvsOp::AddService(rr.clone()),
        IpvsOp::EditService(sh.clone()),
        IpvsOp::DelService(k4),
        IpvsOp::AddDest(k4, real("10.244.0.1", 8080, 1)),
        IpvsOp::EditDest(k6, real("fd00:244::1", 9000, 0)),
        IpvsOp::DelDest(k4, real("10.244.0.1", 8080, 1).key),
    ];
    for op in &ops {
        round_trip(op_message(op));
    }
    for msg in [
        IpvsMessage::new(IpvsCmd::GetService, vec![]),
        get_dests_message(&k6),
        IpvsMessage::new(IpvsCmd::Flush, vec![]),
        IpvsMessage::new(IpvsCmd::GetInfo, vec![]),
        IpvsMessage::new(IpvsCmd::GetConfig, vec![]),
        set_config_message(Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300,
        }),
        // What the kernel sends back, with every attribute kind it uses.
        IpvsMessage::new(
            IpvsCmd::SetInfo,
            vec![
                IpvsAttr::InfoVersion(0x010201),
                IpvsAttr::InfoConnTabSize(4096),
            ],
        ),
        IpvsMessage::new(
            IpvsCmd::NewService,
            vec![IpvsAttr::Service({
                let mut a = service_attrs(&sh);
                a.push(ServiceAttr::PeName("sip".into()));
                a.push(ServiceAttr::Fwmark(0));
                a.push(ServiceAttr::Stats(Stats {
                    conns: 1,
                    inpkts: 2,
                    outpkts: 3,
                    inbytes: 1 << 40,
                    outbytes: 5,
                    cps: 6,
                    inpps: 7,
                    outpps: 8,
                    inbps: 9,
                    outbps: 10,
                }));
                a.push(ServiceAttr::Stats64(Stats {
                    conns: 1 << 33,
                    ..Stats::default()
                }));
                a
            })],
        ),
        IpvsMessage::new(
            IpvsCmd::NewDest,
            vec![IpvsAttr::Dest({
                let mut a = dest_attrs(&real("10.244.0.9", 80, 5));
                a.extend([
                    DestAttr::ActiveConns(3),
                    DestAttr::InactiveConns(4),
                    DestAttr::PersistConns(5),
                    DestAttr::TunType(1),
                    DestAttr::TunPort(6081),
                    DestAttr::TunFlags(1),
                    DestAttr::Stats(Stats::default()),
                    DestAttr::Stats64(Stats {
                        inbytes: u64::MAX,
                        ..Stats::default()
                    }),
                ]);
                a
            })],
        ),
    ] {
        round_trip(msg);
    }
}

#[test]
fn unknown_commands_and_attributes_are_kept_not_refused() {
    let vs = VirtualServer {
        key: key("10.96.0.1", Protocol::Tcp, 80),
        scheduler: "rr".into(),
        persistence: None,
        sched_flags: 0,
    };
    let mut svc = service_attrs(&vs);
    svc.push(ServiceAttr::Other(DefaultNla::new(99, vec![1, 2, 3])));
    let msg = IpvsMessage::new(
        IpvsCmd::Other(42),
        vec![
            IpvsAttr::Service(svc),
            IpvsAttr::Other(DefaultNla::new(77, vec![9; 6])),
        ],
    );
    let bytes = encode(msg.clone(), 3);
    let back = decode_message(&bytes).unwrap();
    assert_eq!(back, msg);
    let parsed = service_from_attrs(back.service().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(parsed.service, vs);
}

#[test]
fn netmask_is_a_network_order_mask_for_v4_and_a_prefix_for_v6() {
    assert_eq!(netmask_wire(AF_INET, 0xffff_ff00), [0xff, 0xff, 0xff, 0]);
    assert_eq!(
        netmask_from_wire(AF_INET, [0xff, 0xff, 0xff, 0]),
        0xffff_ff00
    );
    assert_eq!(netmask_wire(AF_INET6, 64), 64u32.to_ne_bytes());
    assert_eq!(netmask_from_wire(AF_INET6, 128u32.to_ne_bytes()), 128);
    // Without persistence the kernel still checks an IPv6 mask: 128, not 0.
    let v6 = VirtualServer {
        key: key("fd00::1", Protocol::Tcp, 80),
        scheduler: "rr".into(),
        persistence: None,
        sched_flags: 0,
    };
    assert!(service_attrs(&v6).contains(&ServiceAttr::Netmask(128u32.to_ne_bytes())));
}

#[test]
fn edit_clears_persistence_through_the_mask() {
    let vs = VirtualServer {
        key: key("10.96.0.1", Protocol::Tcp, 80),
        scheduler: "rr".into(),
        persistence: None,
        sched_flags: 0,
    };
    let attrs = service_attrs(&vs);
    assert!(attrs.contains(&ServiceAttr::Flags(SvcFlags {
        flags: 0,
        mask: u32::MAX
    })));
}

#[test]
fn set_config_sends_only_what_changes() {
    let m = set_config_message(Timeouts {
        tcp: 0,
        tcp_fin: 0,
        udp: 45,
    });
    assert_eq!(m.attrs, vec![IpvsAttr::TimeoutUdp(45)]);
}

// --- replies captured from the kernel -------------------------------------

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/src/kernel/ipvs/testdata/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn kernel_service_v4_tcp_persistent() {
    let msg = decode_message(&fixture("service_v4_tcp_persistent.bin")).unwrap();
    assert_eq!(msg.cmd, IpvsCmd::NewService);
    let attrs = msg.service().unwrap();
    // The kernel reports HASHED alongside PERSISTENT, with a full mask.
    assert!(attrs.contains(&ServiceAttr::Flags(SvcFlags {
        flags: SVC_F_PERSISTENT | SVC_F_HASHED,
        mask: u32::MAX
    })));
    let s = service_from_attrs(attrs).unwrap().unwrap();
    assert_eq!(s.af, AF_INET);
    assert_eq!(
        s.service,
        VirtualServer {
            key: key("10.96.0.1", Protocol::Tcp, 443),
            scheduler: "wrr".into(),
            persistence: Some(Persistence {
                timeout: 10800,
                netmask: u32::MAX
            }),
            sched_flags: 0,
        }
    );
    assert_eq!(s.stats, Stats::default());
}

#[test]
fn kernel_service_v6_udp() {
    let msg = decode_message(&fixture("service_v6_udp.bin")).unwrap();
    let s = service_from_attrs(msg.service().unwrap()).unwrap().unwrap();
    assert_eq!(s.af, AF_INET6);
    assert_eq!(
        s.service,
        VirtualServer {
            key: key("fd00::10", Protocol::Udp, 53),
            scheduler: "rr".into(),
            persistence: None,
            sched_flags: 0,
        }
    );
    // ipvsadm sent the IPv6 "whole address" mask as a prefix length.
    assert!(
        msg.service()
            .unwrap()
            .contains(&ServiceAttr::Netmask(128u32.to_ne_bytes()))
    );
}

#[test]
fn kernel_dest_v4() {
    let msg = decode_message(&fixture("dest_v4.bin")).unwrap();
    assert_eq!(msg.cmd, IpvsCmd::NewDest);
    let attrs = msg.dest().unwrap();
    let (rs, stats) = dest_from_attrs(attrs, AF_INET).unwrap();
    assert_eq!(rs, real("10.244.1.5", 6443, 3));
    assert_eq!(stats, DestStats::default());
    assert!(attrs.contains(&DestAttr::AddressFamily(AF_INET)));
    assert!(attrs.contains(&DestAttr::TunType(0)));
}

#[test]
fn kernel_dest_v6() {
    let msg = decode_message(&fixture("dest_v6.bin")).unwrap();
    // The destination's own family wins over the one the caller guessed.
    let (rs, _) = dest_from_attrs(msg.dest().unwrap(), AF_INET).unwrap();
    assert_eq!(rs, real("fd00:244::2", 53, 2));
    assert_eq!(rs.key.addr, "fd00:244::2".parse::<IpAddr>().unwrap());
}

#[test]
fn kernel_info_and_config() {
    let info = decode_message(&fixture("info.bin")).unwrap();
    assert_eq!(info.cmd, IpvsCmd::SetInfo);
    let info = IpvsInfo::from_message(&info).unwrap();
    assert_eq!(info.version_string(), "1.2.1");
    assert_eq!(info.conn_tab_size, 4096);

    let config = decode_message(&fixture("config.bin")).unwrap();
    assert_eq!(config.cmd, IpvsCmd::SetConfig);
    assert_eq!(
        timeouts_from(&config),
        Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300
        }
    );
}

/// The snapshot's fast path reads destinations exactly as the typed decode.
#[test]
fn dest_fast_path_agrees_with_the_typed_decode() {
    let mut samples = vec![fixture("dest_v4.bin"), fixture("dest_v6.bin")];
    let k = key("10.96.0.1", Protocol::Tcp, 80);
    for (addr, weight) in [("10.244.0.9", 0), ("10.244.0.10", 65535)] {
        let mut msg = op_message(&IpvsOp::AddDest(k, real(addr, 8080, weight)));
        msg.cmd = IpvsCmd::NewDest;
        if let IpvsAttr::Dest(d) = &mut msg.attrs[1] {
            d.extend([DestAttr::ActiveConns(7), DestAttr::InactiveConns(9)]);
            d.push(DestAttr::Other(DefaultNla::new(99, vec![1; 5])));
        }
        samples.push(encode(msg, 1));
    }
    for bytes in &samples {
        let typed = decode_message(bytes).unwrap();
        let want = dest_from_attrs(typed.dest().unwrap(), AF_INET).unwrap();
        assert_eq!(dest_from_message(bytes, AF_INET).unwrap(), want);
    }
    let (_, stats) = dest_from_message(&samples[3], AF_INET).unwrap();
    assert_eq!(
        stats,
        DestStats {
            active_conns: 7,
            inactive_conns: 9
        }
    );
    // Cut anywhere: an error or a value, never a panic.
    let b = &samples[0];
    for cut in 0..b.len() {
        let _ = dest_from_message(&b[..cut], AF_INET);
    }
    assert!(dest_from_message(&b[..30], AF_INET).is_err());
}
