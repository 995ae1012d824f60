#!/usr/bin/env bash
# Set up Tails Server on Debian 12 (bookworm), as root. Idempotent: a second
# run only checks, and rebuilds what changed.
#
#   ./setup.sh            install packages, tools, users; build; install; build images
#   ./setup.sh --no-images   everything but the guest images
set -euo pipefail
cd "$(dirname "$0")"

say() { printf '\033[1msetup:\033[0m %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

build_images=1
for a in "$@"; do
  case "$a" in
    --no-images) build_images=0 ;;
    *) die "unknown option $a (use --no-images)" ;;
  esac
done

[ "$(id -u)" = 0 ] || die "run as root (sudo ./setup.sh)"
. /etc/os-release
[ "${VERSION_CODENAME:-}" = bookworm ] || die "Debian 12 (bookworm) is required, this is ${PRETTY_NAME:-unknown}"

PREFIX=/usr/local
LIBDIR=$PREFIX/lib/tails-server
VHOST_VERSION=0.3.0
# Debian packages: the real components, nothing mocked.
PACKAGES=(tor nftables kmod cpio mmdebstrap squashfs-tools tcpdump iproute2 busybox-static
          xz-utils zstd binutils ca-certificates libc6-dev gcc pkg-config iputils-ping curl
          dnsmasq-base python3-irc python3-socks python3-slixmpp python3-paramiko
          python3-gi gir1.2-infinity-0.7 python3-venv python3-six python3-wheel python3-setuptools libopus0
          cryptsetup-bin e2fsprogs
          libgtk-4-dev libadwaita-1-dev xvfb at-spi2-core python3-pyatspi gir1.2-gtk-3.0
          dbus-daemon dbus-x11 xauth)
# Building and checking the Debian package (package/build-deb.sh, tests/tests/package.rs).
PACKAGES+=(lintian man-db)
# QEMU from bookworm-backports (10.x): the machine images here already carry
# backports' qemu-utils, which conflicts with bookworm's qemu-system 7.2.
BACKPORTS=(qemu-system-x86 qemu-utils)

missing_pkgs() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || echo "$p"
  done
}

# apt on these machines may lose downloaded .debs between dpkg runs: retry.
apt_install() {
  local i
  for i in 1 2 3 4 5; do
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"; then
      return 0
    fi
    say "apt-get install failed (attempt $i), retrying"
    sleep 2
  done
  return 1
}

# 1. Debian packages.
bp=/etc/apt/sources.list.d/tails-server-backports.list
if [ ! -f "$bp" ]; then
  say "enabling bookworm-backports (for QEMU)"
  echo 'deb http://deb.debian.org/debian bookworm-backports main' > "$bp"
  apt_updated=0
fi
need=$(missing_pkgs "${PACKAGES[@]}"; missing_pkgs "${BACKPORTS[@]}")
if [ -n "$need" ] || [ "${apt_updated:-1}" = 0 ]; then
  say "installing Debian packages: $(echo $need)"
  apt-get update -q || die "apt-get update failed: check the network and /etc/apt/sources.list"
  [ -z "$(missing_pkgs "${BACKPORTS[@]}")" ] || apt_install -t bookworm-backports "${BACKPORTS[@]}" \
    || die "could not install ${BACKPORTS[*]} from bookworm-backports"
  [ -z "$(missing_pkgs "${PACKAGES[@]}")" ] || apt_install "${PACKAGES[@]}" \
    || die "could not install: $(missing_pkgs "${PACKAGES[@]}" | tr '\n' ' ')"
fi
left=$(missing_pkgs "${PACKAGES[@]}" "${BACKPORTS[@]}")
[ -z "$left" ] || die "still missing Debian packages: $(echo $left)"

# 2. Rust toolchain (not fetched here: rustup's servers are not reachable on all machines).
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null || die "cargo is missing: install a Rust toolchain (rustup) first"

# 3. vhost-device-vsock, pinned, cached.
if [ "$("$PREFIX/bin/vhost-device-vsock" --version 2>/dev/null || true)" != "vhost-device-vsock $VHOST_VERSION" ]; then
  say "building vhost-device-vsock $VHOST_VERSION (once)"
  cargo install --locked --root "$PREFIX" vhost-device-vsock --version "$VHOST_VERSION" \
    || die "cargo install vhost-device-vsock failed"
fi

# 3b. cargo-deb, pinned (package/build-deb.sh reads the pin here), cached.
CARGO_DEB_VERSION=3.8.0
if [ "$(cargo deb --version 2>/dev/null || true)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  say "building cargo-deb $CARGO_DEB_VERSION (once)"
  cargo install --locked cargo-deb --version "$CARGO_DEB_VERSION" || die "cargo install cargo-deb failed"
fi

# 4. Unprivileged system users, one per process that touches guest data:
#    each VM's QEMU and each VM's vsock backend.
for u in tails-torvm tails-appvm tails-vsock-torvm tails-vsock-appvm; do
  if ! getent passwd "$u" >/dev/null; then
    say "creating system user $u"
    adduser --system --group --no-create-home --home /nonexistent --shell /usr/sbin/nologin "$u" >/dev/null
  fi
done

# The group whose members may use the daemon's API besides root (the
# desktop user of the GUI): `adduser <user> tails-server`.
if ! getent group tails-server >/dev/null; then
  say "creating system group tails-server"
  addgroup --system tails-server >/dev/null
fi

# QEMU may use KVM (when the daemon's probe shows that it really works): the
# VM users get /dev/kvm through the kvm group, and only while KVM is chosen.
if getent group kvm >/dev/null; then
  for u in tails-torvm tails-appvm; do
    id -nG "$u" | grep -qw kvm || adduser "$u" kvm >/dev/null
  done
fi

# 5. Build: the host binaries, and both guest agents linked statically (the
# same build as package/build-deb.sh's, so the package holds these binaries).
say "building tails-server and the guest agents"
package/build-release.sh

# 6. Install.
install -d -m 0755 "$LIBDIR" "$LIBDIR/services"
install -m 0755 target/release/tails-server "$PREFIX/bin/tails-server"
install -m 0755 target/release/tails-server-gui "$PREFIX/bin/tails-server-gui"
# The jailer runs as root and starts each QEMU and vsock backend in its jail.
install -m 0755 target/release/tails-jailer "$LIBDIR/tails-jailer"
for a in torvm appvm; do
  install -m 0755 "target/x86_64-unknown-linux-gnu/release/tails-$a-agent" "$LIBDIR/tails-$a-agent"
done
rm -f "$LIBDIR"/services/*.yaml
install -m 0644 services/*.yaml "$LIBDIR/services/"
# The systemd unit (not enabled: `tails-server autostart on` does that).
install -d -m 0755 /etc/systemd/system
install -m 0644 host/tails-server.service /etc/systemd/system/tails-server.service
# Its API socket, for the group tails-server (not enabled either:
# `systemctl enable --now tails-server.socket`).
install -m 0644 host/tails-server.socket /etc/systemd/system/tails-server.socket
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
say "installed $PREFIX/bin/tails-server and $LIBDIR"

# 7. Guest images (cached by a hash of their inputs).
if [ "$build_images" = 1 ]; then
  "$PREFIX/bin/tails-server" image build
fi
say "done"
