//! Waiting for things, and looking at processes and ports, as tests do.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::util::ProcId;

/// Polls `f` every 100 ms until it returns `Some`, or panics after `timeout` naming `what`.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// True while `pid` is a running (non-zombie) process.
pub fn pid_alive(pid: i64) -> bool {
    i32::try_from(pid).ok().and_then(ProcId::of).is_some()
}

/// The command line of a process, its NUL-separated arguments joined by spaces.
pub fn cmdline(pid: i64) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// True when something accepts TCP connections on `ip:port`.
pub fn port_open(ip: Ipv4Addr, port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from((ip, port)), Duration::from_millis(300)).is_ok()
}

/// A free TCP port on 127.0.0.1 (free when asked: bind it soon, and be ready to try another).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// Asserts a command succeeded, showing `what` and its output otherwise; returns its stdout.
#[track_caller]
pub fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
