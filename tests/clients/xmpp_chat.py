#!/usr/bin/env python3
"""XMPP clients (python3-slixmpp 1.8, Debian 12's) chat in a room through Tor.

Each account logs in over STARTTLS (the server's certificate is self-signed, so it is
not verified: the onion address authenticates the server) with the same password and
joins the group chat room ROOM@rooms.DOMAIN; the first account says a line (a random one,
or --say TEXT), every other one must receive it. Through Tor (--socks), the TCP
connection is made by PySocks with the name resolved by Tor and handed to slixmpp.
Prints one JSON line:
{"ok": bool, "detail": str, "received": {user: bool}, ...}. Exit 0 only when every
other account read the line.

  xmpp_chat.py [--socks HOST:PORT] --host ADDRESS.onion [--domain DOMAIN] --port 5222
               --users alice,bob --password P --room tails [--timeout 180] [--say TEXT]

With --expect-history TEXT, only the first account of --users logs in; it joins the
room asking for its history (the last 20 lines) and says nothing. Prints one JSON line:
{"ok": bool, "detail": str, "history": [body cut to 200 characters, ...],
"delayed": bool, ...} ("delayed": the matching line came as history, with an XEP-0203
delay). Exit 0 only when a group chat line whose body contains TEXT arrived within
the timeout; the room's history is complete when the room's subject follows it, so
without the line this fails a few seconds after that.

--domain is the JIDs' domain (default: --host), for testing against 127.0.0.1.
"""
import argparse
import asyncio
import json
import logging
import secrets
import socket
import ssl
import sys
import time

# slixmpp logs a warning at import about its pure-Python stringprep.
logging.basicConfig(level=logging.CRITICAL, stream=sys.stderr)

import slixmpp  # noqa: E402
import socks  # noqa: E402


class Failure(Exception):
    pass


def opener(a):
    """A blocking function returning a connected TCP socket to the server."""

    def direct():
        return socket.create_connection((a.host, a.port), timeout=a.timeout)

    def through_tor():
        host, port = a.socks.rsplit(":", 1)
        s = socks.create_connection(
            (a.host, a.port),
            timeout=min(a.timeout, 90),
            proxy_type=socks.SOCKS5,
            proxy_addr=host,
            proxy_port=int(port),
            proxy_rdns=True,
        )
        # A plain socket for asyncio (PySocks' subclass only matters while connecting).
        return socket.socket(fileno=s.detach())

    return through_tor if a.socks else direct


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, open_socket):
        super().__init__(jid, password)
        self.open_socket = open_socket
        # Self-signed certificate: TLS for confidentiality, the onion address for trust.
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0045")
        self.outcome = asyncio.get_event_loop().create_future()
        self.heard = asyncio.get_event_loop().create_future()
        self.tls = None
        self.reached = False  # the TCP connection (through Tor or not) was made
        for name, handler in [
            ("session_start", self.on_session_start),
            ("failed_auth", self.on_failed_auth),
            ("no_auth", self.on_no_auth),
            ("connection_failed", self.on_connection_failed),
            ("disconnected", self.on_disconnected),
            ("stream_error", self.on_stream_error),
        ]:
            self.add_event_handler(name, handler)

    async def _connect_routine(self):
        # Replaces slixmpp's own (DNS, then TCP): our socket, through Tor or not, and
        # no reconnection attempts.
        self.event_when_connected = "connected"
        try:
            sock = await self.loop.run_in_executor(None, self.open_socket)
            sock.settimeout(None)
            self.reached = True
            await self.loop.create_connection(lambda: self, sock=sock)
        except OSError as e:
            self._current_connection_attempt = None
            self.event("connection_failed", e)

    def settle(self, value):
        if not self.outcome.done():
            self.outcome.set_result(value)

    def on_session_start(self, _event):
        ssl_object = self.transport.get_extra_info("ssl_object") if self.transport else None
        if ssl_object is None:
            self.settle(f"logged in without TLS as {self.boundjid.bare}")
            return
        self.tls = ssl_object.version()
        self.settle(None)

    def on_failed_auth(self, stanza):
        condition = stanza["condition"] if stanza is not None else "?"
        self.settle(f"auth failed for {self.boundjid.bare}: {condition} (wrong user or password?)")

    def on_no_auth(self, _event):
        self.settle(f"auth impossible for {self.boundjid.bare}: no usable SASL mechanism")

    def on_connection_failed(self, error):
        self.settle(f"cannot connect: {error}")

    def on_stream_error(self, stanza):
        self.settle(f"stream error for {self.boundjid.bare}: {stanza['condition']} {stanza['text']}".strip())

    def on_disconnected(self, reason):
        self.settle(f"disconnected before login as {self.boundjid.bare}: {reason or 'closed by the server'}")

    async def join(self, room, nick, timeout, history=0):
        """Joins ROOM as NICK asking for HISTORY lines of history (default none); raises
        Failure on a presence error.

        Not slixmpp's join_muc_wait: 1.8.3's prints every message's delay on stdout
        and waits for the room's subject."""
        muc = self.plugin["xep_0045"]
        done = self.loop.create_future()

        def finish(pres):
            if not done.done():
                done.set_result(pres)

        muc.rooms[room] = {}
        muc.our_nicks[room] = nick
        self.add_event_handler(f"muc::{room}::self-presence", finish)
        self.add_event_handler(f"muc::{room}::presence-error", finish)
        pres = self.make_presence(pto=f"{room}/{nick}")
        pres.enable("muc_join")
        pres["muc_join"]["history"]["maxstanzas"] = str(history)
        pres.send()
        try:
            pres = await asyncio.wait_for(done, timeout)
        except asyncio.TimeoutError:
            raise Failure(f"timed out: {self.boundjid.bare} joining {room}")
        if pres["type"] == "error":
            raise Failure(
                f"{self.boundjid.bare} cannot join {room}: {pres['error']['condition']}"
                f" {pres['error']['text']}".rstrip()
            )
        # 201: the room did not exist and this join created it.
        return 201 in pres["muc"]["status_codes"]


# --expect-history: the lines asked for, and how long to wait after the room's subject
# (which follows the history, XEP-0045 7.2.15) for a line still to come.
HISTORY_LINES = 20
AFTER_SUBJECT = 5


async def run(a, result):
    deadline = time.monotonic() + a.timeout

    def left():
        return max(0.1, deadline - time.monotonic())

    users = [u for u in a.users.split(",") if u]
    if a.expect_history is not None:
        if not users:
            raise Failure("give at least one --users")
        if not a.expect_history:
            raise Failure("--expect-history must not be empty")
        users = users[:1]
    elif len(users) < 2:
        raise Failure("give at least two --users")
    if a.say is not None and not a.say.strip():
        raise Failure("--say must not be empty")
    room = f"{a.room}@rooms.{a.domain}"
    words = a.say if a.say is not None else "tails-server-" + secrets.token_hex(6)
    open_socket = opener(a)
    clients = {u: Client(f"{u}@{a.domain}/test", a.password, open_socket) for u in users}
    if a.expect_history is None:
        result["received"] = {u: False for u in users[1:]}
    try:
        for c in clients.values():
            c.connect(address=(a.domain, a.port))
        for u, c in clients.items():
            try:
                err = await asyncio.wait_for(asyncio.shield(c.outcome), left())
            except asyncio.TimeoutError:
                if not c.reached:
                    raise Failure(f"cannot connect: timed out reaching {a.host}:{a.port}")
                raise Failure(f"timed out: {u} logging in to {a.domain}")
            if err:
                raise Failure(err)
        result["tls"] = sorted({c.tls for c in clients.values()})
        if a.expect_history is not None:
            await read_history(a, result, room, users[0], clients[users[0]], left)
            return
        for u, c in clients.items():
            if await c.join(room, u, left()):
                raise Failure(f"the room {room} did not exist ({u}'s join created it)")

        for u in users[1:]:
            c = clients[u]

            def on_message(msg, c=c):
                if msg["body"] == words and msg["from"].resource == users[0] and not c.heard.done():
                    c.heard.set_result(True)

            c.add_event_handler(f"muc::{room}::message", on_message)
        clients[users[0]].send_message(mto=room, mbody=words, mtype="groupchat")
        pending = {u: clients[u].heard for u in users[1:]}
        done, _ = await asyncio.wait(pending.values(), timeout=left())
        for u, fut in pending.items():
            result["received"][u] = fut in done
        missing = [u for u, ok in result["received"].items() if not ok]
        if missing:
            raise Failure(f"timed out: {', '.join(missing)} did not read {users[0]}'s line in {room}")
        result["ok"] = True
        result["detail"] = f"{', '.join(users[1:])} read {users[0]}'s line in {room}"
    finally:
        for c in clients.values():
            if c.transport is not None:
                c.disconnect(wait=1)
        await asyncio.sleep(0.3)


async def read_history(a, result, room, user, c, left):
    """Joins ROOM as USER asking for its history; returns when a line containing
    --expect-history arrived, raises Failure otherwise."""
    text = a.expect_history
    found = c.loop.create_future()  # result: whether the line came with a delay
    subject = c.loop.create_future()
    history = result["history"] = []

    def on_message(msg):
        body = msg["body"]
        delayed = msg.get_plugin("delay", check=True) is not None
        if len(history) < 100:
            history.append(body[:200])
        if text in body and not found.done():
            found.set_result(delayed)

    def on_subject(_msg):
        if not subject.done():
            subject.set_result(True)

    # Before the join presence: the history follows the self-presence at once.
    c.add_event_handler(f"muc::{room}::message", on_message)
    c.add_event_handler(f"muc::{room}::groupchat_subject", on_subject)
    if await c.join(room, user, left(), history=HISTORY_LINES):
        raise Failure(f"the room {room} did not exist ({user}'s join created it): no history")
    await asyncio.wait([found, subject], timeout=left(), return_when=asyncio.FIRST_COMPLETED)
    if not found.done() and subject.done():
        await asyncio.wait([found], timeout=min(AFTER_SUBJECT, left()))
    if not found.done():
        what = f"no line containing {text!r} in {room}'s history ({len(history)} lines seen"
        if subject.done():
            raise Failure(f"{what}, history complete)")
        raise Failure(f"timed out: {what})")
    result["delayed"] = found.result()
    result["ok"] = True
    how = "from the room's history" if result["delayed"] else "as a live line, without a delay element"
    result["detail"] = f"{user} read {text!r} in {room} {how} ({len(history)} lines seen)"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--socks", help="Tor's SOCKS port, HOST:PORT; absent: connect directly")
    p.add_argument("--host", required=True, help="the server (onion address)")
    p.add_argument("--domain", help="the JIDs' domain (default: --host)")
    p.add_argument("--port", type=int, default=5222)
    p.add_argument("--users", default="alice,bob", help="comma-separated; the first speaks")
    p.add_argument("--password", required=True)
    p.add_argument("--room", default="tails", help="room name, without @rooms.DOMAIN")
    p.add_argument("--timeout", type=float, default=180)
    p.add_argument("--verbose", action="store_true", help="slixmpp's debug log on stderr")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--say", metavar="TEXT", help="the line the first account says (default: a random one)")
    mode.add_argument(
        "--expect-history",
        metavar="TEXT",
        help="only the first account joins, asking for the room's history, and says nothing;"
        " succeed when a line containing TEXT arrives",
    )
    a = p.parse_args()
    a.domain = a.domain or a.host
    if a.verbose:
        logging.getLogger().setLevel(logging.DEBUG)

    if a.expect_history is None:
        result = {"ok": False, "detail": "", "received": {}}
    else:
        result = {"ok": False, "detail": "", "history": []}
    try:
        asyncio.run(asyncio.wait_for(run(a, result), a.timeout + 5))
    except Failure as e:
        result["detail"] = str(e)
    except asyncio.TimeoutError:
        result["detail"] = f"timed out after {a.timeout:.0f} s"
    except Exception as e:  # noqa: BLE001 - one JSON line whatever happens
        result["detail"] = f"error: {type(e).__name__}: {e}"
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
