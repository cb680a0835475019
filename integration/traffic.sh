#!/usr/bin/env bash
# Real HTTP through kproxy-programmed IPVS: three "pods" in namespaces;
# requests to a ClusterIP and to a NodePort on a node address reach all
# three; ClientIP affinity pins a client to one pod; a removed endpoint gets
# no new requests.
source "$(dirname "$0")/lib/common.sh"
setup_node
for i in 1 2 3; do add_pod "pod$i" "10.244.1.$i"; done

M=$WORK/manifests; mkdir -p "$M"
write() { # ENDPOINT_SUFFIXES [AFFINITY]
  local eps=() e
  for e in $1; do eps+=("10.244.1.$e"); done
  NODE_PORT=30080 AFFINITY=${2:-None} service_manifest web 10.96.0.10 80 8080 "${eps[@]}" > "$M/web.yaml.tmp"
  mv "$M/web.yaml.tmp" "$M/web.yaml"
}

write "1 2 3"
start_daemon "$M" --ipvs-sync-period 5s
wait_for 60 "ClusterIP answers" curl -sf -m 2 http://10.96.0.10/

spread() {
  local url=$1 got
  got=$(hits "$url" 12 | sort | uniq -c)
  echo "$got" | sed "s|^|# $url: |" >&2
  for p in pod1 pod2 pod3; do echo "$got" | grep -q " $p\$" || fail "$url never reached $p"; done
  ! echo "$got" | grep -q no-answer || fail "$url: some requests got no answer"
}
spread http://10.96.0.10/
spread http://192.168.58.2:30080/

write "1 2 3" ClientIP
wait_for 30 "persistence programmed" sh -c 'ipvsadm -Ln -t 10.96.0.10:80 | grep -q persistent'
sticky=$(hits http://10.96.0.10/ 8 | sort -u)
[ "$(echo "$sticky" | wc -l)" -eq 1 ] || fail "ClientIP affinity: one client reached several pods: $sticky"
log "affinity: every request went to $sticky"

write "1 2"
# The requests above left pod3's connections in TIME_WAIT: its real server
# drains at weight 0 (as upstream's graceful termination) rather than going
# at once; either way it gets no new connection.
wait_for 30 "pod3 removed or draining at weight 0" sh -c \
  "ipvsadm -Ln -t 10.96.0.10:80 | awk '\$2 == \"10.244.1.3:8080\" && \$4 != 0 {found=1} END {exit found}'"
after=$(hits http://10.96.0.10/ 12 | sort -u | tr '\n' ' ')
case " $after " in *" pod3 "*) fail "a removed endpoint still got requests: $after";; esac
echo "ok traffic: spread over 3 pods, affinity sticks, removed endpoint unused"
