#!/usr/bin/env bash
# IPVS mode's ipsets and iptables rules, with real packets: NodePort traffic
# from another host is masqueraded (externalTrafficPolicy Cluster) or keeps
# the client's address (Local); a pod reaching itself through its Service
# gets an answer (hairpin masquerade); a kube-ipvs0 address does not expose
# the node's own listeners; load-balancer source ranges let one client in
# and drop another; an unchanged cluster costs no kernel change; --cleanup
# removes every set and chain kproxy made and nothing of the operator's.
source "$(dirname "$0")/lib/common.sh"
setup_node
add_pod pod1 10.244.1.1
# Clients on "other hosts": namespaces routed through the node like pods.
add_pod client1 192.168.100.2
add_pod client2 192.168.100.3
# The pod answers /cgi-bin/ip with the source address it sees.
mkdir -p "$WORK/www-pod1/cgi-bin"
printf '#!/bin/sh\necho "Content-Type: text/plain"\necho\necho "$REMOTE_ADDR"\n' > "$WORK/www-pod1/cgi-bin/ip"
chmod +x "$WORK/www-pod1/cgi-bin/ip"
# Something of the node's own listening on every address, port 9999.
mkdir -p "$WORK/www-node"; echo node > "$WORK/www-node/index.html"
busybox httpd -p 9999 -h "$WORK/www-node"

M=$WORK/manifests; mkdir -p "$M"
svc() { # NAME CLUSTER_IP NODE_PORT TYPE EXTRA_SPEC [STATUS]
  cat <<YAML
---
apiVersion: v1
kind: Service
metadata: {name: $1, namespace: default}
spec:
  type: $4
  clusterIP: $2
  selector: {app: $1}
  ports: [{protocol: TCP, port: 80, targetPort: 8080, nodePort: $3}]
$5
${6:-}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: $1-1, namespace: default, labels: {kubernetes.io/service-name: $1}}
addressType: IPv4
ports: [{name: "", protocol: TCP, port: 8080}]
endpoints:
$(ep 10.244.1.1)
YAML
}
{
  svc web 10.96.0.10 30080 NodePort "  externalTrafficPolicy: Cluster"
  svc local 10.96.0.11 30081 NodePort "  externalTrafficPolicy: Local"
  svc lb 10.96.0.12 30082 LoadBalancer "  loadBalancerSourceRanges: [192.168.100.2/32]" \
    "status: {loadBalancer: {ingress: [{ip: 203.0.113.10}]}}"
} > "$M/services.yaml"

in_ns() { local ns=$1; shift; ip netns exec "kp-$ns" "$@"; }
# The pod's view of the client address (busybox serves IPv4 clients on an
# IPv6 socket: [::ffff:a.b.c.d]).
seen_by_pod() {
  local out
  out=$(in_ns "$1" curl -sf -m 5 "$2/cgi-bin/ip") || { dump_state; return 1; }
  echo "$out" | sed 's/^\[::ffff:\(.*\)\]$/\1/'
}
dump_state() {
  { echo "--- ipvsadm -Ln --stats"; ipvsadm -Ln --stats
    echo "--- ipvsadm -Lnc"; ipvsadm -Lnc
    echo "--- iptables-save -c"; iptables-save -c
    echo "--- conntrack -L"; conntrack -L 2>&1
    echo "--- kproxy log"; tail -20 "$WORK/kproxy.log"; } >&2
}

# ipsets go over netlink: an `ipset` first on PATH only records that it ran.
mkdir -p "$WORK/shim"
printf '#!/bin/sh\necho "$*" >>%q\nexit 1\n' "$WORK/ipset-calls" >"$WORK/shim/ipset"
chmod +x "$WORK/shim/ipset"
PLAIN_PATH=$PATH
export PATH="$WORK/shim:$PATH"
start_daemon "$M" --ipvs-sync-period 5s
wait_for 60 "NodePort answers" in_ns client1 curl -sf -m 2 http://192.168.58.2:30080/
wait_for 30 "rules in place" sh -c 'iptables-save -t nat | grep -q "KUBE-LOOP-BACK dst,dst,src -j MASQUERADE"'

src=$(seen_by_pod client1 http://192.168.58.2:30080) || fail "NodePort (Cluster policy): no answer"
[ -n "$src" ] && [ "$src" != 192.168.100.2 ] \
  || fail "externalTrafficPolicy Cluster: the pod saw '$src', not a masqueraded address"
log "Cluster policy: the pod saw $src"
src=$(seen_by_pod client1 http://192.168.58.2:30081) || fail "NodePort (Local policy): no answer"
[ "$src" = 192.168.100.2 ] || fail "externalTrafficPolicy Local: the pod saw '$src', not the client"
log "Local policy: the pod saw the client, $src"

src=$(seen_by_pod pod1 http://10.96.0.10) || fail "hairpin: the pod got no answer from its own Service"
log "hairpin: the pod reached itself, seen as $src"

in_ns client1 curl -sf -m 5 http://192.168.58.2:9999/ >/dev/null || fail "the node's own listener is not reachable at all"
rc=0; in_ns client1 curl -s -m 5 -o /dev/null http://10.96.0.10:9999/ || rc=$?
[ "$rc" = 7 ] || fail "a Service VIP on a port no Service serves was not refused (curl exit $rc)"
log "kube-ipvs0 filter: 10.96.0.10:9999 refused, the listener stays private"

in_ns client1 curl -sf -m 5 http://203.0.113.10/ >/dev/null || fail "source ranges: the allowed client was not let in"
rc=0; in_ns client2 curl -s -m 3 -o /dev/null http://203.0.113.10/ || rc=$?
[ "$rc" = 28 ] || fail "source ranges: a client outside them was not dropped (curl exit $rc)"
log "source ranges: 192.168.100.2 in, 192.168.100.3 dropped"

stop_daemon
"$KPROXY" --once --manifests "$M" --hostname-override node-1 -v 2 >"$WORK/once.log" 2>&1 \
  || { cat "$WORK/once.log"; fail "kproxy --once failed"; }
ops=$(sed -n 's/.* ops=\([0-9]*\).*/\1/p' "$WORK/once.log" | tail -1)
[ "$ops" = 0 ] || { grep -i "writing\|ops" "$WORK/once.log" | tail -20; fail "an unchanged cluster cost $ops kernel changes"; }
export PATH=$PLAIN_PATH
[ ! -e "$WORK/ipset-calls" ] || fail "kproxy ran the ipset program: $(head -3 "$WORK/ipset-calls")"

ipset create OPERATOR-SET hash:ip; ipset add OPERATOR-SET 10.9.9.9
iptables -N OPERATOR; iptables -A INPUT -j OPERATOR
"$KPROXY" --cleanup --hostname-override node-1 >"$WORK/cleanup.log" 2>&1 \
  || { cat "$WORK/cleanup.log"; fail "kproxy --cleanup reported errors"; }
[ "$(ipset list -n)" = OPERATOR-SET ] || fail "sets left after cleanup: $(ipset list -n | tr '\n' ' ')"
! iptables-save | grep -q KUBE- || fail "KUBE- rules left after cleanup: $(iptables-save | grep KUBE- | head -5)"
iptables-save | grep -q -- "-A INPUT -j OPERATOR" || fail "cleanup removed the operator's rule"
echo "ok companions: masquerade, Local source kept, hairpin, VIP filter, source ranges, no-op resync, no ipset process, cleanup"
