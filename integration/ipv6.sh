#!/usr/bin/env bash
# An IPv6 ClusterIP Service gets its virtual server and its /128 on
# kube-ipvs0, and carries real traffic to IPv6 pods.
source "$(dirname "$0")/lib/common.sh"
setup_node
add_pod p6a 10.244.1.61 fd00:10:244::61
add_pod p6b 10.244.1.62 fd00:10:244::62
M=$WORK/manifests; mkdir -p "$M"
FAMILY=IPv6 service_manifest v6 fd00:10:96::60 80 8080 fd00:10:244::61 fd00:10:244::62 > "$M/v6.yaml"
"$KPROXY" --once --manifests "$M" --hostname-override node-1
ipvsadm -Ln | grep -q "TCP  \[fd00:10:96::60\]:80 rr" || fail "no IPv6 virtual server: $(ipvsadm -Ln)"
ip -6 addr show dev kube-ipvs0 | grep -q "fd00:10:96::60/128" || fail "no /128 on kube-ipvs0"
got=$(hits "http://[fd00:10:96::60]/" 8 | sort | uniq -c)
echo "$got" >&2
for p in p6a p6b; do echo "$got" | grep -q " $p\$" || fail "IPv6 traffic never reached $p"; done
echo "ok IPv6 ClusterIP carries traffic to both pods"
