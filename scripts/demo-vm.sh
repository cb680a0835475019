#!/usr/bin/env bash
# The demo, inside the VM: "pods" in network namespaces at the examples'
# pod IPs, one `kproxy --once` over examples/, then real requests through a
# ClusterIP and a NodePort, and what an operator would look at.
source "$(dirname "$0")/../integration/lib/common.sh"
setup_node
add_pod web-a 10.244.1.10; add_pod web-b 10.244.2.10; add_pod web-c 10.244.1.11
POD_PORT=3000 add_pod shop-a 10.244.1.20; POD_PORT=3000 add_pod shop-b 10.244.2.20

echo "== kproxy --once --manifests examples --hostname-override node-1"
"$KPROXY" --once --manifests examples --hostname-override node-1 -v 2
echo
echo "== 6 requests to the web ClusterIP http://10.96.10.10/"
hits http://10.96.10.10/ 6 | sed 's/^/   answered by /'
echo "== 4 requests to the shop NodePort http://192.168.58.2:30080/"
hits http://192.168.58.2:30080/ 4 | sed 's/^/   answered by /'
echo
echo "== ipvsadm -Ln"
ipvsadm -Ln
echo
echo "== ip addr show kube-ipvs0"
ip addr show kube-ipvs0
