//! The incremental planner against planning from scratch: after every one
//! of a few hundred random changes, re-planning only the changed Services
//! gives exactly the plan `planner::plan` makes of the whole cluster,
//! including when the total crosses `LARGE_CLUSTER_ENDPOINTS` (comments on
//! every Service's rules change) and when the node changes.

use std::collections::BTreeSet;

use super::plan_cache::PlanCache;
use super::planner::{self, NodeContext};
use super::proxier_tests::{config, ip, service, slice};
use crate::cluster::*;

/// A small deterministic generator (the test must be repeatable).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

fn endpoints(rng: &mut Lcg, i: usize) -> Vec<(String, String)> {
    (0..rng.next(45))
        .map(|e| {
            let node = if rng.next(3) == 0 { "node-1" } else { "node-2" };
            (format!("10.244.{}.{}", i % 200, e + 1), node.to_string())
        })
        .collect()
}

fn put(c: &mut StaticCluster, i: usize, rng: &mut Lcg) {
    let mut svc = service(
        "ns",
        &format!("s{i}"),
        &format!("10.96.1.{}", i + 1),
        "http",
        80,
    );
    match rng.next(4) {
        0 => {
            svc.service_type = ServiceType::NodePort;
            svc.ports[0].node_port = Some(30000 + i as u16);
        }
        1 => svc.external_traffic_policy = TrafficPolicy::Local,
        _ => {}
    }
    if rng.next(3) == 0 {
        svc.external_ips = vec![ip(&format!("192.0.2.{}", i + 1))];
    }
    let eps = endpoints(rng, i);
    let eps: Vec<(&str, &str)> = eps.iter().map(|(a, n)| (a.as_str(), n.as_str())).collect();
    c.slices.remove(&svc.name);
    if !eps.is_empty() {
        c.put_slice(slice(&svc, &format!("s{i}-abc"), &eps));
    }
    c.add_service(svc);
}

fn node(addresses: &[&str]) -> NodeContext {
    NodeContext {
        name: "node-1".into(),
        addresses: addresses.iter().map(|a| ip(a)).collect(),
        ..Default::default()
    }
}

#[test]
fn replanning_the_changed_services_equals_planning_everything() {
    let cfg = config();
    let mut rng = Lcg(7);
    let mut c = StaticCluster::default();
    for i in 0..40 {
        put(&mut c, i, &mut rng);
    }
    let mut ctx = node(&["10.0.1.1"]);
    let mut cache = PlanCache::default();
    cache.plan(&c, &ctx, &cfg, IpFamily::V4, None);
    let mut large_seen = BTreeSet::new();
    for step in 0..200 {
        let i = rng.next(70);
        let name = ServiceName::new("ns", format!("s{i}"));
        match rng.next(10) {
            0 => {
                c.services.remove(&name);
                c.slices.remove(&name);
            }
            1 => ctx = node(&["10.0.1.1", &format!("10.0.2.{}", rng.next(3) + 1)]),
            _ => put(&mut c, i, &mut rng),
        }
        let got = cache.plan(&c, &ctx, &cfg, IpFamily::V4, Some(&BTreeSet::from([name])));
        let want = planner::plan(&c, &ctx, &cfg, IpFamily::V4);
        assert_eq!(got.ruleset, want.ruleset, "step {step}");
        assert_eq!(got.problems, want.problems, "step {step}");
        assert_eq!(got.services, want.services, "step {step}");
        assert_eq!(
            got.no_local_endpoints, want.no_local_endpoints,
            "step {step}"
        );
        let comments = want.ruleset.nat.chains.iter().any(|ch| {
            ch.name.starts_with("KUBE-SEP-") && ch.rules.iter().any(|r| r.contains("--comment"))
        });
        large_seen.insert(!comments);
    }
    // Both sides of the comment policy were crossed.
    assert_eq!(large_seen.len(), 2, "{large_seen:?}");
}
