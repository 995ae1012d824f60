#!/usr/bin/env bash
# Set up Tails Server and run its main job: both VMs up, checked, and down.
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh
ts=/usr/local/bin/tails-server
$ts up
$ts status
echo "--- the App VM's fixed identity, seen from inside:"
$ts exec appvm -- ip -o link show
$ts exec appvm -- ip -o -4 addr show
echo "--- the App VM reaches the Tor VM over the internal link:"
$ts exec appvm -- ping -c1 -W5 10.1.2.1
$ts exec appvm -- ip neigh show 10.1.2.1
if [ "${1:-}" != "--keep" ]; then
  $ts down
else
  echo "left running (--keep): stop it with '$ts down'"
fi
