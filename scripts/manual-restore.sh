#!/usr/bin/env bash
# The usual manual etcd restore of a stacked control plane, as a runbook would have an operator
# type it: plain ssh/scp, one node after the other in every phase. It is the baseline that
# scripts/bench-apply.sh compares `etcd-recover apply` against, and it is correct: it stops every
# apiserver before any etcd, restores every member from the same snapshot with one
# --initial-cluster and a fresh token into a new data directory, points etcd.yaml's hostPath at
# it, and waits until `etcdctl endpoint health --cluster` passes before the apiservers return.
#
#   scripts/manual-restore.sh INVENTORY SNAPSHOT
#
# The snapshot goes over ssh as a stream (`ssh node 'sudo sh -c "cat > F"' < snap`, what scp does,
# but also through sudo for a non-root user).
#
# INVENTORY is an etcd-recover inventory as `etcd-recover-lab up` writes it (ssh user, identity
# file, known_hosts, restore_tool; per node: name, host, manifests_dir, run_dir). It prints the
# wall time of every phase and the total.
set -euo pipefail

inv=${1:?usage: manual-restore.sh INVENTORY SNAPSHOT}
snap=${2:?usage: manual-restore.sh INVENTORY SNAPSHOT}
poll=0.5

field() { sed -n "s/^  $1: *//p" "$inv" | head -n 1; }
user=$(field user)
key=$(field identity_file)
known=$(field known_hosts)
tool=$(sed -n 's/^  restore_tool: *//p' "$inv" | head -n 1)
bindir=$(dirname "$tool")
etcdutl="$bindir/etcdutl"
etcdctl="$bindir/etcdctl"
mapfile -t names < <(sed -n 's/^  - name: *//p' "$inv")
mapfile -t hosts < <(sed -n 's/^    host: *//p' "$inv")
mapfile -t mdirs < <(sed -n 's/^      manifests_dir: *//p' "$inv")
mapfile -t rdirs < <(sed -n 's/^      run_dir: *//p' "$inv")
n=${#names[@]}
ssh_opts=(-i "$key" -o UserKnownHostsFile="$known" -o StrictHostKeyChecking=yes -o BatchMode=yes -o LogLevel=ERROR)
sudo=""
[ "$user" = root ] || sudo="sudo -n"
# Runs a shell command line on node i as root (through sudo for another user).
on() { local i=$1; shift; printf '%s\n' "$*" | ssh "${ssh_opts[@]}" "$user@${hosts[$i]}" "$sudo sh -s"; }

t_start=$(date +%s.%N)
t_phase=$t_start
phase() {
  local now; now=$(date +%s.%N)
  printf 'manual: %-28s %6.2fs\n' "$1" "$(echo "$now - $t_phase" | bc)"
  t_phase=$now
}

stamp=$(date -u +%Y%m%d-%H%M%S)
token="manual-$stamp"
cluster=""
for i in $(seq 0 $((n - 1))); do
  cluster+="${cluster:+,}${names[$i]}=https://${hosts[$i]}:2380"
done
# The hostPath of a named volume in a kubeadm manifest.
host_path_of='awk -v want="$2" "/^  volumes:/ {v=1} v && /path:/ {p=\$2} v && /name:/ && \$2==want {print p; exit}" "$1"'

# 1. Copy the snapshot to every node.
for i in $(seq 0 $((n - 1))); do
  ssh "${ssh_opts[@]}" "$user@${hosts[$i]}" \
    "$sudo sh -c 'mkdir -p ${rdirs[$i]}/manual && cat > ${rdirs[$i]}/manual/snapshot.db'" <"$snap"
done
phase "copy snapshot"

wait_port() { # node index, port, open|closed
  local i=$1 port=$2 want=$3
  on "$i" "while :; do l=\$(ss -Hltn 'src ${hosts[$i]} and sport = :$port'); if [ '$want' = open ] && [ -n \"\$l\" ]; then break; fi; if [ '$want' = closed ] && [ -z \"\$l\" ]; then break; fi; sleep $poll; done"
}

# 2. Stop the apiservers (and the components that cache state) on every node.
for i in $(seq 0 $((n - 1))); do
  on "$i" "mkdir -p ${rdirs[$i]}/manual/off && cd ${mdirs[$i]} && mv kube-apiserver.yaml kube-controller-manager.yaml kube-scheduler.yaml ${rdirs[$i]}/manual/off/"
  wait_port "$i" 6443 closed
done
phase "stop apiservers"

# 3. Stop etcd on every node.
for i in $(seq 0 $((n - 1))); do
  on "$i" "mv ${mdirs[$i]}/etcd.yaml ${rdirs[$i]}/manual/off/"
  wait_port "$i" 2379 closed
  wait_port "$i" 2380 closed
done
phase "stop etcd"

# 4. Restore every member into a new data dir; 5. point etcd.yaml at it.
bump=""
if "$etcdutl" snapshot restore --help 2>&1 | grep -q -- --bump-revision; then
  bump="--bump-revision 1000000000 --mark-compacted"
fi
for i in $(seq 0 $((n - 1))); do
  m="${rdirs[$i]}/manual/off/etcd.yaml"
  old=$(on "$i" "set -- $m etcd-data; $host_path_of")
  new="$old-manual-$stamp"
  on "$i" "$etcdutl snapshot restore ${rdirs[$i]}/manual/snapshot.db --name ${names[$i]} \
    --initial-cluster $cluster --initial-cluster-token $token \
    --initial-advertise-peer-urls https://${hosts[$i]}:2380 --data-dir $new $bump >/dev/null 2>&1 \
    && chmod 700 $new && sed -i 's#path: $old\$#path: $new#' $m && grep -q 'path: $new\$' $m"
done
phase "restore + rewrite"

# 6. Start etcd again on every node; wait until the cluster is healthy.
for i in $(seq 0 $((n - 1))); do
  on "$i" "mv ${rdirs[$i]}/manual/off/etcd.yaml ${mdirs[$i]}/"
done
for i in $(seq 0 $((n - 1))); do
  wait_port "$i" 2379 open
done
pki=$(on 0 "set -- ${mdirs[0]}/etcd.yaml etcd-certs; $host_path_of")
on 0 "until $etcdctl --endpoints=https://${hosts[0]}:2379 --cacert=$pki/ca.crt \
  --cert=$pki/healthcheck-client.crt --key=$pki/healthcheck-client.key \
  endpoint health --cluster >/dev/null 2>&1; do sleep $poll; done"
phase "start etcd, wait healthy"

# 7. Start the apiservers and components again; wait until they listen.
for i in $(seq 0 $((n - 1))); do
  on "$i" "mv ${rdirs[$i]}/manual/off/*.yaml ${mdirs[$i]}/ && rm -f ${rdirs[$i]}/manual/snapshot.db"
done
for i in $(seq 0 $((n - 1))); do
  wait_port "$i" 6443 open
done
phase "start apiservers"

printf 'manual: %-28s %6.2fs\n' "total" "$(echo "$(date +%s.%N) - $t_start" | bc)"
