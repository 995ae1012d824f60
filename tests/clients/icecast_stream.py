#!/usr/bin/env python3
"""A stream pushed to Icecast and heard back, as a broadcaster and a listener would.

The SOURCE is an Icecast 2.4 source client speaking the modern source protocol
(HTTP PUT with Basic auth user "source" and Expect: 100-continue, as libshout
does): it pushes a slowly paced MPEG audio byte stream (MP3 frame headers, every
frame carrying a unique marker and a sequence number). The LISTENER is a second
connection, a plain HTTP GET of the mount as a media player makes, which must
receive the source's markers, including ones sent after it connected (so live
relaying, not only the burst buffer). /status-json.xsl is also read while the
source is on and must list the mount.

Both go through a Tor SOCKS port when --socks is given (names resolved by Tor,
PySocks rdns=True), directly otherwise. Prints one JSON line
{"ok": bool, "detail": str, "received_bytes": N, ...}; exit 0 only on success.

  icecast_stream.py [--socks HOST:PORT] --host ADDRESS.onion --port 80
                    --source-password P [--mount /live.mp3] [--timeout 180]
"""
import argparse
import base64
import json
import re
import secrets
import socket
import sys
import threading
import time

import socks

# MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, no padding, no CRC: 417-byte frames.
FRAME_HEADER = b"\xff\xfb\x90\x64"
FRAME_LEN = 417
# Frames per write and pause between writes: about 4 KiB every 0.25 s (~16 KiB/s,
# a 128 kbit/s stream), slow enough for Tor.
FRAMES_PER_CHUNK = 10
CHUNK_PAUSE = 0.25


class Failure(Exception):
    pass


def connect(args, deadline):
    """One TCP connection to the server, through the SOCKS proxy if given."""
    left = max(1.0, deadline - time.time())
    try:
        if args.socks:
            phost, pport = args.socks.rsplit(":", 1)
            s = socks.create_connection(
                (args.host, args.port),
                timeout=left,
                proxy_type=socks.SOCKS5,
                proxy_addr=phost,
                proxy_port=int(pport),
                proxy_rdns=True,
            )
        else:
            s = socket.create_connection((args.host, args.port), timeout=left)
    except (socks.ProxyError, OSError) as e:
        raise Failure(f"cannot connect to {args.host}:{args.port}: {e}") from e
    s.settimeout(min(left, 60))
    return s


def read_head(sock, deadline):
    """Read an HTTP response head; return (status, reason, headers, rest_of_bytes)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        if time.time() > deadline:
            raise Failure("timed out waiting for the server's answer")
        sock.settimeout(max(0.5, min(30, deadline - time.time())))
        try:
            data = sock.recv(4096)
        except socket.timeout:
            continue
        if not data:
            raise Failure(f"server closed the connection (got {buf[:200]!r})")
        buf += data
        if len(buf) > 65536:
            raise Failure("answer head too long")
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"(?:HTTP|ICY)/?[\d.]*\s+(\d{3})\s*(.*)", lines[0])
    if not m:
        raise Failure(f"not an HTTP answer: {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return int(m.group(1)), m.group(2), headers, rest


def basic(user, password):
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def frame(marker, seq):
    body = b"%s:%08d;" % (marker, seq)
    payload = FRAME_HEADER + body
    return payload + b"\x00" * (FRAME_LEN - len(payload))


def start_source(args, marker, deadline):
    """Log in as the source; return the socket once Icecast accepted it."""
    sock = connect(args, deadline)
    req = (
        f"PUT {args.mount} HTTP/1.1\r\n"
        f"Host: {args.host}:{args.port}\r\n"
        f"Authorization: Basic {basic('source', args.source_password)}\r\n"
        "User-Agent: tails-server-test/1.0\r\n"
        "Content-Type: audio/mpeg\r\n"
        "Ice-Name: Tails Server test stream\r\n"
        "Ice-Description: pushed by the Tails Server client test\r\n"
        "Ice-Public: 0\r\n"
        "Expect: 100-continue\r\n"
        "\r\n"
    )
    try:
        sock.sendall(req.encode())
        status, reason, headers, rest = read_head(sock, deadline)
    except OSError as e:
        sock.close()
        raise Failure(f"source: connection failed during login: {e}") from e
    if status == 401:
        sock.close()
        raise Failure(
            f"source authentication failed: wrong source password (HTTP 401 {reason})"
        )
    if status not in (100, 200):
        body = rest.decode("latin-1", "replace").strip()[:200]
        sock.close()
        raise Failure(f"source refused: HTTP {status} {reason} {body}".strip())
    return sock


def run_source(sock, marker, state, stop, deadline):
    seq = 0
    try:
        while not stop.is_set() and time.time() < deadline:
            chunk = b"".join(frame(marker, seq + i) for i in range(FRAMES_PER_CHUNK))
            sock.settimeout(max(1.0, min(60, deadline - time.time())))
            sock.sendall(chunk)
            seq += FRAMES_PER_CHUNK
            state["sent_frames"] = seq
            state["sent_bytes"] += len(chunk)
            stop.wait(CHUNK_PAUSE)
    except OSError as e:
        state["source_error"] = f"source: sending failed: {e}"
    finally:
        try:
            sock.close()
        except OSError:
            pass


def http_get(args, path, deadline, auth=None):
    sock = connect(args, deadline)
    req = f"GET {path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\nConnection: close\r\n"
    if auth:
        req += f"Authorization: Basic {auth}\r\n"
    req += "\r\n"
    sock.sendall(req.encode())
    return sock, read_head(sock, deadline)


def status_lists_mount(args, deadline):
    """Read /status-json.xsl; return (listed, listeners) for our mount."""
    sock, (status, reason, headers, rest) = http_get(args, "/status-json.xsl", deadline)
    body = rest
    try:
        while time.time() < deadline:
            sock.settimeout(max(0.5, min(30, deadline - time.time())))
            data = sock.recv(65536)
            if not data:
                break
            body += data
    except OSError:
        pass
    finally:
        sock.close()
    if status != 200:
        raise Failure(f"/status-json.xsl: HTTP {status} {reason}")
    try:
        stats = json.loads(body.decode("utf-8", "replace"))["icestats"]
    except (ValueError, KeyError) as e:
        raise Failure(f"/status-json.xsl: not Icecast's JSON: {e}") from e
    sources = stats.get("source") or []
    if isinstance(sources, dict):
        sources = [sources]
    for src in sources:
        if str(src.get("listenurl", "")).endswith(args.mount):
            return True, src.get("listeners")
    return False, None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--socks", help="HOST:PORT of a SOCKS5 proxy (Tor); absent: direct")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--source-password", required=True)
    p.add_argument("--mount", help="mount point (default: a fresh /tails-test-XXXX.mp3)")
    p.add_argument("--timeout", type=float, default=180)
    p.add_argument(
        "--frames", type=int, default=20,
        help="distinct frames sent after the listener connected that it must hear",
    )
    a = p.parse_args()
    if not a.mount:
        a.mount = f"/tails-test-{secrets.token_hex(4)}.mp3"
    if not a.mount.startswith("/"):
        a.mount = "/" + a.mount

    marker = b"TAILS-SERVER-" + secrets.token_hex(8).encode()
    deadline = time.time() + a.timeout
    state = {"sent_frames": 0, "sent_bytes": 0, "source_error": None}
    result = {"ok": False, "detail": "", "received_bytes": 0, "mount": a.mount}
    stop = threading.Event()
    source_thread = None
    listener = None
    try:
        src = start_source(a, marker, deadline)
        source_thread = threading.Thread(
            target=run_source, args=(src, marker, state, stop, deadline), daemon=True
        )
        source_thread.start()

        # Wait until the mount is listed (Icecast lists it once the source sent data).
        listed = False
        while time.time() < deadline and not listed:
            if state["source_error"]:
                raise Failure(state["source_error"])
            listed, _ = status_lists_mount(a, deadline)
            if not listed:
                time.sleep(1)
        if not listed:
            raise Failure(f"/status-json.xsl never listed {a.mount}")
        result["status_listed"] = True

        listener, (status, reason, headers, rest) = http_get(a, a.mount, deadline)
        if status != 200:
            raise Failure(f"listener: GET {a.mount}: HTTP {status} {reason}")
        result["content_type"] = headers.get("content-type")
        first_live = state["sent_frames"]  # frames from here on were sent after GET
        seen = set()
        received = len(rest)
        result["received_bytes"] = received
        buf = rest
        pattern = re.compile(re.escape(marker) + rb":(\d{8});")
        while time.time() < deadline:
            for m in pattern.finditer(buf):
                seen.add(int(m.group(1)))
            buf = buf[-64:]
            live = [n for n in seen if n >= first_live]
            if len(live) >= a.frames:
                break
            if state["source_error"]:
                raise Failure(state["source_error"])
            listener.settimeout(max(0.5, min(30, deadline - time.time())))
            try:
                data = listener.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise Failure(
                    f"listener: stream ended after {received} bytes, "
                    f"{len(seen)} marked frames"
                )
            received += len(data)
            result["received_bytes"] = received
            buf += data
        result["received_bytes"] = received
        result["frames_heard"] = len(seen)
        live = [n for n in seen if n >= first_live]
        result["live_frames_heard"] = len(live)
        result["sent_bytes"] = state["sent_bytes"]
        if len(live) < a.frames:
            raise Failure(
                f"listener heard {len(live)} of {a.frames} live frames "
                f"({len(seen)} marked frames, {received} bytes) before the timeout"
            )
        result["ok"] = True
        result["detail"] = (
            f"stream pushed to {a.mount} and received: the listener heard "
            f"{len(seen)} marked frames ({len(live)} sent after it connected), "
            f"{received} bytes"
        )
    except Failure as e:
        result["detail"] = str(e)
    except OSError as e:
        result["detail"] = f"network error: {e}"
    finally:
        stop.set()
        if listener is not None:
            try:
                listener.close()
            except OSError:
                pass
        if source_thread is not None:
            source_thread.join(timeout=5)
        result["sent_bytes"] = state["sent_bytes"]
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
