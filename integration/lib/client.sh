# shellcheck shell=bash
# The traffic client of the drills (takeover.sh, restart_drill.sh). Needs
# PY, CLUSTER_URL and NODEPORT_URL set and CLIENT_PID holding the client's
# pid once started; `fail` from common.sh.

# client STATE: requests through the ClusterIP and the NodePort in turn, a
# fresh connection each, 2 s allowed for each, until $STATE.stop appears (at
# most MAX_REQUESTS); "sent failed" in STATE after each pair, every failure
# in STATE.failures. (One Python process: a curl per request costs a
# process start under the emulated CPU.)
MAX_REQUESTS=${MAX_REQUESTS:-3000}
client() {
  "$PY" - "$1" "$MAX_REQUESTS" "$CLUSTER_URL" "$NODEPORT_URL" <<'EOF'
import http.client, os, sys, time, urllib.parse
state, limit, urls = sys.argv[1], int(sys.argv[2]), [urllib.parse.urlsplit(u) for u in sys.argv[3:]]
sent = failed = 0
while not os.path.exists(state + ".stop") and sent < limit:
    for u in urls:
        sent += 1
        try:
            c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=2)
            c.request("GET", u.path)
            r = c.getresponse()
            body = r.read().decode(errors="replace").strip()
            c.close()
            ok = r.status == 200 and body in ("pod1", "pod2", "pod3")
            why = f"{r.status} {body!r}"
        except Exception as e:
            ok, why = False, repr(e)
        if not ok:
            failed += 1
            with open(state + ".failures", "a") as f:
                f.write(f"{time.strftime('%T')} {u.geturl()}: {why}\n")
    with open(state + ".tmp", "w") as f:
        f.write(f"{sent} {failed}\n")
    os.replace(state + ".tmp", state)
    time.sleep(0.05)
EOF
}
sent() { cut -d' ' -f1 "$1" 2>/dev/null || echo 0; }
# wait_sent STATE N: until the client has sent N requests.
wait_sent() {
  until [ "$(sent "$1")" -ge "$2" ]; do
    kill -0 "$CLIENT_PID" 2>/dev/null || fail "the client stopped at $(sent "$1") requests (MAX_REQUESTS $MAX_REQUESTS)"
    sleep 0.2
  done
}
# client_result PHASE STATE: the stopped client's figures, logged and kept
# in SUMMARY; any failed request fails the test, its failures printed.
SUMMARY=()
client_result() {
  local sent failed
  read -r sent failed <"$2"
  SUMMARY+=("$1: $sent requests sent, $failed failed")
  log "$(elapsed) $1: $sent requests sent, $failed failed"
  if [ "$failed" != 0 ]; then
    sed 's/^/#   /' "$2.failures" >&2
    fail "$1: $failed of $sent requests failed"
  fi
}
