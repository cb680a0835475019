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

if [ "${1:-}" = "--one" ]; then one "$2"; exit; fi
n=0
for f in "$ROOT"/tests/fixtures/ipvs/*.yaml; do
  unshare --net -- bash "$0" --one "$f" || fail "fixture $(basename "$f")"
  n=$((n + 1))
done
[ "$n" -ge 15 ] || fail "only $n fixtures found"
echo "all $n fixtures programmed as planned"
