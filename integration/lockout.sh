#!/usr/bin/env bash
# A Service whose externalIP is the node's own address must not lock the
# node out: upstream's IPVS proxier (proxier.go, `shouldBind :=
# !nodeAddressSet.Has(...)`) gives it a virtual server but neither binds it
# to kube-ipvs0 nor lists it in KUBE-IPVS-IPS, so KUBE-IPVS-FILTER does not
# refuse the node's other ports (SSH, the kubelet). Real packets from
# another host: the node's own listener on 192.168.58.2:2222 stays
# reachable, and 192.168.58.2:80 reaches the Service's pod.
source "$(dirname "$0")/lib/common.sh"
setup_node
add_pod pod1 10.244.1.1
add_pod client1 192.168.100.2
mkdir -p "$WORK/www-node"
echo node >"$WORK/www-node/index.html"
busybox httpd -p 192.168.58.2:2222 -h "$WORK/www-node"

M=$WORK/manifests
mkdir -p "$M"
cat >"$M/ext.yaml" <<YAML
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: default}
spec:
  clusterIP: 10.96.0.77
  externalIPs: [192.168.58.2]
  ports: [{port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ext-1, namespace: default, labels: {kubernetes.io/service-name: ext}}
addressType: IPv4
ports: [{port: 8080, protocol: TCP, name: ""}]
endpoints: [{addresses: [10.244.1.1], conditions: {ready: true}, nodeName: node-1}]
YAML
"$KPROXY" --once --manifests "$M" --hostname-override node-1 >"$WORK/once.log" 2>&1 ||
  { cat "$WORK/once.log"; fail "kproxy --once failed"; }

ipvsadm -Ln -t 192.168.58.2:80 >/dev/null || fail "no virtual server for the externalIP"
ip -o addr show dev kube-ipvs0 | grep -q ' 192.168.58.2/' && fail "the node's own address was bound to kube-ipvs0"
ipset list KUBE-IPVS-IPS | grep -qx '192.168.58.2' && fail "the node's own address is in KUBE-IPVS-IPS"
ip netns exec kp-client1 curl -sf -m 5 http://192.168.58.2:2222/ >/dev/null ||
  fail "the node's own listener on 192.168.58.2:2222 is locked out"
got=$(ip netns exec kp-client1 curl -sf -m 5 http://192.168.58.2/) || fail "192.168.58.2:80 does not reach the pod"
[ "$got" = pod1 ] || fail "192.168.58.2:80 answered by $got"
log "externalIP = node address: virtual server, no binding, port 2222 still reachable, port 80 reaches the pod"
