#!/usr/bin/env bash
# Set up everything the tests need, then run the whole test suite:
# unit and property tests of every crate, and the integration tests that boot
# the real VMs under QEMU (KVM where it works, TCG otherwise).
set -euo pipefail
cd "$(dirname "$0")"
# How long each part took, printed at the end whatever happens (CI shows it).
t0=$SECONDS
phase=setup
declare -a took=()
mark() { took+=("$1 $((SECONDS - t0)) s"); t0=$SECONDS; }
report() {
  rc=$?
  if [ -n "$phase" ]; then mark "$phase (stopped, exit $rc)"; fi
  local IFS=';'
  echo "run-tests.sh timings: ${took[*]}; total $SECONDS s"
}
trap report EXIT
./setup.sh
# The one test client Debian does not ship, Mumble's (pymumble), pinned, in a
# venv that sees Debian's python3-socks (tests/clients/mumble_check.py).
VENV=/var/lib/tails-server-tests/venv
MUMBLE_PINS="opuslib==3.0.1 protobuf==3.12.2 pymumble==1.6.1"
[ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$VENV"
# (A fresh venv has none of them: grep finds nothing, which is no error here.)
have=$("$VENV/bin/python" -m pip freeze 2>/dev/null | { grep -E '^(opuslib|protobuf|pymumble)==' || true; } | sort | tr '\n' ' ')
if [ "$have" != "$MUMBLE_PINS " ]; then
  "$VENV/bin/python" -m pip install --no-input --disable-pip-version-check --require-hashes \
    --no-deps --no-build-isolation -r tests/clients/requirements-mumble.txt
fi
export PATH="$HOME/.cargo/bin:$PATH"
mark setup
phase="test build"
# The leak probe runs inside the App VM: linked statically, like the agents.
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --target x86_64-unknown-linux-gnu -p tails-tests --bin ts-leakprobe
# The tests' binaries are built in the `suite` profile (Cargo.toml: no full
# LTO for each of them); what they test is the release build setup.sh installed.
# The GUI crate has no tests of its own (its logic is in the crates it calls,
# and tests/tests/gui*.rs drive the installed GUI): leaving it out spares the
# suite a second, unoptimised build of the GTK bindings, about a quarter of
# a cold test build.
SUITE=(--profile suite --locked --workspace --exclude tails-server-gui)
cargo test "${SUITE[@]}" --no-run
mark "test build"
phase=tests
# Integration tests share one stack per machine: run them one at a time.
# The fault test and the leak suite run on their own after the rest, with
# their reports shown (what healed, how fast; what leaked).
# Their own lines are shown (--nocapture): what each waited for, and how
# long, is in CI's log. They share one testnet (tests/src/lib.rs,
# TestnetGuard): daemon.rs starts it, the next ones join it, tor_network.rs
# ends it. A test file run on its own ends the testnet it started.
TAILS_TESTS_SHARED_TESTNET=1 cargo test "${SUITE[@]}" -- --test-threads=1 --nocapture \
  --skip nothing_bypasses_tor --skip the_stack_heals_itself_and_nothing_leaks_meanwhile
mark tests
phase="fault test"
cargo test --profile suite --locked -p tails-tests --test faults -- --test-threads=1 --nocapture
mark "fault test"
phase="leak suite"
# The leak test suite last, with its report shown (vectors tried, frames
# captured, packets leaked, what the anti-tests detected).
cargo test --profile suite --locked -p tails-tests --test leaks -- --test-threads=1 --nocapture
mark "leak suite"
phase=
