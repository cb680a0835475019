use super::*;
use crate::kernel::netlink::encode;
use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST};

fn encoded(request: IpsetRequest, seq: u32, flags: u16) -> Vec<u8> {
    let mut out = Vec::new();
    encode(&mut out, seq, flags, &mut message(request));
    out
}

#[rustfmt::skip]
#[test]
fn the_headers_dump_is_a_list_with_the_protocol_and_the_header_flag() {
    let bytes = encoded(headers_request(7), 5, NLM_F_REQUEST | NLM_F_DUMP);
    assert_eq!(bytes, [
        36, 0, 0, 0,            // length
        0x07, 0x06,             // NFNL_SUBSYS_IPSET << 8 | IPSET_CMD_LIST
        0x01, 0x03,             // NLM_F_REQUEST | NLM_F_DUMP
        5, 0, 0, 0,             // sequence
        0, 0, 0, 0,             // port id
        0, 0, 0, 0,             // nfgenmsg: NFPROTO_UNSPEC, v0, res_id 0
        5, 0, 1, 0, 7, 0, 0, 0, // IPSET_ATTR_PROTOCOL 7
        8, 0, 6, 0x40, 0, 0, 0, 4, // IPSET_ATTR_FLAGS (net order) LIST_HEADER
    ]);
}

#[rustfmt::skip]
#[test]
fn the_members_dump_names_its_set() {
    let bytes = encoded(members_request(6, "KUBE-LOOP-BACK"), 1, NLM_F_REQUEST | NLM_F_DUMP);
    let mut want = vec![
        48, 0, 0, 0, 0x07, 0x06, 0x01, 0x03, 1, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0,
        5, 0, 1, 0, 6, 0, 0, 0,
        19, 0, 2, 0,
    ];
    want.extend_from_slice(b"KUBE-LOOP-BACK\0\0");
    assert_eq!(bytes, want);
}

/// A list reply as the kernel builds it: header fields, then `body`.
fn reply(name: &str, set_type: &str, family: u8, body: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    put_attr(&mut a, IPSET_ATTR_PROTOCOL, &[7]);
    put_attr(&mut a, IPSET_ATTR_SETNAME, format!("{name}\0").as_bytes());
    put_attr(
        &mut a,
        IPSET_ATTR_TYPENAME,
        format!("{set_type}\0").as_bytes(),
    );
    put_attr(&mut a, 4, &[6]);
    put_attr(&mut a, IPSET_ATTR_FAMILY, &[family]);
    a.extend_from_slice(body);
    let mut m = Vec::new();
    m.extend_from_slice(&((20 + a.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&0x0607u16.to_ne_bytes());
    m.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // NLM_F_MULTI, seq, port id
    m.extend_from_slice(&[family, 0, 0, 0]);
    m.extend_from_slice(&a);
    m
}

fn nested(kind: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_attr(&mut out, kind | NLA_F_NESTED, body);
    out
}

fn ip(kind: u16, addr: &str) -> Vec<u8> {
    let mut inner = Vec::new();
    match addr.parse::<IpAddr>().unwrap() {
        IpAddr::V4(a) => put_attr(
            &mut inner,
            IPSET_ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER,
            &a.octets(),
        ),
        IpAddr::V6(a) => put_attr(
            &mut inner,
            IPSET_ATTR_IPADDR_IPV6 | NLA_F_NET_BYTEORDER,
            &a.octets(),
        ),
    }
    nested(kind, &inner)
}

fn port_proto(port: u16, proto: u8) -> Vec<u8> {
    let mut out = Vec::new();
    put_attr(
        &mut out,
        IPSET_ATTR_PORT | NLA_F_NET_BYTEORDER,
        &port.to_be_bytes(),
    );
    put_attr(&mut out, IPSET_ATTR_PROTO, &[proto]);
    out
}

fn header_data(elements: u32) -> Vec<u8> {
    let mut d = Vec::new();
    put_attr(
        &mut d,
        IPSET_ATTR_HASHSIZE | NLA_F_NET_BYTEORDER,
        &1024u32.to_be_bytes(),
    );
    put_attr(
        &mut d,
        IPSET_ATTR_MAXELEM | NLA_F_NET_BYTEORDER,
        &65536u32.to_be_bytes(),
    );
    put_attr(
        &mut d,
        IPSET_ATTR_ELEMENTS | NLA_F_NET_BYTEORDER,
        &elements.to_be_bytes(),
    );
    nested(IPSET_ATTR_DATA, &d)
}

#[test]
fn headers_give_each_sets_type_and_member_count() {
    let replies = [
        reply("KUBE-CLUSTER-IP", "hash:ip,port", 2, &header_data(10000)),
        reply("KUBE-6-CLUSTER-IP", "hash:ip,port", 10, &header_data(3)),
    ];
    let h = headers_from(&replies).unwrap();
    assert_eq!(
        h["KUBE-CLUSTER-IP"],
        SetHeader {
            set_type: "hash:ip,port".into(),
            entries: 10000
        }
    );
    assert_eq!(h["KUBE-6-CLUSTER-IP"].entries, 3);
    assert_eq!(h.len(), 2);
}

#[test]
fn members_are_written_as_ipset_save_writes_them() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("hash:ip", ip(IPSET_ATTR_IP, "10.96.0.10"), "10.96.0.10"),
        ("hash:ip", ip(IPSET_ATTR_IP, "fd00::a"), "fd00::a"),
        (
            "hash:ip,port",
            [ip(IPSET_ATTR_IP, "10.96.0.10"), port_proto(80, 6)].concat(),
            "10.96.0.10,tcp:80",
        ),
        (
            "hash:ip,port",
            [ip(IPSET_ATTR_IP, "192.168.58.2"), port_proto(30868, 132)].concat(),
            "192.168.58.2,sctp:30868",
        ),
        (
            "hash:ip,port,ip",
            [
                ip(IPSET_ATTR_IP, "10.244.1.5"),
                port_proto(8080, 6),
                ip(IPSET_ATTR_IP2, "10.244.1.5"),
            ]
            .concat(),
            "10.244.1.5,tcp:8080,10.244.1.5",
        ),
        (
            "hash:ip,port,net",
            {
                let mut v = [
                    ip(IPSET_ATTR_IP, "203.0.113.7"),
                    port_proto(443, 6),
                    ip(IPSET_ATTR_IP2, "10.0.0.0"),
                ]
                .concat();
                put_attr(&mut v, IPSET_ATTR_CIDR2, &[8]);
                v
            },
            "203.0.113.7,tcp:443,10.0.0.0/8",
        ),
        (
            "hash:ip,port,net",
            {
                let mut v = [
                    ip(IPSET_ATTR_IP, "fd00::7"),
                    port_proto(53, 17),
                    ip(IPSET_ATTR_IP2, "fd00::1"),
                ]
                .concat();
                put_attr(&mut v, IPSET_ATTR_CIDR2, &[128]);
                v
            },
            "fd00::7,udp:53,fd00::1",
        ),
        ("bitmap:port", port_proto(30080, 0)[..8].to_vec(), "30080"),
    ];
    for (set_type, data, want) in cases {
        assert_eq!(entry_text(set_type, &data).unwrap(), want, "{set_type}");
    }
}

#[test]
fn a_set_is_read_from_its_header_and_member_parts() {
    let mut adt = nested(
        IPSET_ATTR_DATA,
        &[ip(IPSET_ATTR_IP, "10.96.0.1"), port_proto(443, 6)].concat(),
    );
    adt.extend(nested(
        IPSET_ATTR_DATA,
        &[ip(IPSET_ATTR_IP, "10.96.0.10"), port_proto(53, 17)].concat(),
    ));
    let first = reply(
        "KUBE-CLUSTER-IP",
        "hash:ip,port",
        2,
        &[header_data(2), nested(IPSET_ATTR_ADT, &adt)].concat(),
    );
    let more = reply(
        "KUBE-CLUSTER-IP",
        "hash:ip,port",
        2,
        &nested(
            IPSET_ATTR_ADT,
            &nested(
                IPSET_ATTR_DATA,
                &[ip(IPSET_ATTR_IP, "10.96.0.2"), port_proto(80, 6)].concat(),
            ),
        ),
    );
    let set = set_from(&[first, more]).unwrap();
    assert_eq!(set.set_type, "hash:ip,port");
    assert_eq!(
        set.options,
        ["family", "inet", "hashsize", "1024", "maxelem", "65536"]
    );
    assert_eq!(
        set.entries.iter().collect::<Vec<_>>(),
        ["10.96.0.1,tcp:443", "10.96.0.10,udp:53", "10.96.0.2,tcp:80"]
    );
}

#[test]
fn a_reply_whose_length_is_below_its_headers_is_an_error_not_a_panic() {
    // Found by fuzz_ipset_replies_decode_or_fail_without_panic: nlmsg_len
    // 16 in a 36-byte reply sliced the attributes as msg[20..16].
    let mut m = reply("S", "hash:ip", 2, &[]);
    m[..4].copy_from_slice(&16u32.to_ne_bytes());
    assert!(headers_from(&[m.clone()]).is_err());
    assert!(set_from(&[m]).is_err());
}

#[test]
fn a_zero_length_attribute_ends_the_walk_with_an_error() {
    assert!(attrs(&[0, 0, 2, 0, 8, 0, 1, 0, 1, 0, 0, 0]).is_err());
    let m = reply("S", "hash:ip", 2, &[0, 0, 7, 0]);
    assert!(set_from(&[m]).is_err());
}

#[test]
fn a_truncated_attribute_is_an_error_not_a_panic() {
    assert!(attrs(&[8, 0, 1, 0, 1]).is_err());
    assert!(entry_text("hash:ip", &[]).is_err());
}

mod writes {
    use super::*;
    use crate::kernel::ipset_netlink::write::*;
    use netlink_packet_core::NLM_F_ACK;

    #[rustfmt::skip]
    #[test]
    fn an_add_carries_its_entry_in_network_order_without_nlm_f_excl() {
        let (family, data) = entry_attrs("10.96.0.10,tcp:80").unwrap();
        assert_eq!(family, 2);
        let bytes = encoded(adt_request(7, IPSET_CMD_ADD, "S", family, &[&data]), 9, NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(bytes, [
            68, 0, 0, 0, 0x09, 0x06, 0x05, 0x00, 9, 0, 0, 0, 0, 0, 0, 0,
            2, 0, 0, 0,                        // nfgenmsg: NFPROTO_IPV4
            5, 0, 1, 0, 7, 0, 0, 0,            // IPSET_ATTR_PROTOCOL 7
            6, 0, 2, 0, b'S', 0, 0, 0,         // IPSET_ATTR_SETNAME
            32, 0, 7, 0x80,                    // IPSET_ATTR_DATA (nested)
              12, 0, 1, 0x80,                  //   IPSET_ATTR_IP (nested)
                8, 0, 1, 0x40, 10, 96, 0, 10,  //     IPSET_ATTR_IPADDR_IPV4
              6, 0, 4, 0x40, 0, 80, 0, 0,      //   IPSET_ATTR_PORT 80
              5, 0, 7, 0, 6, 0, 0, 0,          //   IPSET_ATTR_PROTO tcp
        ]);
    }

    #[test]
    fn a_run_of_entries_goes_under_adt() {
        let a = entry_attrs("30080").unwrap().1;
        let b = entry_attrs("30081").unwrap().1;
        let r = adt_request(7, IPSET_CMD_DEL, "P", 0, &[&a, &b]);
        let top = attrs(&r.attrs).unwrap();
        assert_eq!(
            top.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            [
                IPSET_ATTR_PROTOCOL,
                IPSET_ATTR_SETNAME,
                IPSET_ATTR_LINENO,
                IPSET_ATTR_ADT
            ]
        );
        let inner = attrs(top[3].1).unwrap();
        assert_eq!(inner.len(), 2);
        assert_eq!(entry_text("bitmap:port", inner[1].1).unwrap(), "30081");
        assert_eq!(r.cmd, IPSET_CMD_DEL);
    }

    #[test]
    fn entries_read_back_as_they_were_written() {
        for (set_type, entry) in [
            ("hash:ip", "10.96.0.10"),
            ("hash:ip", "fd00::a"),
            ("hash:ip,port", "192.168.58.2,sctp:30868"),
            ("hash:ip,port", "fd00::1,udp:53"),
            ("hash:ip,port,ip", "10.244.1.5,tcp:8080,10.244.1.5"),
            ("hash:ip,port,net", "203.0.113.7,tcp:443,10.0.0.0/8"),
            ("hash:ip,port,net", "fd00::7,tcp:443,fd00:1::/64"),
            ("bitmap:port", "30080"),
        ] {
            let (_, data) = entry_attrs(entry).unwrap();
            assert_eq!(entry_text(set_type, &data).unwrap(), entry);
        }
        assert!(entry_attrs("10.0.0.1,tcp").is_err());
        assert!(entry_attrs("nonsense").is_err());
    }

    #[rustfmt::skip]
    #[test]
    fn a_create_sends_type_revision_family_and_sizes() {
        let args = ["family", "inet6", "hashsize", "1024", "maxelem", "65536", "bucketsize", "12"];
        let r = create_request(7, "KUBE-6-CLUSTER-IP", "hash:ip,port", &args, 7).unwrap();
        assert_eq!((r.cmd, r.family), (IPSET_CMD_CREATE, 10));
        let top = attrs(&r.attrs).unwrap();
        assert_eq!(top[2], (IPSET_ATTR_TYPENAME, &b"hash:ip,port\0"[..]));
        assert_eq!(top[3], (IPSET_ATTR_REVISION, &[7u8][..]));
        assert_eq!(top[4], (IPSET_ATTR_FAMILY, &[10u8][..]));
        let mut want = Vec::new();
        put_attr(&mut want, IPSET_ATTR_HASHSIZE | NLA_F_NET_BYTEORDER, &1024u32.to_be_bytes());
        put_attr(&mut want, IPSET_ATTR_MAXELEM | NLA_F_NET_BYTEORDER, &65536u32.to_be_bytes());
        put_attr(&mut want, IPSET_ATTR_BUCKETSIZE, &[12]);
        assert_eq!(top[5], (IPSET_ATTR_DATA, &want[..]));
        let p = create_request(7, "KUBE-NODE-PORT-TCP", "bitmap:port", &["range", "0-65535"], 3).unwrap();
        assert_eq!(p.family, 0);
        let data = attrs(attrs(&p.attrs).unwrap()[5].1).unwrap();
        assert_eq!(data, [(IPSET_ATTR_PORT, &[0u8, 0][..]), (IPSET_ATTR_PORT_TO, &[255u8, 255][..])]);
        assert!(create_request(7, "X", "hash:ip", &["timeout", "5"], 1).is_err());
    }

    #[test]
    fn script_lines_parse_as_sets_and_proxier_write_them() {
        assert_eq!(
            parse_line("create A hash:ip family inet").unwrap(),
            Line::Create {
                name: "A",
                set_type: "hash:ip",
                args: vec!["family", "inet"]
            }
        );
        assert_eq!(
            parse_line("add A 1.2.3.4").unwrap(),
            Line::Add("A", "1.2.3.4")
        );
        assert_eq!(
            parse_line("del A 1.2.3.4").unwrap(),
            Line::Del("A", "1.2.3.4")
        );
        assert_eq!(parse_line("flush A").unwrap(), Line::Flush("A"));
        assert_eq!(parse_line("destroy A").unwrap(), Line::Destroy("A"));
        assert_eq!(parse_line("  ").unwrap(), Line::Blank);
        assert!(parse_line("swap A B").is_err());
        assert!(refusal(4103).contains("same name already exists"));
    }
}

mod fuzz {
    use super::*;
    use crate::kernel::ipset_netlink::write::*;
    use proptest::prelude::*;

    /// A headers dump and a members dump as the kernel sends them.
    fn seeds() -> Vec<Vec<u8>> {
        let mut adt = nested(
            IPSET_ATTR_DATA,
            &[ip(IPSET_ATTR_IP, "10.96.0.1"), port_proto(443, 6)].concat(),
        );
        adt.extend(nested(
            IPSET_ATTR_DATA,
            &[
                ip(IPSET_ATTR_IP, "fd00::7"),
                port_proto(53, 17),
                ip(IPSET_ATTR_IP2, "fd00::1"),
            ]
            .concat(),
        ));
        vec![
            reply("KUBE-CLUSTER-IP", "hash:ip,port", 2, &header_data(10)),
            reply(
                "KUBE-LOOP-BACK",
                "hash:ip,port,ip",
                10,
                &[header_data(2), nested(IPSET_ATTR_ADT, &adt)].concat(),
            ),
            reply(
                "KUBE-NODE-PORT-TCP",
                "bitmap:port",
                0,
                &nested(
                    IPSET_ATTR_ADT,
                    &nested(IPSET_ATTR_DATA, &port_proto(30080, 0)[..8]),
                ),
            ),
        ]
    }

    #[test]
    fn fuzz_ipset_replies_decode_or_fail_without_panic() {
        crate::testing::fuzz(
            "ipset replies",
            20_000,
            (
                crate::testing::replies(seeds()),
                prop::sample::select(vec!["hash:ip", "hash:ip,port,net", "bitmap:port", ""]),
            ),
            |(bytes, set_type)| {
                let replies = [bytes.clone(), bytes.clone()];
                let _ = headers_from(&replies);
                let _ = set_from(&replies);
                let _ = attrs(&bytes);
                let _ = entry_text(set_type, &bytes);
                let _ = entry_text(set_type, bytes.get(20..).unwrap_or_default());
                Ok(())
            },
        );
    }

    /// An entry of one of the set types kproxy writes, in `ipset save`'s form.
    fn entry() -> impl Strategy<Value = (&'static str, String)> {
        let ip = prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
        ];
        let proto = prop::sample::select(vec!["tcp", "udp", "sctp", "udplite"]);
        let net = (ip.clone(), any::<u8>()).prop_map(|(ip, c)| {
            let full = if ip.is_ipv4() { 32 } else { 128 };
            if c == full {
                ip.to_string()
            } else {
                format!("{ip}/{c}")
            }
        });
        prop_oneof![
            any::<u16>().prop_map(|p| ("bitmap:port", p.to_string())),
            ip.clone().prop_map(|ip| ("hash:ip", ip.to_string())),
            (ip.clone(), proto.clone(), any::<u16>())
                .prop_map(|(ip, pr, p)| ("hash:ip,port", format!("{ip},{pr}:{p}"))),
            (ip.clone(), proto, any::<u16>(), net)
                .prop_map(|(ip, pr, p, n)| ("hash:ip,port,net", format!("{ip},{pr}:{p},{n}"))),
        ]
    }

    #[test]
    fn fuzz_ipset_entries_read_back_as_written() {
        crate::testing::fuzz("ipset entries", 5_000, entry(), |(set_type, text)| {
            let (_, data) = entry_attrs(&text).map_err(TestCaseError::fail)?;
            let back =
                entry_text(set_type, &data).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, text);
            Ok(())
        });
    }

    #[test]
    fn fuzz_ipset_script_lines_parse_or_name_the_problem() {
        let word = prop_oneof![
            prop::sample::select(vec![
                "create",
                "add",
                "del",
                "flush",
                "destroy",
                "family",
                "inet6",
                "hashsize",
                "range",
                "0-65535",
                "1.2.3.4/33",
                "fd00::1,tcp:80,::/200",
                "tcp:",
                ",,",
            ])
            .prop_map(String::from),
            "\\PC{0,12}",
        ];
        let line = prop::collection::vec(word, 0..7).prop_map(|w| w.join(" "));
        crate::testing::fuzz("ipset script lines", 5_000, line, |line| {
            match parse_line(&line) {
                Ok(Line::Add(_, e) | Line::Del(_, e)) => {
                    if let Err(reason) = entry_attrs(e) {
                        prop_assert!(!reason.is_empty());
                    }
                }
                Ok(Line::Create {
                    name,
                    set_type,
                    args,
                }) => {
                    if let Err(reason) = create_request(7, name, set_type, &args, 1) {
                        prop_assert!(!reason.is_empty());
                    }
                }
                Ok(_) => {}
                Err(reason) => prop_assert!(reason.contains(line.trim_end())),
            }
            Ok(())
        });
    }
}
