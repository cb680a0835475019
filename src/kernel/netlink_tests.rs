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

fn ext_ack_attr(text: &[u8]) -> Vec<u8> {
    let mut a = ((4 + text.len()) as u16).to_ne_bytes().to_vec();
    a.extend(NLMSGERR_ATTR_MSG.to_ne_bytes());
    a.extend(text);
    a.resize((a.len() + 3) & !3, 0);
    a
}

/// An NLMSG_ERROR for request 9: errno, the echoed request, then `tlvs`.
fn error_reply(flags: u16, echoed: &[u8], tlvs: &[u8]) -> Vec<u8> {
    let mut body = (-libc::EINVAL).to_ne_bytes().to_vec();
    body.extend(echoed);
    body.extend(tlvs);
    nlmsg(NLMSG_ERROR, flags, 9, &body)
}

fn only_reply(d: &[u8]) -> (u32, Reply<'_>) {
    let mut got: Vec<_> = replies(d).collect::<Result<_, _>>().unwrap();
    assert_eq!(got.len(), 1);
    got.pop().unwrap()
}

#[test]
fn an_error_with_extended_ack_text_keeps_errno_and_text() {
    // Capped: only the request's header is echoed, then NLMSGERR_ATTR_MSG.
    let echoed = nlmsg(0x20, NLM_F_REQUEST | NLM_F_ACK, 9, &[]);
    let d = error_reply(
        NLM_F_CAPPED | NLM_F_ACK_TLVS,
        &echoed,
        &ext_ack_attr(b"bad attr\0"),
    );
    assert_eq!(
        only_reply(&d),
        (9, Reply::Error(-libc::EINVAL, Some("bad attr".into())))
    );
}

#[test]
fn an_uncapped_error_skips_the_whole_echoed_request() {
    // The request echoed with its 12-byte payload; its header says so.
    let echoed = nlmsg(0x20, NLM_F_REQUEST | NLM_F_ACK, 9, &[7; 12]);
    assert_eq!(echoed.len(), 28);
    let d = error_reply(
        NLM_F_ACK_TLVS,
        &echoed,
        &ext_ack_attr(b"Invalid prefix length\0"),
    );
    assert_eq!(
        only_reply(&d),
        (
            9,
            Reply::Error(-libc::EINVAL, Some("Invalid prefix length".into()))
        )
    );
    // Read as if capped, the echoed payload would be taken for attributes.
    let body = &d[16 + 4..];
    assert_eq!(ext_ack_message(NLM_F_ACK_TLVS | NLM_F_CAPPED, body), None);
}

#[test]
fn without_ack_tlvs_there_is_no_text_whatever_follows() {
    let echoed = nlmsg(0x20, NLM_F_REQUEST | NLM_F_ACK, 9, &[]);
    let d = error_reply(NLM_F_CAPPED, &echoed, &ext_ack_attr(b"ignored\0"));
    assert_eq!(only_reply(&d), (9, Reply::Error(-libc::EINVAL, None)));
}

#[test]
fn the_text_is_found_among_other_attributes() {
    let echoed = nlmsg(0x20, NLM_F_REQUEST | NLM_F_ACK, 9, &[]);
    let mut tlvs = vec![8, 0, 2, 0, 0x20, 0, 0, 0]; // NLMSGERR_ATTR_OFFS
    tlvs.extend(ext_ack_attr(b"no such thing\0"));
    let d = error_reply(NLM_F_CAPPED | NLM_F_ACK_TLVS, &echoed, &tlvs);
    assert_eq!(
        only_reply(&d),
        (9, Reply::Error(-libc::EINVAL, Some("no such thing".into())))
    );
}

#[test]
fn extended_ack_with_lying_lengths_is_no_text_not_a_panic() {
    let echoed = nlmsg(0x20, NLM_F_REQUEST | NLM_F_ACK, 9, &[]);
    let mut tlvs = ext_ack_attr(b"cut\0");
    tlvs[0] = 200; // the attribute claims more than there is
    let body: Vec<u8> = echoed.iter().chain(&tlvs).copied().collect();
    assert_eq!(ext_ack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &body), None);
    // An uncapped echo whose header claims more than the message holds.
    let mut long = echoed.clone();
    long[0] = 250;
    assert_eq!(ext_ack_message(NLM_F_ACK_TLVS, &long), None);
    // Too short to hold an echoed header at all.
    for cut in 0..body.len() {
        let _ = ext_ack_message(NLM_F_ACK_TLVS, &body[..cut]);
        let _ = ext_ack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &body[..cut]);
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
fn a_failed_dump_reports_its_errno() {
    let d = nlmsg(NLMSG_DONE, 2, 5, &(-libc::EBUSY).to_ne_bytes());
    assert_eq!(only_reply(&d), (5, Reply::Done(-libc::EBUSY)));
}

#[test]
fn a_lying_length_is_an_error_not_a_panic() {
    let mut d = nlmsg(0x20, 0, 1, &[0; 8]);
    d[0] = 200;
    let r: Vec<_> = replies(&d).collect();
    assert_eq!(r.len(), 1);
    assert!(r[0].is_err());
    // A length below the header's own size cannot advance the walk.
    let mut d = nlmsg(0x20, 0, 1, &[0; 8]);
    d[0] = 3;
    let r: Vec<_> = replies(&d).collect();
    assert_eq!(r.len(), 1);
    assert!(r[0].is_err());
}

#[test]
fn a_truncated_error_message_is_an_error_not_a_panic() {
    let d = nlmsg(NLMSG_ERROR, 0, 1, &[]);
    let r: Vec<_> = replies(&d).collect();
    assert_eq!(r, [Err(NetlinkError::Malformed("truncated NLMSG_ERROR"))]);
}

#[test]
fn every_cut_of_a_datagram_walks_without_panicking() {
    let echoed = nlmsg(0x20, NLM_F_REQUEST | NLM_F_ACK, 9, &[1; 12]);
    let mut d = nlmsg(0x20, 2, 5, &[4, 1, 0, 0]);
    d.extend(error_reply(
        NLM_F_ACK_TLVS,
        &echoed,
        &ext_ack_attr(b"text\0"),
    ));
    d.extend(nlmsg(NLMSG_DONE, 2, 5, &0i32.to_ne_bytes()));
    for cut in 0..d.len() {
        let _: Vec<_> = replies(&d[..cut]).collect();
    }
}

#[test]
fn refusals_name_the_errno_and_the_kernels_text() {
    let e = NetlinkError::Refused {
        errno: libc::EEXIST,
        ext_ack: Some("duplicate".into()),
    };
    let k = e.kernel_error("add thing", Some("already exists".into()));
    assert_eq!(k.errno, Some(libc::EEXIST));
    assert_eq!(
        k.to_string(),
        "add thing: already exists: EEXIST (File exists): duplicate"
    );
    let lost = NetlinkError::AckLost.kernel_error("add thing", None);
    assert_eq!(lost.errno, Some(libc::ENOBUFS));
    assert!(lost.reason.contains("may or may not"), "{lost}");
    assert_eq!(NetlinkError::NoAck.errno(), None);
}

#[test]
fn encoding_sets_length_sequence_and_flags() {
    use netlink_packet_core::{NLM_F_DUMP, NetlinkPayload};
    let mut msg: NetlinkMessage<netlink_packet_route::RouteNetlinkMessage> = NetlinkMessage::from(
        netlink_packet_route::RouteNetlinkMessage::GetLink(Default::default()),
    );
    let mut out = vec![0xaa; 4];
    encode(&mut out, 77, NLM_F_REQUEST | NLM_F_DUMP, &mut msg);
    let h = header(&out[4..]).unwrap();
    assert_eq!(h.len, out.len() - 4);
    assert_eq!((h.seq, h.flags), (77, NLM_F_REQUEST | NLM_F_DUMP));
    let back = NetlinkMessage::<netlink_packet_route::RouteNetlinkMessage>::deserialize(&out[4..])
        .unwrap();
    assert!(matches!(back.payload, NetlinkPayload::InnerMessage(_)));
}

/// Datagrams as the kernel sends them: data, acks, errors with and without
/// extended-ack text, dump ends, several in one datagram.
fn seed_datagrams() -> Vec<Vec<u8>> {
    let echoed = nlmsg(0x20, NLM_F_REQUEST | NLM_F_ACK, 9, &[1; 12]);
    let capped = nlmsg(0x20, NLM_F_REQUEST | NLM_F_ACK, 9, &[]);
    let mut dump = nlmsg(0x20, 2, 5, &[4, 1, 0, 0, 8, 0, 1, 0, 1, 0, 0, 0]);
    dump.extend(nlmsg(NLMSG_DONE, 2, 5, &0i32.to_ne_bytes()));
    vec![
        nlmsg(NLMSG_ERROR, 0, 6, &0i32.to_ne_bytes()),
        error_reply(NLM_F_ACK_TLVS, &echoed, &ext_ack_attr(b"text\0")),
        error_reply(
            NLM_F_CAPPED | NLM_F_ACK_TLVS,
            &capped,
            &ext_ack_attr(b"capped\0"),
        ),
        nlmsg(NLMSG_DONE, 2, 5, &(-libc::EBUSY).to_ne_bytes()),
        dump,
    ]
}

#[test]
fn fuzz_datagrams_split_into_messages_without_panic_or_endless_walk() {
    use proptest::prelude::*;
    crate::testing::fuzz(
        "netlink datagrams",
        20_000,
        crate::testing::replies(seed_datagrams()),
        |d| {
            let mut walked = 0;
            let mut lost = false;
            for r in replies(&d) {
                walked += 1;
                // Every step consumes a whole header at least.
                prop_assert!(walked <= d.len() / HEADER_LEN);
                prop_assert!(!lost, "the walk goes on after a bad header");
                match r {
                    Ok((_, Reply::Data(m, _))) => {
                        prop_assert!(m.len() >= HEADER_LEN && m.len() <= d.len())
                    }
                    Ok(_) => {}
                    // A framed message with a short body is skipped; a
                    // header that does not frame ends the datagram.
                    Err(NetlinkError::Malformed("truncated NLMSG_ERROR")) => {}
                    Err(_) => lost = true,
                }
            }
            for flags in [0, NLM_F_ACK_TLVS, NLM_F_ACK_TLVS | NLM_F_CAPPED] {
                let _ = ext_ack_message(flags, &d);
                let _ = ext_ack_message(flags, d.get(20..).unwrap_or_default());
            }
            Ok(())
        },
    );
}

#[test]
fn zero_lengths_end_the_walk_with_an_error() {
    // A header claiming 0 bytes, and an extended ack whose attribute claims 0.
    let mut d = nlmsg(0x20, 0, 1, &[0; 8]);
    d[..4].copy_from_slice(&0u32.to_ne_bytes());
    let r: Vec<_> = replies(&d).collect();
    assert!(matches!(r.as_slice(), [Err(NetlinkError::Malformed(_))]));
    let capped = nlmsg(0x20, NLM_F_REQUEST | NLM_F_ACK, 9, &[]);
    let mut body = capped.clone();
    body.extend([0, 0, 1, 0, 0, 0, 0, 0]);
    assert_eq!(ext_ack_message(NLM_F_ACK_TLVS | NLM_F_CAPPED, &body), None);
}
