#!/usr/bin/env bash
# Switching modes with the flag leaves one clean mode, and traffic works
# after each switch: ipvs → iptables → ipvs.
source "$(dirname "$0")/lib/common.sh"
setup_node
add_pod ms1 10.244.1.1
add_pod ms2 10.244.1.2
M=$WORK/manifests; mkdir -p "$M"
service_manifest web 10.96.0.10 80 8080 10.244.1.1 10.244.1.2 > "$M/web.yaml"
once() { "$KPROXY" --once --manifests "$M" --hostname-override node-1 "$@"; }
# Up to 40 requests until both pods have answered (the iptables mode picks
# at random: a fixed 8 would miss one pod in about 1 run of 128); every
# request must be answered.
both_pods_answer() {
  local got="" i
  for i in $(seq 40); do
    got=$(printf '%s\n%s\n' "$got" "$(hits http://10.96.0.10/ 1)" | sed '/^$/d' | sort -u)
    [ "$(echo "$got" | tr '\n' ' ')" = "ms1 ms2 " ] && return 0
  done
  fail "$1: requests reached: $(echo "$got" | tr '\n' ' ')"
}
kube_chains() { iptables-save 2>/dev/null | grep -c '^:KUBE-SVC-' || true; }

once --proxy-mode ipvs
ipvsadm -Ln | grep -q "10.96.0.10:80" || fail "ipvs: no virtual server"
both_pods_answer "ipvs"

once --proxy-mode iptables
! ipvsadm -Ln | grep -q "10.96.0.10:80" || fail "iptables: IPVS virtual server left behind"
! ip link show kube-ipvs0 >/dev/null 2>&1 || fail "iptables: kube-ipvs0 left behind"
[ "$(kube_chains)" -ge 1 ] || fail "iptables: no KUBE-SVC chain"
both_pods_answer "iptables"

once --proxy-mode ipvs
[ "$(kube_chains)" = 0 ] || fail "ipvs again: iptables-mode chains left behind: $(iptables-save | grep '^:KUBE')"
ipvsadm -Ln | grep -q "10.96.0.10:80" || fail "ipvs again: no virtual server"
both_pods_answer "ipvs again"
echo "ok ipvs -> iptables -> ipvs, traffic after each switch, one clean mode each time"
