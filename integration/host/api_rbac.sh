#!/usr/bin/env bash
# Least privilege, against a real kube-apiserver with RBAC.
#
# kproxy must start under deploy/'s identity and nothing more
# (DIR/kproxy.kubeconfig: ServiceAccount kube-system:kproxy bound to
# deploy/clusterrole.yaml), and refuse to start, before touching the
# kernel, when it cannot work:
#   1. --kubeconfig names a file that does not exist, or one that is not a
#      kubeconfig: non-zero exit naming the file, no KUBE-* chain;
#   2. no --kubeconfig and no in-cluster environment (KUBECONFIG is set in
#      the environment: like upstream, kproxy must not fall back to it):
#      non-zero exit saying why, no KUBE-* chain;
#   3. deploy/'s ClusterRole without `watch` on endpointslices: non-zero
#      exit naming the permission and the identity, no KUBE-* chain, no
#      Event recorded;
#   4. deploy/'s ClusterRole as it is: kproxy programs a Service (traffic
#      reaches the pod) and records its Starting event on the Node, as
#      upstream does (reason Starting, action StartKubeProxy, regarding Node
#      node-1), with reportingController kproxy.
# Conditions are passed to check/wait_for as single-quoted strings, to be
# evaluated (again at each poll) there.
# shellcheck disable=SC2016,SC2034
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
host_guard
setup_node
api_start_local "$WORK/api"
host_node
api_namespace e2e
add_pod a 1
service web 10.96.30.10
slice web-1 web 10.244.1.2
SA=system:serviceaccount:kube-system:kproxy
FLAGS=(--proxy-mode=iptables --hostname-override=node-1 "${NETNS_FLAGS[@]}")

# refused WHAT CMD...: CMD exits non-zero (within 60 s) and leaves no
# KUBE-* chain; its output is in $out.
refused() {
  local what=$1 rc=0
  shift
  out=$(timeout 60 "$@" 2>&1) || rc=$?
  echo "# $what: exit $rc: $(grep -v '^\s*$' <<<"$out" | tail -n 1)"
  [ "$rc" != 0 ] || fail "$what: kproxy exited 0"
  [ "$rc" != 124 ] || fail "$what: kproxy was still running after 60 s"
  [ -z "$(kube_chains)" ] || fail "$what: kproxy touched the kernel: $(kube_chains | tr '\n' ' ')"
  echo "ok - $what: kproxy exits $rc and leaves no KUBE-* chain"
}
says() { grep -qF -- "$1" <<<"$out" || fail "the message does not say \"$1\": $out"; }

# --- 1. unreadable kubeconfig
refused "--kubeconfig does not exist" "$KPROXY" "${FLAGS[@]}" --kubeconfig="$WORK/nowhere/kubeconfig"
says "$WORK/nowhere/kubeconfig"
echo "ok - the message names the file"
printf 'this: [is not a kubeconfig\n' >"$WORK/garbage.kubeconfig"
refused "--kubeconfig is not a kubeconfig" "$KPROXY" "${FLAGS[@]}" --kubeconfig="$WORK/garbage.kubeconfig"
says "$WORK/garbage.kubeconfig"
echo "ok - the message names the file"

# --- 2. no kubeconfig, not in a cluster
[ -n "${KUBECONFIG:-}" ] || fail "KUBECONFIG should be set here (api.sh sets it)"
refused "no --kubeconfig, no in-cluster environment" \
  env -u KUBERNETES_SERVICE_HOST -u KUBERNETES_SERVICE_PORT "$KPROXY" "${FLAGS[@]}"
says "in-cluster"
echo "ok - the message says there is no kubeconfig and no in-cluster configuration"

# --- 3. one needed verb missing from the ClusterRole
can_watch_slices() { kubectl auth can-i watch endpointslices.discovery.k8s.io --as="$SA" >/dev/null 2>&1; }
check "deploy/'s role lets kproxy watch endpointslices" can_watch_slices
"$PY" - "$HOST_ROOT/deploy/clusterrole.yaml" >"$WORK/clusterrole-no-watch.yaml" <<'PY'
import sys
lines = open(sys.argv[1]).read().splitlines()
out, slices = [], False
for l in lines:
    if "resources:" in l:
        slices = "endpointslices" in l
    if slices and "verbs:" in l:
        assert '"watch"' in l, l
        l = l.replace(', "watch"', "").replace('"watch", ', "")
    out.append(l)
print("\n".join(out))
PY
grep -q watch "$WORK/clusterrole-no-watch.yaml" || fail "the reduced role lost every watch"
kubectl apply -f "$WORK/clusterrole-no-watch.yaml" >/dev/null
wait_for 30 "RBAC no longer lets kproxy watch endpointslices" eval '! can_watch_slices'
refused "deploy/'s role without watch on endpointslices" \
  "$KPROXY" "${FLAGS[@]}" --kubeconfig="$KPROXY_KUBECONFIG"
says "\"$SA\""
says "watch endpointslices.discovery.k8s.io"
echo "ok - the message names the identity and the permission: $(grep -o 'denies.*' <<<"$out" | head -n 1)"
if grep -qE 'list endpointslices|(list|watch) services|(list|watch) nodes' <<<"$out"; then
  fail "the message names permissions that are granted: $out"
fi
echo "ok - and only that permission"
starting_events() {
  kubectl get events.v1.events.k8s.io -A -o json |
    jq -c '[.items[] | select(.reason == "Starting" and .reportingController == "kproxy")]'
}
check "the refused start recorded no Event" eval '[ "$(starting_events)" = "[]" ]'

# --- 4. deploy/'s role as it is
kubectl apply -f "$HOST_ROOT/deploy/clusterrole.yaml" >/dev/null
wait_for 30 "RBAC lets kproxy watch endpointslices again" can_watch_slices
start_kproxy "${FLAGS[@]}" --kubeconfig="$KPROXY_KUBECONFIG"
wait_for 60 "kproxy programs e2e/web under deploy/'s identity" eval '[ -n "$(svc_chain e2e/web:http)" ]'
check "the ClusterIP reaches the pod" answered_by http://10.96.30.10/id a
wait_for 30 "kproxy's Starting event" eval '[ "$(starting_events)" != "[]" ]'
ev=$(starting_events | jq -c '.[0]')
echo "# kproxy's event: $(jq -c '{reason, action, type, note, regarding, reportingController, reportingInstance}' <<<"$ev")"
check "event reason Starting" eval '[ "$(jq -r .reason <<<"$ev")" = Starting ]'
check "event action StartKubeProxy" eval '[ "$(jq -r .action <<<"$ev")" = StartKubeProxy ]'
check "event regarding Node node-1" eval '[ "$(jq -r "[.regarding.kind, .regarding.name] | join(\"/\")" <<<"$ev")" = Node/node-1 ]'
check "event reportingController kproxy" eval '[ "$(jq -r .reportingController <<<"$ev")" = kproxy ]'
# The same event as `kubectl get events -A` (core/v1) shows it.
check "kubectl get events -A lists it" eval 'kubectl get events -A --no-headers | grep -q "Starting.*node/node-1"'
check "kproxy is still running" kproxy_alive
check "no permission problem was logged" eval '! grep -qiE "forbidden|denies" "$KPROXY_LOG"'

# Upstream's own Starting event, for the fields kproxy should share.
stop_kproxy
start_upstream --proxy-mode=iptables
upstream_events() {
  kubectl get events.v1.events.k8s.io -A -o json |
    jq -c '[.items[] | select(.reason == "Starting" and .reportingController == "kube-proxy")]'
}
wait_for 60 "upstream kube-proxy's Starting event" eval '[ "$(upstream_events)" != "[]" ]'
stop_upstream
up=$(upstream_events | jq -c '.[0]')
echo "# upstream's event: $(jq -c '{reason, action, type, note, regarding, reportingController, reportingInstance}' <<<"$up")"
for f in .reason .action .type .regarding.kind .regarding.name .regarding.namespace; do
  check "event $f as upstream's ($(jq -c "$f" <<<"$up"))" eval "[ \"\$(jq -c '$f' <<<\"\$ev\")\" = \"\$(jq -c '$f' <<<\"\$up\")\" ]"
done
for f in .note .regarding.uid .regarding.apiVersion .reportingInstance .reportingController; do
  a=$(jq -c "$f" <<<"$ev") b=$(jq -c "$f" <<<"$up")
  [ "$a" = "$b" ] || echo "known difference: Starting event $f: kproxy $a, upstream $b"
done
