#!/usr/bin/env bash
# Build the Debian package tails-server: target/debian/tails-server_*.deb,
# then check it with lintian (fails on an error, shows the warnings).
#
#   package/build-deb.sh
#
# It runs package/build-release.sh, setup.sh's build (so that after setup.sh
# it is a no-op, and the package holds the very binaries setup.sh installed
# and the suite tested); stages what is not a cargo binary of
# target/release (the static agents, vhost-device-vsock, the man pages and
# completions from `tails-package gen`, the systemd units rewritten for
# /usr/bin) in target/release/deb-assets; and runs `cargo deb --no-build`
# with host/Cargo.toml's [package.metadata.deb].
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1mbuild-deb:\033[0m %s\n' "$*" >&2; }
die() { printf 'build-deb: error: %s\n' "$*" >&2; exit 1; }

# One pin for each tool: setup.sh's.
pin() { sed -n "s/^$1=\([0-9.]*\)\$/\1/p" setup.sh; }
CARGO_DEB_VERSION=$(pin CARGO_DEB_VERSION)
VHOST_VERSION=$(pin VHOST_VERSION)
[ -n "$CARGO_DEB_VERSION" ] && [ -n "$VHOST_VERSION" ] || die "no CARGO_DEB_VERSION or VHOST_VERSION in setup.sh"
# host/Cargo.toml names its assets under the default target directory.
unset CARGO_TARGET_DIR
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null || die "cargo is missing: install a Rust toolchain (rustup) first"
command -v lintian >/dev/null || die "lintian is missing: apt-get install lintian (setup.sh does)"

if [ "$(cargo deb --version 2>/dev/null || true)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  say "installing cargo-deb $CARGO_DEB_VERSION"
  cargo install --locked cargo-deb --version "$CARGO_DEB_VERSION" || die "cargo install cargo-deb failed"
fi

say "building (release)"
# setup.sh's build (after it, a no-op).
package/build-release.sh
[ -x target/release/tails-server-gui ] \
  || die "target/release/tails-server-gui is missing: the GUI crate (gui/) is not built"

vhost=/usr/local/bin/vhost-device-vsock
if [ "$("$vhost" --version 2>/dev/null || true)" != "vhost-device-vsock $VHOST_VERSION" ]; then
  vhost=target/vhost-device-vsock/bin/vhost-device-vsock
  if [ "$("$vhost" --version 2>/dev/null || true)" != "vhost-device-vsock $VHOST_VERSION" ]; then
    say "building vhost-device-vsock $VHOST_VERSION"
    cargo install --locked --root target/vhost-device-vsock vhost-device-vsock --version "$VHOST_VERSION" \
      || die "cargo install vhost-device-vsock failed"
  fi
fi

say "staging in target/release/deb-assets"
stage=target/release/deb-assets
rm -rf "$stage"
install -d "$stage/lib" "$stage/systemd"
for a in torvm appvm; do
  install -m 0755 "target/x86_64-unknown-linux-gnu/release/tails-$a-agent" "$stage/lib/"
done
# cargo-deb strips only what cargo built.
install -s -m 0755 "$vhost" "$stage/lib/vhost-device-vsock"
target/release/tails-package gen "$stage"
# Compressed as policy says (cargo-deb compresses only pages from outside target/).
gzip -9n "$stage"/man/*.1
# The units, with the package's paths (setup.sh installs them as they are,
# for /usr/local).
for unit in host/tails-server.service host/tails-server.socket; do
  [ -f "$unit" ] || continue
  out="$stage/systemd/$(basename "$unit")"
  sed -e 's|/usr/local/bin/tails-server|/usr/bin/tails-server|g' \
      -e 's|^Documentation=file:///usr/local/share/doc/tails-server/README.md$|Documentation=man:tails-server(1) file:///usr/share/doc/tails-server/README.md|' \
      -e 's|Installed by setup.sh|Installed by the tails-server package|' \
      "$unit" > "$out"
  ! grep -n /usr/local "$out" || die "$out still names /usr/local"
done

say "cargo deb"
rm -f target/debian/tails-server_*.deb
cargo deb -p tails-server --no-build
deb=$(ls target/debian/tails-server_*.deb)

say "lintian $deb"
# --fail-on error: warnings are shown, errors fail the build.
lintian --fail-on error --tag-display-limit 0 "$deb" || die "lintian found errors in $deb"
say "built $deb ($(du -h "$deb" | cut -f1))"
