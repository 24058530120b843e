#!/usr/bin/env bash
# Benchmark: wall time and peak RSS of `etcd-recover plan` against 3- and 5-node lab clusters.
# Uses release builds. Prints a Markdown table; see docs/benchmarks.md.
#   scripts/bench-plan.sh [--debug] [--ssh-user root|NAME] [RUNS]
#   (default 5 runs per size, the median is reported; a non-root lab user works through sudo -n)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
ssh_user=root
while [ $# -gt 0 ]; do
  case "$1" in
    --debug) profile=debug ;;
    --ssh-user) ssh_user=$2; shift ;;
    *) break ;;
  esac
  shift
done
runs=${1:-5}
bash scripts/setup.sh >/dev/null
if [ "$profile" = release ]; then cargo build --release --workspace --quiet; else cargo build --workspace --quiet; fi
bin=${CARGO_TARGET_DIR:-target}/$profile
echo "build: $profile; ssh user: $ssh_user; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
command -v /usr/bin/time >/dev/null || { echo "bench: needs /usr/bin/time (apt-get install time)" >&2; exit 1; }

work=$(mktemp -d /tmp/etcd-recover-bench-plan.XXXXXX)
chmod 755 "$work" # a non-root lab user must reach the lab's authorized_keys
labs=()
cleanup() { for d in "${labs[@]}"; do "$bin/etcd-recover-lab" down --dir "$d" >/dev/null 2>&1 || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_base() {
  for n in $(seq 150 200); do
    if ! ss -Hltn | grep -q " 127\.0\.$n\.1[1-7]:22 "; then echo "127.0.$n.10"; return; fi
  done
  return 1
}

echo "| nodes | median wall (s) | min wall (s) | max wall (s) | peak RSS (MiB) |"
echo "|---|---|---|---|---|"
for nodes in 3 5; do
  d=$work/lab$nodes
  labs+=("$d")
  "$bin/etcd-recover-lab" up --nodes "$nodes" --dir "$d" --ssh-user "$ssh_user" --base-ip "$(free_base)" >/dev/null
  "$bin/etcd-recover-lab" seed --dir "$d" --keys 1000 >/dev/null
  "$bin/etcd-recover-lab" snapshot --dir "$d" --out "$d/snap.db" >/dev/null
  walls=() rss=0
  for _ in $(seq "$runs"); do
    /usr/bin/time -f '%e %M' -o "$work/t" "$bin/etcd-recover" plan -i "$d/inventory.yaml" --snapshot "$d/snap.db" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    read -r w m < "$work/t"
    walls+=("$w")
    [ "$m" -gt "$rss" ] && rss=$m
  done
  sorted=$(printf '%s\n' "${walls[@]}" | sort -n)
  median=$(echo "$sorted" | sed -n "$(( (runs + 1) / 2 ))p")
  echo "| $nodes | $median | $(echo "$sorted" | head -1) | $(echo "$sorted" | tail -1) | $(( rss / 1024 )) |"
  "$bin/etcd-recover-lab" down --dir "$d" >/dev/null
done
