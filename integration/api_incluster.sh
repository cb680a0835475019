#!/usr/bin/env bash
# kproxy as deploy/ runs it, against a real kube-apiserver, inside the VM:
#
# 1. deploy/README.md's steps where they apply: the ConfigMap's
#    kubeconfig.conf gets the API server's real address (step 2), deploy/ is
#    applied (step 4); then what the kubelet would do for the DaemonSet's pod:
#    its container command with $(NODE_NAME) expanded from the fieldRef, the
#    ConfigMap's files at the volume's mountPath (/var/lib/kproxy; one change:
#    conntrack.maxPerCore 0, this namespace's nf_conntrack_max being
#    read-only), and a
#    ServiceAccount token issued by the API server with the CA and namespace
#    at /var/run/secrets/kubernetes.io/serviceaccount. kproxy must program a
#    Service. Then the token rotates: the ServiceAccount is deleted and
#    re-created (the old token is refused from then on), a new token is
#    written into the file, kproxy's connections are cut, and a Service
#    created afterwards must still be programmed (kube-rs re-reads the token
#    file once its copy is 60 s old).
# 2. Pure in-cluster configuration: no kubeconfig at all (the config file
#    without clientConnection.kubeconfig), KUBERNETES_SERVICE_HOST/PORT.
#
# The files go on tmpfs mounts in a mount namespace of this test's own.
if [ -z "${API_INCLUSTER_NS:-}" ]; then
  [ "$(hostname)" = kproxy-vm ] || {
    echo "FAIL: $0 mounts over /var/run/secrets: it runs in the VM only (scripts/build-vm-tests.sh)" >&2
    exit 1
  }
  API_INCLUSTER_NS=1 exec unshare --mount --propagation private -- bash "$0" "$@"
fi
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/api.sh"

SA_DIR=/var/run/secrets/kubernetes.io/serviceaccount
SA_RECREATED=
finish() {
  cleanup_test
  kubectl delete -f "$WORK/deploy/daemonset.yaml" -f "$WORK/deploy/configmap.yaml" --ignore-not-found >/dev/null 2>&1 || true
  # The tests after this one use the control plane's kproxy kubeconfig; its
  # token died with the old ServiceAccount.
  if [ -n "$SA_RECREATED" ]; then
    local t
    t=$(kubectl -n kube-system create token kproxy --duration=24h) &&
      sed -i "s|^\( *token:\).*|\1 $t|" "$KPROXY_KUBECONFIG"
  fi
  api_reset
  api_cleanup
}
trap finish EXIT
T0=$SECONDS
elapsed() { echo "$((SECONDS - T0))s"; }

api_connect_vm
setup_node
mkdir -p /var/lib/kproxy /run/secrets
mount -t tmpfs -o mode=755 kproxy-config /var/lib/kproxy
mount -t tmpfs -o mode=755 kproxy-secrets /run/secrets
mkdir -p "$SA_DIR"

# deploy/README.md step 2: the server: line of kube-proxy's kubeconfig.conf
# (here: the test API server's address) goes into kproxy's.
D=$WORK/deploy
mkdir -p "$D"
cp "$ROOT"/deploy/*.yaml "$D/"
SERVER=https://127.0.0.1:$KPROXY_API_PORT
[ "$(grep -c '^ *server: ' "$D/configmap.yaml")" = 1 ] || fail "deploy/configmap.yaml: not one server: line"
sed -i "s|^\( *server:\).*|\1 $SERVER|" "$D/configmap.yaml"
# Step 4.
kubectl apply -f "$D/" >/dev/null

# What the kubelet makes of the DaemonSet's pod on node-1: the container's
# command and environment ($(VAR) expanded from the env, fieldRefs resolved),
# the ConfigMap volume's files at its mountPath.
kubectl -n kube-system get daemonset kproxy -o json >"$WORK/ds.json"
kubectl -n kube-system get configmap kproxy -o json >"$WORK/cm.json"
"$PY" - "$WORK/ds.json" "$WORK/cm.json" "$WORK/pod" <<'EOF'
import json, os, re, sys
ds, cm, out = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
pod = ds["spec"]["template"]["spec"]
c = pod["containers"][0]
fields = {"spec.nodeName": "node-1", "metadata.namespace": "kube-system",
          "spec.serviceAccountName": pod.get("serviceAccountName", "default")}
env = {}
for e in c.get("env", []):
    if "value" in e:
        env[e["name"]] = e["value"]
    else:
        env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
def expand(s):  # the kubelet's $(VAR) expansion; $$ escapes
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), s)
argv = [expand(a) for a in c.get("command", []) + c.get("args", [])]
volumes = {v["name"]: v for v in pod.get("volumes", [])}
mounts = [m for m in c.get("volumeMounts", [])
          if volumes[m["name"]].get("configMap", {}).get("name") == cm["metadata"]["name"]]
assert len(mounts) == 1, "the ConfigMap is mounted once"
os.makedirs(out, exist_ok=True)
open(f"{out}/argv", "w").write("\0".join(argv) + "\0")
open(f"{out}/env", "w").write("".join(f"{k}={v}\n" for k, v in env.items()))
open(f"{out}/mount", "w").write(mounts[0]["mountPath"])
for k, v in cm["data"].items():
    open(f"{out}/{k}", "w").write(v)
EOF
mapfile -d '' -t ARGV <"$WORK/pod/argv"
MOUNT=$(cat "$WORK/pod/mount")
[ "$MOUNT" = /var/lib/kproxy ] || fail "the DaemonSet mounts its ConfigMap at $MOUNT; this test has a tmpfs at /var/lib/kproxy only"
# node_config [in-cluster]: the ConfigMap's config.conf, with one change: a
# test's network namespace has a read-only nf_conntrack_max, so (as kind
# configures kube-proxy on such nodes) conntrack.maxPerCore is 0, which
# leaves it alone. in-cluster: no clientConnection.kubeconfig either.
node_config() {
  "$PY" - "$WORK/pod/config.conf" "$MOUNT/config.conf" "${1:-}" <<'EOF'
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
c.setdefault("conntrack", {})["maxPerCore"] = 0
if sys.argv[3] == "in-cluster":
    c.get("clientConnection", {}).pop("kubeconfig", None)
yaml.safe_dump(c, open(sys.argv[2], "w"))
EOF
}
node_config
cp "$WORK/pod/kubeconfig.conf" "$MOUNT/"
log "pod command: ${ARGV[*]}; env: $(tr '\n' ' ' <"$WORK/pod/env")"
grep -q -- "--hostname-override=node-1" <<<"${ARGV[*]}" || fail "\$(NODE_NAME) was not expanded: ${ARGV[*]}"

# The ServiceAccount token volume, as the kubelet projects it.
write_token() { # TOKEN: replaced in one rename, as the kubelet's atomic writer does
  printf '%s' "$1" >"$SA_DIR/.token.new"
  mv -f "$SA_DIR/.token.new" "$SA_DIR/token"
}
cp "$API_DIR/ca.crt" "$SA_DIR/ca.crt"
printf kube-system >"$SA_DIR/namespace"
TOKEN1=$(kubectl -n kube-system create token kproxy)
write_token "$TOKEN1"

# start_pod [ENV...]: the container's process (its image path replaced by
# the binary under test, never a wrapper adding flags), with only the
# environment the kubelet gives it.
start_pod() {
  local envs=()
  mapfile -t envs <"$WORK/pod/env"
  env -i PATH="$PATH" "${envs[@]}" "$@" "${KPROXY_BIN:-$KPROXY}" "${ARGV[@]:1}" >>"$WORK/kproxy.log" 2>&1 &
  DAEMON_PID=$!
}

svc() { # NAME CLUSTER_IP: a Service with one ready endpoint
  service_manifest "$1" "$2" 80 8080 10.244.1.1 | kubectl apply -f - >/dev/null
}
programmed() { ipvsadm -Ln -t "$1:80" 2>/dev/null | grep -q -- "-> 10.244.1.1:8080"; }

# --- 1. the DaemonSet's own configuration -----------------------------------
svc in1 10.96.0.41
# The kubelet gives every container the kubernetes Service's address; the
# kubeconfig must win over it.
start_pod KUBERNETES_SERVICE_HOST=10.96.0.1 KUBERNETES_SERVICE_PORT=443
wait_for 120 "in1 programmed by the DaemonSet's command" programmed 10.96.0.41
log "$(elapsed) DaemonSet configuration: in1 programmed"
kubectl get events.events.k8s.io -n default -o json |
  jq -e '.items[] | select(.reason == "Starting" and .regarding.name == "node-1")' >/dev/null ||
  fail "no Starting event written with the ServiceAccount's token"

# Rotation: a new ServiceAccount object invalidates every token of the old.
kubectl -n kube-system delete serviceaccount kproxy >/dev/null
SA_RECREATED=1
kubectl apply -f "$D/serviceaccount.yaml" >/dev/null
status_with() { # TOKEN: the API server's answer to a request made with it
  curl -s -o /dev/null -w '%{http_code}' --cacert "$API_DIR/ca.crt" -H "Authorization: Bearer $1" \
    "$SERVER/api/v1/services?limit=1"
}
old_token_refused() { [ "$(status_with "$TOKEN1")" = 401 ]; }
wait_for 30 "the old token to be refused" old_token_refused
TOKEN2=$(kubectl -n kube-system create token kproxy)
[ "$(status_with "$TOKEN2")" = 200 ] || fail "the new token is not accepted: $(status_with "$TOKEN2")"
write_token "$TOKEN2"
t=$SECONDS
# Cut kproxy's connections (the relay and each connection it forwards), so
# its watches must authenticate again; open the relay anew.
for p in $(ps -o pid= --ppid "$API_RELAY_PID"); do kill "$p" 2>/dev/null || true; done
kill "$API_RELAY_PID"
wait "$API_RELAY_PID" 2>/dev/null || true
socat "TCP-LISTEN:$KPROXY_API_PORT,bind=127.0.0.1,fork,reuseaddr" "UNIX-CONNECT:$KPROXY_API_SOCK" &
API_RELAY_PID=$!
wait_for 30 "the relay to accept again" kubectl get --raw /readyz
svc in2 10.96.0.42
wait_for 240 "in2 (created after the rotation) programmed" programmed 10.96.0.42
refusals=$(grep -c -i -e 401 -e unauthorized "$WORK/kproxy.log" || true)
log "$(elapsed) token rotated: in2 programmed $((SECONDS - t))s after the new token was written ($refusals log lines about refused credentials meanwhile)"
[ "$refusals" = 0 ] || log "the first: $(grep -m1 -i -e 401 -e unauthorized "$WORK/kproxy.log" | cut -c1-300)"

# --- 2. pure in-cluster configuration -------------------------------------------
stop_daemon
"$KPROXY" --cleanup >"$WORK/cleanup.log" 2>&1 || { cat "$WORK/cleanup.log"; fail "kproxy --cleanup failed"; }
! programmed 10.96.0.41 || fail "cleanup left in1"
node_config in-cluster
rm "$MOUNT/kubeconfig.conf"
! grep -q kubeconfig "$MOUNT/config.conf" || fail "the in-cluster config still names a kubeconfig"
start_pod KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT="$KPROXY_API_PORT"
both_programmed() { programmed 10.96.0.41 && programmed 10.96.0.42; }
wait_for 120 "in1 and in2 programmed in-cluster" both_programmed
svc in3 10.96.0.43
wait_for 120 "in3 programmed in-cluster" programmed 10.96.0.43
log "$(elapsed) in-cluster configuration: in1, in2, in3 programmed"
echo "ok api_incluster: DaemonSet command and ConfigMap, token rotation, pure in-cluster ($(elapsed))"
