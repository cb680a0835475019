#!/usr/bin/env bash
# Taking a node over from upstream kube-proxy, and handing it back, with
# traffic flowing: against the real kube-apiserver, a ClusterIP and a
# NodePort Service with three pods each; a client sends requests in a loop
# (bounded, a fresh connection each, through both), and one connection to a
# third Service is held open, a line every 0.2 s, while
#   ipvs-takeover      upstream kube-proxy --proxy-mode=ipvs runs, is stopped
#                      (SIGTERM: it leaves its rules) and kproxy starts;
#   ipvs-handback      kproxy is stopped and upstream starts again;
#   iptables-takeover  and iptables-handback: the same in iptables mode
#                      (between the two modes, kproxy --cleanup; no traffic
#                      is counted there).
# Each switch must lose no request, and the held connection must get every
# answer, from the same pod. In IPVS mode no virtual or real server
# may be re-created: every one upstream (or kproxy) left is still there
# after the other's first sync, with its connection and packet counters
# (`ipvsadm -Ln --stats`) still growing, not restarted at 0, and kproxy's
# first sync deletes none. The kernel operations of kproxy's first sync
# (its -v=4 log: one line each, and the `sync done ... ops=N` line) are
# printed.
#
# The differential check rides on the same setup: after each switch, the
# state the new proxy's first sync left (ipvsadm -Ln, kube-ipvs0, ipset
# members, the KUBE-* rules) must equal what the old one programmed for the
# same objects, but for the known differences `comparable` takes out.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/api.sh"
source "$(dirname "$0")/lib/client.sh"

UPSTREAM_PID=
CLIENT_PID=
HOLD_PID=
finish() {
  local rc=$? f
  if [ "$rc" != 0 ]; then
    for f in "$WORK"/*.log; do
      echo "--- the last lines of $(basename "$f")"
      tail -25 "$f"
    done >&2
  fi
  [ -z "$CLIENT_PID" ] || kill "$CLIENT_PID" 2>/dev/null || true
  [ -z "$HOLD_PID" ] || kill "$HOLD_PID" 2>/dev/null || true
  if [ -n "$UPSTREAM_PID" ]; then kill "$UPSTREAM_PID" 2>/dev/null || true; wait "$UPSTREAM_PID" 2>/dev/null || true; fi
  cleanup_test
  api_reset
  api_cleanup
}
trap finish EXIT
T0=$SECONDS
elapsed() { echo "$((SECONDS - T0))s"; }

api_connect_vm
setup_node
CHAT="$ROOT/integration/lib/linechat.py"
for i in 1 2 3; do
  add_pod "pod$i" "10.244.1.$i"
  ip netns exec "kp-pod$i" "$PY" "$CHAT" serve "pod$i" 9000 &
done

CLUSTER_URL=http://10.96.0.10/
NODEPORT_URL=http://192.168.58.2:30081/
objects() {
  cat <<'YAML'
apiVersion: v1
kind: Node
metadata:
  name: node-1
  labels: {kubernetes.io/hostname: node-1}
status:
  addresses: [{type: InternalIP, address: 192.168.58.2}, {type: Hostname, address: node-1}]
YAML
  local name ip np type port
  for name in web np chat; do
    port=8080
    case $name in
      web) ip=10.96.0.10 np='' type=ClusterIP ;;
      np) ip=10.96.0.11 np=30081 type=NodePort ;;
      chat) ip=10.96.0.12 np='' type=ClusterIP port=9000 ;;
    esac
    cat <<YAML
---
apiVersion: v1
kind: Service
metadata: {name: $name, namespace: default}
spec:
  type: $type
  clusterIP: $ip
  selector: {app: $name}
  ports: [{name: http, protocol: TCP, port: 80, targetPort: $port${np:+, nodePort: $np}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: $name-1, namespace: default, labels: {kubernetes.io/service-name: $name}}
addressType: IPv4
ports: [{name: http, protocol: TCP, port: $port}]
endpoints:
YAML
    for i in 1 2 3; do ep "10.244.1.$i"; done
  done
}
objects | kubectl apply -f - >/dev/null

# --- the proxies -------------------------------------------------------------

metric() {
  { curl -s -m 3 http://127.0.0.1:10249/metrics || true; } | awk -v n="$1" '
    $1 == n || $1 == n "{ip_family=\"IPv4\"}" { v = $2 }
    END { print v + 0 }'
}
# A sync that started after $1 (epoch seconds) has completed, and nothing
# queued is left unsynced: the proxy that answers has made its first sync.
synced_after() {
  "$PY" -c 'import sys; s, q, t = map(float, sys.argv[1:]); sys.exit(not (s >= t and s >= q))' \
    "$(metric kubeproxy_sync_proxy_rules_last_timestamp_seconds)" \
    "$(metric kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds)" "$1"
}

PROXY_PID=
PROXY_NAME=
start_upstream() { # MODE
  PROXY_NAME=upstream-$1
  kube-proxy --proxy-mode="$1" --kubeconfig="$API_DIR/admin.kubeconfig" --hostname-override=node-1 \
    --conntrack-max-per-core=0 -v=2 >>"$WORK/$PROXY_NAME.log" 2>&1 &
  PROXY_PID=$!
  UPSTREAM_PID=$PROXY_PID
}
# kproxy as an operator starts it: upstream's flags, its own identity; -v=4
# logs each kernel operation.
start_kproxy() { # MODE
  PROXY_NAME=kproxy-$1
  "$KPROXY" --proxy-mode="$1" --kubeconfig="$KPROXY_KUBECONFIG" --hostname-override=node-1 \
    -v=4 >>"$WORK/$PROXY_NAME.log" 2>&1 &
  PROXY_PID=$!
  DAEMON_PID=$PROXY_PID
}
# Stop the running proxy with SIGTERM, as the kubelet stops a pod.
stop_proxy() {
  kill -TERM "$PROXY_PID"
  wait "$PROXY_PID" 2>/dev/null || true
  PROXY_PID='' UPSTREAM_PID='' DAEMON_PID=''
}
wait_synced() { # SINCE
  local end=$(($(date +%s) + 180))
  until synced_after "$1"; do
    kill -0 "$PROXY_PID" 2>/dev/null || { tail -30 "$WORK/$PROXY_NAME.log" >&2; fail "$PROXY_NAME exited"; }
    [ "$(date +%s)" -lt "$end" ] || { tail -30 "$WORK/$PROXY_NAME.log" >&2; fail "$PROXY_NAME: no sync after 180s"; }
    sleep 0.3
  done
}

# --- the counters (the client is lib/client.sh) -------------------------------

# ipvs_stats: one line per virtual and real server, "KEY CONNS INPKTS OUTPKTS".
ipvs_stats() {
  ipvsadm -Ln --stats | awk '
    /^(TCP|UDP|SCTP) / { vs = $1 " " $2; print vs, $3, $4, $5; next }
    /^  -> / && vs != "" && $2 ~ /:/ { print vs ">" $2, $3, $4, $5 }' | LC_ALL=C sort
}
# counters_kept BEFORE AFTER: every server of BEFORE is in AFTER, none of
# its counters lower (a re-created one starts again at 0), and the
# Services' own servers gained connections.
counters_kept() {
  "$PY" - "$1" "$2" <<'EOF'
import sys
def load(p):
    return {l.split()[0] + " " + l.split()[1]: list(map(int, l.split()[2:])) for l in open(p) if l.strip()}
before, after = load(sys.argv[1]), load(sys.argv[2])
bad = []
for k, v in before.items():
    if k not in after:
        bad.append(f"{k}: gone")
    elif any(a < b for a, b in zip(after[k], v)):
        bad.append(f"{k}: counters {v} -> {after[k]}")
for k in ("TCP 10.96.0.10:80", "TCP 192.168.58.2:30081"):
    if k not in after or k not in before or after[k][0] <= before[k][0]:
        bad.append(f"{k}: no new connection counted ({before.get(k)} -> {after.get(k)})")
if bad:
    sys.exit("\n".join(bad))
EOF
}

# The KUBE-* state both proxies program, normalised (see snapshot_kernel).
snapshot() { snapshot_kernel; }

# switch NAME MODE WHO: the running proxy stops, WHO (kproxy or upstream)
# starts in MODE, under the client's requests; the kernel state is
# recorded before the stop and after the new proxy's first sync.
switch() {
  local name=$1 mode=$2 state=$WORK/client.$1 since sent_at_sync
  rm -f "$state" "$state.stop" "$state.failures"
  client "$state" &
  CLIENT_PID=$!
  # And one connection held open across the switch, a line every 0.2 s.
  rm -f "$state.held" "$state.release"
  "$PY" "$CHAT" hold 10.96.0.12 80 "$state.held" "$state.release" >"$state.hold" 2>&1 &
  HOLD_PID=$!
  wait_sent "$state" 100
  [ "$mode" != ipvs ] || ipvs_stats >"$WORK/stats.$name.before"
  snapshot >"$WORK/kernel.$name.before"
  log "$(elapsed) $name: stopping $PROXY_NAME (SIGTERM) after $(sent "$state") requests"
  stop_proxy
  since=$(date +%s.%N)
  "start_$3" "$mode"
  wait_synced "$since"
  sent_at_sync=$(sent "$state")
  log "$(elapsed) $name: $PROXY_NAME made its first sync; $sent_at_sync requests sent so far"
  [ "$mode" != ipvs ] || ipvs_stats >"$WORK/stats.$name.after"
  wait_sent "$state" $((sent_at_sync + 100))
  touch "$state.stop" "$state.release"
  wait "$CLIENT_PID" || true
  CLIENT_PID=
  local held=0
  wait "$HOLD_PID" || held=$?
  HOLD_PID=
  [ "$held" = 0 ] || fail "$name: the connection held across the switch broke: $(cat "$state.hold")"
  log "$(elapsed) $name: the connection held across the switch got all its $(cat "$state.hold") answers from $(cat "$state.held")"
  client_result "$name" "$state"
  if [ "$mode" = ipvs ]; then
    counters_kept "$WORK/stats.$name.before" "$WORK/stats.$name.after" ||
      fail "$name: a virtual or real server was re-created (ipvsadm -Ln --stats before and after)"
    log "$(elapsed) $name: all $(wc -l <"$WORK/stats.$name.before") virtual and real servers kept, their counters growing"
  fi
  snapshot >"$WORK/kernel.$name.after"
}

# first_sync MODE: the operations kproxy's first sync applied, from its
# -v=4 log: one line per IPVS-mode operation; in the iptables mode, the
# chains each iptables-restore wrote.
first_sync() {
  local logf=$WORK/kproxy-$1.log done_line
  done_line=$(grep -m1 'sync done' "$logf") || fail "kproxy-$1: no sync done line"
  FIRST_OPS=$(echo "$done_line" | sed -nE 's/.* ops=([0-9]+).*/\1/p')
  awk '
    function flush() { if (restore != "") print restore; restore = "" }
    / sync done / { exit }
    / DEBUG kproxy::iptables::apply: iptables-restore input:/ { flush(); restore = "iptables-restore, chains written:"; next }
    / DEBUG kproxy::ipvs::/ { flush(); sub(/^.* DEBUG [^ ]+ /, ""); print; next }
    restore != "" && /^\*/ { table = substr($0, 2); next }
    restore != "" && /^:/ { restore = restore " " table "/" substr($1, 2); next }
    restore != "" && / family=/ { restore = restore " (" $1 ")"; flush() }
    END { flush() }' "$logf" >"$WORK/first-sync.$1"
  log "kproxy's first sync in $1 mode: $FIRST_OPS kernel operations ($done_line)"
  SUMMARY+=("kproxy's first sync in $1 mode: $FIRST_OPS kernel operations")
  sed 's/^/#   /' "$WORK/first-sync.$1" >&2
}

# comparable SNAPSHOT: snapshot_kernel's output with what legitimately
# differs between upstream and kproxy taken out, the same on both sides:
#   - rules of the chains whose order is the Services' iteration order
#     (KUBE-SERVICES, KUBE-NODEPORTS, KUBE-EXTERNAL-SERVICES,
#     KUBE-PROXY-FIREWALL: upstream's own order changes from one start to
#     the next) are sorted;
#   - upstream's nfacct packet counters (`-m nfacct --nfacct-name NAME`, and
#     the KUBE-NODEPORTS rule that exists only to count localhost NodePort
#     packets): kproxy has no nfacct counters (README, differences).
# Each known difference found is printed on stderr.
comparable() {
  "$PY" - "$1" <<'EOF'
import re, sys
SORTED = ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-EXTERNAL-SERVICES", "KUBE-PROXY-FIREWALL")
out, buckets, section = [], {}, None
for line in open(sys.argv[1]):
    line = line.rstrip("\n")
    if line.startswith("---"):
        section = line
    if "localhost_nps_accepted_pkts" in line:
        print(f"#   known difference: {section[4:]}: {line}", file=sys.stderr)
        continue
    stripped = re.sub(r"-m nfacct --nfacct-name +\S+ ", "", line)
    if stripped != line:
        print(f"#   known difference: {section[4:]}: {line}", file=sys.stderr)
    m = re.match(r"^(nat|filter|mangle) -A (\S+) ", stripped)
    if m and m.group(2) in SORTED:
        key = (section, m.group(1), m.group(2))
        if key not in buckets:
            buckets[key] = []
            out.append(buckets[key])
        buckets[key].append(stripped)
    else:
        out.append(stripped)
for x in out:
    print("\n".join(sorted(x)) if isinstance(x, list) else x)
EOF
}

# compare NAME: the kernel state after the switch (the new proxy's first
# sync done) equals the state before it (what the old proxy programmed for
# the same objects): after a takeover, kproxy's against upstream's; after a
# hand-back, upstream's against kproxy's.
DIFFERS=()
compare() {
  local w=$WORK/kernel.$1
  comparable "$w.before" >"$w.before.cmp" 2>"$w.known"
  comparable "$w.after" >"$w.after.cmp" 2>>"$w.known"
  if diff -u "$w.before.cmp" "$w.after.cmp" >"$WORK/diff.$1"; then
    log "$1: the same kernel state before and after ($(grep -vc '^---' "$w.before") lines: ipvsadm, kube-ipvs0, ipsets, KUBE-* rules)"
  else
    echo "--- $1: the kernel state differs (- before the switch, + after):" >&2
    tail -n +3 "$WORK/diff.$1" >&2
    DIFFERS+=("$1")
  fi
  sort -u "$w.known" >&2
}

# --- IPVS mode ---------------------------------------------------------------

log "$(elapsed) upstream kube-proxy $(basename "$(dirname "$K8S_BIN")"), ipvs mode"
since=$(date +%s.%N)
start_upstream ipvs
wait_synced "$since"
hits "$CLUSTER_URL" 3 >/dev/null
switch ipvs-takeover ipvs kproxy
first_sync ipvs
compare ipvs-takeover
# Nothing deleted: every object was upstream's, under upstream's names.
! grep -E '^delete (virtual|real) server' "$WORK/first-sync.ipvs" ||
  fail "kproxy's first sync deleted IPVS servers that upstream had programmed"
switch ipvs-handback ipvs upstream
compare ipvs-handback

# --- between the modes ---------------------------------------------------------

stop_proxy
"$KPROXY" --cleanup >"$WORK/cleanup.log" 2>&1 || { cat "$WORK/cleanup.log" >&2; fail "kproxy --cleanup failed"; }
left=$(snapshot | grep -v '^---' || true)
[ -z "$left" ] || fail "kproxy --cleanup left: $left"

# --- iptables mode -------------------------------------------------------------

log "$(elapsed) upstream kube-proxy, iptables mode"
since=$(date +%s.%N)
start_upstream iptables
wait_synced "$since"
hits "$CLUSTER_URL" 3 >/dev/null
switch iptables-takeover iptables kproxy
first_sync iptables
compare iptables-takeover
switch iptables-handback iptables upstream
compare iptables-handback
stop_proxy

for s in "${SUMMARY[@]}"; do log "$s"; done
[ ${#DIFFERS[@]} = 0 ] || fail "the kernel state changed across: ${DIFFERS[*]}"
echo "ok takeover: 4 switches without a failed request, IPVS servers kept, the same kernel state across each ($(elapsed))"
