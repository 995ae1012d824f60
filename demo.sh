#!/usr/bin/env bash
# Set up Tails Server and run its main job on the embedded private Tor network:
# the testnet up, both VMs up with tor bootstrapped on it, the App VM fetching
# an outside page through Tor, then everything down again.
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh
ts=/usr/local/bin/tails-server
keep=0
[ "${1:-}" = "--keep" ] && keep=1
cleanup() { if [ "$keep" = 0 ]; then $ts down || true; $ts testnet down || true; fi; }
trap cleanup EXIT

$ts testnet up
$ts testnet status
$ts up --network local
$ts status
echo "--- the App VM's fixed identity, seen from inside (the same on every machine):"
$ts identity | grep -E '^(net|dmi.product_name|dmi.product_uuid|cpu.model_name|disk|host.name|time.zone|fingerprint)'
echo "--- the host's firewall table (the Tor VM's QEMU: TCP only, to the testnet; the App VM's: nothing):"
nft list table inet tails_server
echo "--- the App VM fetches a page from the outside, through Tor only:"
$ts exec appvm --timeout 120 -- curl -sS --max-time 100 http://outside.test:8080/
echo "--- who the outside server saw (a relay of the testnet, never this host):"
tail -n 2 "$($ts testnet status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["web_log"])')"
if [ "$keep" = 1 ]; then
  echo "left running (--keep): stop with '$ts down; $ts testnet down'"
fi
