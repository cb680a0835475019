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
ip link add node0 type dummy; ip addr add 192.168.58.2/24 dev node0; ip link set node0 up
ip route add default via 192.168.58.1 dev node0 onlink

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.4f", b - a }'; }
reset() { ipvsadm -C; ip link del kube-ipvs0 2>/dev/null || true; }
declare -A R
rec() { R[$1]="${R[$1]:-} $2"; }
run_once() { # dir label -> records wall time and kproxy's own sync time and ops
  local t0 log=/tmp/once.log
  t0=$(now)
  "$KPROXY" --once --manifests "$1" --hostname-override node-1 -v 2 >"$log" 2>&1 || { cat "$log"; exit 1; }
  rec "$2.wall" "$(since "$t0")"
  rec "$2.sync" "$(sed -n 's/.*elapsed_ms=\([0-9.]*\).*/\1/p' "$log" | tail -1 | awk '{print $1/1000}')"
  rec "$2.ops" "$(sed -n 's/.* ops=\([0-9]*\).*/\1/p' "$log" | tail -1)"
}

"$BIN/kproxy-bench" ipvsadm-rules "$N" "$M" > /tmp/rules
for r in $(seq "$REPS"); do
  reset
  out=$("$BIN/kproxy-bench" floor "$N" "$M"); rec floor "$(echo "$out" | awk '{print $4}' | tr -d s)"
  # ipvsadm -R takes minutes at this size under emulation: measured once.
  if [ "$r" = 1 ]; then
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
for k in "${!R[@]}"; do echo "$k ${R[$k]}"; done | "$PY" -c '
import sys, statistics
rows = {}
for line in sys.stdin:
    k, *v = line.split()
    rows[k] = [float(x) for x in v]
med = {k: statistics.median(v) for k, v in rows.items()}
n, m = sys.argv[1], sys.argv[2]
print(f"== IPVS mode, {n} Services x {m} endpoints, in the VM (QEMU TCG), medians of {len(rows[\"floor\"])} runs")
print(f"kernel floor (netlink client alone, {int(n)*(int(m)+1)} messages): {med[\"floor\"]:.3f}s")
print(f"ipvsadm -R of the same objects (one run):       {med[\"ipvsadm_R\"]:.3f}s")
print(f"kproxy --once, empty kernel:  wall {med[\"first.wall\"]:.3f}s, of which sync {med[\"first.sync\"]:.3f}s, ops {med[\"first.ops\"]:.0f}")
print(f"kproxy --once, +1 endpoint:   wall {med[\"one_endpoint.wall\"]:.3f}s, of which sync {med[\"one_endpoint.sync\"]:.3f}s, ops {med[\"one_endpoint.ops\"]:.0f}")
print(f"kproxy --once, no change:     wall {med[\"unchanged.wall\"]:.3f}s, of which sync {med[\"unchanged.sync\"]:.3f}s, ops {med[\"unchanged.ops\"]:.0f}")
print(f"kproxy --cleanup:             wall {med[\"cleanup\"]:.3f}s")
print(f"ratio first sync / floor: {med[\"first.sync\"]/med[\"floor\"]:.2f}x; ipvsadm -R / floor: {med[\"ipvsadm_R\"]/med[\"floor\"]:.2f}x")
' "$N" "$M"
