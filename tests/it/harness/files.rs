//! Test files, and their SHA-256 computed independently of the tool.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Writes `contents` to `dir/name`; returns the path.
pub fn write_file(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

/// Writes `size` pseudo-random bytes (whole MiB) to `path`; returns their SHA-256.
pub fn write_pseudo_random(path: &Path, size: usize) -> [u8; 32] {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hasher = Sha256::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..size / block.len() {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        hasher.update(&block);
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
    hasher.finalize().into()
}

/// SHA-256 of a file, computed by coreutils' `sha256sum`.
pub fn sha256_file(path: &Path) -> [u8; 32] {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut h = [0u8; 32];
    hex::decode_to_slice(text.split_whitespace().next().unwrap(), &mut h).unwrap();
    h
}

/// SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
