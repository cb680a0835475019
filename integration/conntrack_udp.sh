#!/usr/bin/env bash
# Stale UDP conntrack entries, in both modes, as upstream's CleanStaleEntries
# (pkg/proxy/conntrack/cleanup.go) removes them: a client that sends every
# datagram from one fixed source port to a ClusterIP keeps one conntrack
# entry, which pins it to the pod that answered first (pod A). A leaves the
# EndpointSlice while it is still up and answering; once kproxy has synced,
# the very next datagram from the same port is answered by pod B, because
# kproxy deleted the entry to A. Without that, the entry (checked below to
# exist, with A as its reply source) would keep the flow on A until the UDP
# timeout. The conntrack tool is only used to look.
source "$(dirname "$0")/lib/common.sh"
setup_node
UDP="$ROOT/integration/lib/udpname.py"
for i in 1 2; do
  add_pod "pod$i" "10.244.1.$i"
  ip netns exec "kp-pod$i" "$PY" "$UDP" serve "pod$i" 5353 &
done

M=$WORK/manifests; mkdir -p "$M"
write() { # POD_SUFFIXES
  local e
  {
    cat <<YAML
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: default}
spec:
  clusterIP: 10.96.0.10
  selector: {app: dns}
  ports: [{name: dns, protocol: UDP, port: 53, targetPort: 5353}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: dns-1, namespace: default, labels: {kubernetes.io/service-name: dns}}
addressType: IPv4
ports: [{name: dns, protocol: UDP, port: 5353}]
endpoints:
YAML
    for e in $1; do ep "10.244.1.$e"; done
  } > "$M/dns.yaml.tmp"
  mv "$M/dns.yaml.tmp" "$M/dns.yaml"
}
ask() { "$PY" "$UDP" ask 10.96.0.10 53 "$1"; }
# What the kernel holds, for a failure's message.
state() {
  echo "conntrack:"; conntrack -L 2>&1
  echo "net.ipv4.vs.conntrack=$(cat /proc/sys/net/ipv4/vs/conntrack 2>&1)"
  ipvsadm -Ln 2>&1; grep -i "conntrack" "$WORK/kproxy.log" | grep -v "h2::\|hyper" | tail -12; tail -5 "$WORK/kproxy.log"
}
# Every failure shows that state.
fail() {
  echo "FAIL: $*" >&2
  state | sed 's/^/#   /' >&2
  exit 1
}
# The reply source of the entry for client port $1, e.g. 10.244.1.2.
reply_src() {
  conntrack -L -p udp --orig-dst 10.96.0.10 --sport "$1" 2>/dev/null \
    | grep -o 'src=[^ ]*' | sed -n 2p | cut -d= -f2
}

run() { # MODE CLIENT_PORT
  local mode=$1 port=$2 first a b got i
  write "1 2"
  start_daemon "$M" --proxy-mode="$mode" -v=4
  # Conntrack tracks this namespace's packets once a NAT rule exists in it:
  # a flow that began before the first sync's rules would have no entry.
  wait_for 60 "$mode: the first sync" grep -q "sync done" "$WORK/kproxy.log"
  wait_for 60 "$mode: the ClusterIP answers over UDP" sh -c "[ \"\$('$PY' '$UDP' ask 10.96.0.10 53 $((port + 1)))\" != no-answer ]"
  first=$(ask "$port")
  case $first in pod1) a=1 b=2 ;; pod2) a=2 b=1 ;; *) fail "$mode: first datagram answered by '$first'" ;; esac
  for i in 1 2 3; do
    got=$(ask "$port")
    [ "$got" = "pod$a" ] || fail "$mode: datagram $i from port $port reached '$got', not pod$a"
  done
  [ "$(reply_src "$port")" = "10.244.1.$a" ] \
    || fail "$mode: no conntrack entry from port $port to pod$a"
  log "$mode: port $port is pinned to pod$a by its conntrack entry: $(conntrack -L -p udp --sport "$port" 2>/dev/null)"
  local cleaned synced line
  cleaned=$(grep -c "cleaned conntrack entries" "$WORK/kproxy.log" || true)
  synced=$(grep -c "sync done" "$WORK/kproxy.log" || true)

  write "$b"
  # The sync that removed pod A, its cleanup included (A itself stays up).
  wait_for 60 "$mode: kproxy synced and cleaned after removing pod$a" sh -c \
    "[ \$(grep -c 'cleaned conntrack entries' '$WORK/kproxy.log') -gt $cleaned ] && [ \$(grep -c 'sync done' '$WORK/kproxy.log') -gt $synced ]"
  line=$(grep "cleaned conntrack entries" "$WORK/kproxy.log" | sed -n "$((cleaned + 1))p")
  log "$mode: ${line#*conntrack: }"
  case $mode in
    # Here kproxy's delete is what moves the flow.
    iptables) case $line in *" stale=0 "*) fail "$mode: kproxy found no stale entry" ;; esac ;;
    # IPVS with expire_nodest_conn=1 (set by kproxy, as upstream) expires
    # the connections of a deleted UDP real server and drops their
    # conntrack entries itself (the VM's kernel does): kproxy may find
    # nothing left to delete.
    ipvs) case $line in *" stale=0 "*) log "$mode: the kernel had already dropped the entry to pod$a" ;; esac ;;
  esac
  [ "$(ip netns exec kp-pod$b "$PY" "$UDP" ask 10.244.1.$a 5353 7777)" = "pod$a" ] \
    || fail "$mode: pod$a stopped answering, the test proves nothing"
  got=$(ask "$port")
  [ "$got" = "pod$b" ] || fail "$mode: the next datagram from port $port reached '$got', not pod$b"
  [ "$(reply_src "$port")" = "10.244.1.$b" ] || fail "$mode: the new entry does not reply from pod$b"
  stop_daemon
  echo "ok conntrack_udp $mode: after pod$a left, the next datagram from port $port reached pod$b"
}

run ipvs 40053
run iptables 41053
