#!/usr/bin/env bash
# make bench: one command, one run, every figure comparable as a ratio.
#   host:  the pure stages (kproxy-bench plan) at 1,000, 10,000, 50,000;
#          the iptables mode through the binary in fresh namespaces, on
#          nf_tables and legacy (scripts/bench-host.py)
#   VM:    the IPVS mode against the kernel floor, one boot for all sizes
#          (scripts/bench-vm.sh)
# then bench/results.md and bench/*.png (scripts/bench-report.py).
# BENCH_SIZES (default 1000,10000), BENCH_ENDPOINTS (10), REPS (3),
# BENCH_PLAN_SIZES (1000,10000,50000), BENCH_SKIP_VM=1 to stay on the host,
# BENCH_SKIP_API=1 to leave out the API-server path.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${BENCH_SIZES:-1000,10000} M=${BENCH_ENDPOINTS:-10}
PLAN_SIZES=${BENCH_PLAN_SIZES:-1000,10000,50000}
cargo build --release --bin kproxy --bin kproxy-bench
out=target/bench; mkdir -p "$out"; rm -f "$out"/*.results

# Plots need matplotlib: a venv cached per machine.
VENV=/var/cache/kproxy-bench/venv
if ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q matplotlib
fi

echo "== host: convert + plan + diff on in-memory twins (no kernel), $(nproc) cores"
for n in ${PLAN_SIZES//,/ }; do
  target/release/kproxy-bench plan "$n" "$M" | tee -a "$out/plan.log" | awk -v n="$n" '{
    for (i = 1; i <= NF; i++) {
      if ($i == "parse") print "RESULT plan." n ".parse " $(i+1) + 0
      if ($i == "convert") print "RESULT plan." n ".convert " $(i+1) + 0
      if ($i == "first-sync") print "RESULT plan." n ".first " $(i+1) + 0
      if ($i == "one-endpoint-sync") print "RESULT plan." n ".one_endpoint " $(i+1) + 0
    }}' >> "$out/plan.results"
done

echo "== host: iptables mode through the binary, fresh namespaces"
BENCH_IPTABLES_SIZES=$SIZES BENCH_ENDPOINTS=$M python3 scripts/bench-host.py | tee "$out/host.results"

if [ -z "${BENCH_SKIP_VM:-}" ]; then
  echo "== VM: IPVS mode, booting"
  script=$out/vm-all.sh
  {
    echo 'set -euo pipefail'
    for n in ${SIZES//,/ }; do
      python3 scripts/gen-cluster.py --services "$n" --endpoints "$M" --out "$out/ipvs-$n/base" >/dev/null
      python3 scripts/gen-cluster.py --services "$n" --endpoints "$M" --out "$out/ipvs-$n/changed" --change-one >/dev/null
      echo "scripts/bench-vm.sh $n $M $out/ipvs-$n/base $out/ipvs-$n/changed target/release"
    done
  } > "$script"
  scripts/vm run --timeout 5400 --mem 4096 --env BENCH_SKIP_IPVSADM --env REPS -- bash "$script" | tee "$out/vm.results"
fi

# The API-server path (kproxy against a real kube-apiserver, in the VM).
[ -n "${BENCH_SKIP_API:-}" ] || [ -n "${BENCH_SKIP_VM:-}" ] || scripts/bench-api.sh | tee "$out/api.log"

BENCH_MACHINE="Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(sed -n 's/^PRETTY_NAME="\(.*\)"/\1/p' /etc/os-release), kernel $(uname -r) on the host; IPVS in QEMU (TCG). $(date -u +%Y-%m-%d)." \
  "$VENV/bin/python" scripts/bench-report.py "$out"/*.results bench
