#!/usr/bin/env python3
"""An SFTP client (python3-paramiko 2.12, Debian 12's) exchanges a file through Tor.

Connects to the onion service through a Tor SOCKS port (names resolved by Tor),
logs in with the password (or a private key), uploads a random file into the
upload folder, lists the folder (the file must be there), downloads it back and
compares the bytes, checks that nothing can be written outside the folder, then
asks for what the account must not get: a terminal and a command (`id`), a
forwarded connection (direct-tcpip) and a remote forward (tcpip-forward). The
uploaded file is removed at the end. Prints one JSON line: {"ok", "detail",
"listed", "shell_refused", "forward_refused", "host_key", ...}; exit 0 only when
all of that held.

  sftp_exchange.py [--socks HOST:PORT] --host ADDRESS.onion --port 22
                   --user share --password P [--key FILE] [--folder /upload]
                   [--host-key 'ssh-ed25519 SHA256:...'] [--timeout 120]

Without --socks it connects directly (for a test against a local server).
"""
import argparse
import base64
import hashlib
import io
import json
import logging
import secrets
import socket
import sys
import threading

import paramiko
import socks


class Timeout(Exception):
    pass


def bounded(seconds, what, fn, *args, **kwargs):
    """Runs fn in a thread and gives up after `seconds` (paramiko waits forever on
    some channel requests)."""
    box = {}

    def run():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as e:  # handed to the caller
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise Timeout(f"{what}: no answer within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def open_socket(a):
    if a.socks:
        host, port = a.socks.rsplit(":", 1)
        return socks.create_connection(
            (a.host, a.port),
            timeout=a.timeout,
            proxy_type=socks.SOCKS5,
            proxy_addr=host,
            proxy_port=int(port),
            proxy_rdns=True,
        )
    return socket.create_connection((a.host, a.port), timeout=a.timeout)


def fingerprint(key):
    digest = hashlib.sha256(key.asbytes()).digest()
    return key.get_name() + " SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def run_session(transport, timeout, what, request):
    """Opens a session, makes `request` on it, sends `id`, reads what comes back.
    Returns (output, exit status or None), or raises paramiko.SSHException if the
    server refused the request."""
    chan = transport.open_session(timeout=timeout)
    chan.settimeout(timeout)
    try:
        bounded(timeout, what, request, chan)
        chan.sendall(b"id\n")
        chan.shutdown_write()
        out = b""
        try:
            while len(out) < 65536:
                data = chan.recv(4096)
                if not data:
                    break
                out += data
        except socket.timeout:
            pass
        try:
            # exit-status may come just after the end of the output
            status = bounded(timeout, "exit status", chan.recv_exit_status)
        except Timeout:
            status = None
        return out, status
    finally:
        chan.close()


def try_shell(transport, timeout):
    """A terminal, a shell and a command must give no shell. Returns (refused, report).
    (OpenSSH 9.2 with ForceCommand internal-sftp answers a shell or a command with
    "This service allows sftp connections only." and exit status 1.)"""
    report = []
    refused = True
    # 1. A terminal (what `ssh host` asks for first): PermitTTY no refuses the pty.
    chan = transport.open_session(timeout=timeout)
    try:
        bounded(timeout, "pty request", chan.get_pty)
        report.append("pty granted")
        refused = False
    except paramiko.SSHException:
        report.append("pty request refused")
    finally:
        chan.close()
    # 2. A shell without a terminal, 3. the command `id`.
    for what, request in [
        ("shell", lambda c: c.invoke_shell()),
        ("exec id", lambda c: c.exec_command("id")),
    ]:
        try:
            out, status = run_session(transport, timeout, what, request)
        except paramiko.SSHException:
            report.append(f"{what} request refused")
            continue
        text = out[:200].decode("utf-8", "replace").strip()
        if b"uid=" in out or status == 0:
            refused = False
            report.append(f"{what} ran (exit status {status}): {text!r}")
        else:
            report.append(f"{what}: no shell (exit status {status}, said {text!r})")
    return refused, "; ".join(report)


def try_forward(transport, timeout):
    """Forwarding both ways must be refused. Returns (refused, report)."""
    report = []
    refused = True
    try:
        chan = transport.open_channel(
            "direct-tcpip", ("127.0.0.1", 22), ("127.0.0.1", 0), timeout=timeout
        )
        chan.close()
        refused = False
        report.append("direct-tcpip opened")
    except paramiko.ChannelException as e:
        # 1 = administratively prohibited (2 would be: allowed, but connect failed)
        if e.code == paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED:
            report.append(f"direct-tcpip refused ({e.text})")
        else:
            refused = False
            report.append(f"direct-tcpip allowed but failed ({e.code} {e.text})")
    try:
        bounded(timeout, "tcpip-forward", transport.request_port_forward, "127.0.0.1", 0)
        refused = False
        report.append("tcpip-forward granted")
    except paramiko.SSHException as e:
        report.append(f"tcpip-forward refused ({e})")
    return refused, "; ".join(report)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--socks", help="Tor's SOCKS5 port HOST:PORT (absent: direct)")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password")
    p.add_argument("--key", help="private key file (instead of the password)")
    p.add_argument("--folder", default="/upload")
    p.add_argument("--host-key", help="expected host key fingerprint")
    p.add_argument("--timeout", type=float, default=120)
    a = p.parse_args()
    # paramiko logs refused channels as warnings; the JSON line says it all.
    logging.getLogger("paramiko").addHandler(logging.NullHandler())
    logging.getLogger("paramiko").propagate = False
    if not a.password and not a.key:
        p.error("give --password or --key")

    result = {
        "ok": False,
        "detail": "",
        "listed": [],
        "shell_refused": False,
        "forward_refused": False,
        "host_key": None,
    }

    def done(detail, code=1):
        result["detail"] = detail
        print(json.dumps(result))
        return code

    try:
        sock = open_socket(a)
    except (OSError, socks.ProxyError) as e:
        return done(f"cannot connect to {a.host}:{a.port}: {e}")

    client = paramiko.SSHClient()
    # A new onion service has a new host key: accept it, report its fingerprint, and
    # check it against --host-key when given.
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    pkey = paramiko.Ed25519Key.from_private_key_file(a.key) if a.key else None
    try:
        bounded(
            a.timeout * 3,
            "ssh login",
            client.connect,
            a.host,
            port=a.port,
            username=a.user,
            password=a.password,
            pkey=pkey,
            sock=sock,
            timeout=a.timeout,
            banner_timeout=a.timeout,
            auth_timeout=a.timeout,
            allow_agent=False,
            look_for_keys=False,
        )
    except paramiko.AuthenticationException as e:
        how = "key" if a.key else "password"
        return done(f"auth failed: wrong user or {how} ({e})")
    except (paramiko.SSHException, OSError, EOFError, Timeout) as e:
        return done(f"cannot connect: SSH handshake with {a.host}:{a.port} failed: {e}")

    transport = client.get_transport()
    result["host_key"] = fingerprint(transport.get_remote_server_key())
    if a.host_key and a.host_key != result["host_key"]:
        client.close()
        return done(f"host key {result['host_key']} is not the expected {a.host_key}")

    name = "tails-server-" + secrets.token_hex(6) + ".bin"
    path = a.folder.rstrip("/") + "/" + name
    payload = secrets.token_bytes(200 * 1024 + secrets.randbelow(4096))
    step = "sftp subsystem"
    try:
        sftp = bounded(a.timeout, step, client.open_sftp)
        sftp.get_channel().settimeout(a.timeout)
        step = "upload"
        bounded(a.timeout * 3, step, sftp.putfo, io.BytesIO(payload), path)
        step = "list"
        result["listed"] = sorted(bounded(a.timeout, step, sftp.listdir, a.folder))
        if name not in result["listed"]:
            return done(f"uploaded {name} but the listing of {a.folder} lacks it")
        step = "download"
        back = io.BytesIO()
        bounded(a.timeout * 3, step, sftp.getfo, path, back)
        if back.getvalue() != payload:
            return done(
                f"downloaded {len(back.getvalue())} bytes, not the {len(payload)} sent"
            )
        # The chroot: / holds the upload folder and is not writable.
        step = "root listing"
        result["root_listing"] = sorted(bounded(a.timeout, step, sftp.listdir, "/"))
        try:
            bounded(a.timeout, "write in /", sftp.putfo, io.BytesIO(b"x"), "/" + name)
            result["root_write_refused"] = False
            sftp.remove("/" + name)
        except (IOError, OSError) as e:
            result["root_write_refused"] = True
            result["root_write"] = str(e)
        step = "shell request"
        result["shell_refused"], result["shell"] = try_shell(transport, a.timeout)
        step = "forward request"
        result["forward_refused"], result["forward"] = try_forward(transport, a.timeout)
        step = "remove"
        bounded(a.timeout, step, sftp.remove, path)
        sftp.close()
    except (paramiko.SSHException, OSError, EOFError, Timeout) as e:
        return done(f"{step} failed: {type(e).__name__}: {e}")
    finally:
        client.close()

    checks = {
        "shell refused": result["shell_refused"],
        "forwarding refused": result["forward_refused"],
        "nothing written outside the folder": result["root_write_refused"],
    }
    failed = [k for k, v in checks.items() if not v]
    if failed:
        return done(f"file exchanged, but not: {', '.join(failed)}")
    result["ok"] = True
    return done(
        f"uploaded, listed and downloaded {len(payload)} bytes in {a.folder} as "
        f"{a.user}; shell and forwarding refused",
        0,
    )


if __name__ == "__main__":
    sys.exit(main())
