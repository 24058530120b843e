//! The `etcd-recover` binary: parse arguments, run, map the outcome to an exit code.
fn main() -> std::process::ExitCode {
    etcd_recover::cli::main()
}
