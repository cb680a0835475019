//! iptables mode against this host's kernel, inside fresh network namespaces.
//!
//! Each outer test re-runs this binary under `unshare --net`, selecting only
//! its `inner::` twin, so every iptables command runs in a namespace created
//! for that test; the host's own tables are never read or written. The inner
//! test refuses to run unless it is in such a namespace (only `lo`, no rules).
//!
//! Inside, the namespace is the "node": pods are further namespaces (`ip
//! netns`) joined to it by veth pairs and routed through it. Servers are
//! `busybox httpd` answering `/id` with their pod name; clients use curl.
//! Needs root, iproute2, iptables, busybox and curl.

use std::process::Command;

/// nf_conntrack_max is read-only outside the host's own network namespace,
/// and kproxy, as upstream, refuses to start when it cannot set it: a test
/// namespace runs it as kind runs kube-proxy, with max-per-core 0.
const NETNS_CONNTRACK: &str = "--conntrack-max-per-core=0";

const INNER: &str = "KPROXY_NETNS_INNER";

/// Run `inner::<name>` of this binary in a new network namespace.
fn in_fresh_netns(name: &str) {
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new("unshare")
        .arg("--net")
        .arg("--")
        .arg(&exe)
        .args([
            "--exact",
            &format!("inner::{name}"),
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER, "1")
        .output()
        .expect("running unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "inner test {name} failed in its namespace:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "inner test {name} did not run:\n{stdout}\n{stderr}"
    );
}

macro_rules! netns_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                in_fresh_netns(stringify!($name));
            }
        )*
    };
}

netns_tests!(
    rules_appear_in_iptables_save_without_drift,
    clusterip_and_nodeport_spread_over_all_endpoints,
    client_ip_affinity_sticks,
    service_without_endpoints_is_refused,
    source_ranges_allow_one_client_and_drop_another,
    partial_sync_rewrites_only_the_changed_service,
    flushed_nat_table_is_rebuilt,
    ipv6_rules_load_without_drift,
    refused_restore_names_the_rule_and_changes_nothing,
    the_binary_programs_and_cleans_up_in_iptables_mode,
    a_large_sync_on_nf_tables_is_staged_and_matches_one_transaction,
    without_ipvs_kproxy_falls_back_or_refuses_as_asked,
    ipvs_companions_read_back_without_drift_and_clean_up,
);

/// Not a test: figures for the iptables mode at scale (restore size, full
/// and partial sync time vs `iptables-restore` of the same text alone).
/// Run with `cargo test --release --test netns_iptables scale -- --ignored
/// --nocapture`; `KPROXY_SCALE=1000,10000` picks the Service counts.
#[test]
#[ignore = "measurement, run on demand"]
fn scale_measurement() {
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new("unshare")
        .arg("--net")
        .arg("--")
        .arg(&exe)
        .args([
            "--exact",
            "inner::scale",
            "--include-ignored",
            "--nocapture",
        ])
        .env(INNER, "1")
        .output()
        .expect("unshare");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

mod inner {
    use super::NETNS_CONNTRACK;
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::IpAddr;
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use kproxy::cluster::*;
    use kproxy::config::Config;
    use kproxy::iptables::IptablesProxier;
    use kproxy::kernel::iptables::{Backend, IptablesCmd};
    use kproxy::netfilter::cleanup::{Leftovers, cleanup_iptables_leftovers};

    fn sh(cmd: &str) -> String {
        let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
        assert!(
            out.status.success(),
            "`{cmd}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The node namespace with its pods; removes them on drop.
    struct World {
        tag: String,
        pods: Vec<String>,
        servers: Vec<Child>,
        next: u8,
    }

    impl World {
        /// Enter only when this is a namespace made for the test.
        fn new() -> World {
            assert_eq!(
                std::env::var(super::INNER).as_deref(),
                Ok("1"),
                "run through the outer test, which creates the namespace"
            );
            let links = sh("ip -o link show");
            assert!(
                links.lines().count() == 1 && links.contains(": lo:"),
                "not a fresh network namespace; refusing to touch it:\n{links}"
            );
            let nat = sh("iptables-save -t nat; iptables-save -t filter");
            assert!(
                !nat.lines().any(|l| l.starts_with("-A")),
                "namespace already has rules; refusing:\n{nat}"
            );
            sh("ip link set lo up");
            sh("echo 1 > /proc/sys/net/ipv4/ip_forward");
            // Like a real node, have a default route (into a black hole), so
            // that traffic kproxy does not translate is not answered with
            // "no route" by the routing code instead of by the rules.
            sh(
                "ip link add kp-up type veth peer name kp-up-peer && ip link set kp-up up && \
                ip link set kp-up-peer up && ip addr add 169.254.77.1/30 dev kp-up && \
                ip route add default via 169.254.77.2",
            );
            World {
                tag: format!("kp{}", std::process::id()),
                pods: Vec::new(),
                servers: Vec::new(),
                next: 1,
            }
        }

        /// A pod on its own /24, `10.<net>.<n>.2`, routed via the node's
        /// `10.<net>.<n>.1`. Returns (pod namespace, pod address).
        fn pod(&mut self, net: u8) -> (String, String) {
            let n = self.next;
            self.next += 1;
            let ns = format!("{}-{n}", self.tag);
            let veth = format!("v{n}");
            let (node_ip, pod_ip) = (format!("10.{net}.{n}.1"), format!("10.{net}.{n}.2"));
            sh(&format!("ip netns add {ns}"));
            self.pods.push(ns.clone());
            sh(&format!(
                "ip link add {veth} type veth peer name eth0 netns {ns} && \
                 ip addr add {node_ip}/24 dev {veth} && ip link set {veth} up && \
                 ip netns exec {ns} sh -c 'ip link set lo up && ip addr add {pod_ip}/24 dev eth0 && \
                 ip link set eth0 up && ip route add default via {node_ip}'"
            ));
            (ns, pod_ip)
        }

        /// A pod serving HTTP on 8080 whose `/id` is `name`.
        fn server(&mut self, name: &str) -> String {
            let (ns, ip) = self.pod(244);
            let dir = std::env::temp_dir().join(format!("{ns}-www"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("id"), name).unwrap();
            let child = Command::new("ip")
                .args([
                    "netns", "exec", &ns, "busybox", "httpd", "-f", "-p", "8080", "-h",
                ])
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("busybox httpd");
            self.servers.push(child);
            // Ready when the node itself can fetch the id.
            let url = format!("http://{ip}:8080/id");
            for _ in 0..100 {
                if curl_in(None, &url).0 == 0 {
                    return ip;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("server {name} at {ip} never answered");
        }

        fn client(&mut self) -> (String, String) {
            self.pod(0)
        }
    }

    impl Drop for World {
        fn drop(&mut self) {
            for c in &mut self.servers {
                let _ = c.kill();
                let _ = c.wait();
            }
            for ns in &self.pods {
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
                let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("{ns}-www")));
            }
        }
    }

    /// curl from namespace `ns` (or the node): (exit code, body).
    fn curl_in(ns: Option<&str>, url: &str) -> (i32, String) {
        let (code, body, _) = curl_err(ns, url);
        (code, body)
    }

    /// Like `curl_in`, with curl's error message.
    fn curl_err(ns: Option<&str>, url: &str) -> (i32, String, String) {
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "curl"]);
                c
            }
            None => Command::new("curl"),
        };
        let out = cmd
            .args(["-sS", "--connect-timeout", "2", "--max-time", "3", url])
            .output()
            .expect("curl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Fetch `/id` through `url` up to `tries` times until every one of
    /// `want` has answered; returns how often each answered.
    fn spread(ns: &str, url: &str, want: &[&str], tries: usize) -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        for _ in 0..tries {
            let (code, body) = curl_in(Some(ns), url);
            assert_eq!(code, 0, "curl {url} from {ns} failed ({code})");
            *seen.entry(body).or_insert(0) += 1;
            if want.iter().all(|w| seen.contains_key(*w)) {
                break;
            }
        }
        seen
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn service(name: &str, cluster_ip: &str) -> Service {
        Service {
            name: ServiceName::new("default", name),
            service_type: ServiceType::ClusterIp,
            cluster_ips: vec![ip(cluster_ip)],
            headless: false,
            has_selector: true,
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                target_port: TargetPort::Number(8080),
                node_port: None,
            }],
            external_ips: vec![],
            load_balancer_ingress: vec![],
            load_balancer_source_ranges: vec![],
            affinity_timeout: None,
            external_traffic_policy: TrafficPolicy::Cluster,
            internal_traffic_policy: TrafficPolicy::Cluster,
            health_check_node_port: None,
            publish_not_ready_addresses: false,
            traffic_distribution: None,
        }
    }

    fn slice(svc: &Service, addrs: &[String]) -> EndpointSlice {
        EndpointSlice {
            namespace: "default".into(),
            name: format!("{}-x", svc.name.name),
            service: svc.name.name.clone(),
            address_type: if addrs.first().is_some_and(|a| a.contains(':')) {
                AddressType::V6
            } else {
                AddressType::V4
            },
            ports: vec![EndpointPort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 8080,
            }],
            endpoints: addrs
                .iter()
                .map(|a| Endpoint {
                    addr: ip(a),
                    ready: true,
                    serving: true,
                    terminating: false,
                    node_name: Some("node-1".into()),
                    zone: None,
                    zone_hints: vec![],
                    node_hints: vec![],
                })
                .collect(),
            mirrored: false,
            trigger_time: None,
        }
    }

    fn config() -> Config {
        Config {
            hostname: "node-1".into(),
            cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
            ..Config::default()
        }
    }

    fn proxier(families: Vec<IpFamily>) -> IptablesProxier<IptablesCmd> {
        IptablesProxier::new(IptablesCmd::detect(), config(), families)
    }

    fn with(c: &mut StaticCluster, svc: Service, eps: &[String]) {
        if !eps.is_empty() {
            c.put_slice(slice(&svc, eps));
        }
        c.add_service(svc);
    }

    fn declared(text: &str) -> BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(':'))
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect()
    }

    fn is_service_chain(c: &str) -> bool {
        kproxy::netfilter::chains::is_service_chain(c)
    }

    /// A cluster of one of each kind, with made-up endpoints (no traffic).
    fn showcase() -> StaticCluster {
        let mut c = StaticCluster::default();
        let eps = |n: u8| -> Vec<String> { (1..=n).map(|i| format!("10.244.{i}.2")).collect() };
        with(&mut c, service("web", "10.96.0.10"), &eps(3));
        let mut np = service("np", "10.96.0.11");
        np.service_type = ServiceType::NodePort;
        np.ports[0].node_port = Some(30080);
        with(&mut c, np, &eps(2));
        let mut sticky = service("sticky", "10.96.0.12");
        sticky.affinity_timeout = Some(10800);
        with(&mut c, sticky, &eps(2));
        with(&mut c, service("empty", "10.96.0.13"), &[]);
        let mut lb = service("lb", "10.96.0.14");
        lb.service_type = ServiceType::LoadBalancer;
        lb.ports[0].node_port = Some(30081);
        lb.load_balancer_ingress = vec![LoadBalancerIngress {
            ip: ip("192.0.2.100"),
            ip_mode: IpMode::Vip,
        }];
        lb.load_balancer_source_ranges = vec!["10.0.1.0/24".parse().unwrap()];
        with(&mut c, lb, &eps(2));
        let mut local = service("local", "10.96.0.15");
        local.service_type = ServiceType::NodePort;
        local.ports[0].node_port = Some(30082);
        local.external_traffic_policy = TrafficPolicy::Local;
        local.external_ips = vec![ip("198.51.100.7")];
        with(&mut c, local, &eps(1));
        c
    }

    #[test]
    #[ignore = "runs in a fresh network namespace through its outer test"]
    fn the_binary_programs_and_cleans_up_in_iptables_mode() {
        let _w = World::new();
        sh("iptables -t nat -N OPERATOR && iptables -t nat -A OUTPUT -j OPERATOR");
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ipvs");
        let dir = std::env::temp_dir().join(format!("kproxy-once-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["clusterip.yaml", "nodeport.yaml"] {
            std::fs::copy(format!("{fixtures}/{f}"), dir.join(f)).unwrap();
        }
        let kproxy = env!("CARGO_BIN_EXE_kproxy");
        let run = |args: &[&str]| {
            let out = Command::new(kproxy)
                .args(args)
                .arg(NETNS_CONNTRACK)
                .output()
                .expect("kproxy");
            assert!(
                out.status.success(),
                "kproxy {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let d = dir.to_str().unwrap();
        run(&[
            "--proxy-mode",
            "iptables",
            "--once",
            "--manifests",
            d,
            "--hostname-override",
            "node-1",
        ]);
        let nat = sh("iptables-save -t nat");
        for want in [
            "-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment \"default/web:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-",
            "-j DNAT --to-destination 10.244.2.8:8080",
            "-A KUBE-NODEPORTS -p tcp -m comment --comment \"default/shop\" -m tcp --dport 30080 -j KUBE-EXT-",
            "-A OUTPUT -j OPERATOR",
        ] {
            assert!(nat.contains(want), "nat lacks `{want}`:\n{nat}");
        }
        run(&["--cleanup", "--hostname-override", "node-1"]);
        let nat = sh("iptables-save -t nat");
        assert!(
            !nat.contains("KUBE-"),
            "cleanup left kproxy's rules:\n{nat}"
        );
        assert!(
            nat.contains("-A OUTPUT -j OPERATOR"),
            "cleanup removed the operator's rule:\n{nat}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    /// 400 Services x 10 endpoints is past one section's budget: on
    /// nf_tables the binary writes the nat table in several transactions
    /// (netfilter/staged.rs). The kernel must accept every one and end up
    /// with exactly what the same rules in one transaction give.
    #[test]
    #[ignore = "runs in a fresh network namespace through its outer test"]
    fn a_large_sync_on_nf_tables_is_staged_and_matches_one_transaction() {
        let _w = World::new();
        let dir = std::env::temp_dir().join(format!("kproxy-staged-{}", std::process::id()));
        let generator = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/gen-cluster.py");
        sh(&format!(
            "python3 {generator} --services 400 --endpoints 10 --out {} >/dev/null",
            dir.display()
        ));
        let kproxy = env!("CARGO_BIN_EXE_kproxy");
        let d = dir.to_str().unwrap();
        let run = |extra: &[&str]| {
            let out = Command::new(kproxy)
                .args(["--proxy-mode", "iptables", "--manifests", d])
                .args(["--hostname-override", "node-1", NETNS_CONNTRACK])
                .args(extra)
                .output()
                .expect("kproxy");
            assert!(
                out.status.success(),
                "kproxy {extra:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let dry = run(&["--dry-run"]);
        let v4 = dry
            .split("# IPv6:")
            .next()
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        let sections = v4.lines().filter(|l| *l == "*nat").count();
        assert!(
            sections > 3,
            "expected a staged nat restore, got {sections} section(s)"
        );

        run(&["--once"]);
        // `ns` empty: this namespace; otherwise a namespace inside it.
        let normalized = |ns: &str| {
            let exec = if ns.is_empty() {
                String::new()
            } else {
                format!("ip netns exec {ns} ")
            };
            let mut l: Vec<String> = sh(&format!("{exec}iptables-nft-save"))
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| l.replace(" [0:0]", ""))
                .collect();
            l.sort_unstable();
            l
        };
        let staged = normalized("");
        assert!(
            staged
                .iter()
                .filter(|l| l.starts_with("-A KUBE-SEP-"))
                .count()
                >= 8000
        );

        // The same lines as one nat transaction, in a namespace of its own.
        let (before, nat) = v4.split_once("*nat\n").unwrap();
        let single = format!("{before}*nat\n{}\n", nat.replace("COMMIT\n*nat\n", ""));
        assert_eq!(single.lines().filter(|l| *l == "*nat").count(), 1);
        let file = dir.join("single.rules");
        std::fs::write(&file, single).unwrap();
        let ns = format!("kproxy-single-{}", std::process::id());
        sh(&format!("ip netns add {ns}"));
        sh(&format!(
            "ip netns exec {ns} iptables-nft-restore --noflush {}",
            file.display()
        ));
        let single = normalized(&ns);
        sh(&format!("ip netns del {ns}"));
        assert!(
            staged == single,
            "staged and single restores differ ({} against {} lines)",
            staged.len(),
            single.len()
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    #[ignore = "runs in a fresh network namespace through its outer test"]
    fn without_ipvs_kproxy_falls_back_or_refuses_as_asked() {
        let _w = World::new();
        assert!(
            !std::path::Path::new("/proc/net/ip_vs").exists(),
            "this test needs a kernel without IPVS (the host's)"
        );
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ipvs");
        let dir = std::env::temp_dir().join(format!("kproxy-fallback-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(
            format!("{fixtures}/clusterip.yaml"),
            dir.join("clusterip.yaml"),
        )
        .unwrap();
        let d = dir.to_str().unwrap();
        let kproxy = |extra: &[&str]| {
            let mut args = vec![
                "--once",
                "--manifests",
                d,
                "--hostname-override",
                "node-1",
                NETNS_CONNTRACK,
            ];
            args.extend_from_slice(extra);
            Command::new(env!("CARGO_BIN_EXE_kproxy"))
                .args(&args)
                .output()
                .expect("kproxy")
        };

        // Asked for IPVS: a clear refusal, and nothing programmed.
        let out = kproxy(&["--proxy-mode", "ipvs"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "--proxy-mode ipvs without IPVS succeeded"
        );
        assert!(
            err.contains("--proxy-mode ipvs was requested but IPVS is not usable"),
            "{err}"
        );
        assert!(!sh("iptables-save -t nat").contains("KUBE-"));

        // No mode given: a warning that says why, then the iptables mode.
        let out = kproxy(&[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "fallback run failed: {err}");
        assert!(
            err.contains("IPVS is not usable") && err.contains("falling back to the iptables mode"),
            "{err}"
        );
        assert!(sh("iptables-save -t nat").contains("default/web:http cluster IP"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    #[ignore = "runs in a fresh network namespace through its outer test"]
    fn rules_appear_in_iptables_save_without_drift() {
        let _w = World::new();
        // An operator's own chain and rule, which must survive everything.
        sh(
            "iptables -t nat -N OPERATOR && iptables -t nat -A OPERATOR -j RETURN && iptables -t nat -A PREROUTING -j OPERATOR",
        );
        let c = showcase();
        let mut p = proxier(vec![IpFamily::V4]);
        let out = p.sync_view(&c, None);
        assert!(out.ok(), "{:?}", out.errors);

        let nat = sh("iptables-save -t nat");
        let filter = sh("iptables-save -t filter");
        for want in [
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
            "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
            "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
            "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
            "-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment \"default/web:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-",
            "-m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-",
            "-m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-",
            "-A KUBE-NODEPORTS -p tcp -m comment --comment \"default/np:http\" -m tcp --dport 30080 -j KUBE-EXT-",
            "-j DNAT --to-destination 10.244.1.2:8080",
            "-A KUBE-SERVICES -d 192.0.2.100/32 -p tcp -m comment --comment \"default/lb:http loadbalancer IP\" -m tcp --dport 80 -j KUBE-FW-",
            "-A PREROUTING -j OPERATOR",
        ] {
            assert!(nat.contains(want), "nat lacks `{want}`:\n{nat}");
        }
        for want in [
            "-A KUBE-SERVICES -d 10.96.0.13/32 -p tcp -m comment --comment \"default/empty:http has no endpoints\" -m tcp --dport 80 -j REJECT",
            "-A KUBE-PROXY-FIREWALL -d 192.0.2.100/32 -p tcp -m comment --comment \"default/lb:http traffic not accepted by KUBE-FW-",
            "-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD",
            // NodePorts on 127.0.0.1 (the default): upstream's localnet guard.
            "-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment \"block incoming localnet connections\" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
        ] {
            assert!(filter.contains(want), "filter lacks `{want}`:\n{filter}");
        }
        // Its jumps are ensured last, so they come first.
        for from in ["INPUT", "OUTPUT"] {
            let first = filter
                .lines()
                .find(|l| l.starts_with(&format!("-A {from} ")));
            assert_eq!(
                first,
                Some(format!("-A {from} -j KUBE-FIREWALL").as_str()),
                "{filter}"
            );
        }
        assert!(sh("iptables-save -t mangle").contains(":KUBE-PROXY-CANARY"));

        // iptables-save prints rules its own way; comparing must see no
        // difference: the dry run (a diff against the kernel) writes no
        // Service chain and no jump, and a full resync repairs nothing.
        let lines: Vec<String> = p
            .dry_run_view(&c)
            .unwrap()
            .join("\n")
            .lines()
            .map(str::to_string)
            .collect();
        let text = lines.join("\n");
        let written: Vec<String> = declared(&text)
            .into_iter()
            .filter(|c| is_service_chain(c))
            .collect();
        assert!(written.is_empty(), "false drift: {written:?}\n{text}");
        assert!(!text.contains("-I "), "jump seen as missing:\n{text}");
        let out = p.sync_view(&c, None);
        assert!(out.ok(), "{:?}", out.errors);
        assert_eq!(out.ops.get("repair_chains"), None, "{:?}", out.ops);
        assert_eq!(out.ops.get("insert_jumps"), None, "{:?}", out.ops);
        let nat2 = sh("iptables-save -t nat");
        assert_eq!(nat2.matches("-j KUBE-SERVICES").count(), 2, "{nat2}");

        // Cleanup removes all of ours and leaves the operator's, and
        // kubelet's KUBE-FIREWALL with its jumps, as upstream's cleanup does.
        let errors = kproxy::sync::Proxier::cleanup(&mut p);
        assert!(errors.is_empty(), "{errors:?}");
        let all = sh("iptables-save");
        assert!(
            all.lines()
                .all(|l| !l.contains("KUBE-") || l.contains("KUBE-FIREWALL")),
            "left behind:\n{all}"
        );
        for kept in [
            "-A INPUT -j KUBE-FIREWALL",
            "-A OUTPUT -j KUBE-FIREWALL",
            "-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8",
        ] {
            assert!(all.contains(kept), "cleanup removed `{kept}`:\n{all}");
        }
        assert!(all.contains("-A PREROUTING -j OPERATOR"), "{all}");
        assert!(all.contains("-A OPERATOR -j RETURN"), "{all}");
    }

    #[test]
    #[ignore = "runs in a fresh network namespace through its outer test"]
    fn clusterip_and_nodeport_spread_over_all_endpoints() {
        let mut w = World::new();
        let servers: Vec<String> = ["a", "b", "c"].iter().map(|n| w.server(n)).collect();
        let (client, client_ip) = w.client();
        let mut svc = service("web", "10.96.0.10");
        svc.service_type = ServiceType::NodePort;
        svc.ports[0].node_port = Some(30080);
        let mut c = StaticCluster::default();
        with(&mut c, svc, &servers);
        let mut p = proxier(vec![IpFamily::V4]);
        assert!(p.sync_view(&c, None).ok());

        let seen = spread(&client, "http://10.96.0.10/id", &["a", "b", "c"], 60);
        assert_eq!(seen.len(), 3, "cluster IP reached {seen:?}");
        // The node's address on the client's link is a local address.
        let node_ip = format!("{}.1", client_ip.rsplit_once('.').unwrap().0);
        let seen = spread(
            &client,
            &format!("http://{node_ip}:30080/id"),
            &["a", "b", "c"],
            60,
        );
        assert_eq!(seen.len(), 3, "node port reached {seen:?}");
    }

    #[test]
    #[ignore = "runs in a fresh network namespace through its outer test"]
    fn client_ip_affinity_sticks() {
        let mut w = World::new();
        let servers: Vec<String> = ["a", "b", "c"].iter().map(|n| w.server(n)).collect();
        let (client, _) = w.client();
        let mut svc = service("sticky", "10.96.0.12");
        svc.affinity_timeout = Some(600);
        let mut c = StaticCluster::default();
        with(&mut c, svc, &servers);
        let mut p = proxier(vec![IpFamily::V4]);
        assert!(p.sync_view(&c, None).ok());
        let mut seen = BTreeSet::new();
        for _ in 0..15 {
            let (code, body) = curl_in(Some(&client), "http://10.96.0.12/id");
            assert_eq!(code, 0);
            seen.insert(body);
        }
        assert_eq!(seen.len(), 1, "one client, one endpoint: {seen:?}");
    }

    #[test]
    #[ignore = "runs in a fresh network namespace through its outer test"]
    fn service_without_endpoints_is_refused() {
        let mut w = World::new();
        let (client, _) = w.client();
        let mut c = StaticCluster::default();
        with(&mut c, service("empty", "10.96.0.13"), &[]);
        let mut p = proxier(vec![IpFamily::V4]);
        assert!(p.sync_view(&c, None).ok());
        let (code, _, err) = curl_err(Some(&client), "http://10.96.0.13/id");
        assert_eq!(code, 7, "refused, not a timeout (28): {err}");
        // And it was the REJECT rule that answered (not a missing route).
        let filter = sh("iptables-save -c -t filter");
        let reject = filter
            .lines()
            .find(|l| l.contains("-A KUBE-SERVICES") && l.contains("-j REJECT"))
            .expect("REJECT rule");
        assert!(
            !reject.starts_with("[0:"),
            "REJECT rule counted no packet: {reject}"
        );
    }

    #[test]
    #[ignore = "runs in a fresh network namespace through its outer test"]
    fn source_ranges_allow_one_client_and_drop_another() {
        let mut w = World::new();
        let servers: Vec<String> = ["a", "b"].iter().map(|n| w.server(n)).collect();
        let (allowed, allowed_ip) = w.client();
        let (denied, _) = w.client();
        // A VIP-style load balancer: its IP is local to the node.
        sh("ip addr add 192.0.2.100/32 dev lo");
        let mut lb = service("lb", "10.96.0.14");
        lb.service_type = ServiceType::LoadBalancer;
        lb.ports[0].node_port = Some(30081);
        lb.load_balancer_ingress = vec![LoadBalancerIngress {
            ip: ip("192.0.2.100"),
            ip_mode: IpMode::Vip,
        }];
        lb.load_balancer_source_ranges = vec![format!("{allowed_ip}/32").parse().unwrap()];
        let mut c = StaticCluster::default();
        with(&mut c, lb, &servers);
        let mut p = proxier(vec![IpFamily::V4]);
        assert!(p.sync_view(&c, None).ok());

        let seen = spread(&allowed, "http://192.0.2.100/id", &["a", "b"], 40);
        assert_eq!(seen.len(), 2, "{seen:?}");
        let (code, _) = curl_in(Some(&denied), "http://192.0.2.100/id");
        assert_eq!(code, 28, "dropped (timeout), not refused or answered");
        let filter = sh("iptables-save -c -t filter");
        let drop_rule = filter
            .lines()
            .find(|l| l.contains("-A KUBE-PROXY-FIREWALL") && l.contains("192.0.2.100"))
            .expect("firewall rule");
        assert!(
            !drop_rule.starts_with("[0:"),
            "the DROP rule counted the packets: {drop_rule}"
        );
    }

    #[test]
    #[ignore = "runs in a fresh network namespace through its outer test"]
    fn partial_sync_rewrites_only_the_changed_service() {
        let mut w = World::new();
        let servers: Vec<String> = ["a", "b"].iter().map(|n| w.server(n)).collect();
        let (client, _) = w.client();
        let mut c = StaticCluster::default();
        with(&mut c, service("one", "10.96.0.21"), &servers[..1]);
        with(&mut c, service("two", "10.96.0.22"), &servers[..1]);
        let mut p = proxier(vec![IpFamily::V4]);
        assert!(p.sync_view(&c, None).ok());
        assert_eq!(curl_in(Some(&client), "http://10.96.0.22/id").1, "a");

        // "two" gains endpoint b.
        let two = c.services[&ServiceName::new("default", "two")].clone();
        c.put_slice(slice(&two, &servers));
        let changed = BTreeSet::from([ServiceName::new("default", "two")]);
        let out = p.sync_view(&c, Some(&changed));
        assert!(out.ok(), "{:?}", out.errors);
        let text = p.last_restore(IpFamily::V4).unwrap();
        let chains: Vec<String> = declared(text)
            .into_iter()
            .filter(|c| is_service_chain(c))
            .collect();
        // two's SVC chain and its two SEP chains; nothing of "one".
        assert_eq!(chains.len(), 3, "{chains:?}\n{text}");
        assert!(!text.contains("default/one:http ->"), "{text}");
        let seen = spread(&client, "http://10.96.0.22/id", &["a", "b"], 40);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(curl_in(Some(&client), "http://10.96.0.21/id").1, "a");
    }

    #[test]
    #[ignore = "runs in a fresh network namespace through its outer test"]
    fn flushed_nat_table_is_rebuilt() {
        let mut w = World::new();
        let servers = vec![w.server("a")];
        let (client, _) = w.client();
        let mut c = StaticCluster::default();
        with(&mut c, service("web", "10.96.0.10"), &servers);
        let mut p = proxier(vec![IpFamily::V4]);
        assert!(p.sync_view(&c, None).ok());
        // Someone flushes everything, canary included.
        sh("for t in nat filter mangle; do iptables -t $t -F && iptables -t $t -X; done");
        assert_ne!(curl_in(Some(&client), "http://10.96.0.10/id").0, 0);
        let out = p.sync_view(&c, Some(&BTreeSet::new()));
        assert!(out.ok(), "{:?}", out.errors);
        assert_eq!(
            curl_in(Some(&client), "http://10.96.0.10/id"),
            (0, "a".into())
        );
        // A chain edited by hand is put back by the next periodic sync.
        let svc_chain = sh("iptables-save -t nat")
            .lines()
            .find_map(|l| {
                l.strip_prefix(":KUBE-SVC-")
                    .map(|r| format!("KUBE-SVC-{}", r.split(' ').next().unwrap()))
            })
            .unwrap();
        sh(&format!("iptables -t nat -F {svc_chain}"));
        assert_ne!(curl_in(Some(&client), "http://10.96.0.10/id").0, 0);
        let out = p.sync_view(&c, None);
        assert_eq!(out.ops.get("repair_chains"), Some(&1), "{:?}", out.ops);
        assert_eq!(
            curl_in(Some(&client), "http://10.96.0.10/id"),
            (0, "a".into())
        );
    }

    /// IPVS mode's ipsets and rules through the real `ipset` and
    /// `iptables-restore`: what the kernel prints back must compare equal
    /// to the plan (else every sync would rewrite), and cleanup must take
    /// exactly what it wrote.
    #[test]
    #[ignore = "runs in a fresh network namespace through its outer test"]
    fn ipvs_companions_read_back_without_drift_and_clean_up() {
        use kproxy::ipvs::rules::{RuleConfig, companion_rules};
        use kproxy::ipvs::sets::{DesiredSets, Set, ip_port, ip_port_ip, ip_port_net};
        use kproxy::ipvs::{Companions, IpvsPlan, IpvsProxier};
        use kproxy::kernel::ipset::IpsetCmd;
        use kproxy::kernel::ipvs::twin::IpvsTwin;
        use kproxy::kernel::link::twin::LinksTwin;
        use kproxy::sync::Proxier;
        let _w = World::new();
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let mut sets = DesiredSets::default();
        for (f, vip, ep, lb, node, net, host) in [
            (
                IpFamily::V4,
                "10.96.0.10",
                "10.244.0.5",
                "203.0.113.7",
                "192.168.58.2",
                "10.0.0.0/8",
                "198.51.100.1/32",
            ),
            (
                IpFamily::V6,
                "fd00::10",
                "fd00:244::5",
                "2001:db8::7",
                "fd00:58::2",
                "2001:db8:1::/48",
                "2001:db8:2::1/128",
            ),
        ] {
            sets.add(f, Set::ClusterIp, ip_port(ip(vip), Protocol::Tcp, 80));
            sets.add(f, Set::ClusterIp, ip_port(ip(vip), Protocol::Udp, 53));
            sets.add(f, Set::ExternalIp, ip_port(ip(lb), Protocol::Tcp, 8080));
            sets.add(f, Set::LoadBalancer, ip_port(ip(lb), Protocol::Tcp, 443));
            sets.add(
                f,
                Set::LoadBalancerLocal,
                ip_port(ip(lb), Protocol::Tcp, 443),
            );
            sets.add(f, Set::LoadBalancerFw, ip_port(ip(lb), Protocol::Tcp, 443));
            for n in [net, host] {
                let m = ip_port_net(ip(lb), Protocol::Tcp, 443, n.parse().unwrap());
                sets.add(f, Set::LoadBalancerSourceCidr, m);
            }
            let m = ip_port_ip(ip(lb), Protocol::Tcp, 443, ip(lb));
            sets.add(f, Set::LoadBalancerSourceIp, m);
            let m = ip_port_ip(ip(ep), Protocol::Tcp, 8080, ip(ep));
            sets.add(f, Set::LoopBack, m);
            sets.add(f, Set::NodePortTcp, "30080".into());
            sets.add(f, Set::NodePortLocalUdp, "30053".into());
            sets.add(f, Set::NodePortUdp, "30053".into());
            let m = ip_port(ip(node), Protocol::Sctp, 30868);
            sets.add(f, Set::NodePortSctp, m);
            sets.add(f, Set::HealthCheckNodePort, "32000".into());
            sets.add(f, Set::IpvsIps, vip.into());
        }
        sh("ipset create OPERATOR-SET hash:ip && ipset add OPERATOR-SET 10.9.9.9");
        sh("iptables -N OPERATOR && iptables -A INPUT -j OPERATOR");
        let families = [IpFamily::V4, IpFamily::V6];
        let rules = RuleConfig {
            mark: 0x4000,
            local: kproxy::config::LocalDetector::ClusterCidr(vec![
                "10.244.0.0/16".parse().unwrap(),
            ]),
            ..RuleConfig::default()
        };
        // IPVS itself on twins (this kernel has none): only the companions
        // are real here.
        let mut fw = IpvsProxier::new(
            Box::new(IpvsTwin::new()),
            Box::new(LinksTwin::default()),
            &kproxy::config::Config::default(),
        )
        .with_companions(Companions::new(
            Box::new(IptablesCmd::detect()),
            Box::new(IpsetCmd),
            families.to_vec(),
        ));
        let plan_for = |sets: &DesiredSets| IpvsPlan {
            sets: sets.clone(),
            rules: companion_rules(&families, sets, &rules),
            ..IpvsPlan::default()
        };
        let out = fw.sync_plan(&plan_for(&sets));
        assert!(out.ok(), "{:?}", out.errors);
        assert_eq!(out.ops.get("create_ipset"), Some(&34), "{:?}", out.ops);
        let saved = sh("ipset save");
        for want in [
            "add KUBE-CLUSTER-IP 10.96.0.10,udp:53",
            "add KUBE-LOAD-BALANCER-SOURCE-CIDR 203.0.113.7,tcp:443,198.51.100.1",
            "add KUBE-6-LOOP-BACK fd00:244::5,tcp:8080,fd00:244::5",
            "add KUBE-6-NODE-PORT-SCTP-HASH fd00:58::2,sctp:30868",
            "add KUBE-NODE-PORT-LOCAL-UDP 30053",
        ] {
            assert!(saved.contains(want), "missing `{want}` in:\n{saved}");
        }
        let nat = sh("iptables-save -t nat");
        assert!(
            nat.contains(
                "-A KUBE-NODE-PORT -p tcp -m comment --comment \"Kubernetes nodeport TCP port for masquerade purpose\" -m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ"
            ),
            "{nat}"
        );
        // What the kernel prints back is what was planned: nothing to do.
        let again = fw.sync_plan(&plan_for(&sets));
        assert!(again.ok(), "{:?}", again.errors);
        assert_eq!(again.total_ops(), 0, "false drift: {:?}", again.ops);
        // One member less: one deletion, and no rule rewritten.
        let mut fewer = sets.clone();
        fewer
            .members
            .get_mut(&(IpFamily::V4, Set::ClusterIp))
            .unwrap()
            .remove("10.96.0.10,udp:53");
        let third = fw.sync_plan(&plan_for(&fewer));
        assert!(third.ok(), "{:?}", third.errors);
        assert_eq!(
            third.ops.get("delete_ipset_entry"),
            Some(&1),
            "{:?}",
            third.ops
        );
        assert_eq!(third.total_ops(), 1, "{:?}", third.ops);

        let errors = fw.cleanup();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(sh("ipset list -n").trim(), "OPERATOR-SET");
        let all = sh("iptables-save") + &sh("ip6tables-save");
        assert!(!all.contains("KUBE-"), "{all}");
        assert!(all.contains("-A INPUT -j OPERATOR"), "{all}");
    }

    #[test]
    #[ignore = "runs in a fresh network namespace through its outer test"]
    fn ipv6_rules_load_without_drift() {
        let _w = World::new();
        let mut c = StaticCluster::default();
        let mut s = service("web6", "fd00::10");
        s.service_type = ServiceType::NodePort;
        s.ports[0].node_port = Some(30090);
        s.affinity_timeout = Some(100);
        with(&mut c, s, &["fd00:244::1".into(), "fd00:244::2".into()]);
        with(&mut c, service("empty6", "fd00::11"), &[]);
        let mut p = IptablesProxier::new(
            IptablesCmd::detect(),
            Config {
                cluster_cidrs: vec!["fd00:244::/56".parse().unwrap()],
                ..config()
            },
            vec![IpFamily::V6],
        );
        let out = p.sync_view(&c, None);
        assert!(out.ok(), "{:?}", out.errors);
        let nat = sh("ip6tables-save -t nat");
        assert!(
            nat.contains("-j DNAT --to-destination [fd00:244::1]:8080"),
            "{nat}"
        );
        assert!(
            sh("ip6tables-save -t filter")
                .contains("has no endpoints\" -m tcp --dport 80 -j REJECT")
        );
        // ip6tables-save's rendering is not mistaken for drift.
        let text = p.dry_run_view(&c).unwrap().join("\n");
        assert!(
            declared(&text).iter().all(|c| !is_service_chain(c)) && !text.contains("-I "),
            "false drift:\n{text}"
        );
        let errors =
            cleanup_iptables_leftovers(&mut IptablesCmd::detect(), &[IpFamily::V6], Leftovers::All);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(!sh("ip6tables-save").contains("KUBE-"));
    }

    #[test]
    #[ignore = "runs in a fresh network namespace through its outer test"]
    fn refused_restore_names_the_rule_and_changes_nothing() {
        use kproxy::kernel::iptables::Iptables;
        let _w = World::new();
        for backend in [Backend::Legacy, Backend::Nft] {
            let mut ipt = IptablesCmd::new(backend);
            let input = "*nat\n:KUBE-SVC-A - [0:0]\n-A KUBE-SVC-A -m comment --comment \"default/web:http\" -j KUBE-SEP-MISSING\nCOMMIT\n";
            let e = ipt.restore(IpFamily::V4, input).unwrap_err();
            assert!(
                e.to_string().contains("KUBE-SEP-MISSING"),
                "{backend:?}: {e}"
            );
            // The transaction is atomic: not even the chain was created.
            let saved = ipt.save(IpFamily::V4).unwrap();
            assert!(!saved.contains("KUBE-SVC-A"), "{backend:?}: {saved}");
        }
    }

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    }

    #[test]
    #[ignore = "measurement, run through scale_measurement"]
    fn scale() {
        let _w = World::new();
        let counts: Vec<usize> = std::env::var("KPROXY_SCALE")
            .unwrap_or_else(|_| "1000,10000".into())
            .split(',')
            .map(|n| n.trim().parse().expect("KPROXY_SCALE: numbers"))
            .collect();
        // KPROXY_SCALE_BACKEND=legacy|nft (default: as detected).
        let backend = match std::env::var("KPROXY_SCALE_BACKEND").as_deref() {
            Ok("legacy") => Backend::Legacy,
            Ok("nft") => Backend::Nft,
            _ => IptablesCmd::detect().backend,
        };
        let restore = match backend {
            Backend::Legacy => "iptables-legacy-restore",
            Backend::Nft => "iptables-nft-restore",
            Backend::Default => "iptables-restore",
        };
        let runs: usize = std::env::var("KPROXY_SCALE_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        // Each run starts from empty tables in a namespace of its own, made
        // for this thread (its commands inherit it); the test's own
        // namespace is already a fresh one, so nothing else is affected.
        let fresh = || {
            // SAFETY: unshare only changes this thread's network namespace.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
        };
        for n in counts {
            let mut c = StaticCluster::default();
            for i in 0..n {
                let svc = service(
                    &format!("s{i}"),
                    &format!("10.96.{}.{}", i / 250, i % 250 + 1),
                );
                let eps: Vec<String> = (0..10)
                    .map(|j| {
                        let k = i * 10 + j;
                        format!("10.{}.{}.{}", 128 + k / 65536, (k / 256) % 256, k % 256)
                    })
                    .collect();
                with(&mut c, svc, &eps);
            }
            let (mut full, mut partial, mut quiet, mut alone) = (vec![], vec![], vec![], vec![]);
            let (mut size, mut rules, mut partial_size) = (0, 0, 0);
            for _ in 0..runs {
                fresh();
                let mut p =
                    IptablesProxier::new(IptablesCmd::new(backend), config(), vec![IpFamily::V4]);
                // What the full sync will write (a large one is not kept
                // after it is written).
                let text: String = p
                    .dry_run_view(&c)
                    .unwrap()
                    .iter()
                    .filter(|l| !l.starts_with('#'))
                    .map(|l| format!("{l}\n"))
                    .collect();
                let t = std::time::Instant::now();
                let out = p.sync_view(&c, None);
                full.push(t.elapsed().as_secs_f64());
                eprintln!("services={n}: full sync {:.3}s", full.last().unwrap());
                assert!(out.ok(), "{:?}", out.errors);
                size = text.len();
                rules = text.lines().filter(|l| l.starts_with("-A ")).count();

                // One endpoint of one Service changes.
                let mut c2 = c.clone();
                let s0 = c2.services[&ServiceName::new("default", "s0")].clone();
                c2.put_slice(slice(&s0, &["10.127.0.1".to_string()]));
                let changed = BTreeSet::from([ServiceName::new("default", "s0")]);
                let t = std::time::Instant::now();
                let out = p.sync_view(&c2, Some(&changed));
                partial.push(t.elapsed().as_secs_f64());
                assert!(out.ok(), "{:?}", out.errors);
                partial_size = p.last_restore(IpFamily::V4).unwrap().len();
                let t = std::time::Instant::now();
                assert!(p.sync_view(&c2, Some(&BTreeSet::new())).ok());
                quiet.push(t.elapsed().as_secs_f64());

                // The same full text through iptables-restore alone, into
                // empty tables.
                fresh();
                let path =
                    std::env::temp_dir().join(format!("kp-scale-{}.txt", std::process::id()));
                std::fs::write(&path, &text).unwrap();
                let t = std::time::Instant::now();
                sh(&format!("{restore} --noflush -w < {}", path.display()));
                alone.push(t.elapsed().as_secs_f64());
                let _ = std::fs::remove_file(&path);
            }
            println!(
                "{backend:?}: services={n} endpoints={} restore_input={size} bytes, {rules} rules | full sync {:.3}s vs iptables-restore alone {:.3}s | one-endpoint partial sync {:.3}s ({partial_size} bytes) | no-change sync {:.3}s | medians of {runs}",
                n * 10,
                median(full),
                median(alone),
                median(partial),
                median(quiet),
            );
        }
    }
}
