#!/usr/bin/env bash
# Set up Tails Server and run its main job on the embedded private Tor network:
# the testnet up, both VMs up with tor bootstrapped on it, the App VM fetching
# an outside page through Tor, a web site published from the App VM as an onion
# service with client authorization (address, key and QR code shown), fetched
# by a Tor client of the testnet holding the key; then everything down again.
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
tail -n 2 /run/tails-server-testnet/web.log
echo "--- publish a web site from the App VM as an onion service, client authorization on:"
$ts exec appvm -- sh -c 'mkdir -p /var/www/tails-server && echo "<h1>Hello from Tails Server</h1>" > /var/www/tails-server/index.html'
$ts nginx enable
$ts nginx info
echo "--- a Tor client of the testnet, given the key, fetches the page through the onion service:"
addr=$($ts nginx info | sed -n 's/^address: //p')
$ts nginx credentials | sed -n 's/^auth-private: //p' | $ts testnet fetch --auth-private - "http://$addr/"
if [ "$keep" = 1 ]; then
  echo "left running (--keep): stop with '$ts down; $ts testnet down'"
fi
