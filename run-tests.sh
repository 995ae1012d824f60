#!/usr/bin/env bash
# Set up everything the tests need, then run the whole test suite:
# unit and property tests of every crate, and the integration tests that boot
# the real VMs under QEMU (KVM where it works, TCG otherwise).
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
# Integration tests share one stack per machine: run them one at a time.
cargo test --release --locked --workspace -- --test-threads=1
