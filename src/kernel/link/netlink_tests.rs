use super::*;
use netlink_packet_core::{Emitable, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLMSG_ERROR};

#[test]
fn host_addresses_are_32_and_128_and_name_the_local_address() {
    let v4 = host_address(7, "10.96.0.1".parse().unwrap());
    assert_eq!(
        (v4.header.family, v4.header.prefix_len, v4.header.index),
        (AddressFamily::Inet, 32, 7)
    );
    assert_eq!(address_of(&v4), Some("10.96.0.1".parse().unwrap()));
    let v6 = host_address(7, "fd00::1".parse().unwrap());
    assert_eq!(
        (v6.header.family, v6.header.prefix_len),
        (AddressFamily::Inet6, 128)
    );
    assert_eq!(address_of(&v6), Some("fd00::1".parse().unwrap()));
}

#[test]
fn ipv4_address_is_the_local_one_not_the_peer() {
    let mut msg = AddressMessage::default();
    msg.attributes
        .push(AddressAttribute::Address("10.0.0.2".parse().unwrap()));
    msg.attributes
        .push(AddressAttribute::Local("10.0.0.1".parse().unwrap()));
    assert_eq!(address_of(&msg), Some("10.0.0.1".parse().unwrap()));
}

#[test]
fn host_address_encodes_to_the_kernel_layout() {
    // ifaddrmsg {AF_INET, 32, 0, RT_SCOPE_UNIVERSE, 3}, IFA_LOCAL, IFA_ADDRESS.
    let msg = host_address(3, "10.96.0.10".parse().unwrap());
    let mut bytes = vec![0; msg.buffer_len()];
    msg.emit(&mut bytes);
    assert_eq!(
        bytes,
        [
            2, 32, 0, 0, 3, 0, 0, 0, // header
            8, 0, 2, 0, 10, 96, 0, 10, // IFA_LOCAL
            8, 0, 1, 0, 10, 96, 0, 10, // IFA_ADDRESS
        ]
    );
}

#[test]
fn the_dummy_link_request_names_the_link_and_its_kind_and_stays_down() {
    let msg = LinkDummy::new("kube-ipvs0").build();
    assert!(
        msg.attributes
            .contains(&LinkAttribute::IfName("kube-ipvs0".into()))
    );
    assert_eq!(link_kind(&msg), Some(&InfoKind::Dummy));
    assert!(msg.header.flags.is_empty(), "no IFF_UP");
}

/// An NLMSG_ERROR (EINVAL) as the kernel sends it: `echoed` request, then the
/// extended-ack text, decoded the way the connection decodes it.
fn kernel_refusal(flags: u16, echoed: &[u8]) -> Refusal {
    let text = b"Invalid prefix length\0";
    let mut body = (-libc::EINVAL).to_ne_bytes().to_vec();
    body.extend(echoed);
    body.extend(((4 + text.len()) as u16).to_ne_bytes());
    body.extend(1u16.to_ne_bytes()); // NLMSGERR_ATTR_MSG
    body.extend(text);
    body.resize((body.len() + 3) & !3, 0);
    let mut bytes = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
    bytes.extend(NLMSG_ERROR.to_ne_bytes());
    bytes.extend(flags.to_ne_bytes());
    bytes.extend([0; 8]);
    bytes.extend(body);
    let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
    match msg.payload {
        NetlinkPayload::Error(e) => refusal(msg.header.flags, e.code.unwrap().get(), &e.header),
        other => panic!("not an error: {other:?}"),
    }
}

/// A request header as echoed in an error, claiming `len` bytes of request.
fn echoed_header(len: u32) -> Vec<u8> {
    let mut h = len.to_ne_bytes().to_vec();
    h.extend(20u16.to_ne_bytes()); // RTM_NEWADDR
    h.extend((NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    h.extend([0; 8]);
    h
}

#[test]
fn a_capped_refusal_keeps_errno_and_the_kernels_text() {
    let r = kernel_refusal(NLM_F_CAPPED | NLM_F_ACK_TLVS, &echoed_header(40));
    assert_eq!(r.errno, libc::EINVAL);
    assert_eq!(r.text.as_deref(), Some("Invalid prefix length"));
    let e = r.into_error("add address 10.96.0.1/32 to kube-ipvs0");
    assert_eq!(e.errno, Some(libc::EINVAL));
    assert!(e.to_string().contains("Invalid prefix length"), "{e}");
    assert!(e.to_string().contains("10.96.0.1/32"), "{e}");
}

#[test]
fn an_uncapped_refusal_finds_the_text_after_the_whole_request() {
    // The kernel echoes all 24 bytes of the request when acks are not capped.
    let mut echoed = echoed_header(24);
    echoed.extend([2, 32, 0, 0, 3, 0, 0, 0]);
    let r = kernel_refusal(NLM_F_ACK_TLVS, &echoed);
    assert_eq!(r.text.as_deref(), Some("Invalid prefix length"));
}

#[test]
fn a_refusal_without_ack_tlvs_has_no_text() {
    let r = kernel_refusal(NLM_F_CAPPED, &echoed_header(40));
    assert_eq!((r.errno, r.text), (libc::EINVAL, None));
}

/// The host has route netlink (loopback at least) even without dummy links.
fn has_loopback(links: &mut NetlinkLinks) -> bool {
    links
        .local_addresses()
        .unwrap()
        .iter()
        .any(|a| a.ifname == "lo" && a.addr == IpAddr::from([127, 0, 0, 1]))
}

#[test]
fn works_from_a_thread_with_no_runtime() {
    let mut links = NetlinkLinks::new().unwrap();
    assert!(has_loopback(&mut links));
    assert!(!links.link_exists("kproxy-nolink").unwrap());
    assert!(links.addresses("kproxy-nolink").unwrap().is_empty());
    let missing = links.add_addresses("kproxy-nolink", &["10.96.0.1".parse().unwrap()]);
    let e = missing[0].as_ref().unwrap_err();
    assert_eq!(e.errno, Some(libc::ENODEV), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_inside_a_runtime_under_block_in_place() {
    let found = tokio::task::block_in_place(|| {
        let mut links = NetlinkLinks::new().unwrap();
        has_loopback(&mut links)
    });
    assert!(found);
}

#[tokio::test]
async fn works_on_a_current_thread_runtime_it_does_not_drive() {
    // The caller's runtime is blocked while it waits: the adapter's own
    // thread does the work.
    let mut links = NetlinkLinks::new().unwrap();
    assert!(has_loopback(&mut links));
}

/// `msg` as one whole netlink message, as the kernel sends it in a dump.
fn wire(msg: RouteNetlinkMessage) -> Vec<u8> {
    let mut m = NetlinkMessage::from(msg);
    m.header.flags = 2; // NLM_F_MULTI
    m.finalize();
    let mut b = vec![0; m.buffer_len()];
    m.serialize(&mut b);
    b
}

/// An NLMSG_ERROR with extended-ack text after a capped echo.
fn error_wire() -> Vec<u8> {
    let text = b"Invalid prefix length\0";
    let mut body = (-libc::EINVAL).to_ne_bytes().to_vec();
    body.extend(echoed_header(40));
    body.extend(((4 + text.len()) as u16).to_ne_bytes());
    body.extend(1u16.to_ne_bytes());
    body.extend(text);
    body.resize((body.len() + 3) & !3, 0);
    let mut bytes = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
    bytes.extend(NLMSG_ERROR.to_ne_bytes());
    bytes.extend((NLM_F_CAPPED | NLM_F_ACK_TLVS).to_ne_bytes());
    bytes.extend([0; 8]);
    bytes.extend(body);
    bytes
}

#[test]
fn fuzz_rtnetlink_replies_decode_or_fail_without_panic() {
    let mut link = LinkDummy::new("kube-ipvs0").build();
    link.header.index = 7;
    link.attributes.push(LinkAttribute::Mtu(1500));
    let seeds = vec![
        wire(RouteNetlinkMessage::NewAddress(host_address(
            7,
            "10.96.0.1".parse().unwrap(),
        ))),
        wire(RouteNetlinkMessage::NewAddress(host_address(
            7,
            "fd00::1".parse().unwrap(),
        ))),
        wire(RouteNetlinkMessage::NewLink(link)),
        error_wire(),
    ];
    crate::testing::fuzz(
        "rtnetlink replies",
        10_000,
        crate::testing::replies(seeds),
        |bytes| {
            // What the connection decodes, then what the adapter reads of it.
            let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes) else {
                return Ok(());
            };
            match &msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(a)) => {
                    let _ = address_of(a);
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                    let _ = link_kind(l);
                }
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        let _ = refusal(msg.header.flags, code.get(), &e.header);
                    }
                }
                _ => {}
            }
            Ok(())
        },
    );
}
