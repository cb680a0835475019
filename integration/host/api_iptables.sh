#!/usr/bin/env bash
# iptables mode through the binary, as an operator runs it, against a real
# kube-apiserver; expected rules from upstream kube-proxy v1.36 run on the
# same objects in the same namespace.
#
# The same five stages run twice, first under upstream kube-proxy, then
# (after `kube-proxy --cleanup` and recreating the objects) under
#   kproxy --proxy-mode=iptables --kubeconfig=kproxy.kubeconfig --hostname-override=node-1
# with its health and metrics servers on:
#   1. ClusterIP Services web (pod a) and gone (pod b), with their slices;
#      NodePort Service remote, both traffic policies Local, whose only
#      endpoint (pod d) is on another node
#   2. web's slice PATCHed live: pod b added ready, pod c added not ready
#   3. Service gone deleted (its slice stays, as it would until the GC runs)
#   4. web: ClusterIP -> NodePort 30080
#   5. web: NodePort -> LoadBalancer, status ingress 192.168.60.10 patched in
# After each stage: the rules satisfy the stage (and the proxy says it
# synced after the change), real HTTP reaches exactly the pods it should
# (from the node to the ClusterIP, from the client namespace to the NodePort
# and the load-balancer IP), and for kproxy, its iptables-save equals the
# one upstream produced at that stage, chain by chain (ipt_compare).
# Conditions are passed to check/wait_for as single-quoted strings, to be
# evaluated (again at each poll) there.
# shellcheck disable=SC2016,SC2034
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
host_guard
setup_node
api_start_local "$WORK/api"
host_node
api_namespace e2e
add_pod a 1
add_pod b 2
add_pod c 3
add_pod d 4
WEB=http://10.96.10.10/id
GONE=http://10.96.10.20/id
NODEPORT=http://$NODE_IP:30080/id
LB_IP=192.168.60.10
# The rest of the network routes the load balancer's IP to this node.
ip -n kp-client route add "$LB_IP/32" via "$NODE_IP"

# Flags both proxies get. Both run with --iptables-localhost-nodeports=false:
# these stages are about Services, and NodePorts on 127.0.0.1 (the default:
# route_localnet=1, a localnet DROP rule in kubelet's KUBE-FIREWALL, no
# `! -d 127.0.0.0/8` on the jump to KUBE-NODEPORTS) are compared with
# upstream in api_localhost.sh; what the default would change here is
# checked at the end (dry run).
COMMON=(--proxy-mode=iptables --hostname-override=node-1 --cluster-cidr=10.244.0.0/16)
UPSTREAM_FLAGS=("${COMMON[@]}" --iptables-localhost-nodeports=false)
KPROXY_FLAGS=("${COMMON[@]}" "${NETNS_FLAGS[@]}" --kubeconfig="$KPROXY_KUBECONFIG" --iptables-localhost-nodeports=false)

# series NAME{LABELS}: one labelled series' value, as the proxy serves it.
series() {
  curl -s -m 3 http://127.0.0.1:10249/metrics | awk -v n="$1" '$1 == n {print $2; exit}'
}
svc_has_seps() { [ "$(sep_count "$(svc_chain "e2e/$1:http")")" = "$2" ]; }
no_svc_chain() { [ -z "$(svc_chain "e2e/$1:http")" ]; }
has_nat_rule() { nat_rules | grep -qF -- "$1"; }

# change N: make stage N's change.
change() {
  case $1 in
  1)
    service web 10.96.10.10
    slice web-1 web 10.244.1.2
    service gone 10.96.10.20
    slice gone-1 gone 10.244.2.2
    kubectl apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Service
metadata: {name: remote, namespace: e2e}
spec:
  type: NodePort
  clusterIP: 10.96.10.30
  externalTrafficPolicy: Local
  internalTrafficPolicy: Local
  selector: {app: remote}
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30081}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: remote-1, namespace: e2e, labels: {kubernetes.io/service-name: remote}}
addressType: IPv4
ports: [{name: http, protocol: TCP, port: 8080}]
endpoints:
- {addresses: ["10.244.4.2"], conditions: {ready: true}, nodeName: node-2}
YAML
    ;;
  2)
    kubectl -n e2e patch endpointslice web-1 --type=json -p '[
      {"op": "add", "path": "/endpoints/-", "value": {"addresses": ["10.244.2.2"], "conditions": {"ready": true, "serving": true, "terminating": false}, "nodeName": "node-1"}},
      {"op": "add", "path": "/endpoints/-", "value": {"addresses": ["10.244.3.2"], "conditions": {"ready": false, "serving": false, "terminating": false}, "nodeName": "node-1"}}]' >/dev/null
    ;;
  3) kubectl -n e2e delete service gone >/dev/null ;;
  4)
    kubectl -n e2e patch service web --type=merge -p '{"spec": {"type": "NodePort",
      "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080}]}}' >/dev/null
    ;;
  5)
    kubectl -n e2e patch service web --type=merge -p '{"spec": {"type": "LoadBalancer"}}' >/dev/null
    kubectl -n e2e patch service web --subresource=status --type=merge \
      -p "{\"status\": {\"loadBalancer\": {\"ingress\": [{\"ip\": \"$LB_IP\"}]}}}" >/dev/null
    ;;
  esac
}

# verify N WHO T: wait until WHO (upstream|kproxy) has applied stage N's
# change, made at T; check the rules and the traffic; snapshot the rules
# as $WORK/WHO.N.
verify() {
  local n=$1 who=$2 t=$3
  if [ "$n" = 1 ]; then
    # The proxy started after the change: its first sync.
    wait_for 60 "$who's first sync" eval "awk -v t=$t -v s=\"\$(metric kubeproxy_sync_proxy_rules_last_timestamp_seconds)\" 'BEGIN { exit !(s != \"\" && s + 0 >= t + 0) }'"
  else
    wait_for 30 "$who applied stage $n (a sync queued and completed after the change)" synced_since "$t"
  fi
  case $n in
  1)
    wait_for 30 "$who: web has 1 endpoint chain, gone 1" eval 'svc_has_seps web 1 && svc_has_seps gone 1'
    check "$who stage 1: the ClusterIP reaches pod a only" answered_by "$WEB" a
    check "$who stage 1: the other ClusterIP reaches pod b" answered_by "$GONE" b
    # Both policies Local, no local endpoint (upstream's iptables proxier):
    # the cluster IP and outside clients of the NodePort are dropped; the
    # node itself and pods reach the NodePort's cluster-wide endpoint
    # through KUBE-EXT's short circuits.
    check "$who stage 1: remote's ClusterIP (internal Local) is dropped" eval '[ -z "$(get http://10.96.10.30/id)" ]'
    check "$who stage 1: remote's NodePort from outside (external Local) is dropped" eval "[ -z \"\$(get http://$NODE_IP:30081/id kp-client)\" ]"
    check "$who stage 1: remote's NodePort from the node reaches pod d" answered_by "http://$NODE_IP:30081/id" d
    check "$who stage 1: remote's NodePort from pod a reaches pod d" answered_by "http://$NODE_IP:30081/id" d kp-a
    for policy in internal external; do
      check "$who stage 1: no_local_endpoints{traffic_policy=$policy} is 1" eval "[ \"\$(series 'kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"$policy\"}')\" = 1 ]"
    done
    ;;
  2)
    wait_for 30 "$who: web has 2 endpoint chains" svc_has_seps web 2
    check "$who stage 2: after the slice PATCH, pods a and b answer, not-ready c never" answered_by "$WEB" "a b"
    check "$who stage 2: no rule for the not-ready endpoint" eval '! nat_rules | grep -q 10.244.3.2'
    ;;
  3)
    wait_for 30 "$who: gone's chains removed" no_svc_chain gone
    check "$who stage 3: the deleted Service's address no longer answers" eval "[ -z \"\$(get $GONE)\" ]"
    check "$who stage 3: no rule mentions the deleted Service" eval '! nat_rules | grep -q "e2e/gone:"'
    check "$who stage 3: web still reaches a and b" answered_by "$WEB" "a b"
    ;;
  4)
    wait_for 30 "$who: NodePort 30080 programmed" has_nat_rule '--dport 30080 -j KUBE-EXT-'
    check "$who stage 4: the NodePort, from the client, reaches a and b" answered_by "$NODEPORT" "a b" kp-client
    check "$who stage 4: the ClusterIP still reaches a and b" answered_by "$WEB" "a b"
    ;;
  5)
    wait_for 30 "$who: load-balancer IP programmed" has_nat_rule "-d $LB_IP/32 -p tcp -m comment --comment \"e2e/web:http loadbalancer IP\""
    check "$who stage 5: the load-balancer IP, from the client, reaches a and b" answered_by "http://$LB_IP/id" "a b" kp-client
    check "$who stage 5: the NodePort still reaches a and b" answered_by "$NODEPORT" "a b" kp-client
    check "$who stage 5: the ClusterIP still reaches a and b" answered_by "$WEB" "a b"
    ;;
  esac
  iptables-save >"$WORK/$who.$n"
}

# run WHO START_CMD...: the five stages under one proxy.
run() {
  local who=$1 n t
  shift
  t=$(date +%s.%N)
  change 1
  local t0
  t0=$(ms)
  "$@"
  verify 1 "$who" "$t"
  echo "figure: $who start -> stage 1 programmed and answering: $(($(ms) - t0)) ms"
  [ "$who" = upstream ] || compare_stage 1
  for n in 2 3 4 5; do
    t=$(date +%s.%N)
    change "$n"
    verify "$n" "$who" "$t"
    [ "$who" = upstream ] || compare_stage "$n"
  done
}

# compare_stage N: kproxy's rules at stage N are upstream's.
compare_stage() {
  local n=$1 end=$(($(date +%s) + 15))
  # Both have synced after the change; allow for a sync in flight anyway.
  until ipt_compare "$WORK/upstream.$n" "$WORK/kproxy.$n" >"$WORK/compare.$n"; do
    if [ "$(date +%s)" -ge "$end" ]; then
      cat "$WORK/compare.$n"
      fail "stage $n: kproxy's rules differ from upstream's (above)"
    fi
    sleep 1
    iptables-save >"$WORK/kproxy.$n"
  done
  echo "ok - stage $n: kproxy's rules are upstream's ($(tail -n 1 "$WORK/compare.$n"))"
  grep '^known difference' "$WORK/compare.$n" >>"$WORK/known" || true
}

# --- upstream kube-proxy: the expected rules
run upstream start_upstream "${UPSTREAM_FLAGS[@]}"
stop_upstream
kube-proxy --cleanup >>"$UPSTREAM_LOG" 2>&1 || fail "kube-proxy --cleanup failed"
left=$(kube_chains | tr '\n' ' ')
echo "# upstream: kube-proxy --cleanup leaves: ${left:-nothing}"
# kubelet's chain, which upstream keeps: remove it so kproxy starts clean.
if iptables -t filter -S KUBE-FIREWALL >/dev/null 2>&1; then
  iptables -t filter -D INPUT -j KUBE-FIREWALL 2>/dev/null || true
  iptables -t filter -D OUTPUT -j KUBE-FIREWALL 2>/dev/null || true
  iptables -t filter -F KUBE-FIREWALL && iptables -t filter -X KUBE-FIREWALL
fi
check "the namespace has no KUBE-* chain before kproxy starts" eval '[ -z "$(kube_chains)" ]'

# --- the same objects again, for kproxy
kubectl -n e2e delete service --all >/dev/null
kubectl -n e2e delete endpointslice --all >/dev/null
wait_for 30 "test objects deleted" eval '[ -z "$(kubectl -n e2e get service,endpointslice -o name)" ]'

run kproxy start_kproxy "${KPROXY_FLAGS[@]}"

# Health and metrics, as upstream serves them.
body=$(healthz)
check "/healthz answers 200" eval '[ "$(tail -n 1 <<<"$body")" = 200 ]'
for key in lastUpdated currentTime nodeEligible healthy status; do
  check "/healthz has $key" eval "head -n 1 <<<\"\$body\" | jq -e 'has(\"$key\")' >/dev/null"
done
check "/healthz: node eligible, healthy" eval "head -n 1 <<<\"\$body\" | jq -e '.nodeEligible and .healthy' >/dev/null"
check "/livez answers 200" eval '[ "$(curl -s -o /dev/null -w "%{http_code}" http://127.0.0.1:10256/livez)" = 200 ]'
check "/metrics counts syncs" eval '[ "$(metric kubeproxy_sync_proxy_rules_duration_seconds_count)" -ge 5 ]'
check "/metrics: source connected" eval '[ "$(metric kproxy_source_connected)" = 1 ]'
check "kproxy is still running" kproxy_alive

sort -u "$WORK/known"

# kproxy's default --iptables-localhost-nodeports (true, as upstream's): what
# would it change in the rules it programmed with false? What upstream's
# syncProxyRules writes for it: the jump to KUBE-NODEPORTS without
# `! -d 127.0.0.0/8`, KUBE-FIREWALL's guard, and the jumps to it.
dry=$("$KPROXY" "${COMMON[@]}" "${NETNS_FLAGS[@]}" --kubeconfig="$KPROXY_KUBECONFIG" --dry-run 2>&1) || fail "kproxy --dry-run failed: $dry"
tail_rule=$(grep -- '-A KUBE-SERVICES .*this must be the last rule' <<<"$dry" | head -n 1)
check "dry run of the default: the jump to KUBE-NODEPORTS takes in loopback" eval \
  '[ -n "$tail_rule" ] && ! grep -qF -- "127.0.0.0/8" <<<"$tail_rule"'
check "dry run of the default: KUBE-FIREWALL's localnet guard" grep -qF -- \
  '-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP' <<<"$dry"
check "dry run of the default: the jumps to KUBE-FIREWALL" eval \
  'grep -qxF -- "-I INPUT 1 -j KUBE-FIREWALL" <<<"$dry" && grep -qxF -- "-I OUTPUT 1 -j KUBE-FIREWALL" <<<"$dry"'
check "the dry run changed nothing: route_localnet is still 0" eval \
  '[ "$(cat /proc/sys/net/ipv4/conf/all/route_localnet)" = 0 ]'
