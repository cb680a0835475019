//! Table-driven planner tests: one YAML fixture per Service feature in
//! tests/fixtures/ipvs/, each compared with its expected rendering
//! (`ipvsadm -Ln` body, kube-ipvs0 addresses, ipset members, refused
//! objects) in the
//! `.ipvsadm` file beside it. `KPROXY_BLESS=1` rewrites the expectations.

use std::path::{Path, PathBuf};

use clap::Parser;

use super::planner::{DUMMY_LINK, NodeContext, PlanConfig, plan};
use super::render::render;
use crate::cluster::convert::ConvertOptions;
use crate::cluster::{ClusterState, Kind, Object, SourceEvent};
use crate::config::{Config, Flags};
use crate::kernel::link::LocalAddress;
use crate::source::manifests::parse_text;
use crate::testing::golden;

/// The text of one fixture in tests/fixtures/ipvs.
pub(crate) fn fixture(name: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ipvs");
    std::fs::read_to_string(dir.join(name)).unwrap()
}

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ipvs");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

/// The node every fixture is planned on: node-1 with eth0, lo and an
/// existing kube-ipvs0 (whose address must never get a NodePort).
pub(crate) fn test_node() -> NodeContext {
    let la = |ifname: &str, a: &str| LocalAddress {
        ifname: ifname.into(),
        addr: a.parse().unwrap(),
    };
    NodeContext {
        name: "node-1".into(),
        zone: None,
        pod_cidrs: Vec::new(),
        node_addresses: Vec::new(),
        local_addresses: vec![
            la("lo", "127.0.0.1"),
            la("lo", "::1"),
            la("eth0", "192.168.58.2"),
            la("eth0", "fd00:58::2"),
            la("eth0", "fe80::5054:ff:fe12:3456"),
            la(DUMMY_LINK, "10.96.0.1"),
        ],
    }
}

/// The test node, with what the fixture's Node object (if any) says of it.
pub(crate) fn node_for(state: &ClusterState) -> NodeContext {
    let mut node = test_node();
    if let Some(n) = state.node() {
        node.zone = n.zone.clone();
        node.node_addresses = n.addresses.clone();
    }
    node
}

fn config_for(text: &str) -> Config {
    let mut args = vec!["kproxy".to_string(), "--hostname-override=node-1".into()];
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# kproxy-test:") {
            args.extend(rest.split_whitespace().map(String::from));
        }
    }
    Flags::try_parse_from(&args)
        .unwrap()
        .apply_to(Config::default())
        .unwrap()
}

/// Load every object of a multi-document YAML fixture into a fresh store.
pub(crate) fn state_from_yaml(text: &str, config: &Config) -> (ClusterState, Vec<String>) {
    state_from_objects(parse_text(Path::new("fixture.yaml"), text).unwrap(), config)
}

pub(crate) fn state_from_objects(
    objects: Vec<Object>,
    config: &Config,
) -> (ClusterState, Vec<String>) {
    let mut state = ClusterState::new(ConvertOptions {
        node_name: config.hostname.clone(),
    });
    let mut by_kind: std::collections::BTreeMap<Kind, Vec<Object>> = Default::default();
    for obj in objects {
        by_kind.entry(obj.kind()).or_default().push(obj);
    }
    let mut problems = Vec::new();
    for (kind, objs) in by_kind {
        problems.extend(
            state
                .apply(SourceEvent::Replace(kind, objs))
                .into_iter()
                .map(|p| p.to_string()),
        );
    }
    (state, problems)
}

fn rendering(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let config = config_for(&text);
    let (state, mut problems) = state_from_yaml(&text, &config);
    let p = plan(&state, &node_for(&state), &PlanConfig::from(&config));
    problems.extend(p.problems.iter().map(|p| p.to_string()));
    problems.sort();
    let mut out = render(&p.table);
    let bound: Vec<String> = p.bound.iter().map(|a| a.to_string()).collect();
    out.push_str(&format!("{DUMMY_LINK}: {}\n", bound.join(" ")));
    out.push_str(&format!("no local endpoints: {}\n", p.no_local_endpoints));
    // The ipset members, as `ipset save` lists them (sorted like `sort`).
    let mut members: Vec<String> = p
        .sets
        .render()
        .lines()
        .map(|l| format!("ipset: {l}"))
        .collect();
    members.sort();
    for m in members {
        out.push_str(&m);
        out.push('\n');
    }
    for pr in problems {
        out.push_str(&format!("refused: {pr}\n"));
    }
    out
}

#[test]
fn every_fixture_plans_as_expected() {
    let mut failures = Vec::new();
    let all = fixtures();
    assert!(all.len() >= 15, "fixtures missing: {all:?}");
    for f in all {
        let got = rendering(&f);
        let name = f.file_name().unwrap().to_string_lossy();
        let expected = format!("tests/fixtures/ipvs/{}", name.replace(".yaml", ".ipvsadm"));
        if let Err(e) = golden(&expected, &got) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The plan does not depend on the order objects arrive in: each fixture's
/// objects are applied one by one in several orders (as watch events would
/// bring them) and every plan must equal the one from the file's order.
#[test]
fn plans_do_not_depend_on_the_order_objects_arrive_in() {
    for f in fixtures() {
        let text = std::fs::read_to_string(&f).unwrap();
        let config = config_for(&text);
        let objects = parse_text(Path::new("fixture.yaml"), &text).unwrap();
        let plan_of = |order: &[Object]| {
            let mut state = ClusterState::new(ConvertOptions {
                node_name: config.hostname.clone(),
            });
            for obj in order {
                state.apply(SourceEvent::Apply(obj.clone()));
            }
            let p = plan(&state, &test_node(), &PlanConfig::from(&config));
            (p.table, p.bound, p.sets, p.rules, p.owners)
        };
        let want = plan_of(&objects);
        let mut reversed = objects.clone();
        reversed.reverse();
        for order in [reversed, shuffled(&objects, 7), shuffled(&objects, 1013)] {
            assert!(
                plan_of(&order) == want,
                "{}: order changed the plan",
                f.display()
            );
        }
    }
}

/// `items` in a pseudo-random order fixed by `seed` (a Fisher-Yates shuffle
/// over a linear congruential generator: reproducible, no dependency).
fn shuffled<T: Clone>(items: &[T], seed: u64) -> Vec<T> {
    let mut v = items.to_vec();
    let mut x = seed;
    for i in (1..v.len()).rev() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        v.swap(i, (x >> 33) as usize % (i + 1));
    }
    v
}

/// The plan of one Service, by virtual server.
fn plan_of_service(
    state: &ClusterState,
    name: &str,
) -> std::collections::BTreeMap<crate::kernel::ipvs::ServiceKey, crate::kernel::ipvs::ServiceEntry>
{
    let p = plan(state, &test_node(), &PlanConfig::default());
    p.table
        .services
        .into_iter()
        .filter(|(k, _)| p.owners[k].name == name)
        .collect()
}

#[test]
fn bad_objects_leave_every_other_plan_unchanged() {
    let config = config_for("");
    let good = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ipvs/clusterip.yaml"),
    )
    .unwrap();
    let (alone, problems) = state_from_yaml(&good, &config);
    assert!(problems.is_empty(), "{problems:?}");
    let expected = plan_of_service(&alone, "web");
    assert_eq!(expected.len(), 1);

    // Every kind of bad input the store and the planner must survive.
    let big: String = (0..10_000)
        .map(|i| {
            format!(
                "- {{addresses: [10.{}.{}.{}], nodeName: node-2}}\n",
                128 + i / 65536,
                (i / 256) % 256,
                i % 256
            )
        })
        .collect();
    let bad = format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: wrong-family, namespace: default}}
spec:
  clusterIP: 10.96.5.1
  selector: {{app: x}}
  ports: [{{protocol: TCP, port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: wrong-family-1, namespace: default, labels: {{kubernetes.io/service-name: wrong-family}}}}
addressType: IPv4
ports: [{{name: "", protocol: TCP, port: 80}}]
endpoints:
- {{addresses: ["fd00::1"]}}
- {{addresses: ["not-an-ip"]}}
---
apiVersion: v1
kind: Service
metadata: {{name: no-spec-ports, namespace: default}}
spec:
  clusterIP: 10.96.5.2
  ports: [{{protocol: TCP}}]
---
apiVersion: v1
kind: Service
metadata: {{namespace: default}}
spec:
  clusterIP: 10.96.5.3
  ports: [{{protocol: TCP, port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: steals-web-ip, namespace: default}}
spec:
  clusterIP: 10.96.5.4
  externalIPs: [10.96.0.10]
  ports: [{{protocol: TCP, port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: huge, namespace: default}}
spec:
  clusterIP: 10.96.5.5
  selector: {{app: huge}}
  ports: [{{protocol: TCP, port: 80, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: huge-1, namespace: default, labels: {{kubernetes.io/service-name: huge}}}}
addressType: IPv4
ports: [{{name: "", protocol: TCP, port: 8080}}]
endpoints:
{big}"#
    );
    let (mixed, problems) = state_from_yaml(&format!("{good}\n---{bad}"), &config);
    let plan_all = plan(&mixed, &test_node(), &PlanConfig::default());
    let mut all_problems: Vec<String> = problems;
    all_problems.extend(plan_all.problems.iter().map(|p| p.to_string()));
    let text = all_problems.join("\n");
    for needle in [
        "EndpointSlice default/wrong-family-1",
        "fd00::1",
        "not-an-ip",
        "Service default/no-spec-ports",
        "steals-web-ip",
    ] {
        assert!(
            text.contains(needle),
            "no problem mentions {needle}:\n{text}"
        );
    }
    assert_eq!(
        plan_of_service(&mixed, "web"),
        expected,
        "web's plan changed"
    );
    let huge = plan_of_service(&mixed, "huge");
    assert_eq!(huge.values().next().unwrap().dests.len(), 10_000);
}

/// Upstream (proxier.go syncProxyRules, `shouldBind := !nodeAddressSet.Has`)
/// never binds an external or load-balancer IP that is one of the node's
/// own addresses: the virtual server exists, the address is neither on
/// kube-ipvs0 nor in KUBE-IPVS-IPS, so KUBE-IPVS-FILTER leaves the node's
/// other ports alone. A cluster IP is always bound.
#[test]
fn a_node_address_as_external_ip_gets_a_virtual_server_but_is_not_bound() {
    let text = r#"
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: default}
spec:
  clusterIP: 10.96.0.77
  externalIPs: [192.168.58.2, 203.0.113.7]
  ports: [{port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ext-1, namespace: default, labels: {kubernetes.io/service-name: ext}}
addressType: IPv4
ports: [{port: 8080, protocol: TCP, name: ""}]
endpoints: [{addresses: [10.244.1.7], conditions: {ready: true}, nodeName: node-2}]
"#;
    let config = config_for(text);
    let (state, problems) = state_from_yaml(text, &config);
    assert!(problems.is_empty(), "{problems:?}");
    let p = plan(&state, &test_node(), &PlanConfig::from(&config));
    let vips: Vec<String> = p
        .table
        .services
        .keys()
        .map(|k| format!("{}:{}", k.addr, k.port))
        .collect();
    assert!(vips.contains(&"192.168.58.2:80".to_string()), "{vips:?}");
    let bound: Vec<String> = p.bound.iter().map(|a| a.to_string()).collect();
    assert_eq!(bound, ["10.96.0.77", "203.0.113.7"]);
    let ipvs_ips = p
        .sets
        .get(crate::net::IpFamily::V4, super::sets::Set::IpvsIps)
        .unwrap();
    assert!(!ipvs_ips.contains("192.168.58.2"), "{ipvs_ips:?}");
    assert!(ipvs_ips.contains("203.0.113.7"), "{ipvs_ips:?}");
}

/// Upstream's TestNoEndpointsMetric (pkg/proxy/ipvs/proxier_test.go): one
/// Service (NodePort when an external policy is set) with three endpoints,
/// and the gauge per policy; plus what syncEndpoint (proxier.go) then puts
/// behind each virtual server: with its policy Local and no local endpoint,
/// the cluster-wide endpoints (kubernetes#97081), which a Service that never
/// uses its Cluster policy (internal Local, not externally reachable) has
/// none of.
#[test]
fn local_policy_without_local_endpoints_as_upstream_syncs_it() {
    use crate::cluster::{IpFamily, PolicyScope};
    // (internal policy, external policy, endpoint nodes, internal count,
    // external count, real servers on the cluster IP, on the node port)
    type Case = (
        &'static str,
        &'static str,
        &'static [&'static str],
        u64,
        u64,
        usize,
        usize,
    );
    let cases: [Case; 7] = [
        ("Local", "", &["node-1", "node-a", "node-b"], 0, 0, 1, 0),
        ("", "Local", &["node-1", "node-a", "node-b"], 0, 0, 3, 1),
        (
            "Local",
            "Local",
            &["node-1", "node-a", "node-b"],
            0,
            0,
            1,
            1,
        ),
        ("Local", "", &["node-0", "node-a", "node-b"], 1, 0, 0, 0),
        ("", "Local", &["node-0", "node-a", "node-b"], 0, 1, 3, 3),
        (
            "Local",
            "Local",
            &["node-0", "node-a", "node-b"],
            1,
            1,
            3,
            3,
        ),
        ("Local", "Local", &[], 0, 0, 0, 0),
    ];
    for (itp, etp, nodes, internal, external, on_cluster_ip, on_node_port) in cases {
        let mut spec = String::from("clusterIP: 172.20.1.1, selector: {foo: bar}");
        if !itp.is_empty() {
            spec.push_str(&format!(", internalTrafficPolicy: {itp}"));
        }
        if !etp.is_empty() {
            spec.push_str(&format!(", type: NodePort, externalTrafficPolicy: {etp}"));
        }
        // The API server refuses a nodePort on a ClusterIP Service.
        let node_port = if etp.is_empty() {
            ""
        } else {
            ", nodePort: 30000"
        };
        let mut text = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc1, namespace: ns1}}\n\
             spec: {{{spec}, ports: [{{name: p80, port: 80, targetPort: 80, protocol: TCP{node_port}}}]}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: svc1-1, namespace: ns1, labels: {{kubernetes.io/service-name: svc1}}}}\n\
             addressType: IPv4\nports: [{{name: p80, port: 80, protocol: TCP}}]\nendpoints:{}\n",
            if nodes.is_empty() { " []" } else { "" }
        );
        for (i, n) in nodes.iter().enumerate() {
            text.push_str(&format!(
                "- {{addresses: [10.0.1.{}], conditions: {{ready: true}}, nodeName: {n}}}\n",
                i + 1
            ));
        }
        let (state, problems) = state_from_yaml(&text, &config_for(""));
        assert!(problems.is_empty(), "{problems:?}");
        let p = plan(&state, &test_node(), &PlanConfig::default());
        let case = format!("itp {itp:?} etp {etp:?} on {nodes:?}");
        let counts = &p.no_local_endpoints;
        assert_eq!(
            (
                counts.get(PolicyScope::Internal, IpFamily::V4),
                counts.get(PolicyScope::External, IpFamily::V4)
            ),
            (internal, external),
            "{case}"
        );
        let dests = |addr: &str, port: u16| {
            let key = crate::kernel::ipvs::ServiceKey {
                addr: addr.parse().unwrap(),
                protocol: crate::net::Protocol::Tcp,
                port,
            };
            p.table.services.get(&key).map(|e| e.dests.len())
        };
        assert_eq!(dests("172.20.1.1", 80), Some(on_cluster_ip), "{case}");
        let node_port = dests("192.168.58.2", 30000);
        if etp.is_empty() {
            assert_eq!(node_port, None, "{case}");
        } else {
            assert_eq!(node_port, Some(on_node_port), "{case}");
        }
    }
}

/// Upstream lets the node reach a source-ranged load balancer only when its
/// primary IP (proxier.nodeIP: the Node's address, else --bind-address,
/// else loopback) is in a range (pkg/proxy/ipvs/proxier.go syncProxyRules,
/// `cidr.Contains(proxier.nodeIP)`); otherwise the VIP goes to
/// lbNoNodeAccessIPPortProtocolEntries and KUBE-IPVS-OUT-FILTER drops it.
/// Another local address inside a range does not count.
#[test]
fn the_node_reaches_a_source_ranged_load_balancer_by_its_primary_ip() {
    use super::rules::RuleConfig;
    use super::sets::Set;
    use crate::cluster::IpFamily;
    let lb = |range: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: lb, namespace: default}}\n\
             spec: {{type: LoadBalancer, clusterIP: 10.96.0.170, loadBalancerSourceRanges: [{range}],\n  \
             ports: [{{protocol: TCP, port: 80, targetPort: 8080, nodePort: 31170}}]}}\n\
             status: {{loadBalancer: {{ingress: [{{ip: 203.0.113.17}}]}}}}\n"
        )
    };
    let node = "---\napiVersion: v1\nkind: Node\nmetadata: {name: node-1}\n\
                status: {addresses: [{type: InternalIP, address: 192.168.58.2}]}\n";
    // (source range, with the Node object, the node let in)
    let cases = [
        ("192.168.58.0/24", true, true),
        ("10.1.0.0/16", true, false),
        ("192.168.58.0/24", false, false),
    ];
    for (range, with_node, allowed) in cases {
        let mut text = lb(range);
        if with_node {
            text.push_str(node);
        }
        let (state, problems) = state_from_yaml(&text, &config_for(""));
        assert!(problems.is_empty(), "{problems:?}");
        let mut n = node_for(&state);
        // A second interface whose address is inside 10.1.0.0/16.
        n.local_addresses.push(LocalAddress {
            ifname: "eth1".into(),
            addr: "10.1.2.3".parse().unwrap(),
        });
        let p = plan(&state, &n, &PlanConfig::default());
        let member = "203.0.113.17,tcp:80,203.0.113.17".to_string();
        let listed = p
            .sets
            .get(IpFamily::V4, Set::LoadBalancerSourceIp)
            .is_some_and(|m| m.contains(&member));
        let case = format!("{range}, Node object: {with_node}");
        assert_eq!(listed, allowed, "{case}");
        let rs = super::rules::ruleset(IpFamily::V4, &p.sets, &RuleConfig::default());
        let out: Vec<String> = rs
            .filter
            .chains
            .iter()
            .filter(|c| c.name == "KUBE-IPVS-OUT-FILTER")
            .flat_map(|c| c.rules.clone())
            .collect();
        let drop = "-s 203.0.113.17/32 -m ipvs --vproto 6 --vaddr 203.0.113.17 --vport 80 -j DROP";
        assert_eq!(out == [drop], !allowed, "{case}: {out:?}");
    }
}
