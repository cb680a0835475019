//! The IPVS generic-netlink client against a real kernel.
//!
//! Every test needs IPVS (only in the VM), so every test is ignored on the
//! host; the VM runner passes `--include-ignored --test-threads=1`. Each test
//! starts from an empty table (`ipvsadm -C`) and checks the kernel twice: with
//! the client's own dump and with `ipvsadm -Ln`, which reads through the same
//! netlink family but with code we did not write.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Instant;

use kproxy::kernel::KernelError;
use kproxy::kernel::ipvs::mapping::{get_dests_message, service_from_attrs};
use kproxy::kernel::ipvs::netlink::IpvsNetlink;
use kproxy::kernel::ipvs::wire::{IpvsCmd, IpvsMessage, decode_message};
use kproxy::kernel::ipvs::{
    DestKey, ForwardMethod, Ipvs, IpvsOp, IpvsTable, Persistence, Protocol, RealServer,
    ServiceEntry, ServiceKey, Timeouts, VirtualServer,
};

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A fresh, empty IPVS table and a client on it.
fn setup() -> IpvsNetlink {
    for m in ["ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh"] {
        let _ = Command::new("modprobe").arg(m).status();
    }
    sh("ipvsadm", &["-C"]);
    IpvsNetlink::connect().expect("connect to IPVS")
}

fn key(addr: &str, protocol: Protocol, port: u16) -> ServiceKey {
    ServiceKey {
        addr: addr.parse().unwrap(),
        protocol,
        port,
    }
}

fn vs(k: ServiceKey, scheduler: &str, persistence: Option<Persistence>) -> VirtualServer {
    VirtualServer {
        key: k,
        scheduler: scheduler.into(),
        persistence,
        sched_flags: 0,
    }
}

fn rs(addr: &str, port: u16, weight: u32) -> RealServer {
    RealServer {
        key: DestKey {
            addr: addr.parse().unwrap(),
            port,
        },
        weight,
        forward: ForwardMethod::Masq,
    }
}

/// `ipvsadm -Ln` as service line → its real-server lines, whitespace
/// collapsed (its column widths are not the point; its order is the hash
/// table's, so compare as sets).
fn ipvsadm_ln() -> BTreeMap<String, BTreeSet<String>> {
    let text = sh("ipvsadm", &["-Ln"]);
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines().skip(3) {
        let norm = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if norm.is_empty() {
            continue;
        }
        if norm.starts_with("->") {
            let svc = current
                .clone()
                .expect("a real server line before any service");
            out.entry(svc).or_insert_with(BTreeSet::new).insert(norm);
        } else {
            out.insert(norm.clone(), BTreeSet::new());
            current = Some(norm);
        }
    }
    out
}

fn hostport(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// What `ipvsadm -Ln` should print for a table (connection counters 0).
fn render(table: &IpvsTable) -> BTreeMap<String, BTreeSet<String>> {
    table
        .services
        .values()
        .map(|e| {
            let s = &e.service;
            let mut line = format!(
                "{} {} {}",
                s.key.protocol,
                hostport(s.key.addr, s.key.port),
                s.scheduler
            );
            if let Some(p) = s.persistence {
                line += &format!(" persistent {}", p.timeout);
                let full = if s.key.addr.is_ipv4() { u32::MAX } else { 128 };
                if p.netmask != full {
                    line += &format!(" mask {}", p.netmask);
                }
            }
            let dests = e
                .dests
                .values()
                .map(|d| {
                    format!(
                        "-> {} {} {} 0 0",
                        hostport(d.key.addr, d.key.port),
                        d.forward.ipvsadm_name(),
                        d.weight
                    )
                })
                .collect();
            (line, dests)
        })
        .collect()
}

/// A table without the live counters, to compare with desired state.
fn shape(mut t: IpvsTable) -> IpvsTable {
    for e in t.services.values_mut() {
        e.stats.clear();
    }
    t
}

fn table(entries: &[(VirtualServer, Vec<RealServer>)]) -> IpvsTable {
    let mut t = IpvsTable::default();
    for (s, ds) in entries {
        let mut e = ServiceEntry::new(s.clone());
        for d in ds {
            e.dests.insert(d.key, *d);
        }
        t.services.insert(s.key, e);
    }
    t
}

/// The kernel equals `want`, as seen by both readers.
fn assert_kernel(ipvs: &mut IpvsNetlink, want: &IpvsTable) {
    let got = shape(ipvs.dump().expect("dump"));
    assert_eq!(&got, want, "client dump");
    assert_eq!(ipvsadm_ln(), render(want), "ipvsadm -Ln");
}

fn apply_ok(ipvs: &mut IpvsNetlink, ops: &[IpvsOp]) {
    for (op, r) in ops.iter().zip(ipvs.apply(ops)) {
        if let Err(e) = r {
            panic!("{op} failed: {e}");
        }
    }
}

fn apply_err(ipvs: &mut IpvsNetlink, op: IpvsOp) -> KernelError {
    let mut r = ipvs.apply(std::slice::from_ref(&op));
    assert_eq!(r.len(), 1);
    r.pop().unwrap().expect_err(&format!("{op} should fail"))
}

#[test]
#[ignore = "needs an IPVS kernel (run by make test in the VM)"]
fn info_matches_ipvsadm_header() {
    let mut ipvs = setup();
    let info = ipvs.info().expect("info");
    let header = sh("ipvsadm", &["-Ln"]).lines().next().unwrap().to_string();
    assert_eq!(
        header,
        format!(
            "IP Virtual Server version {} (size={})",
            info.version_string(),
            info.conn_tab_size
        )
    );
}

/// Puts ip_vs back however the test ends, so later tests find it.
struct ReloadIpvs;

impl Drop for ReloadIpvs {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(NO_IPVS_CONF);
        let _ = Command::new("modprobe").arg("ip_vs").status();
    }
}

const NO_IPVS_CONF: &str = "/etc/modprobe.d/kproxy-test-no-ipvs.conf";

#[test]
#[ignore = "needs an IPVS kernel (run by make test in the VM)"]
fn connect_without_ip_vs_is_unsupported() {
    drop(setup());
    let _reload = ReloadIpvs;
    // The kernel may load ip_vs itself when the family is looked up
    // (module alias net-pf-16-proto-16-family-IPVS): forbid that too.
    std::fs::create_dir_all("/etc/modprobe.d").unwrap();
    std::fs::write(NO_IPVS_CONF, "install ip_vs /bin/false\n").unwrap();
    sh(
        "modprobe",
        &["-r", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "ip_vs"],
    );
    let e = IpvsNetlink::connect().expect_err("no IPVS family without ip_vs");
    assert!(e.is_unsupported(), "{e}");
    assert_eq!(e.errno, Some(libc::ENOENT));
    assert!(e.to_string().contains("ip_vs"), "{e}");

    drop(_reload);
    let mut ipvs = IpvsNetlink::connect().expect("connect once ip_vs is back");
    assert!(ipvs.info().is_ok());
}

#[test]
#[ignore = "needs an IPVS kernel (run by make test in the VM)"]
fn service_add_edit_delete() {
    let mut ipvs = setup();
    let k = key("10.96.0.1", Protocol::Tcp, 443);
    let sticky = Some(Persistence {
        timeout: 10800,
        netmask: u32::MAX,
    });

    apply_ok(&mut ipvs, &[IpvsOp::AddService(vs(k, "rr", None))]);
    assert_kernel(&mut ipvs, &table(&[(vs(k, "rr", None), vec![])]));

    // rr → wrr with persistence on: one SET_SERVICE, same object.
    apply_ok(&mut ipvs, &[IpvsOp::EditService(vs(k, "wrr", sticky))]);
    assert_kernel(&mut ipvs, &table(&[(vs(k, "wrr", sticky), vec![])]));
    assert!(ipvsadm_ln().contains_key("TCP 10.96.0.1:443 wrr persistent 10800"));

    // Persistence off again: the flag must be cleared, not just left alone.
    apply_ok(&mut ipvs, &[IpvsOp::EditService(vs(k, "wrr", None))]);
    assert_kernel(&mut ipvs, &table(&[(vs(k, "wrr", None), vec![])]));

    // A non-default IPv4 persistence mask survives the round trip.
    let masked = Some(Persistence {
        timeout: 60,
        netmask: 0xffff_ff00,
    });
    apply_ok(&mut ipvs, &[IpvsOp::EditService(vs(k, "rr", masked))]);
    let got = shape(ipvs.dump().unwrap());
    assert_eq!(got, table(&[(vs(k, "rr", masked), vec![])]));
    assert!(
        ipvsadm_ln().contains_key("TCP 10.96.0.1:443 rr persistent 60 mask 255.255.255.0"),
        "{:?}",
        ipvsadm_ln()
    );

    apply_ok(&mut ipvs, &[IpvsOp::DelService(k)]);
    assert_kernel(&mut ipvs, &IpvsTable::default());
}

#[test]
#[ignore = "needs an IPVS kernel (run by make test in the VM)"]
fn dest_add_edit_delete() {
    let mut ipvs = setup();
    let k = key("10.96.0.10", Protocol::Udp, 53);
    let s = vs(k, "rr", None);
    apply_ok(
        &mut ipvs,
        &[
            IpvsOp::AddService(s.clone()),
            IpvsOp::AddDest(k, rs("10.244.1.5", 53, 1)),
            IpvsOp::AddDest(k, rs("10.244.2.7", 53, 1)),
        ],
    );
    assert_kernel(
        &mut ipvs,
        &table(&[(
            s.clone(),
            vec![rs("10.244.1.5", 53, 1), rs("10.244.2.7", 53, 1)],
        )]),
    );

    // Weight 0 is how a terminating endpoint is drained: edit, not re-create.
    apply_ok(&mut ipvs, &[IpvsOp::EditDest(k, rs("10.244.2.7", 53, 0))]);
    assert_kernel(
        &mut ipvs,
        &table(&[(
            s.clone(),
            vec![rs("10.244.1.5", 53, 1), rs("10.244.2.7", 53, 0)],
        )]),
    );

    apply_ok(
        &mut ipvs,
        &[IpvsOp::DelDest(k, rs("10.244.1.5", 53, 1).key)],
    );
    assert_kernel(
        &mut ipvs,
        &table(&[(s.clone(), vec![rs("10.244.2.7", 53, 0)])]),
    );

    apply_ok(&mut ipvs, &[IpvsOp::DelService(k)]);
    assert_kernel(&mut ipvs, &IpvsTable::default());
}

#[test]
#[ignore = "needs an IPVS kernel (run by make test in the VM)"]
fn ipv6_services_and_dests() {
    let mut ipvs = setup();
    let k = key("fd00:10:96::1", Protocol::Tcp, 80);
    let sticky = Some(Persistence {
        timeout: 300,
        netmask: 128,
    });
    let s = vs(k, "rr", sticky);
    let k2 = key("fd00:10:96::2", Protocol::Sctp, 9000);
    let s2 = vs(k2, "wrr", None);
    apply_ok(
        &mut ipvs,
        &[
            IpvsOp::AddService(s.clone()),
            IpvsOp::AddDest(k, rs("fd00:244::5", 8080, 1)),
            IpvsOp::AddDest(k, rs("fd00:244::6", 8080, 3)),
            IpvsOp::AddService(s2.clone()),
            IpvsOp::AddDest(k2, rs("fd00:244::7", 9000, 2)),
        ],
    );
    let want = table(&[
        (
            s.clone(),
            vec![rs("fd00:244::5", 8080, 1), rs("fd00:244::6", 8080, 3)],
        ),
        (s2.clone(), vec![rs("fd00:244::7", 9000, 2)]),
    ]);
    assert_kernel(&mut ipvs, &want);
    assert!(ipvsadm_ln().contains_key("TCP [fd00:10:96::1]:80 rr persistent 300"));

    // A Masq real server of the other family is refused, and says why.
    let e = apply_err(&mut ipvs, IpvsOp::AddDest(k, rs("10.244.1.1", 8080, 1)));
    assert_eq!(e.errno, Some(libc::EINVAL), "{e}");
    assert!(e.to_string().contains("EINVAL"), "{e}");
    assert_kernel(&mut ipvs, &want);

    apply_ok(&mut ipvs, &[IpvsOp::DelService(k), IpvsOp::DelService(k2)]);
    assert_kernel(&mut ipvs, &IpvsTable::default());
}

#[test]
#[ignore = "needs an IPVS kernel (run by make test in the VM)"]
fn errors_name_the_operation_and_the_reason() {
    let mut ipvs = setup();
    let k = key("10.96.0.1", Protocol::Tcp, 80);
    apply_ok(&mut ipvs, &[IpvsOp::AddService(vs(k, "rr", None))]);

    let e = apply_err(&mut ipvs, IpvsOp::AddService(vs(k, "rr", None)));
    assert_eq!(e.errno, Some(libc::EEXIST));
    assert_eq!(e.op, "add virtual server TCP 10.96.0.1:80 rr");
    assert!(e.to_string().contains("EEXIST"), "{e}");

    let k2 = key("10.96.0.2", Protocol::Tcp, 80);
    let e = apply_err(&mut ipvs, IpvsOp::AddService(vs(k2, "no-such-sched", None)));
    assert_eq!(e.errno, Some(libc::ENOENT), "{e}");
    assert!(e.to_string().contains("no-such-sched"), "{e}");

    let e = apply_err(&mut ipvs, IpvsOp::DelService(k2));
    assert_eq!(e.errno, Some(libc::ESRCH), "{e}");
    assert!(
        e.to_string()
            .contains("delete virtual server TCP 10.96.0.2:80")
    );

    let e = apply_err(&mut ipvs, IpvsOp::DelDest(k, rs("10.244.0.1", 80, 1).key));
    assert_eq!(e.errno, Some(libc::ENOENT), "{e}");
    let e = apply_err(&mut ipvs, IpvsOp::AddDest(k2, rs("10.244.0.1", 80, 1)));
    assert_eq!(e.errno, Some(libc::ESRCH), "{e}");

    // In one pipelined batch, a failure does not stop the others and each
    // result lands on its own operation.
    let k3 = key("10.96.0.3", Protocol::Tcp, 80);
    let ops = [
        IpvsOp::AddService(vs(k3, "rr", None)),
        IpvsOp::AddService(vs(k, "rr", None)),
        IpvsOp::AddDest(k3, rs("10.244.0.3", 80, 1)),
        IpvsOp::DelService(k2),
        IpvsOp::AddDest(k3, rs("10.244.0.4", 80, 2)),
    ];
    let r = ipvs.apply(&ops);
    let errnos: Vec<Option<i32>> = r
        .iter()
        .map(|r| r.as_ref().err().and_then(|e| e.errno))
        .collect();
    assert_eq!(
        errnos,
        [None, Some(libc::EEXIST), None, Some(libc::ESRCH), None]
    );
    assert_eq!(r[1].as_ref().unwrap_err().op, ops[1].to_string());
    assert_kernel(
        &mut ipvs,
        &table(&[
            (vs(k, "rr", None), vec![]),
            (
                vs(k3, "rr", None),
                vec![rs("10.244.0.3", 80, 1), rs("10.244.0.4", 80, 2)],
            ),
        ]),
    );
    sh("ipvsadm", &["-C"]);
}

fn big_table(services: usize, dests: usize) -> (IpvsTable, Vec<IpvsOp>) {
    let mut entries = Vec::with_capacity(services);
    for i in 0..services {
        let addr = format!("10.96.{}.{}", i / 250, i % 250 + 1);
        let persistence = (i % 7 == 0).then_some(Persistence {
            timeout: 10800,
            netmask: u32::MAX,
        });
        let proto = if i % 5 == 0 {
            Protocol::Udp
        } else {
            Protocol::Tcp
        };
        let s = vs(key(&addr, proto, 80 + (i % 3) as u16), "rr", persistence);
        let ds: Vec<RealServer> = (0..dests)
            .map(|d| {
                rs(
                    &format!("10.{}.{}.{}", 100 + d, i / 250, i % 250 + 1),
                    8080,
                    1 + (d as u32 % 3),
                )
            })
            .collect();
        entries.push((s, ds));
    }
    let mut ops = Vec::new();
    for (s, ds) in &entries {
        ops.push(IpvsOp::AddService(s.clone()));
        for d in ds {
            ops.push(IpvsOp::AddDest(s.key, *d));
        }
    }
    (table(&entries), ops)
}

#[test]
#[ignore = "needs an IPVS kernel (run by make test in the VM)"]
fn pipelined_batch_2000_services_x_5_dests() {
    let mut ipvs = setup();
    let (want, ops) = big_table(2000, 5);
    assert_eq!(ops.len(), 12_000);
    apply_ok(&mut ipvs, &ops);
    assert_kernel(&mut ipvs, &want);

    // And back down in one batch: real servers first, then their services.
    let mut del: Vec<IpvsOp> = Vec::new();
    for e in want.services.values() {
        for d in e.dests.keys() {
            del.push(IpvsOp::DelDest(e.service.key, *d));
        }
    }
    del.extend(want.services.keys().map(|k| IpvsOp::DelService(*k)));
    apply_ok(&mut ipvs, &del);
    assert_kernel(&mut ipvs, &IpvsTable::default());
}

/// Acknowledgements overflowing the receive buffer are reported as lost
/// (outcome unknown), never as success, and the socket keeps working.
#[test]
#[ignore = "needs an IPVS kernel (run by make test in the VM)"]
fn lost_acknowledgements_are_reported_not_hidden() {
    let mut ipvs = setup();
    let (want, ops) = big_table(300, 3);
    let mut tight = IpvsNetlink::connect().unwrap();
    // A few KiB of receive buffer for 1,200 acknowledgements in one send.
    tight.limit_pipeline(2000, 4096);
    let results = tight.apply(&ops);
    let lost: Vec<&KernelError> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .inspect(|e| assert_eq!(e.errno, Some(libc::ENOBUFS), "{e}"))
        .collect();
    assert!(!lost.is_empty(), "the tiny buffer should have overflowed");
    assert!(lost[0].reason.contains("may or may not"), "{}", lost[0]);
    assert!(
        tight.chunk_len() < 2000,
        "the chunk shrinks after an overrun"
    );

    // Whatever was reported applied is in the kernel.
    let got = shape(ipvs.dump().unwrap());
    for (op, r) in ops.iter().zip(&results) {
        if r.is_ok() {
            match op {
                IpvsOp::AddService(s) => assert!(got.services.contains_key(&s.key), "{op}"),
                IpvsOp::AddDest(k, d) => {
                    assert!(got.services[k].dests.contains_key(&d.key), "{op}")
                }
                _ => unreachable!(),
            }
        }
    }
    // The same socket still works, given room for its acks: finish the job
    // (EEXIST for what the lost acks had in fact applied) and the table is
    // complete.
    tight.limit_pipeline(32, 1 << 20);
    for (op, r) in ops.iter().zip(tight.apply(&ops)) {
        if let Err(e) = r {
            assert_eq!(e.errno, Some(libc::EEXIST), "{op}: {e}");
        }
    }
    assert_eq!(shape(tight.dump().unwrap()), want);
    sh("ipvsadm", &["-C"]);
}

#[test]
#[ignore = "needs an IPVS kernel (run by make test in the VM)"]
fn flush_removes_everything() {
    let mut ipvs = setup();
    let (want, ops) = big_table(20, 2);
    apply_ok(&mut ipvs, &ops);
    assert_eq!(shape(ipvs.dump().unwrap()), want);
    ipvs.flush().expect("flush");
    assert_kernel(&mut ipvs, &IpvsTable::default());
    // Flushing an empty table is fine too.
    ipvs.flush().expect("flush empty");
}

fn ipvsadm_timeouts() -> String {
    sh("ipvsadm", &["-Ln", "--timeout"]).trim().to_string()
}

#[test]
#[ignore = "needs an IPVS kernel (run by make test in the VM)"]
fn timeouts_set_and_get() {
    let mut ipvs = setup();
    let before = ipvs.timeouts().expect("get timeouts");
    assert_eq!(
        ipvsadm_timeouts(),
        format!(
            "Timeout (tcp tcpfin udp): {} {} {}",
            before.tcp, before.tcp_fin, before.udp
        )
    );

    let t = Timeouts {
        tcp: 1000,
        tcp_fin: 130,
        udp: 310,
    };
    ipvs.set_timeouts(t).expect("set timeouts");
    assert_eq!(ipvs.timeouts().unwrap(), t);
    assert_eq!(ipvsadm_timeouts(), "Timeout (tcp tcpfin udp): 1000 130 310");

    // Zero leaves a value as it is.
    ipvs.set_timeouts(Timeouts {
        tcp: 0,
        tcp_fin: 0,
        udp: 45,
    })
    .unwrap();
    assert_eq!(
        ipvs.timeouts().unwrap(),
        Timeouts {
            tcp: 1000,
            tcp_fin: 130,
            udp: 45
        }
    );
    assert_eq!(ipvsadm_timeouts(), "Timeout (tcp tcpfin udp): 1000 130 45");

    ipvs.set_timeouts(before).unwrap();
    assert_eq!(ipvs.timeouts().unwrap(), before);
}

#[test]
#[ignore = "needs an IPVS kernel (run by make test in the VM)"]
fn reads_back_what_ipvsadm_made() {
    let mut ipvs = setup();
    for args in [
        "-A -t 10.96.0.1:443 -s wrr -p 10800",
        "-a -t 10.96.0.1:443 -r 10.244.1.5:6443 -m -w 3",
        "-a -t 10.96.0.1:443 -r 10.244.1.6:6443 -m -w 0",
        "-A -u 10.96.0.10:53 -s rr",
        "-a -u 10.96.0.10:53 -r 10.244.2.2:53 -m",
        "-A -t [fd00::1]:80 -s sh -b sh-port",
        "-a -t [fd00::1]:80 -r [fd00:244::9]:8080 -m -w 2",
        // Firewall-mark services are not kproxy's and are left out of the dump.
        "-A -f 42 -s rr",
    ] {
        sh("ipvsadm", &args.split(' ').collect::<Vec<_>>());
    }
    let t = shape(ipvs.dump().expect("dump"));
    let mut sh_vs = vs(key("fd00::1", Protocol::Tcp, 80), "sh", None);
    sh_vs.sched_flags = 0x10; // IP_VS_SVC_F_SCHED_SH_PORT
    let want = table(&[
        (
            vs(
                key("10.96.0.1", Protocol::Tcp, 443),
                "wrr",
                Some(Persistence {
                    timeout: 10800,
                    netmask: u32::MAX,
                }),
            ),
            vec![rs("10.244.1.5", 6443, 3), rs("10.244.1.6", 6443, 0)],
        ),
        (
            vs(key("10.96.0.10", Protocol::Udp, 53), "rr", None),
            vec![rs("10.244.2.2", 53, 1)],
        ),
        (sh_vs, vec![rs("fd00:244::9", 8080, 2)]),
    ]);
    assert_eq!(t, want);
    sh("ipvsadm", &["-C"]);
}

/// Replies captured from this kernel decode to what ipvsadm created. With
/// IPVS_FIXTURE_DIR set, the raw bytes are written there (how the host
/// tests' fixtures in src/kernel/ipvs/testdata were made).
#[test]
#[ignore = "needs an IPVS kernel (run by make test in the VM)"]
fn raw_kernel_replies_decode() {
    let mut ipvs = setup();
    sh(
        "ipvsadm",
        &["-A", "-t", "10.96.0.1:443", "-s", "wrr", "-p", "10800"],
    );
    sh(
        "ipvsadm",
        &[
            "-a",
            "-t",
            "10.96.0.1:443",
            "-r",
            "10.244.1.5:6443",
            "-m",
            "-w",
            "3",
        ],
    );
    sh("ipvsadm", &["-A", "-u", "[fd00::10]:53", "-s", "rr"]);
    sh(
        "ipvsadm",
        &[
            "-a",
            "-u",
            "[fd00::10]:53",
            "-r",
            "[fd00:244::2]:53",
            "-m",
            "-w",
            "2",
        ],
    );
    let svcs = ipvs
        .raw_request(IpvsMessage::new(IpvsCmd::GetService, vec![]), true)
        .unwrap();
    assert_eq!(svcs.len(), 2);
    let k4 = key("10.96.0.1", Protocol::Tcp, 443);
    let k6 = key("fd00::10", Protocol::Udp, 53);
    let d4 = ipvs.raw_request(get_dests_message(&k4), true).unwrap();
    let d6 = ipvs.raw_request(get_dests_message(&k6), true).unwrap();
    assert_eq!((d4.len(), d6.len()), (1, 1));
    let info = ipvs
        .raw_request(IpvsMessage::new(IpvsCmd::GetInfo, vec![]), false)
        .unwrap();
    let config = ipvs
        .raw_request(IpvsMessage::new(IpvsCmd::GetConfig, vec![]), false)
        .unwrap();

    // Decoding the raw bytes gives what the client's dump gives.
    let dump = shape(ipvs.dump().unwrap());
    for raw in svcs.iter() {
        let msg = decode_message(raw).unwrap();
        let s = service_from_attrs(msg.service().unwrap()).unwrap().unwrap();
        assert_eq!(dump.services[&s.service.key].service, s.service);
    }

    if let Ok(dir) = std::env::var("IPVS_FIXTURE_DIR") {
        let svc4 = svcs
            .iter()
            .find(|m| {
                let msg = decode_message(m).unwrap();
                service_from_attrs(msg.service().unwrap())
                    .unwrap()
                    .unwrap()
                    .service
                    .key
                    == k4
            })
            .unwrap();
        let svc6 = svcs.iter().find(|m| *m != svc4).unwrap();
        for (name, bytes) in [
            ("service_v4_tcp_persistent.bin", svc4),
            ("service_v6_udp.bin", svc6),
            ("dest_v4.bin", &d4[0]),
            ("dest_v6.bin", &d6[0]),
            ("info.bin", &info[0]),
            ("config.bin", &config[0]),
        ] {
            std::fs::write(format!("{dir}/{name}"), bytes).unwrap();
        }
    }
    sh("ipvsadm", &["-C"]);
}

/// Not a test of speed (nothing is asserted about time): applies 10,000
/// services × 10 real servers with the client and with `ipvsadm -R`, checks
/// both landed exactly, and prints the wall times. Run alone:
/// `vm_ipvs_netlink --ignored bench_ --nocapture`.
#[test]
#[ignore = "benchmark, needs an IPVS kernel: run alone with --ignored bench_ --nocapture"]
fn bench_10000_services_x_10_dests_client_vs_ipvsadm_restore() {
    let mut ipvs = setup();
    let (want, ops) = big_table(10_000, 10);

    let t0 = Instant::now();
    let mut fresh = IpvsNetlink::connect().unwrap();
    let results = fresh.apply(&ops);
    let client = t0.elapsed();
    assert!(results.iter().all(Result::is_ok));
    let t1 = Instant::now();
    let got = shape(ipvs.dump().unwrap());
    let dump = t1.elapsed();
    assert_eq!(got, want);
    ipvs.flush().unwrap();

    let mut script = String::new();
    for e in want.services.values() {
        let s = &e.service;
        let flag = match s.key.protocol {
            Protocol::Tcp => "-t",
            Protocol::Udp => "-u",
            Protocol::Sctp => "--sctp-service",
        };
        let hp = hostport(s.key.addr, s.key.port);
        script += &format!("-A {flag} {hp} -s {}", s.scheduler);
        if let Some(p) = s.persistence {
            script += &format!(" -p {}", p.timeout);
        }
        script += "\n";
        for d in e.dests.values() {
            script += &format!(
                "-a {flag} {hp} -r {} -m -w {}\n",
                hostport(d.key.addr, d.key.port),
                d.weight
            );
        }
    }
    let t2 = Instant::now();
    let mut child = Command::new("ipvsadm")
        .arg("-R")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let restore = t2.elapsed();
    assert_eq!(shape(ipvs.dump().unwrap()), want);
    // The reading side's floor: ipvsadm's own listing of the same table.
    let t3 = Instant::now();
    let listing = sh("ipvsadm", &["-Ln"]);
    let list = t3.elapsed();
    assert_eq!(listing.lines().count(), 3 + ops.len());
    ipvs.flush().unwrap();

    println!(
        "BENCH {} ops (10000 services x 10 dests): client connect+apply {:.3}s, \
         ipvsadm -R {:.3}s, ratio {:.1}x; client dump {:.3}s, ipvsadm -Ln {:.3}s, \
         ratio {:.1}x (chunk {} messages)",
        ops.len(),
        client.as_secs_f64(),
        restore.as_secs_f64(),
        restore.as_secs_f64() / client.as_secs_f64(),
        dump.as_secs_f64(),
        list.as_secs_f64(),
        list.as_secs_f64() / dump.as_secs_f64(),
        fresh.chunk_len()
    );
}
