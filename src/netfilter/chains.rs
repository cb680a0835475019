//! Chain names, and the chains and jumps both modes write the same way.
//!
//! The names are upstream kube-proxy's (pkg/proxy/iptables/proxier.go and
//! pkg/proxy/ipvs/proxier.go), so that `iptables-save` reads the same under
//! kproxy as under kube-proxy, and so that a mode switch or a hand-over finds
//! the other side's chains by name.

use super::ruleset::{Chain, Jump};

// Chains both modes have.
pub const KUBE_SERVICES: &str = "KUBE-SERVICES";
pub const KUBE_POSTROUTING: &str = "KUBE-POSTROUTING";
pub const KUBE_MARK_MASQ: &str = "KUBE-MARK-MASQ";
pub const KUBE_FORWARD: &str = "KUBE-FORWARD";
pub const KUBE_PROXY_FIREWALL: &str = "KUBE-PROXY-FIREWALL";

// The iptables mode's own top-level chains.
pub const KUBE_EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
pub const KUBE_NODEPORTS: &str = "KUBE-NODEPORTS";

/// kubelet's chain, which upstream's iptables mode also writes when it
/// serves NodePorts on 127.0.0.1 (its localnet guard). Not kproxy's: it is
/// in no list of owned chains, so no cleanup or mode switch removes it or
/// its jumps, as upstream's CleanupLeftovers leaves it.
pub const KUBE_FIREWALL: &str = "KUBE-FIREWALL";

// The IPVS mode's own chains.
pub const KUBE_NODE_PORT: &str = "KUBE-NODE-PORT";
pub const KUBE_LOAD_BALANCER: &str = "KUBE-LOAD-BALANCER";
pub const KUBE_SOURCE_RANGES_FIREWALL: &str = "KUBE-SOURCE-RANGES-FIREWALL";
pub const KUBE_IPVS_FILTER: &str = "KUBE-IPVS-FILTER";
pub const KUBE_IPVS_OUT_FILTER: &str = "KUBE-IPVS-OUT-FILTER";

/// An empty chain whose disappearance tells that a table was flushed
/// between syncs (upstream's name, in mangle, nat and filter).
pub const CANARY: &str = "KUBE-PROXY-CANARY";

/// The iptables mode's nat chains written on every sync.
pub const IPTABLES_NAT_TOP_CHAINS: &[&str] = &[
    KUBE_SERVICES,
    KUBE_NODEPORTS,
    KUBE_POSTROUTING,
    KUBE_MARK_MASQ,
];
/// The iptables mode's filter chains (all written on every sync).
pub const IPTABLES_FILTER_TOP_CHAINS: &[&str] = &[
    KUBE_SERVICES,
    KUBE_EXTERNAL_SERVICES,
    KUBE_FORWARD,
    KUBE_NODEPORTS,
    KUBE_PROXY_FIREWALL,
];

/// Prefixes of the iptables mode's per-Service-port chains (upstream's, so
/// that chains left by kube-proxy are recognised and cleaned up too).
pub const SERVICE_CHAIN_PREFIXES: &[&str] = &[
    "KUBE-SVC-",
    "KUBE-SVL-",
    "KUBE-EXT-",
    "KUBE-FW-",
    "KUBE-SEP-",
];

pub fn is_service_chain(name: &str) -> bool {
    SERVICE_CHAIN_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// A rule argument in double quotes, as iptables-save prints comments.
pub fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

/// A top-level chain: no Service owns it, it is written whole.
pub fn top_chain(name: &str, rules: Vec<String>) -> Chain {
    Chain {
        name: name.to_string(),
        rules,
        owner: None,
    }
}

/// A jump from built-in chain `from` of `table`: `prefix` (matches that come
/// before the comment, e.g. a conntrack state), upstream's comment, target.
pub fn jump(
    table: &'static str,
    from: &'static str,
    prefix: &str,
    comment: &str,
    to: &str,
) -> Jump {
    Jump {
        table,
        from,
        rule: format!("{prefix}-m comment --comment {} -j {to}", quoted(comment)),
    }
}

pub const SERVICE_PORTALS: &str = "kubernetes service portals";
pub const POSTROUTING_RULES: &str = "kubernetes postrouting rules";
pub const FORWARDING_RULES: &str = "kubernetes forwarding rules";

/// The three jumps both modes make into their nat chains, in upstream's
/// order (each missing one is inserted at the top).
pub fn nat_jumps() -> [Jump; 3] {
    [
        jump("nat", "OUTPUT", "", SERVICE_PORTALS, KUBE_SERVICES),
        jump("nat", "PREROUTING", "", SERVICE_PORTALS, KUBE_SERVICES),
        jump(
            "nat",
            "POSTROUTING",
            "",
            POSTROUTING_RULES,
            KUBE_POSTROUTING,
        ),
    ]
}

/// The mark as the rules write it (`0x4000`).
pub fn mark_hex(mark: u32) -> String {
    format!("{mark:#x}")
}

/// KUBE-MARK-MASQ: marks a packet for masquerading in KUBE-POSTROUTING.
pub fn mark_masq(mark: u32) -> Chain {
    top_chain(
        KUBE_MARK_MASQ,
        vec![format!("-j MARK --or-mark {}", mark_hex(mark))],
    )
}

/// KUBE-POSTROUTING: `first` (the IPVS mode's loopback masquerade), then
/// masquerade what is marked.
pub fn postrouting(mark: u32, first: Option<String>) -> Chain {
    let m = mark_hex(mark);
    let mut rules: Vec<String> = first.into_iter().collect();
    rules.push(format!("-m mark ! --mark {m}/{m} -j RETURN"));
    // Clear the mark so a packet that goes through the stack again is not
    // masqueraded twice.
    rules.push(format!("-j MARK --xor-mark {m}"));
    rules.push(format!(
        "-m comment --comment {} -j MASQUERADE --random-fully",
        quoted("kubernetes service traffic requiring SNAT")
    ));
    top_chain(KUBE_POSTROUTING, rules)
}

/// KUBE-FORWARD: accept what is marked and its replies. `drop_invalid`: the
/// iptables mode drops INVALID packets first unless
/// `nf_conntrack_tcp_be_liberal` is on (an out-of-window packet would reach
/// the pod un-NATed and reset the connection); upstream's IPVS mode does not.
pub fn forward(mark: u32, drop_invalid: bool) -> Chain {
    let m = mark_hex(mark);
    let mut rules = Vec::new();
    if drop_invalid {
        rules.push("-m conntrack --ctstate INVALID -j DROP".to_string());
    }
    rules.push(format!(
        "-m comment --comment {} -m mark --mark {m}/{m} -j ACCEPT",
        quoted(FORWARDING_RULES)
    ));
    rules.push(format!(
        "-m comment --comment {} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        quoted("kubernetes forwarding conntrack rule")
    ));
    top_chain(KUBE_FORWARD, rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_chains_are_written_as_upstream_writes_them() {
        // Upstream's pkg/proxy/iptables/proxier_test.go expected filter and
        // nat tables for the default mark 0x4000.
        assert_eq!(mark_masq(0x4000).rules, ["-j MARK --or-mark 0x4000"]);
        assert_eq!(
            postrouting(0x4000, None).rules,
            [
                "-m mark ! --mark 0x4000/0x4000 -j RETURN",
                "-j MARK --xor-mark 0x4000",
                "-m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully",
            ]
        );
        assert_eq!(
            forward(0x4000, true).rules,
            [
                "-m conntrack --ctstate INVALID -j DROP",
                "-m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT",
                "-m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            ]
        );
        assert_eq!(forward(0x4000, false).rules.len(), 2);
        assert_eq!(
            nat_jumps()[2].rule,
            "-m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING"
        );
    }
}
