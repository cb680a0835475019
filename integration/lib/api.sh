# shellcheck shell=bash
# Helpers for the end-to-end tests that run kproxy against a real
# kube-apiserver (scripts/control-plane). Source after common.sh (VM) or on
# its own (host tests, which have no dummy links).
#
# Two ways to reach an API server:
#   api_start_local          start etcd + kube-apiserver in this network
#                            namespace, on its own loopback (host tests:
#                            every test has a namespace, and a control plane,
#                            of its own)
#   api_connect_vm           inside the VM: the host's control plane, which
#                            scripts/build-vm-tests.sh started and the VM
#                            reaches through a relay that vm-tests.sh opened
#                            in the VM's own namespace; this test's namespace
#                            gets 127.0.0.1:$KPROXY_API_PORT relayed to it
# Both set API_DIR (admin.kubeconfig, kproxy.kubeconfig, ca.crt) and
# KUBECONFIG for `kubectl`, and the kproxy identity's kubeconfig in
# KPROXY_KUBECONFIG.

API_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=base.sh
. "$API_ROOT/integration/lib/base.sh"
K8S_BIN=$("$API_ROOT/scripts/k8s-tools" bindir)
export PATH="$K8S_BIN:$PATH"
API_DIR=
API_RELAY_PID=


api_start_local() {
  API_DIR=${1:-$(mktemp -d /tmp/kproxy-api.XXXXXX)}
  "$API_ROOT/scripts/control-plane" start "$API_DIR" "${KPROXY_API_PORT:-6443}" ||
    fail "the control plane did not start"
  export KUBECONFIG=$API_DIR/admin.kubeconfig
  KPROXY_KUBECONFIG=$API_DIR/kproxy.kubeconfig
}

api_stop_local() {
  [ -n "$API_DIR" ] && "$API_ROOT/scripts/control-plane" stop "$API_DIR"
}

api_connect_vm() {
  [ -n "${KPROXY_API_DIR:-}" ] && [ -S "${KPROXY_API_SOCK:-}" ] ||
    fail "no API server was forwarded into the VM (run through scripts/build-vm-tests.sh)"
  API_DIR=$KPROXY_API_DIR
  socat "TCP-LISTEN:$KPROXY_API_PORT,bind=127.0.0.1,fork,reuseaddr" "UNIX-CONNECT:$KPROXY_API_SOCK" &
  API_RELAY_PID=$!
  export KUBECONFIG=$API_DIR/admin.kubeconfig
  KPROXY_KUBECONFIG=$API_DIR/kproxy.kubeconfig
  local i
  for i in $(seq 1 100); do
    kubectl get --raw /readyz >/dev/null 2>&1 && break
    sleep 0.2
  done
  kubectl get --raw /readyz >/dev/null 2>&1 || fail "the host's API server does not answer in the VM"
  # The API server is shared by the VM's tests (one after another): start
  # from a cluster with nothing of an earlier test's in it.
  api_reset
}

# Everything a test may have created: Services (but the API server's own
# default/kubernetes), EndpointSlices, Nodes, and the Events of `default`
# (where a Node's events land).
api_reset() {
  kubectl delete events --all -n default --wait=false >/dev/null 2>&1 || true
  kubectl delete endpointslices --all -A --wait=false >/dev/null 2>&1 || true
  kubectl get svc -A --no-headers -o custom-columns=NS:.metadata.namespace,N:.metadata.name 2>/dev/null |
    while read -r ns n; do
      [ "$ns/$n" = default/kubernetes ] || kubectl -n "$ns" delete svc "$n" --wait=false >/dev/null 2>&1 || true
    done
  kubectl delete nodes --all --wait=false >/dev/null 2>&1 || true
}

# api_node NAME [ZONE]: a Node object for the node kproxy runs as.
api_node() {
  kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Node
metadata:
  name: $1
  labels: {kubernetes.io/hostname: $1${2:+, topology.kubernetes.io/zone: $2}}
YAML
}

api_cleanup() {
  [ -z "$API_RELAY_PID" ] || kill "$API_RELAY_PID" 2>/dev/null || true
}
