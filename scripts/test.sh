#!/usr/bin/env bash
# Runs every test: unit tests, the fixture corpus, and the end-to-end tests against real lab
# clusters (real sshd, real etcd). Installs what is missing first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo fmt --all -- --check
# Lab clusters are real processes; more than a few at once overloads a small machine.
threads="${ETCD_RECOVER_TEST_THREADS:-4}"
cargo test --workspace --locked -- --test-threads="$threads"
