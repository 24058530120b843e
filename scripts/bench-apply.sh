#!/usr/bin/env bash
# Measures the wall time of `etcd-recover apply` (release build) on real lab clusters: 1, 3 and
# 5 nodes with a small snapshot, 3 nodes with 10 MiB and 100 MiB snapshots, each with the
# per-stage breakdown from the run's report.json, and compares it in the same run with
# scripts/manual-restore.sh (plain ssh/scp, node by node) on the same lab and snapshot.
# Not a test: it prints a Markdown table for docs/benchmarks.md.
#
#   scripts/bench-apply.sh [--quick] [--ssh-user root|NAME] [--poll-ms MS]
#
#   --quick      only 1/3/5 nodes with the small snapshot (no 10/100 MiB cases)
#   --ssh-user   lab login user (default root); a non-root user works through sudo -n
#   --poll-ms    the lab kubelet's file check period (default 1000, the lab default)
#   --debug      use the debug build instead of release (quicker to build; slower to run)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
profile=release
ssh_user=root
poll_ms=1000
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --debug) profile=debug ;;
    --ssh-user) ssh_user=$2; shift ;;
    --poll-ms) poll_ms=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

target=${CARGO_TARGET_DIR:-target}
if [ "$profile" = release ]; then
  cargo build --release --quiet --bin etcd-recover -p etcd-recover
  cargo build --release --quiet -p etcd-recover-lab
else
  cargo build --quiet --bin etcd-recover -p etcd-recover
  cargo build --quiet -p etcd-recover-lab
fi
er="$target/$profile/etcd-recover"
lab="$target/$profile/etcd-recover-lab"
work=$(mktemp -d /tmp/etcd-recover-bench.XXXXXX)
chmod 755 "$work" # a non-root lab user must reach the lab's authorized_keys
current=""
cleanup() {
  if [ -n "$current" ]; then "$lab" down --dir "$current" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# One lab at a time, on the first free address range from 127.0.180.10 up.
lab_up() { # nodes dir
  local nodes=$1 dir=$2 third rc
  for third in $(seq 180 230); do
    rc=0
    "$lab" up --dir "$dir" --nodes "$nodes" --ssh-user "$ssh_user" --poll-ms "$poll_ms" \
      --base-ip "127.0.$third.10" >"$dir.up.log" 2>&1 || rc=$?
    if [ "$rc" = 0 ]; then
      current=$dir
      return 0
    fi
    [ "$rc" = 3 ] || { cat "$dir.up.log" >&2; return 1; }
    rm -rf "$dir"
  done
  echo "no free address range" >&2
  return 1
}

# Grows the database to about `mib` MiB of values (4 KiB each) plus 400 small keys.
seed() { # dir mib
  "$lab" seed --dir "$1" --keys 400 >/dev/null
  if [ "$2" -gt 0 ]; then
    "$lab" seed --dir "$1" --keys $(($2 * 256)) --value-size 4096 --prefix /registry/configmaps/bench/ >/dev/null
  fi
}

results="$work/results.md"
stages="$work/stages.md"
: >"$results"
: >"$stages"

bench() { # nodes mib manual(0|1)
  local nodes=$1 mib=$2 manual=$3 dir="$work/lab-$1-$2" state="$work/state-$1-$2"
  lab_up "$nodes" "$dir"
  seed "$dir" "$mib"
  "$lab" snapshot --dir "$dir" --out "$dir.snap.db" >/dev/null
  local size; size=$(stat -c %s "$dir.snap.db")
  local t0 t1 log="$dir/nodes/cp-1/logs/sshd.log"
  local s0; s0=$(grep -c "Starting session" "$log" || true)
  local cpu0; cpu0=$(head -1 /proc/stat)
  t0=$(date +%s.%N)
  ETCD_RECOVER_STATE_DIR="$state" "$er" apply -i "$dir/inventory.yaml" --snapshot "$dir.snap.db" \
    --yes --output plain >"$dir.apply.log" 2>&1 || { cat "$dir.apply.log" >&2; return 1; }
  t1=$(date +%s.%N)
  local cpu1; cpu1=$(head -1 /proc/stat)
  local apply_s; apply_s=$(echo "$t1 - $t0" | bc)
  # Share of the machine's CPU time that was busy during the apply (every lab node, sshd,
  # etcd and the tool share the same cores).
  local busy; busy=$(printf '%s\n%s\n' "$cpu0" "$cpu1" | awk '
    { idle[NR] = $5 + $6; total[NR] = 0; for (i = 2; i <= NF; i++) total[NR] += $i }
    END { printf "%.0f%%", 100 * (1 - (idle[2] - idle[1]) / (total[2] - total[1])) }')
  local s1; s1=$(grep -c "Starting session" "$log" || true)
  local apply_execs=$((s1 - s0))
  local report; report=$(ls "$state"/runs/*/report.json)
  python3 - "$report" "$nodes" "$size" "$apply_s" "$busy" >>"$stages" <<'EOF'
import json, sys
from datetime import datetime
r = json.load(open(sys.argv[1]))
def t(s): return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
parts = []
for name, steps in r["stages"]:
    starts = [t(s["started_at"]) for s in steps if s.get("started_at")]
    ends = [t(s["ended_at"]) for s in steps if s.get("ended_at")]
    if starts and ends:
        parts.append(f"{name} {max(ends) - min(starts):.1f}")
print(f"| {sys.argv[2]} | {int(sys.argv[3]) / 2**20:.1f} MiB | {float(sys.argv[4]):.1f} | {r['total_seconds']:.1f} | {sys.argv[5]} | {', '.join(parts)} |")
EOF
  local manual_s="-" manual_execs="-"
  if [ "$manual" = 1 ]; then
    "$lab" status --dir "$dir" --json >/dev/null
    t0=$(date +%s.%N)
    bash scripts/manual-restore.sh "$dir/inventory.yaml" "$dir.snap.db" >"$dir.manual.log" 2>&1 || { cat "$dir.manual.log" >&2; return 1; }
    t1=$(date +%s.%N)
    manual_s=$(printf '%.1f' "$(echo "$t1 - $t0" | bc)")
    manual_execs=$(($(grep -c "Starting session" "$log" || true) - s1))
  fi
  printf '| %s | %.1f MiB | %.1f | %s | %s | %s |\n' "$nodes" "$(echo "$size / 1048576" | bc -l)" \
    "$apply_s" "$manual_s" "$apply_execs" "$manual_execs" >>"$results"
  "$lab" down --dir "$dir" >/dev/null
  current=""
  echo "bench: $nodes node(s), $(echo "$size / 1048576" | bc) MiB: apply ${apply_s}s, manual ${manual_s}s" >&2
}

bench 1 0 1
bench 3 0 1
bench 5 0 1
if [ "$quick" = 0 ]; then
  bench 3 10 1
  bench 3 100 1
fi

echo
echo "build: $profile; machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, load average $(cut -d' ' -f1-3 /proc/loadavg), ssh user $ssh_user, lab poll ${poll_ms} ms"
echo
# Cost of one remote command on its own channel of a session that is already open: what each
# command of the manual script pays (etcd-recover runs its commands through one long-lived
# command shell per node, so it pays this about once per node; see docs/ssh.md).
probe_dir="$work/probe"
lab_up 1 "$probe_dir"
host=$(sed -n 's/^    host: *//p' "$probe_dir/inventory.yaml")
sudo=""
[ "$ssh_user" = root ] || sudo="sudo -n --"
cm=(-i "$probe_dir/ssh/id_ed25519" -o UserKnownHostsFile="$probe_dir/ssh/known_hosts" -o BatchMode=yes
  -o ControlMaster=auto -o ControlPath="$work/cm-%h" -o ControlPersist=30)
ssh "${cm[@]}" "$ssh_user@$host" true
t0=$(date +%s.%N)
for _ in $(seq 20); do ssh "${cm[@]}" "$ssh_user@$host" "$sudo timeout -s KILL 62 sh -c true sh"; done
per_exec=$(echo "($(date +%s.%N) - $t0) / 20" | bc -l)
ssh "${cm[@]}" -O exit "$ssh_user@$host" 2>/dev/null || true
"$lab" down --dir "$probe_dir" >/dev/null
current=""

echo
printf 'one remote command on its own channel of an open SSH session (login shell, sudo): %.3f s\n' "$per_exec"
echo
echo "| nodes | snapshot | apply (s) | manual script (s) | SSH command channels on cp-1, apply | manual |"
echo "|---|---|---|---|---|---|"
cat "$results"
echo
echo "| nodes | snapshot | apply wall (s) | report total (s) | CPU busy | per stage (s) |"
echo "|---|---|---|---|---|---|"
cat "$stages"

# The two ratios the targets are about, from the small-snapshot rows above.
awk -F'|' '$4 + 0 > 0 && $3 ~ /^ 0\.[0-9] MiB/ { apply[$2 + 0] = $4 + 0; manual[$2 + 0] = $5 + 0 }
  END {
    if (apply[1] && apply[5]) printf "\n5 nodes / 1 node: %.2fx (target at most 1.25x)\n", apply[5] / apply[1]
    if (apply[3] && manual[3]) printf "3 nodes, apply / manual script: %.2f (target at most 0.5)\n", apply[3] / manual[3]
  }' "$results"
