#!/usr/bin/env bash
# An IPv6 ClusterIP Service gets its virtual server and its /128 on
# kube-ipvs0, and carries real traffic to IPv6 pods.
source "$(dirname "$0")/lib/common.sh"
setup_node
add_pod p6a 10.244.1.61 fd00:10:244::61
add_pod p6b 10.244.1.62 fd00:10:244::62
M=$WORK/manifests; mkdir -p "$M"
cat > "$M/v6.yaml" <<'YAML'
apiVersion: v1
kind: Service
metadata: {name: v6, namespace: default}
spec:
  clusterIP: "fd00:10:96::60"
  clusterIPs: ["fd00:10:96::60"]
  ipFamilies: [IPv6]
  selector: {app: v6}
  ports: [{protocol: TCP, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: v6-1, namespace: default, labels: {kubernetes.io/service-name: v6}}
addressType: IPv6
ports: [{name: "", protocol: TCP, port: 8080}]
endpoints:
- {addresses: ["fd00:10:244::61"], conditions: {ready: true}, nodeName: node-1}
- {addresses: ["fd00:10:244::62"], conditions: {ready: true}, nodeName: node-2}
YAML
"$KPROXY" --once --manifests "$M" --hostname-override node-1
ipvsadm -Ln | grep -q "TCP  \[fd00:10:96::60\]:80 rr" || fail "no IPv6 virtual server: $(ipvsadm -Ln)"
ip -6 addr show dev kube-ipvs0 | grep -q "fd00:10:96::60/128" || fail "no /128 on kube-ipvs0"
got=$(hits "http://[fd00:10:96::60]/" 8 | sort | uniq -c)
echo "$got" >&2
for p in p6a p6b; do echo "$got" | grep -q " $p\$" || fail "IPv6 traffic never reached $p"; done
echo "ok IPv6 ClusterIP carries traffic to both pods"
