#!/var/lib/tails-server-tests/venv/bin/python
"""Two Mumble clients (pymumble 1.6.1) meet on the server through Tor and one hears the other.

Run with the test venv's python (pymumble is not packaged in Debian 12):
  /var/lib/tails-server-tests/venv/bin/python mumble_check.py [--socks HOST:PORT]
      --host ADDRESS.onion --port 64738 --password P [--user NAME] [--timeout 120]
      [--no-voice]

The first client connects through the Tor SOCKS port (names resolved by Tor, no
UDP: Tor carries TCP only, so voice goes through Mumble's TCP tunnel, which is what
pymumble always does), gives the server password and waits for the server's
ServerSync (it is then in the root channel). Unless --no-voice, a second client joins
and the first speaks one second of a tone: the second must receive and decode it.
Prints one JSON line: {"ok": bool, "detail": str, "root_channel": str, "welcome": str,
...}. Exit 0 only when all of that worked. Without --socks it connects directly.
"""
import argparse
import hashlib
import json
import math
import secrets
import socket
import ssl
import struct
import sys
import threading
import time

import socks
import pymumble_py3 as pymumble
from pymumble_py3 import mumble_pb2
from pymumble_py3.constants import (
    PYMUMBLE_CLBK_SOUNDRECEIVED,
    PYMUMBLE_CONN_STATE_AUTHENTICATING,
    PYMUMBLE_CONN_STATE_CONNECTED,
    PYMUMBLE_CONN_STATE_FAILED,
    PYMUMBLE_MSG_TYPES_AUTHENTICATE,
    PYMUMBLE_MSG_TYPES_REJECT,
    PYMUMBLE_MSG_TYPES_SERVERSYNC,
    PYMUMBLE_MSG_TYPES_VERSION,
    PYMUMBLE_OS_STRING,
    PYMUMBLE_OS_VERSION_STRING,
    PYMUMBLE_PROTOCOL_VERSION,
    PYMUMBLE_SAMPLERATE,
)


class TorMumble(pymumble.Mumble):
    """pymumble's client, its TCP connection made through SOCKS (or directly), bounded
    by a timeout, and what the server said (reject, welcome) kept for the report."""

    def __init__(self, socks_addr, net_timeout, **kwargs):
        super().__init__(reconnect=False, debug=False, **kwargs)
        self.daemon = True
        self.socks_addr = socks_addr
        self.net_timeout = net_timeout
        self.failure = None  # why it could not connect, one line
        self.rejected = None  # (RejectType name, reason) from the server
        self.welcome = None
        self.cert_sha1 = None

    def connect(self):
        host, port = self.host, self.port
        try:
            if self.socks_addr:
                shost, sport = self.socks_addr.rsplit(":", 1)
                sock = socks.create_connection(
                    (host, port),
                    timeout=self.net_timeout,
                    proxy_type=socks.SOCKS5,
                    proxy_addr=shost,
                    proxy_port=int(sport),
                    proxy_rdns=True,
                )
            else:
                sock = socket.create_connection((host, port), timeout=self.net_timeout)
        except (socks.ProxyError, OSError) as e:
            self.failure = f"cannot connect to {host}:{port}: {e}"
            self.connected = PYMUMBLE_CONN_STATE_FAILED
            return self.connected
        try:
            # Murmur's certificate is self-signed (made at its first start): no CA to
            # check it against; the onion address already authenticates the server.
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            tls = ctx.wrap_socket(sock)
            der = tls.getpeercert(binary_form=True)
            if der:
                self.cert_sha1 = hashlib.sha1(der).hexdigest()
        except (ssl.SSLError, OSError) as e:
            sock.close()
            self.failure = f"TLS handshake with {host}:{port} failed: {e}"
            self.connected = PYMUMBLE_CONN_STATE_FAILED
            return self.connected
        self.control_socket = tls
        try:
            version = mumble_pb2.Version()
            v = PYMUMBLE_PROTOCOL_VERSION
            version.version = (v[0] << 16) + (v[1] << 8) + v[2]
            version.release = self.application
            version.os = PYMUMBLE_OS_STRING
            version.os_version = PYMUMBLE_OS_VERSION_STRING
            self.send_message(PYMUMBLE_MSG_TYPES_VERSION, version)
            auth = mumble_pb2.Authenticate()
            auth.username = self.user
            auth.password = self.password
            auth.tokens.extend(self.tokens)
            auth.opus = True
            self.send_message(PYMUMBLE_MSG_TYPES_AUTHENTICATE, auth)
            # pymumble's loop reads with select, without blocking.
            tls.setblocking(False)
        except OSError as e:
            self.failure = f"connection to {host}:{port} lost while authenticating: {e}"
            self.connected = PYMUMBLE_CONN_STATE_FAILED
            return self.connected
        self.connected = PYMUMBLE_CONN_STATE_AUTHENTICATING
        return self.connected

    def dispatch_control_message(self, type, message):
        if type == PYMUMBLE_MSG_TYPES_REJECT:
            mess = mumble_pb2.Reject()
            mess.ParseFromString(message)
            self.rejected = (mumble_pb2.Reject.RejectType.Name(mess.type), mess.reason)
        elif type == PYMUMBLE_MSG_TYPES_SERVERSYNC:
            mess = mumble_pb2.ServerSync()
            mess.ParseFromString(message)
            self.welcome = mess.welcome_text
        super().dispatch_control_message(type, message)

    def run(self):
        try:
            super().run()
        except Exception as e:  # a reject, a lost connection: reported by the caller
            if self.failure is None and self.rejected is None:
                self.failure = f"client stopped: {e!r}"
        finally:
            if self.connected != PYMUMBLE_CONN_STATE_CONNECTED and self.failure is None:
                if self.rejected is None:
                    self.failure = "the server closed the connection"

    def why_not(self):
        if self.rejected:
            kind, reason = self.rejected
            if kind in ("WrongServerPW", "WrongUserPW"):
                return f"server refused the password ({kind}: {reason})"
            return f"server rejected us ({kind}: {reason})"
        return self.failure or "no answer from the server"


def wait_connected(m, deadline):
    """True once the server has sent ServerSync; False on failure or at the deadline."""
    while time.time() < deadline:
        if m.connected == PYMUMBLE_CONN_STATE_CONNECTED:
            return True
        if m.rejected or m.failure or not m.is_alive():
            return False
        time.sleep(0.1)
    return m.connected == PYMUMBLE_CONN_STATE_CONNECTED


def tone(seconds, hz=440.0, amplitude=12000):
    n = int(seconds * PYMUMBLE_SAMPLERATE)
    return b"".join(
        struct.pack("<h", int(amplitude * math.sin(2 * math.pi * hz * i / PYMUMBLE_SAMPLERATE)))
        for i in range(n)
    )


def rms(pcm):
    count = len(pcm) // 2
    if count == 0:
        return 0.0
    samples = struct.unpack(f"<{count}h", pcm[: count * 2])
    return math.sqrt(sum(s * s for s in samples) / count)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--socks", help="Tor SOCKS5 proxy HOST:PORT; absent: connect directly")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=64738)
    p.add_argument("--password", required=True, help="the server password")
    p.add_argument("--user", default="tails-test", help="base of the user names used")
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--no-voice", action="store_true", help="only connect, no voice check")
    a = p.parse_args()

    deadline = time.time() + a.timeout
    suffix = secrets.token_hex(3)
    result = {"ok": False, "detail": "", "root_channel": None, "welcome": None}

    def client(name):
        m = TorMumble(
            a.socks,
            max(1.0, deadline - time.time()),
            host=a.host,
            port=a.port,
            user=name,
            password=a.password,
        )
        m.start()
        return m

    speaker = client(f"{a.user}-{suffix}")
    if not wait_connected(speaker, deadline):
        result["detail"] = speaker.why_not()
        print(json.dumps(result))
        return 1
    root = speaker.channels[0]
    result["root_channel"] = root["name"]
    result["welcome"] = speaker.welcome
    result["cert_sha1"] = speaker.cert_sha1
    result["max_bandwidth"] = speaker.server_max_bandwidth
    result["detail"] = f"connected as {speaker.user} in channel {root['name']!r}"
    if a.no_voice:
        result["ok"] = True
        print(json.dumps(result))
        return 0

    heard = {"frames": 0, "loudest": 0.0}
    listener = client(f"{a.user}-{suffix}-2")
    listener.set_receive_sound(True)

    def on_sound(user, chunk):
        if user["name"] == speaker.user:
            heard["frames"] += 1
            heard["loudest"] = max(heard["loudest"], rms(chunk.pcm))

    listener.callbacks.set_callback(PYMUMBLE_CLBK_SOUNDRECEIVED, on_sound)
    if not wait_connected(listener, deadline):
        result["detail"] = "second client: " + listener.why_not()
        print(json.dumps(result))
        return 1
    # The listener sees the speaker, both in the root channel: the speaker talks.
    sound = tone(1.0)
    while time.time() < deadline and heard["frames"] < 10:
        if speaker.sound_output.get_buffer_size() < 0.1:
            speaker.sound_output.add_sound(sound)
        if speaker.connected != PYMUMBLE_CONN_STATE_CONNECTED:
            break
        time.sleep(0.1)
    result["voice_frames"] = heard["frames"]
    result["voice_rms"] = round(heard["loudest"])
    if heard["frames"] >= 10 and heard["loudest"] > 1000:
        result["ok"] = True
        result["detail"] += (
            f"; {listener.user} heard {speaker.user} ({heard['frames']} Opus frames"
            " over the TCP tunnel)"
        )
    else:
        result["detail"] += (
            f"; {listener.user} heard {heard['frames']} frames from {speaker.user}"
            f" (loudest RMS {round(heard['loudest'])}): voice did not get through"
        )
    for m in (speaker, listener):
        try:
            m.stop()
        except Exception:
            pass
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
