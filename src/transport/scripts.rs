//! The fixed shell scripts the transport runs on nodes. Variable parts are positional
//! parameters (`Cmd::script`), never spliced into the text. They need a POSIX `sh` and the
//! coreutils every Kubernetes node has (`mktemp`, `stat -c`, `tee`, `sync FILE`).

/// Receives a file on standard input: `$1` target path, `$2` mode (octal), `$3` size in bytes.
///
/// The file is created by `mktemp` next to the target (so the later rename is atomic) with
/// `umask 077`, and gets its final mode before the first byte is written. The bytes are hashed
/// while they are written (`openssl dgst`, which uses the CPU's SHA instructions, else
/// `sha256sum`), the size is checked, the file is fsynced, and `SHA256HEX TEMPFILE` is printed.
/// The rename is a separate step ([`COMMIT`]) so that nothing replaces the target before the
/// client has compared checksums. On any failure the temporary file is removed.
pub(crate) const UPLOAD: &str = r#"set -eu
target=$1 mode=$2 size=$3
dir=$(dirname -- "$target")
base=$(basename -- "$target")
umask 077
tmp=$(mktemp "$dir/.$base.upload.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
trap 'exit 129' HUP INT TERM PIPE
chmod -- "$mode" "$tmp"
if command -v openssl >/dev/null 2>&1; then
  sum=$(tee -- "$tmp" | openssl dgst -sha256 -r)
else
  sum=$(tee -- "$tmp" | sha256sum)
fi
got=$(stat -c %s -- "$tmp")
if [ "$got" != "$size" ]; then
  echo "wrote $got of $size bytes" >&2
  exit 1
fi
sync -- "$tmp" 2>/dev/null || sync
trap - EXIT
printf '%s %s\n' "${sum%% *}" "$tmp"
"#;

/// Renames an uploaded temporary file (`$1`) over the target (`$2`) and fsyncs the directory.
pub(crate) const COMMIT: &str = r#"set -eu
mv -f -- "$1" "$2"
sync -- "$(dirname -- "$2")" 2>/dev/null || sync
"#;

/// Replaces `$1` with standard input atomically. `$2` is the directory for the temporary file
/// (empty: the target's directory; it must be on the same filesystem), `$3` the mode for a new
/// file. An existing target's owner and mode are copied to the new file before data is
/// written; the new file is fsynced, renamed over the target, and the directory fsynced.
pub(crate) const WRITE_ATOMIC: &str = r#"set -eu
target=$1 tmpdir=$2 mode=$3
dir=$(dirname -- "$target")
base=$(basename -- "$target")
[ -n "$tmpdir" ] || tmpdir=$dir
if [ "$(stat -c %d -- "$tmpdir")" != "$(stat -c %d -- "$dir")" ]; then
  echo "$tmpdir and $dir are on different filesystems, so the rename would not be atomic" >&2
  exit 1
fi
umask 077
tmp=$(mktemp "$tmpdir/.$base.etcd-recover.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
trap 'exit 129' HUP INT TERM PIPE
if [ -e "$target" ]; then
  chown -- "$(stat -c %u:%g -- "$target")" "$tmp"
  chmod -- "$(stat -c %a -- "$target")" "$tmp"
else
  chmod -- "$mode" "$tmp"
fi
cat > "$tmp"
sync -- "$tmp" 2>/dev/null || sync
mv -f -- "$tmp" "$target"
trap - EXIT
sync -- "$dir" 2>/dev/null || sync
"#;
