#!/usr/bin/env bash
# Graceful termination with a real TCP connection held open through a
# ClusterIP, as upstream's IPVS proxier drains (GracefulDeleteRS in
# pkg/proxy/ipvs/graceful_termination.go): the pod that leaves the
# EndpointSlice keeps its real server at weight 0, its open connection keeps
# working, new connections reach only the other pod, and once the connection
# is gone from IPVS the real server is deleted. kproxy is killed (-9) and
# restarted in the middle of the drain: the new process resumes it from the
# kernel's state.
source "$(dirname "$0")/lib/common.sh"
setup_node
CHAT="$ROOT/integration/lib/linechat.py"
for i in 1 2; do
  add_pod "pod$i" "10.244.1.$i"
  ip netns exec "kp-pod$i" "$PY" "$CHAT" serve "pod$i" 9000 &
done

M=$WORK/manifests; mkdir -p "$M"
write() { # POD_SUFFIXES
  local eps=() e
  for e in $1; do eps+=("10.244.1.$e"); done
  service_manifest chat 10.96.0.10 9000 9000 "${eps[@]}" > "$M/chat.yaml.tmp"
  mv "$M/chat.yaml.tmp" "$M/chat.yaml"
}
# The weight of real server IP:9000, or nothing when it is not there.
weight_of() {
  ipvsadm -Ln -t 10.96.0.10:9000 | awk -v rs="$1:9000" '$2 == rs {print $4}'
}

write "1 2"
start_daemon "$M" --ipvs-sync-period 5s -v=2
wait_for 60 "the ClusterIP answers" "$PY" "$CHAT" once 10.96.0.10 9000

"$PY" "$CHAT" hold 10.96.0.10 9000 "$WORK/held" "$WORK/stop" >"$WORK/hold.out" 2>&1 &
HOLD=$!
wait_for 20 "the held connection is answered" test -s "$WORK/held"
held=$(cat "$WORK/held")
case $held in pod1) a=1 b=2 ;; pod2) a=2 b=1 ;; *) fail "held connection answered by '$held'" ;; esac
log "the held connection is on pod$a"

write "$b"
wait_for 30 "pod$a at weight 0" sh -c "[ \"\$(ipvsadm -Ln -t 10.96.0.10:9000 | awk '\$2 == \"10.244.1.$a:9000\" {print \$4}')\" = 0 ]"
ipvsadm -Ln -t 10.96.0.10:9000 | sed 's/^/# /' >&2
for i in $(seq 8); do
  got=$("$PY" "$CHAT" once 10.96.0.10 9000)
  [ "$got" = "pod$b" ] || fail "new connection $i reached '$got' while pod$a drains"
done
kill -0 "$HOLD" 2>/dev/null || fail "the held connection broke when pod$a left the slice: $(cat "$WORK/hold.out")"

# Killed mid-drain, then started again: the draining real server is found
# in the kernel and neither deleted nor given its weight back.
kill -9 "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true; DAEMON_PID=
start_daemon "$M" --ipvs-sync-period 5s -v=2
wait_for 60 "the restarted kproxy synced" grep -q "sync done" "$WORK/kproxy.log"
sleep 6 # one periodic sync more
[ "$(weight_of "10.244.1.$a")" = 0 ] || fail "after the restart pod$a's real server is '$(weight_of "10.244.1.$a")', not draining at 0"
kill -0 "$HOLD" 2>/dev/null || fail "the held connection broke across the restart: $(cat "$WORK/hold.out")"

touch "$WORK/stop"
wait "$HOLD" || fail "the held connection failed: $(cat "$WORK/hold.out")"
log "the held connection got $(cat "$WORK/hold.out") answers from pod$a, all through the drain"
# Closed with a reset, so IPVS drops it within seconds (a FIN close would
# linger two minutes in TIME_WAIT); the limit is generous on purpose.
wait_for 180 "pod$a's real server deleted" sh -c "! ipvsadm -Ln -t 10.96.0.10:9000 | grep -q ' 10.244.1.$a:9000 '"
[ "$(weight_of "10.244.1.$b")" = 1 ] || fail "pod$b's weight is '$(weight_of "10.244.1.$b")'"
echo "ok drain: held connection survived removal and a kill -9 restart; pod$a drained at weight 0, then deleted"
