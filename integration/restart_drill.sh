#!/usr/bin/env bash
# Restart drill under traffic (IPVS mode, manifests source): a ClusterIP and
# a NodePort Service with three pods; a client sends requests in a loop
# (bounded, a fresh connection each, 2 s allowed each) through both while
# kproxy is restarted three ways:
#   sigterm   SIGTERM (the rules stay: the Services keep answering while
#             kproxy is stopped), then started again;
#   sigkill   kill -9, then started again;
#   midsync   stopped, 2,000 Services (namespace bench, 10.96.0.0/16) added
#             to the manifests, started, killed -9 while its first sync is
#             programming them, started again and left to converge.
# Each phase: zero failed requests (sent/failed printed); no virtual or real
# server of the probed Services is re-created (`ipvsadm -Ln --stats`
# counters never go down across the restart, and the restarted process's
# first sync, in its -v=4 log, has no operation on them). After the
# mid-sync kill, `kproxy --dry-run` with the same flags reports no change.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/client.sh"

CLIENT_PID=
finish() {
  local rc=$? f
  if [ "$rc" != 0 ]; then
    for f in "$WORK"/kproxy-*.log; do
      [ -e "$f" ] || continue
      echo "--- the last lines of $(basename "$f")"
      tail -15 "$f"
    done >&2
  fi
  [ -z "$CLIENT_PID" ] || kill "$CLIENT_PID" 2>/dev/null || true
  cleanup_test
  # Empty IPVS here, now: left to the namespace's teardown, the kernel
  # removes 2,000 virtual servers under its global IPVS mutex after this
  # script has ended, and the next test's IPVS calls wait for it.
  ipvsadm -C 2>/dev/null || true
  ip link del kube-ipvs0 2>/dev/null || true
}
trap finish EXIT
T0=$SECONDS
elapsed() { echo "$((SECONDS - T0))s"; }

setup_node
for i in 1 2 3; do add_pod "pod$i" "10.244.1.$i"; done
PODS=(10.244.1.1 10.244.1.2 10.244.1.3)

M=$WORK/manifests; mkdir -p "$M"
# The probed Services, outside the generated Services' 10.96.0.0/16.
service_manifest web 10.100.0.10 80 8080 "${PODS[@]}" >"$M/web.yaml"
NODE_PORT=30080 service_manifest np 10.100.0.11 80 8080 "${PODS[@]}" >"$M/np.yaml"
CLUSTER_URL=http://10.100.0.10/
NODEPORT_URL=http://192.168.58.2:30080/
# The probed Services' virtual servers in `ipvsadm -Ln` (the NodePort one
# is on the node address).
PROBED='10\.100\.0\.1[01]:80|:30080'

FLAGS=(--manifests "$M" --hostname-override node-1 --healthz-bind-address ""
  --metrics-bind-address "" --ipvs-sync-period 30s)
RUN=0
LOGF=
# start: kproxy in the background, -v=4 (one log line per kernel operation),
# a log file per start.
start() {
  RUN=$((RUN + 1))
  LOGF=$WORK/kproxy-$RUN.log
  "$KPROXY" "${FLAGS[@]}" -v=4 >"$LOGF" 2>&1 &
  DAEMON_PID=$!
}
# wait_first_sync [SECONDS]: until the running kproxy logged its first sync.
wait_first_sync() {
  local end=$(($(date +%s) + ${1:-120}))
  until grep -q "sync done" "$LOGF"; do
    kill -0 "$DAEMON_PID" 2>/dev/null || fail "kproxy (start $RUN) exited: $(tail -5 "$LOGF")"
    [ "$(date +%s)" -lt "$end" ] || fail "kproxy (start $RUN): no sync after ${1:-120}s"
    sleep 0.3
  done
}
kill_daemon() { # SIGNAL
  kill "-$1" "$DAEMON_PID"
  wait "$DAEMON_PID" 2>/dev/null || true
  DAEMON_PID=
}

# --- the client (lib/client.sh) ------------------------------------------------

client_start() { # STATE
  rm -f "$1" "$1.stop" "$1.failures"
  client "$1" &
  CLIENT_PID=$!
}
client_stop() { # PHASE STATE
  touch "$2.stop"
  wait "$CLIENT_PID" || true
  CLIENT_PID=
  client_result "$1" "$2"
}

# --- the checks -------------------------------------------------------------------

# probed_stats: the probed Services' virtual and real servers, one line
# each, "KEY CONNS INPKTS OUTPKTS".
probed_stats() {
  ipvsadm -Ln --stats | awk -v re="$PROBED" '
    /^(TCP|UDP|SCTP) / { vs = ($2 ~ re) ? $1 " " $2 : ""; if (vs != "") print vs, $3, $4, $5; next }
    /^  -> / && vs != "" && $2 ~ /:/ { print vs ">" $2, $3, $4, $5 }' | LC_ALL=C sort
}
# counters_kept BEFORE AFTER [grown]: every server of BEFORE is in AFTER,
# none of its counters lower (a re-created one starts again at 0); with
# "grown", both Services' virtual servers counted new connections.
counters_kept() {
  "$PY" - "$@" <<'EOF'
import sys
def load(p):
    return {l.split()[0] + " " + l.split()[1]: list(map(int, l.split()[2:])) for l in open(p) if l.strip()}
before, after = load(sys.argv[1]), load(sys.argv[2])
grown = len(sys.argv) > 3
bad = []
if len(before) < 8:
    bad.append(f"only {len(before)} probed servers before: {sorted(before)}")
for k, v in before.items():
    if k not in after:
        bad.append(f"{k}: gone")
    elif any(a < b for a, b in zip(after[k], v)):
        bad.append(f"{k}: counters {v} -> {after[k]}")
if grown:
    for k in ("TCP 10.100.0.10:80", "TCP 192.168.58.2:30080"):
        if k not in after or k not in before or after[k][0] <= before[k][0]:
            bad.append(f"{k}: no new connection counted ({before.get(k)} -> {after.get(k)})")
if bad:
    sys.exit("\n".join(bad))
EOF
}
# first_sync_ops LOG: the kernel operations of that process's first sync.
first_sync_ops() {
  awk '/ sync done / { exit } / DEBUG kproxy::ipvs::/ { sub(/^.* DEBUG [^ ]+ /, ""); print }' "$1"
}
# check_first_sync PHASE LOG: no operation on a probed virtual or real server.
check_first_sync() {
  local ops touched
  ops=$(first_sync_ops "$2")
  touched=$(echo "$ops" | grep -E "(virtual|real) server .*($PROBED)" || true)
  [ -z "$touched" ] || fail "$1: the restarted kproxy's first sync touched the probed Services: $touched"
  log "$(elapsed) $1: first sync after the restart: $(echo "$ops" | grep -c . || true) operations, none on the probed Services ($(grep -m1 'sync done' "$2" | sed -nE 's/.*(ops=[0-9]+).*/\1/p'))"
  [ -z "$ops" ] || sed -n '1,3s/^/#   /p' <<<"$ops" >&2
}
# grown PHASE BEFORE: both Services count new connections (the kernel folds
# its per-CPU counters into these every 2 s).
check_grown() {
  local end=$(($(date +%s) + 20))
  until probed_stats >"$WORK/stats.$1.end" && counters_kept "$2" "$WORK/stats.$1.end" grown 2>/dev/null; do
    [ "$(date +%s)" -lt "$end" ] || { counters_kept "$2" "$WORK/stats.$1.end" grown || true; fail "$1: counters did not grow"; }
    sleep 0.5
  done
}

# --- the drill ----------------------------------------------------------------------

start
wait_first_sync
wait_for 30 "the ClusterIP answers" curl -sf -m 2 "$CLUSTER_URL"
wait_for 30 "the NodePort answers" curl -sf -m 2 "$NODEPORT_URL"
log "$(elapsed) probed Services programmed: $(probed_stats | wc -l) virtual and real servers"

# restart PHASE SIGNAL: kill kproxy with SIGNAL under the client's requests,
# start it again; the counters and its first sync are checked.
restart() {
  local phase=$1 sig=$2 state=$WORK/client.$1 n
  client_start "$state"
  wait_sent "$state" 60
  probed_stats >"$WORK/stats.$phase.before"
  log "$(elapsed) $phase: kill -$sig kproxy after $(sent "$state") requests"
  kill_daemon "$sig"
  if [ "$sig" = TERM ]; then
    # As upstream: the rules stay, and the Services keep answering.
    n=$(ipvsadm -Ln | grep -cE "$PROBED" || true)
    [ "$n" -ge 3 ] || fail "$phase: after SIGTERM only $n probed virtual servers are left"
    wait_sent "$state" $(($(sent "$state") + 60))
    log "$(elapsed) $phase: kproxy stopped, the Services answered; $(sent "$state") requests so far"
  fi
  start
  wait_first_sync
  probed_stats >"$WORK/stats.$phase.after"
  counters_kept "$WORK/stats.$phase.before" "$WORK/stats.$phase.after" ||
    fail "$phase: a probed virtual or real server was re-created (ipvsadm -Ln --stats before and after)"
  check_first_sync "$phase" "$LOGF"
  wait_sent "$state" $(($(sent "$state") + 60))
  check_grown "$phase" "$WORK/stats.$phase.before"
  client_stop "$phase" "$state"
}

restart sigterm TERM
restart sigkill KILL

# --- midsync: killed while programming 2,000 new Services -----------------------
phase=midsync state=$WORK/client.midsync
client_start "$state"
wait_sent "$state" 60
probed_stats >"$WORK/stats.$phase.before"
kill_daemon TERM
log "$(elapsed) $phase: kproxy stopped; adding 2000 Services"
"$PY" "$ROOT/scripts/gen-cluster.py" --services 2000 --endpoints 4 --out "$WORK/bench" >/dev/null
mv "$WORK"/bench/*.json "$M"/
base=$(ipvsadm -Ln | wc -l)
full=$((base + 2000 * 5))
proc_base=$(wc -l </proc/net/ip_vs)
start
t_start=$(date +%s.%N)
# Kill -9 as soon as the first 100 lines of new virtual and real servers are
# in the kernel (/proc/net/ip_vs: cheap to read, polled every 10 ms).
"$PY" - "$DAEMON_PID" "$((proc_base + 100))" <<'EOF' || fail "$phase: kproxy exited or the sync did not start in 180 s: $(tail -5 "$LOGF")"
import os, signal, sys, time
pid, want = int(sys.argv[1]), int(sys.argv[2])
end = time.time() + 180
while time.time() < end:
    with open("/proc/net/ip_vs") as f:
        n = sum(1 for _ in f)
    if n >= want:
        os.kill(pid, signal.SIGKILL)
        sys.exit(0)
    os.kill(pid, 0)
    time.sleep(0.01)
sys.exit(1)
EOF
kill_daemon KILL
n=$(ipvsadm -Ln | wc -l)
grep -q "sync done" "$LOGF" && fail "$phase: the sync was complete before the kill ($n of $full lines)"
[ "$n" -lt "$full" ] || fail "$phase: all $n lines of ipvsadm -Ln were there at the kill"
log "$(elapsed) $phase: killed -9 mid-sync, ipvsadm -Ln at $((n - base)) of $((full - base)) new lines, kube-ipvs0 at $(ip -o addr show dev kube-ipvs0 | wc -l) addresses"
probed_stats >"$WORK/stats.$phase.killed"
counters_kept "$WORK/stats.$phase.before" "$WORK/stats.$phase.killed" ||
  fail "$phase: a probed server was re-created by the killed sync"
t_restart=$(date +%s.%N)
start
wait_first_sync 180
t_done=$(date +%s.%N)
probed_stats >"$WORK/stats.$phase.after"
counters_kept "$WORK/stats.$phase.before" "$WORK/stats.$phase.after" ||
  fail "$phase: a probed virtual or real server was re-created (ipvsadm -Ln --stats before and after)"
check_first_sync "$phase" "$LOGF"
! first_sync_ops "$LOGF" | grep -q '^delete ' || fail "$phase: the restarted kproxy deleted: $(first_sync_ops "$LOGF" | grep '^delete ' | head)"
n=$(ipvsadm -Ln | wc -l)
[ "$n" = "$full" ] || fail "$phase: ipvsadm -Ln has $n lines after the restart's sync, not $full"
"$KPROXY" "${FLAGS[@]}" --dry-run >"$WORK/dry-run.out" 2>"$WORK/dry-run.err" ||
  fail "$phase: --dry-run failed: $(cat "$WORK/dry-run.err")"
changes=$(sed -nE 's/^# ([0-9]+) change\(s\) to the live kernel:$/\1/p' "$WORK/dry-run.out")
if [ "$changes" != 0 ]; then
  grep -v '^# desired' "$WORK/dry-run.out" | sed -n '1,40p' >&2
  fail "$phase: --dry-run after the convergence reports '${changes:-no count}' changes"
fi
converge=$("$PY" -c 'import sys; a, b, c = map(float, sys.argv[1:]); print(f"{c - b:.1f}s after the restart ({c - a:.1f}s after the killed start)")' \
  "$t_start" "$t_restart" "$t_done")
log "$(elapsed) $phase: converged $converge: ipvsadm -Ln $n lines, --dry-run: 0 changes"
SUMMARY+=("$phase: converged $converge; --dry-run reports 0 changes")
wait_sent "$state" $(($(sent "$state") + 60))
check_grown "$phase" "$WORK/stats.$phase.before"
client_stop "$phase" "$state"
kill_daemon TERM

for s in "${SUMMARY[@]}"; do log "$s"; done
echo "ok restart_drill: SIGTERM, SIGKILL and a kill -9 mid-sync without a failed request; probed servers kept; converged ($(elapsed))"
