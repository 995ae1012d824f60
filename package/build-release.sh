#!/usr/bin/env bash
# The release build, the one both ./setup.sh and package/build-deb.sh run:
# the host crates in one cargo command, then both guest agents linked
# statically.
#
#   package/build-release.sh
#
# One command for all the host crates: cargo unifies the dependencies'
# features over the crates of one command, so a crate built apart (with
# another list) gets other features and is linked again, with LTO, into a
# binary the suite never ran. Built here once, they are the very binaries
# setup.sh installs, the suite tests and the package holds (tails-package
# makes the package's man pages).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p tails-server -p tails-jailer -p tails-server-gui -p tails-package
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --target x86_64-unknown-linux-gnu -p tails-torvm-agent -p tails-appvm-agent
