# shellcheck shell=bash
# What every end-to-end test script uses, in the VM (lib/common.sh) and on
# the host (host/lib.sh) alike.

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
log() { echo "# $(date +%T.%3N) $*" >&2; }

# wait_for SECONDS DESCRIPTION CMD...: poll until CMD succeeds (a bound on
# how long convergence may take, not a performance assertion).
wait_for() {
  local secs=$1 what=$2
  shift 2
  local end=$(($(date +%s) + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || fail "timed out after ${secs}s waiting for: $what"
    sleep 0.3
  done
}
