#!/usr/bin/env bash
# NodePorts on 127.0.0.1 in iptables mode (--iptables-localhost-nodeports),
# through the binary against a real kube-apiserver, compared with upstream
# kube-proxy v1.36 on the same objects in the same namespace:
#   - NodePort Service web (30080) with one ready endpoint, pod a;
#   - upstream with its default (true): route_localnet becomes 1, a request
#     from the node to 127.0.0.1:30080 reaches pod a; its rules, its
#     KUBE-FIREWALL chain and the INPUT/OUTPUT jumps are the expectations;
#     then upstream with =false: that request is refused, route_localnet
#     (reset to 0 first) is left alone;
#   - after kube-proxy --cleanup, kubelet's KUBE-FIREWALL (which upstream
#     keeps) removed and route_localnet reset to 0, kproxy with the
#     default, then with =false: the same answers, ipt_compare equal to
#     upstream's at each step, and KUBE-FIREWALL and the jumps as upstream's.
# shellcheck disable=SC2016
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
host_guard
setup_node
api_start_local "$WORK/api"
host_node
api_namespace e2e
add_pod a 1
service web 10.96.20.10 NodePort 30080
slice web-1 web 10.244.1.2
LOCAL=http://127.0.0.1:30080/id

COMMON=(--proxy-mode=iptables --hostname-override=node-1 --cluster-cidr=10.244.0.0/16)
KPROXY_FLAGS=("${COMMON[@]}" "${NETNS_FLAGS[@]}" --kubeconfig="$KPROXY_KUBECONFIG")

route_localnet() { cat /proc/sys/net/ipv4/conf/all/route_localnet; }
# The jump to KUBE-NODEPORTS (upstream's syncProxyRules: `! -d 127.0.0.0/8`
# unless NodePorts are served on localhost).
tail_rule() { nat_rules | grep -- 'this must be the last rule' | grep -- '--dst-type LOCAL'; }
takes_in_loopback() { tail_rule >/dev/null && ! tail_rule | grep -qF -- '127.0.0.0/8'; }
leaves_out_loopback() { tail_rule | grep -qF -- '! -d 127.0.0.0/8'; }
# firewall: KUBE-FIREWALL's rules and the built-in chains that jump to it,
# in order (INPUT and OUTPUT hold only the proxy's jumps here).
firewall() {
  iptables -t filter -S KUBE-FIREWALL 2>/dev/null || echo "no KUBE-FIREWALL"
  iptables -t filter -S INPUT
  iptables -t filter -S OUTPUT
}
# refused URL: the connection is refused (curl's exit status 7).
refused() {
  local rc=0
  curl -s -m 3 -o /dev/null "$1" || rc=$?
  [ "$rc" = 7 ] || {
    echo "  $1: curl exit status $rc, want 7 (refused)" >&2
    return 1
  }
}
drop_kubelet_chain() {
  iptables -t filter -D INPUT -j KUBE-FIREWALL 2>/dev/null || true
  iptables -t filter -D OUTPUT -j KUBE-FIREWALL 2>/dev/null || true
  if iptables -t filter -S KUBE-FIREWALL >/dev/null 2>&1; then
    iptables -t filter -F KUBE-FIREWALL && iptables -t filter -X KUBE-FIREWALL
  fi
}

# run WHO FLAG START...: start a proxy with --iptables-localhost-nodeports=FLAG
# (true: its default, no flag given), wait for its rules, check what the
# flag means, and save the rules as $WORK/WHO.FLAG and KUBE-FIREWALL's as
# $WORK/WHO.FLAG.fw.
run() {
  local who=$1 flag=$2 start=$3
  shift 3
  local flags=("$@")
  [ "$flag" = true ] || flags+=(--iptables-localhost-nodeports=false)
  sysctl -qw net.ipv4.conf.all.route_localnet=0
  local t
  t=$(date +%s.%N)
  "$start" "${flags[@]}"
  # The previous proxy's rules are still there: wait for this one's sync.
  wait_for 60 "$who ($flag): first sync" eval "awk -v t=$t -v s=\"\$(metric kubeproxy_sync_proxy_rules_last_timestamp_seconds)\" 'BEGIN { exit !(s != \"\" && s + 0 >= t + 0) }'"
  check "$who ($flag): NodePort 30080 programmed" eval "nat_rules | grep -qF -- '--dport 30080 -j KUBE-EXT-'"
  check "$who ($flag): the node reaches the NodePort on its address" answered_by "http://$NODE_IP:30080/id" a
  if [ "$flag" = true ]; then
    check "$who ($flag): the jump to KUBE-NODEPORTS takes in loopback" takes_in_loopback
    check "$who ($flag): route_localnet is 1" eval '[ "$(route_localnet)" = 1 ]'
    check "$who ($flag): 127.0.0.1:30080 from the node reaches pod a" answered_by "$LOCAL" a
  else
    check "$who ($flag): the jump to KUBE-NODEPORTS leaves out 127.0.0.0/8" leaves_out_loopback
    check "$who ($flag): route_localnet is left at 0" eval '[ "$(route_localnet)" = 0 ]'
    check "$who ($flag): 127.0.0.1:30080 from the node is refused" refused "$LOCAL"
  fi
  iptables-save >"$WORK/$who.$flag"
  firewall >"$WORK/$who.$flag.fw"
}

# same_as_upstream FLAG: kproxy's rules, KUBE-FIREWALL and jumps are upstream's.
same_as_upstream() {
  local flag=$1
  ipt_compare "$WORK/upstream.$flag" "$WORK/kproxy.$flag" >"$WORK/compare.$flag" || {
    cat "$WORK/compare.$flag"
    fail "kproxy ($flag): rules differ from upstream's (above)"
  }
  echo "ok - kproxy ($flag): rules are upstream's ($(tail -n 1 "$WORK/compare.$flag"))"
  grep '^known difference' "$WORK/compare.$flag" || true
  diff -u "$WORK/upstream.$flag.fw" "$WORK/kproxy.$flag.fw" >&2 ||
    fail "kproxy ($flag): KUBE-FIREWALL or its jumps differ from upstream's (above)"
  echo "ok - kproxy ($flag): KUBE-FIREWALL and the INPUT/OUTPUT jumps are upstream's"
}

check "route_localnet starts at 0" eval '[ "$(route_localnet)" = 0 ]'

# --- upstream kube-proxy: the expectations
run upstream true start_upstream "${COMMON[@]}"
check "upstream (true): KUBE-FIREWALL holds the localnet guard" grep -qF -- \
  '-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP' \
  "$WORK/upstream.true.fw"
stop_upstream
run upstream false start_upstream "${COMMON[@]}"
stop_upstream
kube-proxy --cleanup >>"$UPSTREAM_LOG" 2>&1 || fail "kube-proxy --cleanup failed"
check "kube-proxy --cleanup keeps kubelet's KUBE-FIREWALL" eval 'iptables -t filter -S KUBE-FIREWALL >/dev/null'
drop_kubelet_chain
check "the namespace has no KUBE-* chain before kproxy starts" eval '[ -z "$(kube_chains)" ]'

# --- kproxy on the same objects
run kproxy true start_kproxy "${KPROXY_FLAGS[@]}"
same_as_upstream true
stop_kproxy
run kproxy false start_kproxy "${KPROXY_FLAGS[@]}"
same_as_upstream false
stop_kproxy

# kproxy --cleanup, as upstream's CleanupLeftovers, leaves kubelet's chain.
"$KPROXY" --cleanup --hostname-override=node-1 >>"$KPROXY_LOG" 2>&1 || fail "kproxy --cleanup failed"
check "kproxy --cleanup keeps KUBE-FIREWALL and its jumps" eval \
  '[ "$(kube_chains)" = "filter KUBE-FIREWALL" ] && iptables -C INPUT -j KUBE-FIREWALL && iptables -C OUTPUT -j KUBE-FIREWALL'
