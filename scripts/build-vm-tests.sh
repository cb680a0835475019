#!/usr/bin/env bash
# scripts/build-vm-tests.sh: build the kernel tests on the host, then run them
# in the VM (scripts/vm-tests.sh). Used by `make test` and `make test-vm`.
#
#   scripts/build-vm-tests.sh [scripts/vm run option...]
#
# Test targets whose name starts with `vm_` (integration/vm_*.rs, declared as
# [[test]] in Cargo.toml, each test #[ignore]d so that the host's plain
# `cargo test` skips them) are built with `cargo test --no-run`; the kproxy
# binary is built for the integration/*.sh scripts, which find it as $KPROXY.
# Options are passed to `scripts/vm run` (e.g. --timeout 1800).
# VM_TEST_FILTER and VM_TEST_TIMEOUT are passed into the VM (see vm-tests.sh).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v jq >/dev/null || scripts/vm packages jq

# Executables of the compiler artifacts in cargo's JSON messages, filtered by
# target kind ("test" or "bin").
executables() {
  jq -r --arg kind "$1" 'select(.reason == "compiler-artifact" and .executable != null
    and (.target.kind | index($kind))) | .executable'
}

vm_targets=()
mapfile -t vm_targets < <(cargo metadata --no-deps --format-version 1 |
  jq -r '.packages[].targets[] | select((.kind | index("test")) and (.name | startswith("vm_"))) | .name')

echo "--- building kproxy and the VM tests (${vm_targets[*]:-none})"
KPROXY=$(cargo build --bin kproxy --message-format=json-render-diagnostics | executables bin)
export KPROXY
binaries=()
if [ ${#vm_targets[@]} -gt 0 ]; then
  test_args=()
  for t in "${vm_targets[@]}"; do test_args+=(--test "$t"); done
  mapfile -t binaries < <(cargo test --no-run --message-format=json-render-diagnostics "${test_args[@]}" |
    executables test)
fi

# A real control plane on the host for the tests that run kproxy against an
# API server (integration/api_*.sh): the VM reaches it at 10.0.2.100.
KPROXY_API_PORT=${KPROXY_API_PORT:-16443}
# Both overridable, so that two runs on one machine do not share a port or a folder.
KPROXY_API_DIR=${KPROXY_API_DIR:-$PWD/target/vm-api}
export KPROXY_API_PORT KPROXY_API_DIR
rm -rf "$KPROXY_API_DIR"
echo "--- starting etcd and kube-apiserver on 127.0.0.1:$KPROXY_API_PORT for the VM"
scripts/control-plane start "$KPROXY_API_DIR" "$KPROXY_API_PORT"
trap 'scripts/control-plane stop "$KPROXY_API_DIR"' EXIT

echo "--- running the kernel tests in the VM"
rc=0
scripts/vm run --timeout "${VM_RUN_TIMEOUT:-2400}" --host-port "$KPROXY_API_PORT" \
  --env VM_TEST_FILTER --env VM_TEST_TIMEOUT --env KPROXY_API_PORT --env KPROXY_API_DIR "$@" \
  -- scripts/vm-tests.sh "${binaries[@]}" || rc=$?
exit "$rc"
