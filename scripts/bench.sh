#!/usr/bin/env bash
# make bench: release build on the host, a synthetic cluster from
# scripts/gen-cluster.py, then every measurement inside one VM boot
# (scripts/bench-vm.sh), so the figures are comparable as ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_SERVICES:-10000} M=${BENCH_ENDPOINTS:-10}
cargo build --release --bin kproxy --bin kproxy-bench
out=target/bench; rm -rf "$out"; mkdir -p "$out"
python3 scripts/gen-cluster.py --services "$N" --endpoints "$M" --out "$out/base"
python3 scripts/gen-cluster.py --services "$N" --endpoints "$M" --out "$out/changed" --change-one
echo "== host: convert + plan + diff on in-memory twins (no kernel), $(nproc) cores"
target/release/kproxy-bench plan "$N" "$M"
echo "== VM: booting"
scripts/vm run --timeout 3000 --mem 4096 --env BENCH_SKIP_IPVSADM --env REPS -- scripts/bench-vm.sh "$N" "$M" "$out/base" "$out/changed" target/release
echo "== the API server path (scripts/bench-api.sh)"
scripts/bench-api.sh
