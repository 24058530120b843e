#!/usr/bin/env bash
# Upload throughput and memory of etcd-recover's SSH transport against OpenSSH scp, to the
# same lab node in the same run. Not a test: prints a table for docs/benchmarks.md.
#
#   scripts/bench-upload.sh [ROUNDS]        (default 3 rounds per tool and size)
#
# Brings up a one-node lab (real sshd) in a free address slot, creates a 256 MiB and a 1 GiB
# file of random bytes, and uploads each ROUNDS times with:
#   - `examples/upload.rs` (release build): the transport's `Remote::upload`, which has the
#     node hash what it wrote and fsyncs before renaming into place. Two ways:
#     `etcd-recover` hashes the file locally while sending it; `etcd-recover-known` is given
#     the SHA-256 computed beforehand, as a restore stages the snapshot whose hash preflight
#     computed (that one hashing pass is not timed here; `snapshot verify` reports its cost);
#   - `scp` with OpenSSH's default cipher, and `scp -c aes256-gcm@openssh.com` (the cipher the
#     transport prefers).
# Wall time and peak RSS come from /usr/bin/time -v. The lab and the files are removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds="${1:-3}"
target_dir="${CARGO_TARGET_DIR:-target}"

cargo build --release --example upload >&2
cargo build --release -p etcd-recover-lab >&2
upload="$target_dir/release/examples/upload"
lab_bin="$target_dir/release/etcd-recover-lab"

# A lab address slot, held (like the test harness does) for as long as this script runs.
slot_dir=/tmp/etcd-recover-lab-slots
mkdir -p "$slot_dir"
slot=""
for n in $(seq 250 -1 1); do
  exec 9>"$slot_dir/$n.lock"
  if flock -n 9; then slot=$n; break; fi
done
[ -n "$slot" ] || { echo "no free lab slot" >&2; exit 1; }

work=$(mktemp -d /tmp/etcd-recover-bench.XXXXXX)
cleanup() {
  "$lab_bin" down --dir "$work/lab" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

"$lab_bin" up --dir "$work/lab" --nodes 1 --base-ip "127.0.$slot.10" >&2
ip="127.0.$slot.11"
inventory="$work/lab/inventory.yaml"
key="$work/lab/ssh/id_ed25519"
known_hosts="$work/lab/ssh/known_hosts"
dest="$work/lab/nodes/cp-1/var/lib/etcd-recover"
mkdir -p "$dest"

head -c $((256 << 20)) /dev/urandom > "$work/256MiB.bin"
head -c $((1 << 30)) /dev/urandom > "$work/1GiB.bin"

# Prints "seconds max_rss_kib" for a command run under /usr/bin/time -v.
measure() {
  local log="$work/time.log"
  /usr/bin/time -v "$@" > "$work/stdout" 2> "$log" || { cat "$log" >&2; return 1; }
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
  # h:mm:ss or m:ss.cc -> seconds
  echo "$(echo "$wall" | awk -F: '{ if (NF == 3) print $1*3600 + $2*60 + $3; else print $1*60 + $2 }') $rss"
}

scp_opts=(-q -i "$key" -o "UserKnownHostsFile=$known_hosts" -o BatchMode=yes)

printf '%-6s %-18s %5s %8s %8s %12s  %s\n' size tool round seconds MiB/s "peak RSS" "of which node-side fsync + SHA-256 + rename"
for size in 256MiB 1GiB; do
  file="$work/$size.bin"
  bytes=$(stat -c %s "$file")
  sha=$(sha256sum "$file" | cut -c1-64)
  for round in $(seq 1 "$rounds"); do
    for tool in etcd-recover etcd-recover-known scp scp-aes256-gcm; do
      rm -f "$dest/bench.db"
      sync
      case $tool in
        etcd-recover) read -r secs rss < <(measure "$upload" "$inventory" cp-1 "$file" "$dest/bench.db") ;;
        etcd-recover-known) read -r secs rss < <(measure "$upload" "$inventory" cp-1 "$file" "$dest/bench.db" "$sha") ;;
        scp) read -r secs rss < <(measure scp "${scp_opts[@]}" "$file" "root@$ip:$dest/bench.db") ;;
        scp-aes256-gcm) read -r secs rss < <(measure scp "${scp_opts[@]}" -c aes256-gcm@openssh.com "$file" "root@$ip:$dest/bench.db") ;;
      esac
      cmp -s "$file" "$dest/bench.db" || { echo "$tool: the copy differs" >&2; exit 1; }
      mibs=$(awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "%.1f", b / s / 1048576 }')
      tail=""
      if [ "${tool%-known}" = etcd-recover ]; then
        tail=$(sed -n 's/.*on the node \([0-9.]*s\).*/\1/p' "$work/stdout")
      fi
      printf '%-6s %-18s %5s %8s %8s %8s KiB  %s\n' "$size" "$tool" "$round" "$secs" "$mibs" "$rss" "$tail"
      echo "$size $tool $secs" >> "$work/times"
    done
  done
done

# Medians, and throughput relative to scp's median in the same run (1.00 = as fast as scp).
echo
printf '%-6s %-18s %14s %10s\n' size tool "median seconds" "vs scp"
for size in 256MiB 1GiB; do
  med() { awk -v s="$size" -v t="$1" '$1 == s && $2 == t {print $3}' "$work/times" | sort -n |
    awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
  scp_med=$(med scp)
  for tool in etcd-recover etcd-recover-known scp scp-aes256-gcm; do
    m=$(med "$tool")
    printf '%-6s %-18s %14s %10s\n' "$size" "$tool" "$m" "$(awk -v a="$scp_med" -v b="$m" 'BEGIN { printf "%.2fx", a / b }')"
  done
done
