#!/usr/bin/env bash
# The API-server path, measured: for each size (BENCH_API_SIZES, default
# "1000 10000" Services x BENCH_ENDPOINTS endpoints) a control plane on the
# host is loaded through the API (scripts/api-load.py); then, in one VM
# boot, kproxy (release build, IPVS mode, the deploy/ identity) is started
# against each: start -> whole cluster programmed, and one EndpointSlice
# PATCH -> the new real server in `ipvsadm -Ln` (median of REPS).
#   scripts/bench-api.sh   (make bench runs it; needs make setup)
set -euo pipefail
cd "$(dirname "$0")/.."
M=${BENCH_ENDPOINTS:-10}
read -r -a SIZES <<<"${BENCH_API_SIZES:-1000 10000}"
cargo build --release --bin kproxy
out=$PWD/target/bench-api
for d in "$out"/cp-*; do [ -d "$d" ] && scripts/control-plane stop "$d"; done
rm -rf "$out" && mkdir -p "$out"
ports=()
stop_all() { for n in "${SIZES[@]}"; do scripts/control-plane stop "$out/cp-$n" || true; done; }
trap stop_all EXIT
port=16500
for n in "${SIZES[@]}"; do
  port=$((port + 1))
  echo "== host: control plane for $n Services x $M endpoints on 127.0.0.1:$port"
  python3 scripts/gen-cluster.py --services "$n" --endpoints "$M" --out "$out/gen-$n"
  scripts/control-plane start "$out/cp-$n" "$port"
  python3 scripts/api-load.py "$out/cp-$n" "$out/gen-$n"
  ports+=(--host-port "$port")
done
echo "== VM: booting"
scripts/vm run --timeout 3000 --mem 4096 "${ports[@]}" --env REPS -- \
  scripts/bench-api-vm.sh "$out" "$M" target/release/kproxy "${SIZES[@]}"
