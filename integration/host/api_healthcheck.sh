#!/usr/bin/env bash
# Health-check node ports through the binary against a real kube-apiserver
# (iptables mode, this host's kernel, in namespaces), compared with upstream
# kube-proxy v1.36 on the same objects with the same port held:
#   - two LoadBalancer Services with externalTrafficPolicy Local: web
#     (healthCheckNodePort 32100) and blocked (32101), each with one ready
#     endpoint on node-1; another program already listens on 0.0.0.0:32101;
#   - upstream runs first: its answer on 32100 (status, body, headers) and
#     its FailedToStartServiceHealthcheck Event on blocked are the
#     expectations;
#   - kproxy then gives the same answer byte for byte, records an Event with
#     upstream's type, reason, action, regarding and note, and counts the
#     failure in kproxy_healthcheck_bind_errors_total; once the port is
#     free, blocked's server starts at a later sync.
# shellcheck disable=SC2016
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
host_guard
setup_node
api_start_local "$WORK/api"
host_node
api_namespace e2e
add_pod a 1

lb_local() { # NAME CLUSTER_IP NODE_PORT HEALTH_PORT
  kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: {name: $1, namespace: e2e}
spec:
  type: LoadBalancer
  clusterIP: $2
  selector: {app: $1}
  externalTrafficPolicy: Local
  healthCheckNodePort: $4
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: $3}]
YAML
}
lb_local web 10.96.40.10 30100 32100
lb_local blocked 10.96.40.11 30101 32101
slice web-1 web 10.244.1.2
slice blocked-1 blocked 10.244.1.2

"$PY" -c 'import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 32101)); s.listen(); time.sleep(3600)' &
HOLDER=$!
wait_for 10 "the other program listens on 32101" sh -c 'ss -Hltn "sport = :32101" | grep -q .'

# probe PORT OUT: "STATUS" on stdout; body in OUT.body, headers in OUT.head.
probe() {
  ip netns exec kp-client curl -s -m 3 -D "$2.head" -o "$2.body" -w '%{http_code}' "http://$NODE_IP:$1/" || true
}
# The three headers upstream sets, names lower-cased, in a fixed order.
hc_headers() {
  tr -d '\r' <"$1" | awk 'tolower($1) ~ /^(content-type|x-content-type-options|x-load-balancing-endpoint-weight):$/ {print tolower($1), $2}' | sort
}
failed_event() { # CONTROLLER
  kubectl get events.v1.events.k8s.io -n e2e -o json |
    jq -c --arg c "$1" '[.items[] | select(.reason == "FailedToStartServiceHealthcheck" and .reportingController == $c)] | .[0] // empty'
}
event_fields='{type, reason, action, note, regarding: {kind: .regarding.kind, namespace: .regarding.namespace, name: .regarding.name, apiVersion: .regarding.apiVersion}}'

# --- upstream
start_upstream --proxy-mode=iptables
wait_for 60 "upstream serves web's health check" eval '[ "$(probe 32100 "$WORK/up")" = 200 ]'
up_status=$(probe 32100 "$WORK/up")
wait_for 60 "upstream's FailedToStartServiceHealthcheck event" eval '[ -n "$(failed_event kube-proxy)" ]'
up_event=$(failed_event kube-proxy | jq -c "$event_fields")
echo "# upstream's answer: $up_status $(tr -d '\n\t' <"$WORK/up.body")"
echo "# upstream's event: $up_event"
stop_upstream
kube-proxy --cleanup >/dev/null 2>&1 || true

# --- kproxy
start_kproxy --proxy-mode=iptables --hostname-override=node-1 "${NETNS_FLAGS[@]}" --kubeconfig="$KPROXY_KUBECONFIG"
wait_for 60 "kproxy serves web's health check" eval '[ "$(probe 32100 "$WORK/kp")" = 200 ]'
check "status as upstream's ($up_status)" eval '[ "$(probe 32100 "$WORK/kp")" = "$up_status" ]'
check "body byte for byte as upstream's" cmp -s "$WORK/up.body" "$WORK/kp.body"
check "headers as upstream's: $(hc_headers "$WORK/up.head" | tr '\n' ' ')" \
  eval '[ "$(hc_headers "$WORK/up.head")" = "$(hc_headers "$WORK/kp.head")" ]'
wait_for 60 "kproxy's FailedToStartServiceHealthcheck event" eval '[ -n "$(failed_event kproxy)" ]'
kp_event=$(failed_event kproxy | jq -c "$event_fields")
echo "# kproxy's event: $kp_event"
check "event as upstream's (type, reason, action, note, regarding)" eval '[ "$kp_event" = "$up_event" ]'
check "the bind failure is counted" eval '[ "$(metric kproxy_healthcheck_bind_errors_total)" -ge 1 ]'
check "the log names blocked and its port" eval 'grep "e2e/blocked" "$KPROXY_LOG" | grep -q 32101'

kill "$HOLDER"
wait "$HOLDER" 2>/dev/null || true
wait_for 60 "blocked's server starts once 32101 is free" eval '[ "$(probe 32101 "$WORK/kp2")" = 200 ]'
check "web still answers" eval '[ "$(probe 32100 "$WORK/kp")" = 200 ]'
check "kproxy is still running" kproxy_alive
