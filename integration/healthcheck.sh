#!/usr/bin/env bash
# Health-check node ports, with real HTTP from "another host" to the node
# address, as a cloud load balancer probes them. Expectations from
# upstream's pkg/proxy/healthcheck/service_health.go: 200 with
# localEndpoints 2 and X-Load-Balancing-Endpoint-Weight 2 while two ready
# endpoints are on this node, 503 with 0 once they are all on another node,
# no server at all (connection refused) once the Service's policy is
# Cluster. A port another program already holds is reported (log, metric)
# while the other Service's server answers, and is taken at a later sync
# once it is free.
source "$(dirname "$0")/lib/common.sh"
setup_node
add_pod pod1 10.244.1.1
add_pod pod2 10.244.1.2
add_pod client1 192.168.100.2

M=$WORK/manifests; mkdir -p "$M"
lb() { # NAME CLUSTER_IP NODE_PORT POLICY HEALTH_PORT ENDPOINT_NODE ENDPOINT_IP...
  local name=$1 ip=$2 np=$3 policy=$4 hc=$5 node=$6 e
  shift 6
  cat <<YAML
apiVersion: v1
kind: Service
metadata: {name: $name, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: $ip
  selector: {app: $name}
  externalTrafficPolicy: $policy
$(if [ "$policy" = Local ]; then echo "  healthCheckNodePort: $hc"; fi)
  ports: [{protocol: TCP, port: 80, targetPort: 8080, nodePort: $np}]
status: {loadBalancer: {ingress: [{ip: 203.0.113.10}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: $name-1, namespace: default, labels: {kubernetes.io/service-name: $name}}
addressType: IPv4
ports: [{name: "", protocol: TCP, port: 8080}]
endpoints:
YAML
  for e in "$@"; do ep "$e" "$node"; done
}
web() { # POLICY ENDPOINT_NODE
  lb web 10.96.0.10 30080 "$1" 32000 "$2" 10.244.1.1 10.244.1.2 > "$M/web.yaml.tmp"
  mv "$M/web.yaml.tmp" "$M/web.yaml"
}

# probe PORT: the status code; the body in $WORK/body, the headers in $WORK/head.
probe() {
  ip netns exec kp-client1 curl -s -m 5 -D "$WORK/head" -o "$WORK/body" -w '%{http_code}' \
    "http://192.168.58.2:$1/"
}
answers() { # PORT CODE LOCAL_ENDPOINTS
  [ "$(probe "$1")" = "$2" ] && [ "$(json localEndpoints)" = "$3" ]
}
json() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$WORK/body" "$1"; }
header() { tr -d '\r' <"$WORK/head" | awk -v h="$1" 'tolower($1) == tolower(h) ":" {print $2}'; }
refused() { # PORT: curl's "could not connect" (7)
  local rc=0
  ip netns exec kp-client1 curl -s -m 5 -o /dev/null "http://192.168.58.2:$1/" || rc=$?
  [ "$rc" = 7 ]
}

web Local node-1
lb blocked 10.96.0.11 30081 Local 32001 node-1 10.244.1.1 > "$M/blocked.yaml"
# Another program on the node already holds 32001.
"$PY" -c 'import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 32001)); s.listen(); time.sleep(3600)' &
HOLDER=$!
wait_for 10 "the other program listens on 32001" sh -c 'ss -Hltn "sport = :32001" | grep -q .'

start_daemon "$M" --ipvs-sync-period 5s --metrics-bind-address 127.0.0.1:10249
wait_for 60 "web's health check answers 200 with 2 local endpoints" answers 32000 200 2
log "web: $(tr -d '\n\t' <"$WORK/body")"
[ "$(header X-Load-Balancing-Endpoint-Weight)" = 2 ] \
  || fail "X-Load-Balancing-Endpoint-Weight is '$(header X-Load-Balancing-Endpoint-Weight)', not 2"
[ "$(header Content-Type)" = application/json ] || fail "Content-Type is '$(header Content-Type)'"
[ "$(header X-Content-Type-Options)" = nosniff ] || fail "X-Content-Type-Options is '$(header X-Content-Type-Options)'"
[ "$(json serviceProxyHealthy)" = True ] || fail "serviceProxyHealthy: $(cat "$WORK/body")"
"$PY" -c 'import json,sys; b=json.load(open(sys.argv[1])); assert b["service"] == {"namespace": "default", "name": "web"}, b' \
  "$WORK/body" || fail "the body names another Service: $(cat "$WORK/body")"

# The port held by the other program: named in the log, counted, and the
# answer on it is still the other program's (nothing) while web serves.
wait_for 30 "the log names blocked and its port" \
  sh -c "grep 'default/blocked' '$WORK/kproxy.log' | grep -q 32001"
grep 'default/blocked' "$WORK/kproxy.log" | grep 32001 | head -1 | sed 's/^/# log: /' >&2
grep 'default/blocked' "$WORK/kproxy.log" | grep -q "address already in use" \
  || fail "the log does not say why: $(grep 'default/blocked' "$WORK/kproxy.log" | head -3)"
errors=$(curl -s -m 5 http://127.0.0.1:10249/metrics | awk '$1 == "kproxy_healthcheck_bind_errors_total" {print $2}')
[ "${errors:-0}" -ge 1 ] 2>/dev/null || fail "kproxy_healthcheck_bind_errors_total is '${errors:-missing}'"
log "bind errors counted: $errors"
kill "$HOLDER"; wait "$HOLDER" 2>/dev/null || true
wait_for 30 "blocked's server starts at a later sync once 32001 is free" answers 32001 200 1
answers 32000 200 2 || fail "web stopped answering while blocked was retried"

web Local node-2
wait_for 30 "503 with 0 local endpoints once both are on node-2" answers 32000 503 0
[ "$(header X-Load-Balancing-Endpoint-Weight)" = 0 ] \
  || fail "X-Load-Balancing-Endpoint-Weight is '$(header X-Load-Balancing-Endpoint-Weight)', not 0"
log "web, endpoints elsewhere: $(tr -d '\n\t' <"$WORK/body")"

web Local node-1
wait_for 30 "200 again once they are back" answers 32000 200 2
web Cluster node-1
wait_for 30 "no server on 32000 once the policy is Cluster" refused 32000
answers 32001 200 1 || fail "blocked's server went away with web's"
echo "ok healthcheck: 200/2 local, 503/0 remote, gone with policy Cluster; a held port is reported, the other Service served, retried once free"
