#!/usr/bin/env bash
# Inside the VM: kproxy against the kernel floor, at N Services × M endpoints.
#   bench-vm.sh N M BASE_DIR CHANGED_DIR BIN_DIR
# BASE_DIR / CHANGED_DIR: scripts/gen-cluster.py output without and with
# one added endpoint. Every figure is the median of REPS runs in this boot.
set -euo pipefail
N=$1 M=$2 BASE=$3 CHANGED=$4 BIN=$5 REPS=${REPS:-3}
KPROXY=$BIN/kproxy
modprobe ip_vs; modprobe ip_vs_rr
ip link set lo up
# Idempotent: scripts/bench.sh runs this once per size in one boot.
if ! ip link show node0 >/dev/null 2>&1; then
  ip link add node0 type dummy; ip addr add 192.168.58.2/24 dev node0; ip link set node0 up
  ip route add default via 192.168.58.1 dev node0 onlink
fi

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.4f", b - a }'; }
# Every "empty kernel" figure starts from freshly loaded IPVS modules. A
# deleted real server stays on the kernel's destination trash list for a
# couple of minutes, and every later add walks that list: after 100,000
# deletions, re-adding takes minutes instead of seconds. Reloading the
# module empties it.
reset() {
  ipvsadm -C; ip link del kube-ipvs0 2>/dev/null || true
  modprobe -r ip_vs_rr ip_vs_wrr ip_vs_sh ip_vs 2>/dev/null || true
  modprobe ip_vs; modprobe ip_vs_rr
}
declare -A R
rec() { R[$1]="${R[$1]:-} $2"; }
run_once() { # dir label -> records wall time, kproxy's own sync time, ops and peak RSS
  local t0 log=/tmp/once.log pid hwm=0 h
  t0=$(now)
  "$KPROXY" --once --manifests "$1" --hostname-override node-1 -v 2 >"$log" 2>&1 &
  pid=$!
  # kproxy's own high-water mark, polled until it exits.
  while h=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null) && [ -n "$h" ]; do
    [ "$h" -gt "$hwm" ] && hwm=$h
    sleep 0.05
  done
  wait "$pid" || { cat "$log"; exit 1; }
  rec "$2.wall" "$(since "$t0")"
  rec "$2.rss" "$(awk -v k="$hwm" 'BEGIN { printf "%.1f", k / 1024 }')"
  rec "$2.sync" "$(sed -n 's/.*elapsed_ms=\([0-9.]*\).*/\1/p' "$log" | tail -1 | awk '{print $1/1000}')"
  rec "$2.ops" "$(sed -n 's/.* ops=\([0-9]*\).*/\1/p' "$log" | tail -1)"
}

"$BIN/kproxy-bench" ipvsadm-rules "$N" "$M" > /tmp/rules
for r in $(seq "$REPS"); do
  reset
  out=$("$BIN/kproxy-bench" floor "$N" "$M"); rec floor "$(echo "$out" | awk '{print $4}' | tr -d s)"
  # ipvsadm -R takes minutes at this size under emulation: measured once.
  if [ "$r" = 1 ] && [ -z "${BENCH_SKIP_IPVSADM:-}" ]; then
    reset
    t0=$(now); ipvsadm -R < /tmp/rules; rec ipvsadm_R "$(since "$t0")"
  fi
  reset
  run_once "$BASE" first
  run_once "$CHANGED" one_endpoint
  run_once "$CHANGED" unchanged
  t0=$(now); "$KPROXY" --cleanup --hostname-override node-1 >/dev/null 2>&1; rec cleanup "$(since "$t0")"
done

PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
echo "== raw figures (seconds; ops counts)"
for k in "${!R[@]}"; do echo "$k ${R[$k]}"; done | sort | tee /tmp/bench-raw
cat > /tmp/summary.py <<'PYEOF'
import statistics, sys
n, m = sys.argv[1], sys.argv[2]
rows = {}
for line in open("/tmp/bench-raw"):
    k, *v = line.split()
    rows[k] = [float(x) for x in v]
med = {k: statistics.median(v) for k, v in rows.items()}
print("== IPVS mode, %s Services x %s endpoints, in the VM (QEMU TCG), medians of %d runs" % (n, m, len(rows["floor"])))
print("kernel floor (netlink client alone, %d messages): %.3fs" % (int(n) * (int(m) + 1), med["floor"]))
if "ipvsadm_R" in med:
    print("ipvsadm -R of the same objects (one run): %.3fs (%.1fx the floor)" % (med["ipvsadm_R"], med["ipvsadm_R"] / med["floor"]))
for k, what in [("first", "empty kernel"), ("one_endpoint", "+1 endpoint"), ("unchanged", "no change")]:
    print("kproxy --once, %-13s wall %.3fs, of which sync %.3fs, kernel ops %d" % (what + ":", med[k + ".wall"], med[k + ".sync"], med[k + ".ops"]))
print("kproxy --cleanup: wall %.3fs" % med["cleanup"])
print("first sync / floor: %.2fx" % (med["first.sync"] / med["floor"]))
for key, src in [("floor", "floor"), ("first", "first.sync"), ("first_wall", "first.wall"),
                 ("one_endpoint", "one_endpoint.sync"), ("one_endpoint_ops", "one_endpoint.ops"),
                 ("unchanged", "unchanged.sync"), ("rss", "first.rss")]:
    for v in rows[src]:
        print("RESULT ipvs.%s.%s %s" % (n, key, v))
PYEOF
"$PY" /tmp/summary.py "$N" "$M"
