#!/usr/bin/env bash
# scripts/host-e2e.sh: kproxy's end-to-end tests on this host's kernel.
#
#   scripts/host-e2e.sh [SCRIPT...]     (default: every integration/host/*.sh)
#
# Each script runs with bash in fresh network + mount + PID namespaces (the
# mount namespace gives it its own /sys, /proc and an empty /run/netns), so
# it starts from an empty kernel view: only lo, no iptables rules, no named
# netns, and nothing it starts outlives it. The host's own network
# namespace is never touched. A script starts its own
# etcd + kube-apiserver on its namespace's loopback (scripts/control-plane),
# so scripts share nothing. One PASS/FAIL line per script, then a summary;
# the exit status is non-zero if any script failed.
#
# iptables, veth and netns work on this host's kernel; IPVS and dummy links
# do not, so IPVS tests live in the VM (scripts/vm-tests.sh).
#
# Environment:
#   KPROXY             the kproxy binary (default target/debug/kproxy)
#   HOST_TEST_FILTER   run only the scripts whose name contains this
#   HOST_TEST_TIMEOUT  seconds one script may take (default 420)
#   HOST_TEST_VERBOSE  1: print each script's output even when it passes
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
KPROXY=$(realpath -m "${KPROXY:-target/debug/kproxy}")
export KPROXY
filter=${HOST_TEST_FILTER:-}
limit=${HOST_TEST_TIMEOUT:-420}
verbose=${HOST_TEST_VERBOSE:-0}

[ "$(id -u)" = 0 ] || {
  echo "host-e2e: needs root (network namespaces, iptables)" >&2
  exit 2
}
[ -x "$KPROXY" ] || {
  echo "host-e2e: no kproxy binary at $KPROXY (cargo build --bin kproxy)" >&2
  exit 2
}
scripts/k8s-tools bindir >/dev/null 2>&1 || {
  echo "host-e2e: no control plane binaries (scripts/k8s-tools setup; make setup does)" >&2
  exit 2
}

passed=0
failed=0
failures=()
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# Run "$@" in fresh network + mount + PID namespaces, with a time limit.
# The script is the PID namespace's init: when it ends, however it ends
# (a timeout included), the kernel kills whatever it started (etcd, the API
# servers, proxies, pods' servers), so nothing outlives it.
isolated() {
  timeout --kill-after=10 "$limit" unshare --net --mount --pid --kill-child --mount-proc \
    --propagation private -- \
    bash -c 'mount -t sysfs sysfs /sys && mkdir -p /run/netns &&
      mount -t tmpfs -o mode=755 netns /run/netns && ip link set lo up && exec "$@"' isolated "$@"
}

why() {
  case $1 in
  124 | 137) echo "timed out after ${limit}s" ;;
  *) echo "exit status $1" ;;
  esac
}

scripts=("$@")
if [ ${#scripts[@]} = 0 ]; then
  shopt -s nullglob
  scripts=(integration/host/*.sh)
fi

t_all=$SECONDS
for script in "${scripts[@]}"; do
  name=${script#./}
  [ "$(basename "$name")" != lib.sh ] || continue
  [ -z "$filter" ] || [[ $name == *"$filter"* ]] || continue
  log=$logs/$(basename "$name").log
  echo "=== $name"
  t0=$SECONDS rc=0
  # Its temporary files go where this runner removes them, even after a
  # timeout that gave the script no chance to clean up.
  tmp=$logs/tmp.$(basename "$name")
  mkdir -p "$tmp"
  TMPDIR=$tmp isolated bash "$script" >"$log" 2>&1 || rc=$?
  rm -rf "$tmp"
  # The figures and checks a script prints are worth seeing either way;
  # the whole output only when it failed (or when asked).
  if [ "$rc" = 0 ] && [ "$verbose" != 1 ]; then
    grep -E '^(ok|figure|known difference|# upstream)' "$log" || true
  else
    cat "$log"
  fi
  if [ "$rc" = 0 ]; then
    passed=$((passed + 1))
    echo "PASS $name ($((SECONDS - t0))s)"
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "FAIL $name ($(why "$rc"), after $((SECONDS - t0))s)"
  fi
done

echo
if [ "$failed" -gt 0 ]; then
  echo "failed:"
  printf '  %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed ($((SECONDS - t_all))s)"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
