#!/usr/bin/env bash
# Hand-made drift is repaired by the next periodic sync: `ipvsadm -C`, a
# VIP deleted from kube-ipvs0, kube-ipvs0 itself deleted. An operator's own
# virtual server (10.99.0.1:80, not on kube-ipvs0) survives every sync.
source "$(dirname "$0")/lib/common.sh"
setup_node
M=$WORK/manifests; mkdir -p "$M"
cp "$ROOT/tests/fixtures/ipvs/nodeport.yaml" "$ROOT/tests/fixtures/ipvs/clusterip.yaml" "$M/"
add_foreign() {
  ipvsadm -A -t 10.99.0.1:80 -s wrr
  ipvsadm -a -t 10.99.0.1:80 -r 10.0.0.5:80 -m -w 3
}
add_foreign

start_daemon "$M" --ipvs-sync-period 2s
wait_for 60 "first sync" sh -c 'ipvsadm -Ln | grep -q 10.244.2.8:8080'
sleep 3 # let a periodic sync pass over the operator's server too
want=$(ipvs_table); want_addrs=$(ipvs0_addrs)
echo "$want" | grep -q "TCP  10.99.0.1:80 wrr" || fail "the operator's virtual server was removed"
echo "$want" | grep -q "10.0.0.5:80 .*Masq    3" || fail "the operator's real server was changed"
[ "$want_addrs" = "10.96.0.10 10.96.0.20" ] || fail "kube-ipvs0 has: $want_addrs"

converged() { [ "$(ipvs_table)" = "$want" ] && [ "$(ipvs0_addrs)" = "$want_addrs" ]; }
export -f converged ipvs_table ipvs0_addrs; export want want_addrs

ipvsadm -C; add_foreign
wait_for 30 "repair after ipvsadm -C" bash -c converged
log "ipvsadm -C repaired"

ip addr del 10.96.0.10/32 dev kube-ipvs0
wait_for 30 "VIP re-bound" bash -c converged
log "deleted VIP re-bound"

ip link del kube-ipvs0
wait_for 30 "kube-ipvs0 re-created" bash -c converged
curl -s -m 2 http://10.96.0.10/ >/dev/null || true
log "kube-ipvs0 re-created with its addresses"
echo "ok drift repaired three ways; operator's virtual server untouched"
