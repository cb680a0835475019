#!/usr/bin/env bash
# `kproxy --once` on each planner fixture, in a fresh network namespace:
# what `ipvsadm -Ln`, kube-ipvs0 and `ipset save` show must equal the
# reviewed expectation (the fixture's .ipvsadm file) exactly.
source "$(dirname "$0")/lib/common.sh"

one() {
  local fixture=$1 name expected flags
  name=$(basename "$fixture" .yaml)
  setup_node
  mkdir -p "$WORK/$name"
  cp "$fixture" "$WORK/$name/"
  flags=$(sed -n 's/^# kproxy-test://p' "$fixture")
  # shellcheck disable=SC2086
  "$KPROXY" --once --manifests "$WORK/$name" --hostname-override node-1 $flags 2>"$WORK/$name.log" \
    || { cat "$WORK/$name.log"; fail "$name: kproxy --once exited non-zero"; }
  expected="${fixture%.yaml}.ipvsadm"
  diff -u <(grep -v -e '^kube-ipvs0:' -e '^no local endpoints:' -e '^refused:' -e '^ipset:' "$expected") <(ipvs_table) \
    || fail "$name: ipvsadm -Ln differs from $expected"
  diff -u <(sed -n 's/^kube-ipvs0: *//p' "$expected") <(ipvs0_addrs) \
    || fail "$name: kube-ipvs0 addresses differ"
  diff -u <(grep '^ipset:' "$expected" | LC_ALL=C sort) \
    <(ipset save | awk '$1 == "add" { print "ipset: " $2 " " $3 }' | LC_ALL=C sort) \
    || fail "$name: ipset members differ from $expected"
  echo "ok $name"
}

# A restart forgets nothing it needs: a nodePort outside --nodeport-range,
# programmed by one `kproxy --once`, is removed by the next one (a new
# process) once its Service is gone, through the KUBE-NODE-PORT-* member
# written with it; a virtual server on the same address that kproxy did
# not write stays.
restart() {
  local fixture=$ROOT/tests/fixtures/ipvs/nodeport-outside-range.yaml
  setup_node
  mkdir -p "$WORK/restart"
  cp "$fixture" "$WORK/restart/"
  "$KPROXY" --once --manifests "$WORK/restart" --hostname-override node-1 2>"$WORK/restart.log" \
    || { cat "$WORK/restart.log"; fail "restart: first kproxy --once exited non-zero"; }
  ipvsadm -Ln -t 192.168.58.2:8080 >/dev/null 2>&1 || fail "restart: no virtual server for nodePort 8080"
  ipvsadm -A -t 192.168.58.2:8081 -s rr
  rm "$WORK/restart/$(basename "$fixture")"
  "$KPROXY" --once --manifests "$WORK/restart" --hostname-override node-1 2>>"$WORK/restart.log" \
    || { cat "$WORK/restart.log"; fail "restart: second kproxy --once exited non-zero"; }
  ! ipvsadm -Ln -t 192.168.58.2:8080 >/dev/null 2>&1 || fail "restart: nodePort 8080's virtual server outlived its Service"
  ! ipvsadm -Ln -u 192.168.58.2:40053 >/dev/null 2>&1 || fail "restart: nodePort 40053's virtual server outlived its Service"
  ipvsadm -Ln -t 192.168.58.2:8081 >/dev/null 2>&1 || fail "restart: a virtual server kproxy did not write was removed"
  echo "ok restart: nodePorts outside the range removed after a restart"
}

if [ "${1:-}" = "--one" ]; then one "$2"; exit; fi
if [ "${1:-}" = "--restart" ]; then restart; exit; fi
n=0
for f in "$ROOT"/tests/fixtures/ipvs/*.yaml; do
  unshare --net -- bash "$0" --one "$f" || fail "fixture $(basename "$f")"
  n=$((n + 1))
done
[ "$n" -ge 15 ] || fail "only $n fixtures found"
unshare --net -- bash "$0" --restart || fail "restart"
echo "all $n fixtures programmed as planned"
