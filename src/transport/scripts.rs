//! The fixed shell scripts the transport runs on nodes. Variable parts are positional
//! parameters (`Cmd::script`), never spliced into the text. They need a POSIX `sh` and the
//! coreutils every Kubernetes node has (`mktemp`, `stat -c`, `sync FILE`).

/// Receives a file on standard input: `$1` target path, `$2` mode (octal), `$3` size in bytes.
///
/// The file is created by `mktemp` next to the target (so the rename is atomic) with
/// `umask 077`, and gets its final mode before the first byte is written. Exactly `$3` bytes
/// are read (GNU `dd` in 64 KiB blocks; `head -c` elsewhere), the size is checked, and the
/// written file is hashed (`openssl dgst`, which uses the CPU's SHA instructions, else
/// `sha256sum`) while it is fsynced. The script prints the SHA-256 and then reads one more line
/// from standard input: `commit` renames the file over the target and fsyncs the directory
/// (printing `committed`); anything else, or end of input, removes it (exit 3). So nothing
/// replaces the target before the client has compared checksums, and the whole upload is one
/// channel and one process (one `sudo`).
///
/// Hashing the written file rather than the stream proves what was written, and is faster:
/// coreutils `tee` and `head` copy in 8 KiB pieces, and a `tee | openssl` pipeline made a 1 GiB
/// upload about 40% slower on the lab machine (see docs/benchmarks.md). The block size matches
/// the pipe's capacity: with 1 MiB blocks `dd` holds the pipe shut while it copies each block
/// into the page cache, so sshd stalls, and a 1 GiB upload took twice as long.
pub(crate) const UPLOAD: &str = r#"set -eu
target=$1 mode=$2 size=$3
dir=$(dirname -- "$target")
base=$(basename -- "$target")
umask 077
tmp=$(mktemp "$dir/.$base.upload.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
trap 'exit 129' HUP INT TERM PIPE
chmod -- "$mode" "$tmp"
if dd --version >/dev/null 2>&1; then
  dd of="$tmp" bs=64K iflag=fullblock,count_bytes count="$size" status=none
else
  head -c "$size" > "$tmp"
fi
got=$(stat -c %s -- "$tmp")
if [ "$got" != "$size" ]; then
  echo "received $got of $size bytes" >&2
  exit 1
fi
{ sync -- "$tmp" 2>/dev/null || sync; } &
synced=$!
if command -v openssl >/dev/null 2>&1; then
  sum=$(openssl dgst -sha256 -r "$tmp")
else
  sum=$(sha256sum -- "$tmp")
fi
wait "$synced"
printf '%s\n' "${sum%% *}"
IFS= read -r answer || answer=
if [ "$answer" != commit ]; then
  exit 3
fi
mv -f -- "$tmp" "$target"
trap - EXIT
sync -- "$dir" 2>/dev/null || sync
echo committed
"#;
