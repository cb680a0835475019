#!/usr/bin/env bash
# The --conntrack-* flags and --oom-score-adj, through the binary, against
# the VM's real kernel.
#
# nf_conntrack_max and the hash size are global (read-only outside the
# initial network namespace), so kproxy --init-only runs in the VM's own
# initial namespace here (nsenter to PID 1's); the VM is thrown away after
# the suite. Expected values are upstream's (pkg/proxy/conntrack/sysctls.go,
# v1.36.3): nf_conntrack_max = max-per-core x CPUs, at least --conntrack-min,
# capped at 1Mi; the hash size grown to max/4 when smaller; timeouts in
# whole seconds; 0 leaves a value alone.
source "$(dirname "$0")/lib/common.sh"

sysctl_ct() { cat "/proc/sys/net/netfilter/nf_conntrack_$1"; }
initns() { nsenter --net=/proc/1/ns/net -- "$@"; }
modprobe nf_conntrack

ncpu=$(nproc)
per_core=40000 min=100000
want_max=$((per_core * ncpu > min ? per_core * ncpu : min))
initns "$KPROXY_BIN" --init-only --proxy-mode=ipvs --hostname-override=node-1 \
  --conntrack-max-per-core=$per_core --conntrack-min=$min \
  --conntrack-tcp-timeout-established=12h --conntrack-tcp-timeout-close-wait=30m \
  --conntrack-tcp-be-liberal --conntrack-udp-timeout=40s --conntrack-udp-timeout-stream=150s \
  >"$WORK/init.log" 2>&1 || { cat "$WORK/init.log"; fail "--init-only failed"; }
got_max=$(initns cat /proc/sys/net/netfilter/nf_conntrack_max)
[ "$got_max" = "$want_max" ] || fail "nf_conntrack_max: want $want_max ($per_core x $ncpu CPUs, min $min), got $got_max"
hash=$(cat /sys/module/nf_conntrack/parameters/hashsize)
[ "$hash" -ge $((want_max / 4)) ] || fail "hashsize $hash < max/4 = $((want_max / 4))"
for kv in tcp_timeout_established=43200 tcp_timeout_close_wait=1800 tcp_be_liberal=1 \
  udp_timeout=40 udp_timeout_stream=150; do
  got=$(initns cat "/proc/sys/net/netfilter/nf_conntrack_${kv%=*}")
  [ "$got" = "${kv#*=}" ] || fail "nf_conntrack_${kv%=*}: want ${kv#*=}, got $got"
done
log "init-only set nf_conntrack_max=$got_max hashsize=$hash and the timeouts; nothing else was started"
ipvsadm -Ln | grep -q '^TCP\|^UDP' && fail "--init-only programmed virtual servers"

# The cap wins over --conntrack-min (upstream's maxLimit).
initns "$KPROXY_BIN" --init-only --proxy-mode=ipvs --hostname-override=node-1 \
  --conntrack-max-per-core=1000000 --conntrack-min=2000000 >"$WORK/init2.log" 2>&1 ||
  { cat "$WORK/init2.log"; fail "--init-only (cap) failed"; }
got_max=$(initns cat /proc/sys/net/netfilter/nf_conntrack_max)
[ "$got_max" = 1048576 ] || fail "capped nf_conntrack_max: want 1048576, got $got_max"

# Outside the initial namespace nf_conntrack_max is read-only: upstream
# refuses to start there unless max-per-core is 0 (as kind configures it).
setup_node
mkdir -p "$WORK/m"
if "$KPROXY_BIN" --manifests "$WORK/m" --hostname-override node-1 --once >"$WORK/ns.log" 2>&1; then
  fail "started in a namespace whose nf_conntrack_max it cannot set"
fi
grep -q "could not set conntrack parameters" "$WORK/ns.log" || { cat "$WORK/ns.log"; fail "no reason given"; }
ipvsadm -Ln | grep -q '^TCP' && fail "the refused start touched IPVS"

# --oom-score-adj: upstream's default -999, or the value given.
"$KPROXY_BIN" --manifests "$WORK/m" --hostname-override node-1 --conntrack-max-per-core=0 \
  --healthz-bind-address= --metrics-bind-address= --oom-score-adj=-500 -v=2 >"$WORK/d.log" 2>&1 &
DAEMON_PID=$!
wait_for 60 "the daemon's first sync" grep -q "sync done" "$WORK/d.log"
adj=$(cat "/proc/$DAEMON_PID/oom_score_adj")
[ "$adj" = -500 ] || fail "oom_score_adj: want -500, got $adj"
stop_daemon
log "conntrack and oom-score-adj as upstream"
