//! `etcd-recover-lab`: a local, real, multi-node control plane for testing etcd-recover.
fn main() -> std::process::ExitCode {
    etcd_recover_lab::cli::main()
}
