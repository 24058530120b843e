//! The fixed shell scripts the transport runs on nodes. Variable parts are positional
//! parameters (`Cmd::script`), never spliced into the text. They need a POSIX `sh` and the
//! coreutils every Kubernetes node has (`mktemp`, `stat -c`, `sync FILE`).

/// Receives a file on standard input: `$1` target path, `$2` mode (octal), `$3` size in bytes.
///
/// The file is created by `mktemp` next to the target (so the later rename is atomic) with
/// `umask 077`, and gets its final mode before the first byte is written. After the last byte
/// the size is checked, the file is fsynced, and the written file is hashed (`openssl dgst`,
/// which uses the CPU's SHA instructions, else `sha256sum`); `SHA256HEX TEMPFILE` is printed.
///
/// Hashing the file rather than the stream proves what was written, and is faster: coreutils
/// `tee` copies in 8 KiB pieces, and a `tee | openssl` pipeline took a 1 GiB upload from ~19 s
/// to ~28 s on a loaded 2-core lab machine (see docs/benchmarks.md).
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
cat > "$tmp"
got=$(stat -c %s -- "$tmp")
if [ "$got" != "$size" ]; then
  echo "wrote $got of $size bytes" >&2
  exit 1
fi
sync -- "$tmp" 2>/dev/null || sync
if command -v openssl >/dev/null 2>&1; then
  sum=$(openssl dgst -sha256 -r "$tmp")
else
  sum=$(sha256sum "$tmp")
fi
trap - EXIT
printf '%s %s\n' "${sum%% *}" "$tmp"
"#;

/// Renames an uploaded temporary file (`$1`) over the target (`$2`) and fsyncs the directory.
pub(crate) const COMMIT: &str = r#"set -eu
mv -f -- "$1" "$2"
sync -- "$(dirname -- "$2")" 2>/dev/null || sync
"#;
