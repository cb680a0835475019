#!/usr/bin/env bash
# scripts/vm-tests.sh: kproxy's kernel test suite. Runs INSIDE the VM (see
# scripts/build-vm-tests.sh, which builds on the host and boots the VM).
#
#   scripts/vm-tests.sh [TEST_BINARY...]
#
# 1. Each Rust test binary given (the `vm_*` test targets) runs with
#    `--include-ignored --skip bench_ --test-threads=1`; each of its tests gets a
#    PASS/FAIL line.
# 2. Each integration/*.sh runs with bash; one PASS/FAIL line per script.
#
# Every binary and every script runs in a network namespace of its own (and a
# mount namespace with that namespace's /sys and an empty /run/netns), so each
# starts from an empty kernel view: only lo (up), no IPVS virtual servers, no
# iptables rules, no ipsets, no named netns, default sysctls. Kernel modules
# are global and stay loaded.
#
# Environment:
#   KPROXY           the kproxy binary for the scripts (default target/debug/kproxy)
#   VM_TEST_FILTER   run only the binaries/scripts whose name contains this
#   VM_TEST_TIMEOUT  seconds one binary or script may take (default 600)
#   KPROXY_API_PORT, KPROXY_API_DIR
#                    the host's control plane (scripts/control-plane), for
#                    integration/api_*.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
KPROXY=$(realpath -m "${KPROXY:-target/debug/kproxy}")
export KPROXY
filter=${VM_TEST_FILTER:-}
limit=${VM_TEST_TIMEOUT:-600}

# The host's API server (scripts/build-vm-tests.sh), reached over eth0 from
# the VM's own namespace only; each test's fresh namespace reaches it through
# this unix socket (integration/lib/api.sh relays its own loopback to it).
if [ -n "${KPROXY_API_PORT:-}" ]; then
  export KPROXY_API_SOCK=/run/kproxy-api.sock
  socat "UNIX-LISTEN:$KPROXY_API_SOCK,fork" "TCP:10.0.2.100:$KPROXY_API_PORT" &
fi

passed=0
failed=0
failures=()
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

pass() {
  passed=$((passed + 1))
  echo "PASS $1"
}
fail() {
  failed=$((failed + 1))
  failures+=("$1")
  echo "FAIL $1${2:+ ($2)}"
}

# Run "$@" in fresh network + mount namespaces, with a time limit. The mount
# namespace gives the test its own /sys (showing its own links) and its own
# /run/netns, so named namespaces (`ip netns add pod1`) never leak between tests.
isolated() {
  timeout --kill-after=10 "$limit" unshare --net --mount --propagation private -- \
    bash -c 'mount -t sysfs sysfs /sys && mkdir -p /run/netns &&
      mount -t tmpfs -o mode=755 netns /run/netns && ip link set lo up && exec "$@"' isolated "$@"
}

why() {
  case $1 in
    124 | 137) echo "timed out after ${limit}s" ;;
    *) echo "exit status $1" ;;
  esac
}

selected() {
  [ -z "$filter" ] || [[ $1 == *"$filter"* ]]
}

run_rust_binary() {
  local bin=$1 name rc=0 log
  name=$(basename "$bin")
  name=${name%-*} # drop cargo's hash suffix
  log=$logs/$name.log
  echo "=== $name"
  local t0=$SECONDS
  # bench_* tests are measurements for `make bench`, not behaviour checks.
  # Only stdout is parsed: a child process's stderr (modprobe's, say) would
  # otherwise land in the middle of a "test NAME ... ok" line.
  isolated "$bin" --include-ignored --skip bench_ --test-threads=1 | tee "$log" || rc=${PIPESTATUS[0]}
  local line test result seen=0
  while read -r line; do
    [[ $line =~ ^test\ (.+)\ \.\.\.\ (ok|FAILED)$ ]] || continue
    test=${BASH_REMATCH[1]} result=${BASH_REMATCH[2]}
    seen=$((seen + 1))
    if [ "$result" = ok ]; then pass "$name::$test"; else fail "$name::$test"; fi
  done <"$log"
  echo "# $name took $((SECONDS - t0))s"
  # A crash, a timeout or a harness error is a failure even if no test said so.
  if [ "$rc" != 0 ] && ! grep -q 'FAILED$' "$log"; then
    fail "$name" "$(why "$rc")"
  elif [ "$seen" = 0 ]; then
    fail "$name" "ran no test"
  fi
}

run_script() {
  local script=$1 name rc=0 t0
  name=${script#./}
  echo "=== $name"
  t0=$SECONDS
  isolated bash "$script" || rc=$?
  if [ "$rc" = 0 ]; then pass "$name ($((SECONDS - t0))s)"; else fail "$name" "$(why "$rc"), after $((SECONDS - t0))s"; fi
}

for bin in "$@"; do
  [ -x "$bin" ] || {
    fail "$bin" "not an executable"
    continue
  }
  if selected "$(basename "$bin")"; then run_rust_binary "$bin"; fi
done

shopt -s nullglob
for script in integration/*.sh; do
  if selected "$(basename "$script")"; then run_script "$script"; fi
done

echo
if [ "$failed" -gt 0 ]; then
  echo "failed:"
  printf '  %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
