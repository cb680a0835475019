#!/usr/bin/env bash
# `kproxy --cleanup` removes every virtual server, address and link kproxy
# owns, and nothing else.
source "$(dirname "$0")/lib/common.sh"
setup_node
M=$WORK/manifests; mkdir -p "$M"
cp "$ROOT"/tests/fixtures/ipvs/{nodeport,loadbalancer,affinity}.yaml "$M/"
ipvsadm -A -t 10.99.0.1:80 -s rr
ipvsadm -A -u 192.168.58.2:5353 -s rr   # node address, port outside the NodePort range
"$KPROXY" --once --manifests "$M" --hostname-override node-1
ipvsadm -Ln | grep -q "192.168.58.2:31443" || fail "setup: NodePort missing"
"$KPROXY" --cleanup --hostname-override node-1
left=$(ipvsadm -Ln | tail -n +4 | grep -v '^  ->' | awk '{print $1, $2}' | sort | tr '\n' ';')
[ "$left" = "TCP 10.99.0.1:80;UDP 192.168.58.2:5353;" ] || fail "after cleanup: $left"
! ip link show kube-ipvs0 >/dev/null 2>&1 || fail "kube-ipvs0 still exists"
# A second cleanup finds nothing to do and still succeeds.
"$KPROXY" --cleanup --hostname-override node-1
echo "ok cleanup removed only kproxy's objects"
