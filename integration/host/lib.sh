# shellcheck shell=bash
# Shared helpers for the host end-to-end tests (integration/host/*.sh).
#
# scripts/host-e2e.sh runs each script in fresh network + mount namespaces
# on this host's kernel (iptables, veth and netns work here; IPVS and dummy
# links do not), so a script may do anything to "its" node: it starts its
# own etcd + kube-apiserver on its own loopback (integration/lib/api.sh),
# makes pods out of further namespaces, and runs kproxy (or upstream
# kube-proxy) as an operator would. Never source this outside such a
# namespace: host_guard refuses.
#
# The namespace's layout (the "node"):
#
#   client netns kp-client  192.168.58.1 ──veth── uplink0 192.168.58.2  (the node's address)
#   pod netns kp-NAME       10.244.N.2   ──veth── v-NAME  10.244.N.1    (one /24 per pod)
#
# The node's default route goes to the client, so the client is "the rest
# of the network": NodePort and load-balancer traffic comes from it.
set -euo pipefail

HOST_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KPROXY=$(realpath -m "${KPROXY:-$HOST_ROOT/target/debug/kproxy}")
# shellcheck source=../lib/api.sh
. "$HOST_ROOT/integration/lib/api.sh"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kproxy-host.XXXXXX")
NODE_IP=192.168.58.2
CLIENT_IP=192.168.58.1
KPROXY_PID=
KPROXY_LOG=$WORK/kproxy.log
# What both proxies need in a network namespace, as under kind:
# nf_conntrack_max is global, read-only outside the initial namespace, and
# both refuse to start when they cannot set it; 0 leaves it alone.
NETNS_FLAGS=(--conntrack-max-per-core=0)
PODS=()

# check DESCRIPTION CMD...: one assertion, printed when it holds.
check() {
  local what=$1
  shift
  "$@" || fail "$what"
  echo "ok - $what"
}

host_cleanup() {
  local rc=$?
  # Tear everything down even if a step fails.
  set +e
  stop_kproxy
  if [ -n "${UPSTREAM_PID:-}" ]; then stop_upstream; fi
  local ns
  for ns in "${PODS[@]}" kp-client; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  # Every API server on this DIR's etcd (a second one included), and etcd.
  if [ -n "$API_DIR" ]; then api_stop_local 2>/dev/null || true; fi
  if [ "$rc" != 0 ]; then
    # What a failure needs to be understood.
    for f in "$WORK"/*.log; do
      [ -s "$f" ] || continue
      echo "--- last lines of $f" >&2
      tail -n 40 "$f" >&2
    done
    [ -n "$API_DIR" ] && [ -f "$API_DIR/apiserver.log" ] && {
      echo "--- last lines of $API_DIR/apiserver.log" >&2
      tail -n 15 "$API_DIR/apiserver.log" >&2
    }
  fi
  # HOST_TEST_KEEP=DIR: keep the logs (kproxy's, the API servers') there.
  if [ -n "${HOST_TEST_KEEP:-}" ]; then
    mkdir -p "$HOST_TEST_KEEP"
    cp "$WORK"/*.log "$HOST_TEST_KEEP"/ 2>/dev/null || true
    [ -z "$API_DIR" ] || cp "$API_DIR"/*.log "$HOST_TEST_KEEP"/ 2>/dev/null || true
  fi
  [ -n "$API_DIR" ] && rm -rf "$API_DIR"
  rm -rf "$WORK"
  exit "$rc"
}

# Refuse to run anywhere but in a namespace made for the test: only lo, no
# iptables rules. Then make it a node.
host_guard() {
  local links
  links=$(ip -o link show | awk -F': ' '{print $2}')
  [ "$links" = lo ] || fail "not a fresh network namespace (links: $(echo "$links" | tr '\n' ' ')); run through scripts/host-e2e.sh"
  if iptables-save 2>/dev/null | grep -q '^-A'; then
    fail "this namespace already has iptables rules; run through scripts/host-e2e.sh"
  fi
  [ -x "$KPROXY" ] || fail "no kproxy binary at $KPROXY (cargo build)"
  trap host_cleanup EXIT
}

# The node: lo, an uplink to the client namespace, forwarding on.
setup_node() {
  ip link set lo up
  sysctl -qw net.ipv4.ip_forward=1
  ip netns add kp-client
  ip link add uplink0 type veth peer name eth0 netns kp-client
  ip addr add "$NODE_IP/24" dev uplink0
  ip link set uplink0 up
  ip -n kp-client link set lo up
  ip -n kp-client addr add "$CLIENT_IP/24" dev eth0
  ip -n kp-client link set eth0 up
  ip route add default via "$CLIENT_IP" dev uplink0
}

# add_pod NAME N: a pod at 10.244.N.2 serving HTTP on 8080; GET /id answers
# NAME. Waits until the node reaches it.
add_pod() {
  local name=$1 n=$2 ns=kp-$1 veth=v-$1 ip=10.244.$2.2
  ip netns add "$ns"
  PODS+=("$ns")
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip addr add "10.244.$n.1/24" dev "$veth"
  ip link set "$veth" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "10.244.$n.1"
  mkdir -p "$WORK/www-$name"
  printf '%s' "$name" >"$WORK/www-$name/id"
  ip netns exec "$ns" busybox httpd -p 8080 -h "$WORK/www-$name"
  wait_for 10 "pod $name answers" curl -sf -m 2 "http://$ip:8080/id"
}

# ms: milliseconds since the epoch (for figures only, never asserted on).
ms() { date +%s%3N; }

# get URL [NETNS]: the body of one request (fresh connection), or nothing.
get() {
  if [ -n "${2:-}" ]; then
    ip netns exec "$2" curl -s -m 3 "$1" 2>/dev/null || true
  else
    curl -s -m 3 "$1" 2>/dev/null || true
  fi
}

# answered_by URL WANT [NETNS]: 30 requests; exactly the pods WANT
# ("a b", sorted) answer, and none goes unanswered.
answered_by() {
  local url=$1 want=$2 ns=${3:-} got body
  got=$(for _ in $(seq 30); do
    body=$(get "$url" "$ns")
    echo "${body:-NO-ANSWER}"
  done | sort -u | tr '\n' ' ' | sed 's/ $//')
  [ "$got" = "$want" ] || {
    echo "  $url: answered by [$got], want [$want]" >&2
    return 1
  }
}

# start_kproxy FLAGS...: the daemon as an operator runs it; log in $KPROXY_LOG.
start_kproxy() {
  "$KPROXY" "$@" >>"$KPROXY_LOG" 2>&1 &
  KPROXY_PID=$!
}

stop_kproxy() {
  if [ -n "$KPROXY_PID" ]; then
    kill "$KPROXY_PID" 2>/dev/null || true
    wait "$KPROXY_PID" 2>/dev/null || true
    KPROXY_PID=
  fi
}

kproxy_alive() { [ -n "$KPROXY_PID" ] && kill -0 "$KPROXY_PID" 2>/dev/null; }

# nat_rules: the nat table's rules (no counters, no header or timestamps).
nat_rules() { iptables-save -t nat | grep -E '^(-A|:)' | sed 's/ \[[0-9]*:[0-9]*\]$//'; }

# kube_chains: every KUBE-* chain in every table, "table chain" per line.
kube_chains() {
  local t
  for t in nat filter mangle raw; do
    iptables-save -t "$t" 2>/dev/null | awk -v t="$t" '/^:KUBE-/ {print t, substr($1, 2)}'
  done
}

# svc_chain NS/NAME:PORT PROTO: the KUBE-SVC-* chain KUBE-SERVICES jumps to
# for that Service port (found through its comment, as an operator would).
svc_chain() {
  iptables-save -t nat | awk -v c="\"$1 cluster IP\"" '
    $1 == "-A" && $2 == "KUBE-SERVICES" && index($0, "--comment " c) {
      for (i = 1; i <= NF; i++) if ($i == "-j") print $(i + 1)
    }' | head -n 1
}

# sep_count CHAIN: how many KUBE-SEP-* jumps a KUBE-SVC-* chain has.
sep_count() { iptables-save -t nat | awk -v c="$1" '$1 == "-A" && $2 == c && / -j KUBE-SEP-/' | wc -l; }

# Kubernetes objects, as the EndpointSlice controller and users write them.

# service NAME CLUSTER_IP [TYPE [NODE_PORT]]: a TCP Service, port 80 → 8080,
# in namespace e2e.
service() {
  local name=$1 ip=$2 type=${3:-ClusterIP} np=${4:-}
  kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: {name: $name, namespace: e2e}
spec:
  type: $type
  clusterIP: $ip
  selector: {app: $name}
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080${np:+, nodePort: $np}}]
YAML
}

# slice NAME SERVICE ENDPOINT...: an EndpointSlice for SERVICE; each
# ENDPOINT is IP (ready) or IP:notready.
slice() {
  local name=$1 svc=$2 e ip ready
  shift 2
  {
    cat <<YAML
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: $name, namespace: e2e, labels: {kubernetes.io/service-name: $svc}}
addressType: IPv4
ports: [{name: http, protocol: TCP, port: 8080}]
YAML
    [ $# -gt 0 ] && echo "endpoints:" || echo "endpoints: []"
    for e in "$@"; do
      ip=${e%%:*} ready=true
      [ "$e" = "$ip" ] || ready=false
      echo "- {addresses: [\"$ip\"], conditions: {ready: $ready, serving: $ready, terminating: false}, nodeName: node-1}"
    done
  } | kubectl apply -f - >/dev/null
}

api_namespace() { kubectl create namespace "$1" >/dev/null; }

# host_node: the Node object for node-1, with the address kubelet would
# report (upstream kube-proxy waits up to 30 s for a Node with addresses).
host_node() {
  api_node node-1
  kubectl patch node node-1 --subresource=status --type=merge \
    -p "{\"status\":{\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"$NODE_IP\"},{\"type\":\"Hostname\",\"address\":\"node-1\"}]}}" >/dev/null
}

# kproxy's /healthz body, and its HTTP status on the last line.
healthz() { curl -s -m 3 -w '\n%{http_code}\n' "http://127.0.0.1:10256/healthz"; }

# Upstream kube-proxy, for expected outputs: same node, same objects.
UPSTREAM_PID=
UPSTREAM_LOG=$WORK/kube-proxy.log
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

# start_upstream FLAGS...: kube-proxy (scripts/k8s-tools' build of upstream)
# as cluster-admin, with $NETNS_FLAGS.
start_upstream() {
  kube-proxy --kubeconfig="$API_DIR/admin.kubeconfig" --hostname-override=node-1 \
    "${NETNS_FLAGS[@]}" "$@" >>"$UPSTREAM_LOG" 2>&1 &
  UPSTREAM_PID=$!
}

stop_upstream() {
  if [ -n "$UPSTREAM_PID" ]; then
    kill "$UPSTREAM_PID" 2>/dev/null || true
    wait "$UPSTREAM_PID" 2>/dev/null || true
    UPSTREAM_PID=
  fi
}

# metric NAME: an unlabelled metric, or its ip_family="IPv4" series
# (upstream labels the sync timestamps by family), from 127.0.0.1:10249.
metric() {
  curl -s -m 3 http://127.0.0.1:10249/metrics |
    awk -v n="$1" '$1 == n || $1 == n "{ip_family=\"IPv4\"}" {print $2; exit}'
}

# synced_since T: a sync was queued at or after T (epoch seconds, as from
# `date +%s.%N`) and a sync has completed since then: every change made
# before T has been seen and applied. The same for kube-proxy and kproxy
# (kproxy keeps upstream's metric names).
synced_since() {
  local q s
  q=$(metric kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds)
  s=$(metric kubeproxy_sync_proxy_rules_last_timestamp_seconds)
  [ -n "$q" ] && [ -n "$s" ] || return 1
  awk -v t="$1" -v q="$q" -v s="$s" 'BEGIN { exit !(q + 0 >= t + 0 && s + 0 >= q + 0) }'
}

# ipt_compare EXPECTED ACTUAL: compare two iptables-save outputs chain by
# chain, for what a proxy owns: every KUBE-* chain (declared, and its rules)
# and the jumps to them from the built-in chains, in the mangle, filter and
# nat tables. Counters and iptables-save's header and timestamps are
# dropped. Rules of the chains whose order is the Services' iteration order
# (KUBE-SERVICES, KUBE-NODEPORTS, KUBE-EXTERNAL-SERVICES,
# KUBE-PROXY-FIREWALL) are compared sorted, except that KUBE-SERVICES'
# jump to KUBE-NODEPORTS must be last in both; every other chain (KUBE-SVC-*
# with its probabilities, KUBE-SEP-*, KUBE-EXT-*, KUBE-POSTROUTING, ...) in
# order. Two upstream behaviours kproxy does not have by design are not
# counted, and are printed as "known difference" lines when they occur:
#   - KUBE-FIREWALL (filter): kubelet's chain, which kube-proxy duplicates
#     and never removes (a test that needs it compares it on its own);
#   - `-m nfacct --nfacct-name NAME`: upstream's packet counters for its
#     metrics (nfnetlink_acct); kproxy has no nfacct counters. The match is
#     dropped, and so is the rule that exists only to count: KUBE-NODEPORTS'
#     per-NodePort `-d 127.0.0.0/8 ... localhost_nps_accepted_pkts`, which
#     upstream writes only when that counter exists (the rule after it
#     takes the same packets).
# Prints every other difference; exit status 1 if there is one.
ipt_compare() {
  "$PY" - "$1" "$2" <<'PY'
import re, sys

SORTED = {"KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-EXTERNAL-SERVICES", "KUBE-PROXY-FIREWALL"}
TAIL = "kubernetes service nodeports; NOTE: this must be the last rule in this chain"
known = set()

def parse(path, who):
    chains, table = {}, None
    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            name, policy = line[1:].split()[:2]
            if name.startswith("KUBE-"):
                if name == "KUBE-FIREWALL":
                    known.add(f"kubelet's KUBE-FIREWALL chain (filter) is in {who}'s rules (not compared)")
                    continue
                chains.setdefault((table, name), [])
        elif line.startswith("-A "):
            _, chain, rest = line.split(" ", 2)
            if "KUBE-FIREWALL" in (chain, rest.split()[-1]):
                continue
            if re.search(r"--nfacct-name +localhost_nps_accepted_pkts ", rest):
                known.add(f"{who} counts localhost NodePort packets with a rule of their own in {table} {chain} (not compared)")
                continue
            stripped = re.sub(r"-m nfacct --nfacct-name +\S+ ", "", rest)
            if stripped != rest:
                known.add(f"{who} counts packets with nfacct: -m nfacct --nfacct-name " + " ".join(
                    sorted(set(re.findall(r"--nfacct-name +(\S+)", rest)))) + f" in {table} {chain} (not compared)")
            if chain.startswith("KUBE-"):
                chains.setdefault((table, chain), []).append(stripped)
            elif " -j KUBE-" in " " + stripped:
                chains.setdefault((table, chain), []).append(stripped)
    return chains

exp, act = parse(sys.argv[1], "upstream"), parse(sys.argv[2], "kproxy")
problems = []
for key in sorted(set(exp) | set(act)):
    table, chain = key
    if key not in act:
        problems.append(f"{table} {chain}: only upstream has it ({len(exp[key])} rules)")
        for r in exp[key]:
            problems.append(f"    upstream: -A {chain} {r}")
        continue
    if key not in exp:
        problems.append(f"{table} {chain}: only kproxy has it ({len(act[key])} rules)")
        for r in act[key]:
            problems.append(f"    kproxy:   -A {chain} {r}")
        continue
    e, a = exp[key], act[key]
    if chain == "KUBE-SERVICES" and table == "nat":
        for who, rules in (("upstream", e), ("kproxy", a)):
            if any(TAIL in r for r in rules) and TAIL not in rules[-1]:
                problems.append(f"{table} {chain}: {who}'s jump to KUBE-NODEPORTS is not the last rule")
    if chain in SORTED:
        e, a = sorted(e), sorted(a)
    if e == a:
        continue
    problems.append(f"{table} {chain}:")
    if chain in SORTED:
        for r in sorted(set(e) - set(a)):
            problems.append(f"    only upstream: -A {chain} {r}")
        for r in sorted(set(a) - set(e)):
            problems.append(f"    only kproxy:   -A {chain} {r}")
    else:
        import difflib
        for d in list(difflib.unified_diff(e, a, "upstream", "kproxy", lineterm="", n=1))[2:]:
            problems.append("    " + d)
for k in sorted(known):
    print("known difference: " + k)
if problems:
    print("\n".join(problems))
    sys.exit(1)
n = sum(len(v) for v in exp.values())
print(f"identical: {len(exp)} chains, {n} rules")
PY
}
