#!/usr/bin/env bash
# Set up everything the tests need, then run the whole test suite:
# unit and property tests of every crate, and the integration tests that boot
# the real VMs under QEMU (KVM where it works, TCG otherwise).
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
# The leak probe runs inside the App VM: linked statically, like the agents.
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --target x86_64-unknown-linux-gnu -p tails-tests --bin ts-leakprobe
# Integration tests share one stack per machine: run them one at a time.
cargo test --release --locked --workspace -- --test-threads=1 --skip nothing_bypasses_tor
# The leak test suite last, with its report shown (vectors tried, frames
# captured, packets leaked, what the anti-tests detected).
cargo test --release --locked -p tails-tests --test leaks -- --test-threads=1 --nocapture
