#!/usr/bin/env python3
"""Two IRC clients (python3-irc 8, Debian 12's) talk through Tor, as two people would.

Both connect to the onion service through a Tor SOCKS port (names resolved by
Tor), give the server password, join the channel; one says a line, the other
must receive it. Prints one JSON line: {"ok": bool, "detail": str, ...}.
Exit 0 only when the message arrived.

  irc_chat.py --socks HOST:PORT --host ADDRESS.onion --port 6667
              --password P --channel '#tails' [--timeout 120]
"""
import argparse
import json
import secrets
import sys
import threading
import time

import irc.client
import socks


def connect_through_tor(socks_addr):
    host, port = socks_addr.rsplit(":", 1)

    def factory(server_address):
        return socks.create_connection(
            server_address,
            timeout=90,
            proxy_type=socks.SOCKS5,
            proxy_addr=host,
            proxy_port=int(port),
            proxy_rdns=True,
        )

    return factory


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--socks", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--channel", required=True)
    p.add_argument("--timeout", type=float, default=120)
    a = p.parse_args()

    words = "tails-server-" + secrets.token_hex(6)
    # python3-irc 8 (Debian 12): the reactor is irc.client.IRC.
    reactor = irc.client.IRC()
    state = {"joined": set(), "heard": None, "errors": [], "welcome": None}

    def on_welcome(conn, event):
        conn.join(a.channel)

    def on_join(conn, event):
        if irc.client.NickMask(event.source).nick == conn.get_nickname():
            state["joined"].add(conn.get_nickname())

    def on_pubmsg(conn, event):
        if conn.get_nickname() == "bob" and event.arguments and event.arguments[0] == words:
            state["heard"] = irc.client.NickMask(event.source).nick

    def on_error(conn, event):
        text = " ".join([event.target or ""] + list(event.arguments)).strip()
        state["errors"].append(f"{event.type}: {text}")

    def on_motd(conn, event):
        state["welcome"] = " ".join(event.arguments)

    for kind, handler in [
        ("welcome", on_welcome),
        ("join", on_join),
        ("pubmsg", on_pubmsg),
        ("error", on_error),
        ("passwdmismatch", on_error),
        ("disconnect", on_error),
        ("motd", on_motd),
    ]:
        reactor.add_global_handler(kind, handler)

    factory = connect_through_tor(a.socks)
    conns = {}
    try:
        for nick in ["alice", "bob"]:
            conns[nick] = reactor.server().connect(
                a.host, a.port, nick, password=a.password, connect_factory=factory
            )
    except (irc.client.ServerConnectionError, OSError) as e:
        print(json.dumps({"ok": False, "detail": f"cannot connect: {e}"}))
        return 1

    deadline = time.time() + a.timeout
    said = False
    while time.time() < deadline and state["heard"] is None:
        reactor.process_once(0.2)
        if not said and state["joined"] >= {"alice", "bob"}:
            conns["alice"].privmsg(a.channel, words)
            said = True
        if state["errors"] and not state["joined"]:
            break
    ok = state["heard"] == "alice"
    print(
        json.dumps(
            {
                "ok": ok,
                "detail": "bob read alice's line in " + a.channel
                if ok
                else f"joined {sorted(state['joined'])}, errors {state['errors']}",
                "motd": state["welcome"],
            }
        )
    )
    for c in conns.values():
        try:
            c.quit("bye")
        except Exception:
            pass
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
