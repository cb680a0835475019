#!/usr/bin/env bash
# kproxy (iptables mode, --iptables-sync-period=5s) through API server
# outages, against a real kube-apiserver and etcd.
#
#   1. The API server stops: the rules stay and keep carrying traffic;
#      kproxy_source_connected goes to 0 and kproxy logs the disconnection;
#      /healthz keeps upstream's body and stays 200; drift made by hand
#      (KUBE-SERVICES flushed, a KUBE-SVC chain's rule deleted) is repaired
#      by the periodic full sync while the API server is down.
#   2. Meanwhile a second kube-apiserver on the same etcd changes one
#      Service's endpoints, deletes one Service, creates another; it stops
#      and the first one comes back: kproxy converges on the new state and
#      kproxy_source_connected is 1 again.
#   3. 410 Gone for real: the API server stops again, more changes go in
#      through the second one, etcd is compacted to its latest revision, the
#      first one comes back: kproxy's watches resume from a compacted
#      resourceVersion, are refused with 410, relist, and converge without
#      losing or resurrecting anything.
# Figures: how long each step took (printed, never asserted).
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
CP=$HOST_ROOT/scripts/control-plane
PORT2=$(($(cat "$API_DIR/port") + 1))
ETCD=127.0.0.1:$(($(cat "$API_DIR/port") + 10000))

# keep: untouched throughout; change: its endpoint moves from a to b;
# drop: deleted in the first outage; fresh: created in it; late: created
# in the second outage, when keep gains an endpoint and change is deleted.
service keep 10.96.20.10
slice keep-1 keep 10.244.1.2
service change 10.96.20.20
slice change-1 change 10.244.1.2
service drop 10.96.20.30
slice drop-1 drop 10.244.2.2
url() { echo "http://$1/id"; }
KEEP=$(url 10.96.20.10) CHANGE=$(url 10.96.20.20) DROP=$(url 10.96.20.30)
FRESH=$(url 10.96.20.40) LATE=$(url 10.96.20.50)

svc_seps() { [ "$(sep_count "$(svc_chain "e2e/$1:http")")" = "$2" ]; }
no_svc() { [ -z "$(svc_chain "e2e/$1:http")" ]; }
# svc_to NAME IP: NAME's only endpoint is IP.
svc_to() { svc_seps "$1" 1 && nat_rules | grep -q -- "--comment \"e2e/$1:http\" -m tcp -j DNAT --to-destination $2:8080"; }
connected() { [ "$(metric kproxy_source_connected)" = "$1" ]; }
logged() { grep -qiE "$1" "$KPROXY_LOG"; }

start_kproxy --proxy-mode=iptables --kubeconfig="$KPROXY_KUBECONFIG" --hostname-override=node-1 \
  --iptables-sync-period=5s "${NETNS_FLAGS[@]}"
wait_for 60 "kproxy programs keep, change and drop" eval 'svc_to keep 10.244.1.2 && svc_to change 10.244.1.2 && svc_to drop 10.244.2.2'
check "traffic before the outage: change -> a, drop -> b" eval 'answered_by "$CHANGE" a && answered_by "$DROP" b'
check "kproxy_source_connected is 1 while the API server is up" connected 1

healthz_ok() {
  local body
  body=$(healthz)
  [ "$(tail -n 1 <<<"$body")" = 200 ] || {
    echo "  /healthz: $body" >&2
    return 1
  }
  head -n 1 <<<"$body" | jq -e 'has("lastUpdated") and has("currentTime") and has("nodeEligible")
    and has("healthy") and has("status") and .healthy' >/dev/null
}

# --- 1. outage
before=$(nat_rules)
"$CP" stop-apiserver "$API_DIR"
log "stop-apiserver $API_DIR"
t=$(ms)
wait_for 60 "kproxy_source_connected goes to 0" connected 0
echo "figure: API server stopped -> kproxy_source_connected 0: $(($(ms) - t)) ms"
check "kproxy logs the disconnection" logged 'source disconnected'
check "the rules stay as they were" eval '[ "$(nat_rules)" = "$before" ]'
check "traffic still flows: keep -> a, change -> a, drop -> b" \
  eval 'answered_by "$KEEP" a && answered_by "$CHANGE" a && answered_by "$DROP" b'
check "/healthz keeps upstream's body and answers 200 during the outage" healthz_ok

iptables -t nat -F KUBE-SERVICES
t=$(ms)
wait_for 60 "the periodic sync rebuilds KUBE-SERVICES" eval '[ "$(nat_rules)" = "$before" ]'
echo "figure: KUBE-SERVICES flushed by hand -> repaired (API server down): $(($(ms) - t)) ms"
check "after the repair, traffic flows again" answered_by "$KEEP" a
svc=$(svc_chain e2e/keep:http)
rule=$(iptables -t nat -S "$svc" | grep -- '-j KUBE-SEP-' | sed 's/^-A //')
[ -n "$rule" ] || fail "no endpoint rule in $svc"
check "drift by hand: $svc's endpoint rule deleted" eval "iptables -t nat -D $rule"
t=$(ms)
wait_for 60 "the periodic sync restores $svc's endpoint rule" eval '[ "$(nat_rules)" = "$before" ]'
echo "figure: KUBE-SVC rule deleted by hand -> repaired (API server down): $(($(ms) - t)) ms"
check "after the repairs, /healthz still 200 with upstream's body" healthz_ok
check "still disconnected" connected 0

# --- 2. changes through a second API server on the same etcd
"$CP" start-apiserver "$API_DIR" "$PORT2"
log "start-apiserver $API_DIR $PORT2"
K2=(kubectl --kubeconfig "$API_DIR/admin-$PORT2.kubeconfig")
KUBECONFIG=$API_DIR/admin-$PORT2.kubeconfig slice change-1 change 10.244.2.2
"${K2[@]}" -n e2e delete service drop >/dev/null
"${K2[@]}" -n e2e delete endpointslice drop-1 >/dev/null
KUBECONFIG=$API_DIR/admin-$PORT2.kubeconfig service fresh 10.96.20.40
KUBECONFIG=$API_DIR/admin-$PORT2.kubeconfig slice fresh-1 fresh 10.244.1.2
"$CP" stop-apiserver "$API_DIR" "$PORT2"
log "stop-apiserver $API_DIR $PORT2"
check "kproxy, cut off, still has the old state (drop programmed, no fresh)" \
  eval 'svc_to drop 10.244.2.2 && no_svc fresh && svc_to change 10.244.1.2'
"$CP" start-apiserver "$API_DIR"
log "start-apiserver $API_DIR"
t=$(ms)
wait_for 180 "kproxy converges after the API server returns" \
  eval 'no_svc drop && svc_to fresh 10.244.1.2 && svc_to change 10.244.2.2 && svc_to keep 10.244.1.2'
echo "figure: API server ready again -> kproxy's rules converged: $(($(ms) - t)) ms"
wait_for 60 "kproxy_source_connected back to 1" connected 1
echo "figure: API server ready again -> kproxy_source_connected 1: $(($(ms) - t)) ms"
if logged 'source connected'; then
  echo "ok - kproxy logs the reconnection"
else
  echo "# kproxy does not log the reconnection at the default level"
fi
check "the deleted Service's rules are gone" eval '! nat_rules | grep -q "e2e/drop:"'
check "traffic: change -> b now, fresh -> a, keep -> a" \
  eval 'answered_by "$CHANGE" b && answered_by "$FRESH" a && answered_by "$KEEP" a'

# --- 3. 410 Gone: the versions kproxy watches from are compacted away
gone_before=$(grep -ciE '410|gone|expired' "$KPROXY_LOG" || true)
"$CP" stop-apiserver "$API_DIR"
log "stop-apiserver $API_DIR"
wait_for 60 "kproxy_source_connected goes to 0 again" connected 0
"$CP" start-apiserver "$API_DIR" "$PORT2"
log "start-apiserver $API_DIR $PORT2"
"${K2[@]}" -n e2e delete service change >/dev/null
"${K2[@]}" -n e2e delete endpointslice change-1 >/dev/null
KUBECONFIG=$API_DIR/admin-$PORT2.kubeconfig slice keep-1 keep 10.244.1.2 10.244.2.2
KUBECONFIG=$API_DIR/admin-$PORT2.kubeconfig service late 10.96.20.50
KUBECONFIG=$API_DIR/admin-$PORT2.kubeconfig slice late-1 late 10.244.2.2
"$CP" stop-apiserver "$API_DIR" "$PORT2"
log "stop-apiserver $API_DIR $PORT2"
rev=$(ETCDCTL_API=3 etcdctl --endpoints "$ETCD" endpoint status -w json | jq -r '.[0].Status.header.revision')
if [ -z "$rev" ] || [ "$rev" = null ]; then fail "no etcd revision"; fi
ETCDCTL_API=3 etcdctl --endpoints "$ETCD" compact "$rev" >/dev/null
echo "# etcd compacted to revision $rev"
compacted_below() {
  local out
  out=$(ETCDCTL_API=3 etcdctl --endpoints "$ETCD" get /registry/services/specs/e2e/keep --rev="$(($1 - 1))" 2>&1) || true
  grep -q compacted <<<"$out" || {
    echo "  etcdctl get --rev=$(($1 - 1)): $out" >&2
    return 1
  }
}
check "etcd refuses reads below the compacted revision" compacted_below "$rev"
check "kproxy, cut off, still has the old state" eval 'svc_to change 10.244.2.2 && no_svc late && svc_seps keep 1'
"$CP" start-apiserver "$API_DIR"
log "start-apiserver $API_DIR"
t=$(ms)
wait_for 180 "kproxy converges after the compaction" \
  eval 'no_svc change && svc_to late 10.244.2.2 && svc_seps keep 2 && svc_to fresh 10.244.1.2 && no_svc drop'
echo "figure: API server ready again (etcd compacted) -> kproxy's rules converged: $(($(ms) - t)) ms"
wait_for 60 "kproxy_source_connected back to 1" connected 1
check "nothing lost: fresh (untouched since outage 1) still -> a" answered_by "$FRESH" a
check "nothing resurrected: no rule for drop or change" eval '! nat_rules | grep -qE "e2e/(drop|change):"'
check "keep -> a and b, late -> b" eval 'answered_by "$KEEP" "a b" && answered_by "$LATE" b'
gone_after=$(grep -ciE '410|gone|expired' "$KPROXY_LOG" || true)
if [ "$gone_after" -gt "$gone_before" ]; then
  echo "# kproxy's log about the expired watch:"
  grep -iE '410|gone|expired' "$KPROXY_LOG" | tail -n 3 | sed 's/^/#   /'
  echo "ok - kproxy logged the 410 and the relist"
else
  echo "# kproxy logged nothing about 410 Gone (the relist is not logged at the default level)"
fi
check "kproxy is still running" kproxy_alive
check "/healthz 200 with upstream's body at the end" healthz_ok
