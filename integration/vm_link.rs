//! The real links adapter, sysctls and module loading under a kernel with
//! dummy links and IPVS. Run by `make test` inside the VM, each binary in a
//! fresh network namespace (scripts/vm-tests.sh); ignored on the host.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;

use kproxy::kernel::link::netlink::NetlinkLinks;
use kproxy::kernel::link::{Links, LocalAddress};
use kproxy::kernel::modules::{self, Modules, SystemModules};
use kproxy::kernel::sysctl::{self, ProcSysctl, Sysctl};

const DUMMY: &str = "kube-ipvs0";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A fresh adapter and no kube-ipvs0 left over from an earlier test.
fn fresh() -> NetlinkLinks {
    let mut links = NetlinkLinks::new().unwrap();
    links.delete_link(DUMMY).unwrap();
    links
}

#[test]
#[ignore = "needs an IPVS kernel (run by make test in the VM)"]
fn dummy_link_lifecycle_with_v4_and_v6_host_addresses() {
    let mut links = fresh();
    assert!(!links.link_exists(DUMMY).unwrap());
    assert!(links.addresses(DUMMY).unwrap().is_empty());

    assert!(links.ensure_dummy(DUMMY).unwrap(), "created");
    assert!(!links.ensure_dummy(DUMMY).unwrap(), "already there");
    assert!(links.link_exists(DUMMY).unwrap());
    let shown = sh("ip -d -o link show kube-ipvs0");
    assert!(shown.contains(" dummy "), "{shown}");
    assert!(
        shown.contains("state DOWN"),
        "left down like upstream: {shown}"
    );

    let vips = [ip("10.96.0.1"), ip("10.96.0.10"), ip("fd00:96::1")];
    for r in links.add_addresses(DUMMY, &vips) {
        r.unwrap();
    }
    assert_eq!(links.addresses(DUMMY).unwrap(), BTreeSet::from(vips));
    let shown = sh("ip -o addr show dev kube-ipvs0");
    for want in ["10.96.0.1/32", "10.96.0.10/32", "fd00:96::1/128"] {
        assert!(shown.contains(want), "{want} in {shown}");
    }

    // Adding again: one refusal per address, each naming address and link.
    let again = links.add_addresses(DUMMY, &[ip("10.96.0.1"), ip("10.96.0.99")]);
    let e = again[0].as_ref().unwrap_err();
    assert_eq!(e.errno, Some(libc::EEXIST), "{e}");
    assert!(
        e.to_string().contains("10.96.0.1/32") && e.to_string().contains(DUMMY),
        "{e}"
    );
    again[1].as_ref().unwrap();

    let del = links.del_addresses(
        DUMMY,
        &[ip("10.96.0.10"), ip("fd00:96::1"), ip("10.96.0.77")],
    );
    del[0].as_ref().unwrap();
    del[1].as_ref().unwrap();
    let e = del[2].as_ref().unwrap_err();
    assert_eq!(e.errno, Some(libc::EADDRNOTAVAIL), "{e}");
    assert!(e.to_string().contains("10.96.0.77/32"), "{e}");
    assert_eq!(
        links.addresses(DUMMY).unwrap(),
        BTreeSet::from([ip("10.96.0.1"), ip("10.96.0.99")])
    );

    assert!(links.delete_link(DUMMY).unwrap());
    assert!(!links.delete_link(DUMMY).unwrap());
    assert!(!links.link_exists(DUMMY).unwrap());
    assert!(links.addresses(DUMMY).unwrap().is_empty());
    let missing = links.add_addresses(DUMMY, &[ip("10.96.0.1")]);
    let e = missing[0].as_ref().unwrap_err();
    assert_eq!(e.errno, Some(libc::ENODEV), "{e}");
    assert!(e.to_string().contains(DUMMY), "{e}");
}

#[test]
#[ignore = "needs an IPVS kernel (run by make test in the VM)"]
fn thousands_of_addresses_go_in_and_out_in_one_batch() {
    let mut links = fresh();
    links.ensure_dummy(DUMMY).unwrap();
    let vips: Vec<IpAddr> = (0..2000u32)
        .map(|i| IpAddr::from([10, 97, (i / 250) as u8, (i % 250 + 1) as u8]))
        .chain((0..500u16).map(|i| IpAddr::from([0xfd00, 0x97, 0, 0, 0, 0, 0, i + 1])))
        .collect();
    let results = links.add_addresses(DUMMY, &vips);
    assert_eq!(results.len(), vips.len());
    assert!(results.iter().all(Result::is_ok));
    let have = links.addresses(DUMMY).unwrap();
    assert_eq!(have, vips.iter().copied().collect::<BTreeSet<_>>());
    let count = sh("ip -o addr show dev kube-ipvs0 | wc -l");
    assert_eq!(count.trim(), vips.len().to_string());

    let results = links.del_addresses(DUMMY, &vips);
    assert!(results.iter().all(Result::is_ok));
    assert!(links.addresses(DUMMY).unwrap().is_empty());
    links.delete_link(DUMMY).unwrap();
}

/// A refusal carries the kernel's own words (its extended acknowledgement)
/// besides the errno and the operation.
#[test]
#[ignore = "needs an IPVS kernel (run by make test in the VM)"]
fn refusals_carry_the_kernels_extended_ack_text() {
    let mut links = fresh();
    // Longer than IFNAMSIZ: the attribute policy refuses the name.
    let e = links.ensure_dummy("kproxy-name-too-long").unwrap_err();
    assert_eq!(e.errno, Some(libc::ERANGE), "{e}");
    assert!(e.to_string().contains("kproxy-name-too-long"), "{e}");
    assert!(
        e.reason.contains("Attribute failed policy validation"),
        "{e}"
    );
}

#[test]
#[ignore = "needs an IPVS kernel (run by make test in the VM)"]
fn ensure_dummy_refuses_a_link_of_another_kind() {
    let mut links = fresh();
    sh("ip link add kube-ipvs0 type veth peer name kproxy-peer");
    let e = links.ensure_dummy(DUMMY).unwrap_err();
    assert!(e.to_string().contains("not a dummy"), "{e}");
    assert!(links.delete_link(DUMMY).unwrap());
}

#[test]
#[ignore = "needs an IPVS kernel (run by make test in the VM)"]
fn local_addresses_cover_every_interface() {
    let mut links = fresh();
    links.ensure_dummy(DUMMY).unwrap();
    for r in links.add_addresses(DUMMY, &[ip("10.96.5.5")]) {
        r.unwrap();
    }
    sh(
        "ip link add kproxy-a type veth peer name kproxy-b && ip addr add 192.168.77.1/24 dev kproxy-a",
    );
    let all = links.local_addresses().unwrap();
    let has = |ifname: &str, addr: &str| {
        all.contains(&LocalAddress {
            ifname: ifname.into(),
            addr: ip(addr),
        })
    };
    assert!(has("lo", "127.0.0.1"), "{all:?}");
    assert!(has("kproxy-a", "192.168.77.1"), "{all:?}");
    assert!(has(DUMMY, "10.96.5.5"), "{all:?}");
    sh("ip link del kproxy-a");
    links.delete_link(DUMMY).unwrap();
}

/// A listener bound to the VIP accepts a connection to it, and the bytes
/// come through, while kube-ipvs0 stays down.
fn vip_accepts(vip: IpAddr) {
    let listener = TcpListener::bind(SocketAddr::new(vip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut client = TcpStream::connect(addr).unwrap();
    let (mut served, peer) = listener.accept().unwrap();
    assert_eq!(
        peer.ip(),
        vip,
        "a local connection comes from the VIP itself"
    );
    client.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    served.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
}

#[test]
#[ignore = "needs an IPVS kernel (run by make test in the VM)"]
fn a_vip_on_the_down_dummy_link_is_locally_reachable() {
    let mut links = fresh();
    links.ensure_dummy(DUMMY).unwrap();
    let vips = [ip("10.96.7.7"), ip("fd00:96::7")];
    for r in links.add_addresses(DUMMY, &vips) {
        r.unwrap();
    }
    let routes = sh("ip route show table local; ip -6 route show table local");
    assert!(
        routes.contains("local 10.96.7.7 dev kube-ipvs0"),
        "{routes}"
    );
    assert!(
        routes.contains("local fd00:96::7 dev kube-ipvs0"),
        "{routes}"
    );
    for vip in vips {
        vip_accepts(vip);
    }
    assert!(sh("ip -o link show kube-ipvs0").contains("state DOWN"));
    links.delete_link(DUMMY).unwrap();
}

#[test]
#[ignore = "needs an IPVS kernel (run by make test in the VM)"]
fn modprobe_brings_ipvs_and_the_scheduler() {
    // Start without IPVS when the kernel lets us unload it (nothing uses it
    // in this network namespace; other namespaces may hold it, then it stays).
    let _ = Command::new("modprobe")
        .args(["-r", "ip_vs_rr", "ip_vs"])
        .status();
    let mut system = SystemModules;
    let was_present = modules::ipvs_present();
    assert_eq!(system.is_loaded("ip_vs"), was_present);
    let loaded = modules::ensure_ipvs_modules(&mut system, "rr").unwrap();
    if !was_present {
        assert!(loaded.contains(&"ip_vs".to_string()), "{loaded:?}");
    }
    assert!(modules::ipvs_present(), "/proc/net/ip_vs appears");
    assert!(Path::new("/sys/module/ip_vs_rr").exists());
    assert!(system.is_loaded("ip_vs_rr"));
    // A second pass finds everything loaded.
    assert!(
        modules::ensure_ipvs_modules(&mut system, "rr")
            .unwrap()
            .is_empty()
    );
    let e = system.load("ip_vs_nosuchsched").unwrap_err();
    assert!(e.to_string().contains("ip_vs_nosuchsched"), "{e}");
}

#[test]
#[ignore = "needs an IPVS kernel (run by make test in the VM)"]
fn sysctls_are_set_as_upstream_sets_them() {
    modules::ensure_ipvs_modules(&mut SystemModules, "rr").unwrap();
    let mut proc = ProcSysctl::default();
    proc.set("net.ipv4.ip_forward", "0").unwrap();
    assert_eq!(proc.get("net.ipv4.ip_forward").unwrap(), "0");
    let reuse_before = proc.get("net.ipv4.vs.conn_reuse_mode").unwrap();

    let kernel = sysctl::running_kernel().unwrap();
    let changed = sysctl::apply_ipvs_settings(&mut proc, kernel, true).unwrap();
    assert!(changed.contains(&"net.ipv4.ip_forward"), "{changed:?}");
    for (name, value) in sysctl::ipvs_settings(kernel, true) {
        assert_eq!(proc.get(name).unwrap(), value.to_string(), "{name}");
    }
    assert_eq!(sh("sysctl -n net.ipv4.vs.conntrack").trim(), "1");
    assert_eq!(sh("sysctl -n net.ipv4.conf.all.arp_announce").trim(), "2");
    if kernel >= (5, 9) {
        assert_eq!(
            proc.get("net.ipv4.vs.conn_reuse_mode").unwrap(),
            reuse_before
        );
    }
    assert!(
        sysctl::apply_ipvs_settings(&mut proc, kernel, true)
            .unwrap()
            .is_empty()
    );
    let e = proc.set("net.ipv4.no_such_knob", "1").unwrap_err();
    assert!(e.to_string().contains("net.ipv4.no_such_knob"), "{e}");
}
