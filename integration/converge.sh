#!/usr/bin/env bash
# The daemon follows manifest edits (endpoint added and removed, Service
# deleted, affinity and scheduler changed) and touches only what changed: an
# unchanged virtual server is never re-created, so its counters survive.
source "$(dirname "$0")/lib/common.sh"
setup_node
add_pod web1 10.244.1.1
add_pod web2 10.244.1.2
M=$WORK/manifests; mkdir -p "$M"
service_manifest web 10.96.0.10 80 8080 10.244.1.1 10.244.1.2 > "$M/web.yaml"
api() { # AFFINITY ENDPOINT...
  local affinity=$1
  shift
  AFFINITY=$affinity service_manifest api 10.96.0.30 443 8443 "$@" > "$M/api.yaml.tmp"
  mv "$M/api.yaml.tmp" "$M/api.yaml"   # atomic, as a config-management tool would
}
api None 10.244.2.1

start_daemon "$M" --ipvs-sync-period 30s
wait_for 60 "first sync" sh -c 'ipvsadm -Ln | grep -q 10.244.2.1:8443'
answers=$(hits http://10.96.0.10/ 6)
! echo "$answers" | grep -q no-answer || fail "web did not answer: $answers"
web_conns() { ipvsadm -Ln --stats -t 10.96.0.10:80 | awk '$1 == "TCP" {print $3}'; }
# The kernel folds its per-CPU counters into these totals every 2 seconds.
export -f web_conns
wait_for 15 "web's counters to show 6 connections" bash -c '[ "$(web_conns)" -ge 6 ]'
c0=$(web_conns)
check_web_untouched() { [ "$(web_conns)" = "$c0" ] || fail "web's virtual server was re-created (conns $c0 -> $(web_conns))"; }

api None 10.244.2.1 10.244.2.2
wait_for 30 "endpoint added" sh -c 'ipvsadm -Ln -t 10.96.0.30:443 | grep -q 10.244.2.2:8443'
check_web_untouched
api None 10.244.2.2
wait_for 30 "endpoint removed" sh -c '! ipvsadm -Ln -t 10.96.0.30:443 | grep -q 10.244.2.1:8443'
check_web_untouched
api ClientIP 10.244.2.2
wait_for 30 "affinity on" sh -c 'ipvsadm -Ln -t 10.96.0.30:443 | grep -q "persistent 10800"'
check_web_untouched
rm "$M/api.yaml"
wait_for 30 "Service deleted" sh -c '! ipvsadm -Ln | grep -q 10.96.0.30:443'
wait_for 10 "VIP unbound" sh -c '! ip addr show dev kube-ipvs0 | grep -q 10.96.0.30/'
check_web_untouched

grep -c "sync done" "$WORK/kproxy.log" >&2 || true
stop_daemon
start_daemon "$M" --ipvs-sync-period 30s --ipvs-scheduler wrr
wait_for 60 "scheduler changed" sh -c 'ipvsadm -Ln | grep -q "10.96.0.10:80 wrr"'
check_web_untouched
echo "ok converged after 5 edits; the unchanged virtual server kept its counters"
