#!/usr/bin/env bash
# Inside the VM (scripts/bench-api.sh boots it): kproxy against the host's
# loaded API servers.   bench-api-vm.sh OUT M KPROXY SIZE...
set -euo pipefail
OUT=$1 M=$2 KPROXY=$3
shift 3
REPS=${REPS:-5}
ip link add node0 type dummy; ip addr add 192.168.58.2/24 dev node0; ip link set node0 up
ip route add default via 192.168.58.1 dev node0 onlink
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
results=()
for n in "$@"; do
  cp=$OUT/cp-$n port=$(cat "$OUT/cp-$n/port")
  ipvsadm -C; ip link del kube-ipvs0 2>/dev/null || true
  modprobe -r ip_vs_rr ip_vs 2>/dev/null || true
  modprobe ip_vs; modprobe ip_vs_rr
  # The kubeconfigs name 127.0.0.1:PORT; the host is at 10.0.2.100.
  socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" "TCP:10.0.2.100:$port" &
  relay=$!
  api() { curl -s --cacert "$cp/ca.crt" --cert "$cp/admin.crt" --key "$cp/admin.key" "$@"; }
  base=https://127.0.0.1:$port
  until api "$base/readyz" >/dev/null; do sleep 0.2; done
  api -X POST -H 'Content-Type: application/json' "$base/api/v1/nodes" \
    -d '{"apiVersion":"v1","kind":"Node","metadata":{"name":"node-1"}}' >/dev/null
  log=/tmp/kproxy-$n.log
  t0=$(now)
  "$KPROXY" --kubeconfig "$cp/kproxy.kubeconfig" --hostname-override node-1 \
    --ipvs-min-sync-period 0s --healthz-bind-address "" --metrics-bind-address "" -v 2 >"$log" 2>&1 &
  pid=$!
  until grep -q 'sync done.*full=true.*errors=0' "$log"; do
    kill -0 "$pid" || { cat "$log"; exit 1; }
    sleep 0.2
  done
  start_wall=$(since "$t0")
  start_ops=$(grep -m1 'sync done.*full=true' "$log" | sed -n 's/.* ops=\([0-9]*\).*/\1/p')
  vs=$(ipvsadm -Ln | grep -c '^TCP')
  rs=$(ipvsadm -Ln | grep -c -- '->.*Masq')
  patch=""
  for r in $(seq "$REPS"); do
    svc=svc-$r
    vip=$(api "$base/api/v1/namespaces/bench/services/$svc" | sed -n 's/.*"clusterIP": "\([0-9.]*\)".*/\1/p' | head -1)
    ip=10.250.0.$r
    t1=$(now)
    api -X PATCH -H 'Content-Type: application/json-patch+json' \
      "$base/apis/discovery.k8s.io/v1/namespaces/bench/endpointslices/$svc-abcde" \
      -d "[{\"op\":\"add\",\"path\":\"/endpoints/-\",\"value\":{\"addresses\":[\"$ip\"],\"conditions\":{\"ready\":true},\"nodeName\":\"node-2\"}}]" >/dev/null
    until ipvsadm -Ln -t "$vip:80" 2>/dev/null | grep -q "$ip:8080"; do sleep 0.05; done
    patch="$patch $(since "$t1")"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  kill "$relay" 2>/dev/null || true
  last_ops=$(grep 'sync done' "$log" | tail -1 | sed -n 's/.* ops=\([0-9]*\).*/\1/p')
  results+=("$(printf '%6d x %d | start -> programmed %8.3fs (%d ops; %d virtual, %d real servers) | PATCH -> ipvsadm: median %.3fs of [%s ] (last sync: %s ops)' \
    "$n" "$M" "$start_wall" "$start_ops" "$vs" "$rs" "$(echo "$patch" | median)" "$patch" "$last_ops")")
done
echo "== API source, IPVS mode, in the VM (QEMU TCG), real kube-apiserver on the host, medians of $REPS"
printf '%s\n' "${results[@]}"
