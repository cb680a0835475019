#!/usr/bin/env bash
# Shared helpers for the end-to-end kernel tests (run inside the VM, each
# script in a network namespace of its own, so every script starts with an
# empty IPVS table and no links but lo).
set -euo pipefail

KPROXY=${KPROXY:-target/debug/kproxy}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=$(mktemp -d /tmp/kproxy-it.XXXXXX)
# Each test is a "node" in a network namespace of its own, where
# nf_conntrack_max is read-only: as upstream, kproxy refuses to start when
# it cannot set it, so, as kind configures kube-proxy on such nodes, the
# tests run it with conntrack max-per-core 0 (leave nf_conntrack_max
# alone). KPROXY is that command; KPROXY_BIN the binary itself
# (integration/conntrack.sh tests the conntrack settings with it, in the
# VM's initial namespace). A test that passes --config sets
# conntrack.maxPerCore: 0 in its file instead.
KPROXY_BIN=$(realpath -m "$KPROXY")
KPROXY=$WORK/kproxy
printf '#!/bin/sh\nexec %q --conntrack-max-per-core=0 "$@"\n' "$KPROXY_BIN" >"$KPROXY"
chmod +x "$KPROXY"
# Debian's interpreter: a version manager's shim costs seconds per start
# under the emulated CPU.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
export PY
DAEMON_PID=

# shellcheck source=base.sh
. "$ROOT/integration/lib/base.sh"

cleanup_test() {
  if [ -n "$DAEMON_PID" ]; then kill "$DAEMON_PID" 2>/dev/null || true; wait "$DAEMON_PID" 2>/dev/null || true; fi
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    case $ns in kp-*) ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true; ip netns del "$ns" ;; esac
  done
}
trap cleanup_test EXIT

# The "node": lo, a dummy uplink with 192.168.58.2 and fd00:58::2, a default
# route (without one, connect() to a ClusterIP fails before IPVS sees it).
setup_node() {
  modprobe ip_vs 2>/dev/null || true
  ip link set lo up
  ip link add node0 type dummy
  ip addr add 192.168.58.2/24 dev node0
  ip -6 addr add fd00:58::2/64 dev node0 nodad
  ip link set node0 up
  ip route add default via 192.168.58.1 dev node0 onlink
  ip -6 route add default via fd00:58::1 dev node0 onlink 2>/dev/null || true
  sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
}

# add_pod NAME IPV4 [IPV6]: a namespace "pod" answering HTTP with its name,
# on $POD_PORT (8080 unless set).
add_pod() {
  local name=$1 ip4=$2 ip6=${3:-} ns="kp-$1" veth="v-$1"
  ip netns add "$ns"
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" up
  # The pod's routes are on-link; like Calico's host-side veths, the node
  # answers ARP for every address it routes (other hosts' clients included),
  # not only for its own.
  sysctl -qw "net.ipv4.conf.$veth.proxy_arp=1"
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$ip4/32" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default dev eth0
  ip route add "$ip4/32" dev "$veth"
  if [ -n "$ip6" ]; then
    # Linux answers neighbour solicitations only for addresses on the
    # receiving link, so the pod needs a gateway the node owns on the veth
    # (for IPv4, ARP answers for any local address).
    ip -6 addr add fe80::1/64 dev "$veth" nodad
    ip -n "$ns" -6 addr add "$ip6/128" dev eth0 nodad
    ip -n "$ns" -6 route add default via fe80::1 dev eth0
    ip -6 route add "$ip6/128" dev "$veth"
  fi
  mkdir -p "$WORK/www-$name"
  echo "$name" > "$WORK/www-$name/index.html"
  ip netns exec "$ns" busybox httpd -p "${POD_PORT:-8080}" -h "$WORK/www-$name"
}

# ipvsadm -Ln without the version line, each virtual server's real servers
# sorted and counters zeroed: comparable with kproxy's own rendering.
ipvs_table() {
  ipvsadm -Ln | tail -n +2 | "$PY" -c '
import sys, re
lines = sys.stdin.read().splitlines()
head, body = lines[:2], lines[2:]
blocks, cur = [], None
for l in body:
    if l.startswith("  ->"):
        l = re.sub(r"^(  -> \S+\s+\S+\s+\S+\s+)\S+(\s+)\S+(\s*)$", lambda m: m.group(1) + "0" + m.group(2) + "0" + m.group(3), l)
        cur[1].append(l)
    else:
        cur = (l, []); blocks.append(cur)
order = {"TCP": 0, "UDP": 1, "SCTP": 2}
import ipaddress
def key(b):
    proto, rest = b[0].split(None, 1)
    addr = rest.split()[0]
    host, port = addr.rsplit(":", 1)
    ip = ipaddress.ip_address(host.strip("[]"))
    return (order.get(proto, 9), ip.version, ip, int(port))
def dkey(l):
    host, port = l.split()[1].rsplit(":", 1)
    ip = ipaddress.ip_address(host.strip("[]"))
    return (ip.version, ip, int(port))
for l in head: print(l)
for s, ds in sorted(blocks, key=key):
    print(s)
    for d in sorted(ds, key=dkey): print(d)
'
}

# Addresses on kube-ipvs0, sorted like kproxy prints them.
ipvs0_addrs() {
  ip -o addr show dev kube-ipvs0 2>/dev/null | awk '{print $4}' | sed 's|/.*||' \
    | "$PY" -c 'import sys, ipaddress; a=[ipaddress.ip_address(l.strip()) for l in sys.stdin if l.strip()]; print(" ".join(str(x) for x in sorted(a, key=lambda x: (x.version, x))))'
}

# snapshot_kernel: what a proxy (kproxy or upstream kube-proxy) programmed,
# normalised for comparing the two: ipvsadm -Ln (ipvs_table), kube-ipvs0's
# addresses, the KUBE-* ipsets (random seeds out) and their members, and
# the KUBE-* chains and rules of both families (counters out; rules stay in
# their chain's order).
snapshot_kernel() {
  echo "--- ipvsadm -Ln"
  # (ipvsadm pads its last column to the width of the counters it zeroed)
  ipvs_table | tail -n +3 | sed 's/ *$//'
  echo "--- kube-ipvs0: $(ipvs0_addrs)"
  echo "--- ipsets"
  ipset save | awk '$1 == "create" && $2 ~ /^KUBE-/' |
    sed -E 's/ (initval|bucketsize) [0-9a-fx]+//g' | LC_ALL=C sort
  ipset save | awk '$1 == "add" && $2 ~ /^KUBE-/' | LC_ALL=C sort
  local cmd t
  for cmd in iptables-save ip6tables-save; do
    echo "--- $cmd"
    for t in nat filter mangle; do
      "$cmd" -t "$t" 2>/dev/null | awk -v t="$t" '/^:KUBE-/ { print t, $1 } /^-A / && /KUBE-/ { print t, $0 }'
    done | LC_ALL=C sort -s -k1,1 -k3,3
  done
}

# start_daemon MANIFEST_DIR [FLAGS...]: kproxy in the background, log in $WORK/kproxy.log.
start_daemon() {
  local dir=$1; shift
  "$KPROXY" --manifests "$dir" --hostname-override node-1 --healthz-bind-address "" \
    --metrics-bind-address "" "$@" >"$WORK/kproxy.log" 2>&1 &
  DAEMON_PID=$!
}

stop_daemon() {
  if [ -n "$DAEMON_PID" ]; then kill "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true; DAEMON_PID=; fi
}

# hits URL N: N requests (fresh connection each), one answer per line.
hits() {
  local url=$1 n=$2 i
  for i in $(seq "$n"); do curl -s -m 5 "$url" || echo "no-answer"; done
}

# A ready endpoint block for an EndpointSlice.
ep() { echo "- {addresses: [\"$1\"], conditions: {ready: true}, nodeName: ${2:-node-1}}"; }

# service_manifest NAME CLUSTER_IP PORT TARGET_PORT [ENDPOINT_IP...]: a TCP
# Service and its EndpointSlice, as YAML on stdout. NODE_PORT makes it a
# NodePort Service, AFFINITY sets sessionAffinity, FAMILY=IPv6 an IPv6 one.
service_manifest() {
  local name=$1 ip=$2 port=$3 target=$4 type=ClusterIP np="" e
  shift 4
  if [ -n "${NODE_PORT:-}" ]; then type=NodePort np=", nodePort: $NODE_PORT"; fi
  cat <<YAML
apiVersion: v1
kind: Service
metadata: {name: $name, namespace: default}
spec:
  type: $type
  clusterIP: "$ip"
  ipFamilies: [${FAMILY:-IPv4}]
  sessionAffinity: ${AFFINITY:-None}
  selector: {app: $name}
  ports: [{protocol: TCP, port: $port, targetPort: $target$np}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: $name-1, namespace: default, labels: {kubernetes.io/service-name: $name}}
addressType: ${FAMILY:-IPv4}
ports: [{name: "", protocol: TCP, port: $target}]
endpoints:
YAML
  for e in "$@"; do ep "$e"; done
}
