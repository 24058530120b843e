//! The fixed shell scripts the transport runs on nodes. Variable parts are positional
//! parameters (`Cmd::script`), never spliced into the text. They need a POSIX `sh` and the
//! coreutils every Kubernetes node has (`mktemp`, `stat -c`, `sync FILE`).

/// Receives a file on standard input: `$1` target path, `$2` mode (octal), `$3` size in bytes,
/// `$4` segment size in bytes.
///
/// The file is created by `mktemp` next to the target (so the rename is atomic) with
/// `umask 077`, and gets its final mode before the first byte is written. Exactly `$3` bytes
/// are read, one segment of `$4` bytes after the other (GNU `dd` with large blocks, each `dd`
/// reading exactly its segment, written in place at its offset); as soon as a segment is
/// written, a background job hashes it back from the file (`openssl dgst`, which uses the CPU's
/// SHA instructions, else `sha256sum`) while the next one arrives. So the hashing overlaps the
/// transfer, and after the last byte only the last segment is left to hash (and the fsync).
/// Without GNU `dd` the whole file is one segment (`head -c`, then hashed).
///
/// The size is checked, and the script prints the SHA-256 of every segment on one line, then
/// reads one more line from standard input: `commit` renames the file over the target and
/// fsyncs the directory (printing `committed`); anything else, or end of input, removes it
/// (exit 3). So nothing replaces the target before the client has compared every segment, and
/// the whole upload is one channel and one `sudo`.
///
/// Hashing what was written rather than the stream proves what is in the file, and is faster:
/// coreutils `tee` and `head` copy in 8 KiB pieces, and a `tee | openssl` pipeline made a 1 GiB
/// upload about 40% slower on the lab machine (see docs/benchmarks.md).
pub(crate) const UPLOAD: &str = r#"set -eu
target=$1 mode=$2 size=$3 seg=$4
dir=$(dirname -- "$target")
base=$(basename -- "$target")
umask 077
tmp=$(mktemp "$dir/.$base.upload.XXXXXX")
sums=$(mktemp -d "${TMPDIR:-/tmp}/etcd-recover-sums.XXXXXX")
trap 'rm -rf -- "$tmp" "$sums"' EXIT
trap 'exit 129' HUP INT TERM PIPE
chmod -- "$mode" "$tmp"
if command -v openssl >/dev/null 2>&1; then
  sha() { openssl dgst -sha256 -r "$@"; }
else
  sha() { sha256sum "$@"; }
fi
n=0
if dd --version >/dev/null 2>&1; then
  off=0
  while [ "$off" -lt "$size" ]; do
    len=$((size - off))
    if [ "$len" -gt "$seg" ]; then len=$seg; fi
    dd of="$tmp" bs=1M iflag=fullblock,count_bytes count="$len" \
      oflag=seek_bytes seek="$off" conv=notrunc status=none
    dd if="$tmp" bs=1M iflag=skip_bytes,count_bytes skip="$off" count="$len" status=none \
      | sha > "$sums/$n" &
    off=$((off + len))
    n=$((n + 1))
  done
elif [ "$size" -gt 0 ]; then
  head -c "$size" > "$tmp"
  sha "$tmp" > "$sums/0" &
  n=1
fi
got=$(stat -c %s -- "$tmp")
if [ "$got" != "$size" ]; then
  echo "received $got of $size bytes" >&2
  exit 1
fi
{ sync -- "$tmp" 2>/dev/null || sync; } &
wait
line=
i=0
while [ "$i" -lt "$n" ]; do
  read -r sum _ < "$sums/$i" || sum=missing
  line="$line $sum"
  i=$((i + 1))
done
printf 'sha256%s\n' "$line"
IFS= read -r answer || answer=
if [ "$answer" != commit ]; then
  exit 3
fi
mv -f -- "$tmp" "$target"
trap 'rm -rf -- "$sums"' EXIT
sync -- "$dir" 2>/dev/null || sync
echo committed
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};

    /// Runs the upload script locally with `input` on its standard input.
    fn upload(target: &std::path::Path, size: usize, seg: usize, input: &[u8]) -> (i32, String) {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(UPLOAD)
            .arg("sh")
            .arg(target)
            .arg("640")
            .arg(size.to_string())
            .arg(seg.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    #[test]
    fn the_upload_script_hashes_each_segment_and_commits_only_when_told() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("snapshot.db");
        let data: Vec<u8> = (0..2500u32).map(|i| (i * 7 % 251) as u8).collect();
        let expected: Vec<String> = data
            .chunks(1000)
            .map(|c| hex::encode(Sha256::digest(c)))
            .collect();

        // The verdict follows the data on the same input: exactly `size` bytes are data.
        let mut input = data.clone();
        input.extend_from_slice(b"commit\n");
        let (code, out) = upload(&target, data.len(), 1000, &input);
        assert_eq!(code, 0, "{out}");
        let mut lines = out.lines();
        assert_eq!(
            lines.next().unwrap(),
            format!("sha256 {}", expected.join(" "))
        );
        assert_eq!(lines.next(), Some("committed"));
        assert!(std::fs::read(&target).unwrap() == data);
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);

        // Anything but `commit` leaves the target as it was and no temporary file behind.
        let mut input = vec![0u8; 2500];
        input.extend_from_slice(b"abort\n");
        let (code, _) = upload(&target, 2500, 1000, &input);
        assert_eq!(code, 3);
        assert!(std::fs::read(&target).unwrap() == data);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        // A short input is refused.
        let (code, _) = upload(&target, 2500, 1000, &data[..100]);
        assert_ne!(code, 0);
        assert!(std::fs::read(&target).unwrap() == data);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
