#!/usr/bin/env bash
# The main job on the local lab: a guided restore of a 3-node lab control plane.
#
#   1. installs what is missing (scripts/setup.sh) and builds the tools;
#   2. starts a lab (real sshd and etcd per node, kubelet-like runner, stand-in apiservers);
#   3. writes keys, takes a snapshot, writes more keys;
#   4. runs `etcd-recover plan`, then `etcd-recover apply` (guided on a terminal: review the
#      plan, type the cluster name "lab"; with --yes or without a terminal it runs unattended);
#   5. shows the lab's status and stops the lab (also on failure or Ctrl-C).
#
# Options: --nodes N (default 3), --etcd 3.5|3.4 (default 3.5), --ssh-user NAME (default root),
# --keep (leave the lab running), --yes (no prompts). Lab directory: $ETCD_RECOVER_DEMO_DIR or a
# new temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."

nodes=3 etcd=3.5 user=root keep=0 yes=()
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes=$2; shift 2;;
    --etcd) etcd=$2; shift 2;;
    --ssh-user) user=$2; shift 2;;
    --keep) keep=1; shift;;
    --yes|-y) yes=(--yes); shift;;
    *) echo "demo: unknown option $1" >&2; exit 2;;
  esac
done
[ -t 0 ] && [ -t 2 ] || yes=(--yes)

bash scripts/setup.sh
cargo build --release --workspace --quiet
bin=${CARGO_TARGET_DIR:-target}/release
lab_dir=${ETCD_RECOVER_DEMO_DIR:-$(mktemp -d /tmp/etcd-recover-demo.XXXXXX)}
state_dir=$lab_dir/state

cleanup() {
  if [ "$keep" = 1 ]; then
    echo "demo: the lab keeps running; stop it with: $bin/etcd-recover-lab down --dir $lab_dir"
  else
    "$bin/etcd-recover-lab" down --dir "$lab_dir" || true
  fi
}
trap cleanup EXIT

# A free loopback range for the lab.
base=""
for n in $(seq 90 140); do
  if ! ss -Hltn | grep -q " 127\.0\.$n\.1[1-7]:22 "; then base=127.0.$n.10; break; fi
done
[ -n "$base" ] || { echo "demo: no free 127.0.x.10 range" >&2; exit 1; }

echo "== lab: $nodes nodes, etcd $etcd, ssh user $user, in $lab_dir"
"$bin/etcd-recover-lab" up --nodes "$nodes" --etcd "$etcd" --ssh-user "$user" --dir "$lab_dir" --base-ip "$base"
"$bin/etcd-recover-lab" status --dir "$lab_dir"
"$bin/etcd-recover-lab" seed --dir "$lab_dir" --keys 2000
"$bin/etcd-recover-lab" snapshot --dir "$lab_dir" --out "$lab_dir/snapshot.db"
"$bin/etcd-recover-lab" seed --dir "$lab_dir" --keys 500 --prefix /registry/configmaps/written-after-the-snapshot/

echo "== check"
"$bin/etcd-recover" check -i "$lab_dir/inventory.yaml" || true
echo "== snapshot verify"
"$bin/etcd-recover" snapshot verify "$lab_dir/snapshot.db"
echo "== plan (saved to $lab_dir/plan.md for review)"
"$bin/etcd-recover" plan -i "$lab_dir/inventory.yaml" --snapshot "$lab_dir/snapshot.db" --format markdown > "$lab_dir/plan.md"
echo "== apply"
"$bin/etcd-recover" apply -i "$lab_dir/inventory.yaml" --snapshot "$lab_dir/snapshot.db" --state-dir "$state_dir" "${yes[@]}"
echo "== after the restore"
"$bin/etcd-recover-lab" status --dir "$lab_dir"
