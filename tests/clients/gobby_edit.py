#!/usr/bin/python3
"""Two Gobby-like clients share a note on infinoted, through Tor.

Uses libinfinity 0.7 (Debian 12: gir1.2-infinity-0.7, python3-gi), the library
Gobby 0.5 is built on, the way Gobby uses it: an XMPP connection with TLS
(the server's self-signed certificate is pinned on first use in a known-hosts
file, as Gobby does), SASL PLAIN with a user name and the server password, an
InfcBrowser on the document tree.

Session 1 creates a text note with a unique name, joins it as a user and types
a unique line into it. Session 2, a second connection, opens the same note and
must read the same text back (while session 1 is still there, as two people
editing together; the server has it, not session 1's buffer). Session 2 must
see the certificate session 1 pinned.

libinfinity's connections are GLib sockets, which cannot use SOCKS: with
--socks an in-process relay on 127.0.0.1 forwards each connection through the
SOCKS5 proxy (PySocks, names resolved by Tor).

Prints one JSON line: {"ok": bool, "detail": str, "read_back": str|null, ...}.
Exit 0 only when the text came back.

  gobby_edit.py [--socks HOST:PORT] --host ADDRESS.onion --port 6523
                --password P [--user NAME] [--timeout 180]
                [--read NOTE [--expect TEXT]]   (only open NOTE and read it)
"""
import argparse
import ctypes
import json
import os
import secrets
import socket
import sys
import tempfile
import threading
import time

import gi

gi.require_version("Infinity", "0.7")
gi.require_version("Infinityc", "0.7")
gi.require_version("InfText", "0.7")
from gi.repository import Infinity, Infinityc, InfText  # noqa: E402

import socks  # noqa: E402

# gsasl.h (libgsasl 1.10, Debian 12)
GSASL_OK = 0
GSASL_NO_CALLBACK = 51
GSASL_AUTHID = 1
GSASL_PASSWORD = 3


class Failure(Exception):
    pass


# ---------------------------------------------------------------- SOCKS relay
class Relay:
    """127.0.0.1:<random> -> SOCKS5 proxy -> host:port, one thread pair each."""

    def __init__(self, socks_addr, host, port, timeout):
        phost, pport = socks_addr.rsplit(":", 1)
        self.proxy = (phost, int(pport))
        self.target = (host, port)
        self.timeout = timeout
        self.errors = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                local, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(local,), daemon=True).start()

    def _serve(self, local):
        try:
            remote = socks.create_connection(
                self.target,
                timeout=self.timeout,
                proxy_type=socks.SOCKS5,
                proxy_addr=self.proxy[0],
                proxy_port=self.proxy[1],
                proxy_rdns=True,
            )
        except (OSError, socks.ProxyError) as e:
            self.errors.append(
                f"cannot connect to {self.target[0]}:{self.target[1]} through "
                f"SOCKS {self.proxy[0]}:{self.proxy[1]}: {e}"
            )
            local.close()
            return
        remote.settimeout(None)

        def pump(src, dst):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
            except OSError:
                pass
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=pump, args=(remote, local), daemon=True).start()
        pump(local, remote)

    def close(self):
        self.listener.close()


# ------------------------------------------- the "InfText" note plugin (ctypes)
# InfcNotePlugin is a struct holding a C function pointer, which PyGObject
# cannot fill in: build it with ctypes, as Gobby's C code does.
_gobject = ctypes.CDLL("libgobject-2.0.so.0")
_inftext = ctypes.CDLL("libinftext-0.7.so.0")
_infinity = ctypes.CDLL("libinfinity-0.7.so.0")
_vp = ctypes.c_void_p
_inftext.inf_text_default_buffer_new.restype = _vp
_inftext.inf_text_default_buffer_new.argtypes = [ctypes.c_char_p]
_inftext.inf_text_session_new.restype = _vp
_inftext.inf_text_session_new.argtypes = [_vp, _vp, _vp, ctypes.c_int, _vp, _vp]
_gobject.g_object_unref.argtypes = [_vp]
_infinity.infc_browser_add_plugin.restype = ctypes.c_int
_infinity.infc_browser_add_plugin.argtypes = [_vp, _vp]
ctypes.pythonapi.PyCapsule_GetPointer.restype = _vp
ctypes.pythonapi.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]

SESSION_NEW = ctypes.CFUNCTYPE(_vp, _vp, _vp, ctypes.c_int, _vp, _vp, ctypes.c_char_p, _vp)


@SESSION_NEW
def _text_session_new(io, manager, status, sync_group, sync_conn, path, user_data):
    buf = _inftext.inf_text_default_buffer_new(b"UTF-8")
    session = _inftext.inf_text_session_new(manager, buf, io, status, sync_group, sync_conn)
    _gobject.g_object_unref(buf)
    return session


class NotePlugin(ctypes.Structure):
    _fields_ = [("user_data", _vp), ("note_type", ctypes.c_char_p), ("session_new", SESSION_NEW)]


TEXT_PLUGIN = NotePlugin(None, b"InfText", _text_session_new)


SASL_CALLBACK = ctypes.CFUNCTYPE(None, _vp, ctypes.c_int, _vp, _vp)
_infinity.inf_sasl_context_new.restype = _vp
_infinity.inf_sasl_context_new.argtypes = [_vp]
_infinity.inf_sasl_context_unref.argtypes = [_vp]
_infinity.inf_sasl_context_set_callback.argtypes = [_vp, SASL_CALLBACK, _vp, _vp]
_infinity.inf_sasl_context_session_set_property.argtypes = [_vp, ctypes.c_int, ctypes.c_char_p]
_infinity.inf_sasl_context_session_continue.argtypes = [_vp, ctypes.c_int]
_infinity.inf_xmpp_connection_reset_sasl_authentication.argtypes = [_vp, _vp, ctypes.c_char_p]


def gpointer(obj):
    return ctypes.pythonapi.PyCapsule_GetPointer(obj.__gpointer__, None)


# InfBrowserIter in/out arguments (inf_browser_get_child, _get_next) come back
# wrong through PyGObject 3.42: walk the tree with ctypes instead.
class CIter(ctypes.Structure):
    _fields_ = [("node_id", ctypes.c_uint), ("node", _vp)]


for _f in ("inf_browser_get_root", "inf_browser_get_child", "inf_browser_get_next"):
    getattr(_infinity, _f).argtypes = [_vp, ctypes.POINTER(CIter)]
    getattr(_infinity, _f).restype = ctypes.c_int
_infinity.inf_browser_get_node_name.argtypes = [_vp, ctypes.POINTER(CIter)]
_infinity.inf_browser_get_node_name.restype = ctypes.c_char_p


def children(browser):
    """{name: InfBrowserIter} of the root folder's (explored) children."""
    bp = gpointer(browser)
    ci = CIter()
    found = {}
    _infinity.inf_browser_get_root(bp, ctypes.byref(ci))
    ok = _infinity.inf_browser_get_child(bp, ctypes.byref(ci))
    while ok:
        name = _infinity.inf_browser_get_node_name(bp, ctypes.byref(ci)).decode()
        # A PyGObject InfBrowserIter (boxed, from get_root, whose out argument
        # works) whose C struct, at the address its repr shows, is overwritten.
        _ok, it = browser.get_root()
        addr = int(repr(it).rsplit(" at 0x", 1)[1].rstrip(")>"), 16)
        CIter.from_address(addr).node_id = ci.node_id
        CIter.from_address(addr).node = ci.node
        found[name] = it
        ok = _infinity.inf_browser_get_next(bp, ctypes.byref(ci))
    return found


# ------------------------------------------------------------------ a client
class Client:
    """One Gobby-like connection: XMPP + TLS + SASL PLAIN + InfcBrowser."""

    def __init__(self, io, verify, manager_xmpp, addr, port, hostname, user, password):
        self.io = io
        self.errors = []
        self.user = user
        self.password = password

        tcp = Infinity.TcpConnection.new(io, Infinity.IpAddress.new_from_string(addr), port)
        tcp.connect("error", lambda _c, e: self.errors.append(f"TCP: {e.message}"))
        self.tcp = tcp

        self.xmpp = Infinity.XmppConnection.new(
            tcp,
            Infinity.XmppConnectionSite.CLIENT,
            None,
            hostname,
            Infinity.XmppConnectionSecurityPolicy.ONLY_TLS,
            Infinity.CertificateCredentials.new(),
            None,
            None,
        )
        # SASL PLAIN with user name and password, as Gobby does for a server
        # password (InfSaslContextSession is not usable through PyGObject).
        self.sasl = _infinity.inf_sasl_context_new(None)
        if not self.sasl:
            raise Failure("cannot create a SASL context")
        self._sasl_cb_c = SASL_CALLBACK(self._sasl_cb)
        _infinity.inf_sasl_context_set_callback(self.sasl, self._sasl_cb_c, None, None)
        _infinity.inf_xmpp_connection_reset_sasl_authentication(
            gpointer(self.xmpp), self.sasl, b"PLAIN"
        )
        # Gobby hands its connections to an InfXmppManager watched by an
        # InfCertificateVerify (known-hosts pinning of self-signed certificates).
        manager_xmpp.add_connection(self.xmpp)
        self.xmpp.connect("error", lambda _c, e: self.errors.append(e.message))
        self.browser = Infinityc.Browser.new(io, Infinity.CommunicationManager.new(), self.xmpp)
        if not _infinity.infc_browser_add_plugin(gpointer(self.browser), ctypes.addressof(TEXT_PLUGIN)):
            raise Failure("could not add the InfText note plugin")
        self.browser.connect("error", lambda _b, e: self.errors.append(e.message))
        if not tcp.open():
            raise Failure("cannot connect: TCP open failed")

    def _sasl_cb(self, session, prop, session_data, user_data):
        value = {GSASL_AUTHID: self.user, GSASL_PASSWORD: self.password}.get(prop)
        if value is None:
            _infinity.inf_sasl_context_session_continue(session, GSASL_NO_CALLBACK)
            return
        _infinity.inf_sasl_context_session_set_property(session, prop, value.encode())
        _infinity.inf_sasl_context_session_continue(session, GSASL_OK)

    def status(self):
        return self.browser.get_property("status")

    def close(self):
        try:
            self.xmpp.close()
        except Exception:
            pass


class Run:
    def __init__(self, a):
        self.a = a
        self.io = Infinity.StandaloneIo.new()
        self.deadline = time.time() + a.timeout
        self.relay = None
        self.refusals = []
        self.keep = []  # requests and objects kept alive until the end
        self.pinned = []
        self.tmp = tempfile.TemporaryDirectory(prefix="gobby-edit-")
        self.known_hosts = os.path.join(self.tmp.name, "known_hosts")
        if a.socks:
            self.relay = Relay(a.socks, a.host, a.port, a.timeout)
            self.addr, self.port = "127.0.0.1", self.relay.port
        else:
            try:
                self.addr = socket.getaddrinfo(a.host, a.port, socket.AF_INET)[0][4][0]
            except OSError as e:
                raise Failure(f"cannot connect: cannot resolve {a.host}: {e}")
            self.port = a.port

    def _check_certificate(self, verify, conn, chain, pinned, flags):
        # The first time a server is seen Gobby asks the user, who accepts its
        # self-signed certificate; later ones must match the pinned one.
        if pinned or (flags & Infinity.CertificateVerifyFlags.NOT_PINNED):
            self.refusals.append("the server's certificate is not the one pinned: refused")
            verify.checked(conn, False)
            return
        self.pinned.append(flags.value_nicks if hasattr(flags, "value_nicks") else str(flags))
        verify.checked(conn, True)

    # -- event loop helpers
    def wait(self, cond, what, client=None):
        while not cond():
            if client is not None:
                self.check(client, what)
            if time.time() > self.deadline:
                raise Failure(f"timed out waiting for {what}" + self.context(client))
            self.io.iteration_timeout(200)

    def context(self, client):
        errs = self.errors_of(client)
        return (": " + "; ".join(errs)) if errs else ""

    def errors_of(self, client):
        errs = self.refusals + (list(client.errors) if client else [])
        if self.relay:
            errs += self.relay.errors
        return list(dict.fromkeys(errs))  # each message once, in order

    def check(self, client, what):
        if self.relay and self.relay.errors:
            raise Failure(self.relay.errors[0])
        if client.status() == Infinity.BrowserStatus.CLOSED:
            errs = "; ".join(self.errors_of(client))
            low = errs.lower()
            if any(w in low for w in ("auth", "password", "sasl", "credentials")):
                raise Failure(f"authentication failed (wrong password?) while {what}: {errs}")
            if what == "login" and (not errs or any(e.startswith("TCP:") for e in client.errors)):
                raise Failure(
                    f"cannot connect to {self.a.host}:{self.a.port}: {errs or 'connection closed'}"
                )
            raise Failure(f"connection closed while {what}: {errs or 'no error given'}")

    def request(self, start, what, client):
        """start(func) issues an InfRequest; returns its InfRequestResult."""
        box = {}

        def done(req, result, error, *user_data):
            if error is not None:
                box["error"] = error.message
            else:
                box["result"] = result.copy() if result is not None else None

        self.keep.append(start(done))
        self.wait(lambda: box, what, client)
        if "error" in box:
            raise Failure(f"{what} failed: {box['error']}")
        return box["result"]

    # -- the steps
    def login(self, name):
        # Each connection has its own InfXmppManager (which keeps one connection
        # per host, as one Gobby does) and InfCertificateVerify; they share the
        # known-hosts file, so session 2 checks the certificate session 1 pinned.
        xmpp_manager = Infinity.XmppManager.new()
        verify = Infinity.CertificateVerify.new(xmpp_manager, self.known_hosts)
        verify.connect("check-certificate", self._check_certificate)
        self.keep += [xmpp_manager, verify]
        c = Client(
            self.io, verify, xmpp_manager, self.addr, self.port,
            self.a.host, name, self.a.password,
        )
        self.wait(lambda: c.status() == Infinity.BrowserStatus.OPEN, "login", c)
        return c

    def explore_root(self, c):
        b = c.browser
        ok, root = b.get_root()
        if not b.get_explored(root):
            self.request(lambda f: b.explore(root, f, None), "exploring the document tree", c)
        return root, children(b)

    def open_session(self, c, it, what, initial=False):
        b = c.browser
        if initial:  # add_note(initial_subscribe=TRUE): the server subscribes us
            self.wait(lambda: b.get_session(it) is not None, f"subscribing to {what}", c)
        proxy = b.get_session(it)
        if proxy is None:
            res = self.request(lambda f: b.subscribe(it, f, None), f"subscribing to {what}", c)
            _b, _it, proxy = res.get_subscribe_session()
        session = proxy.get_property("session")
        self.wait(
            lambda: session.get_status() == Infinity.SessionStatus.RUNNING,
            f"synchronizing {what}",
            c,
        )
        return proxy, session

    def join(self, c, proxy, session, name):
        res = self.request(
            lambda f: InfText.Session.join_user(
                proxy, name, Infinity.UserStatus.ACTIVE, 0.3, 0, 0, f, None
            ),
            "joining the note as a user",
            c,
        )
        _proxy, user = res.get_join_user()
        return user

    @staticmethod
    def text_of(session):
        buf = session.get_buffer()
        chunk = buf.get_slice(0, buf.get_length())
        data = chunk.get_text()
        if isinstance(data, tuple):
            data = data[0]
        return bytes(data).decode("utf-8")

    def read(self, c, note):
        _root, names = self.explore_root(c)
        if note not in names:
            raise Failure(f"note {note!r} is not in the document tree (it holds {len(names)} notes)")
        proxy, session = self.open_session(c, names[note], f"note {note!r}")
        return self.text_of(session)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--socks")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=6523)
    p.add_argument("--password", required=True)
    p.add_argument("--user", default="alice")
    p.add_argument("--timeout", type=float, default=180)
    p.add_argument("--read", metavar="NOTE", help="only open NOTE and print its text")
    p.add_argument("--expect", help="with --read: the text NOTE must hold")
    a = p.parse_args()

    if not Infinity.init():
        print(json.dumps({"ok": False, "detail": "libinfinity init failed", "read_back": None}))
        return 1

    out = {"ok": False, "detail": "", "read_back": None}
    clients = []
    run = None
    try:
        run = Run(a)
        if a.read:
            c = run.login(a.user)
            clients.append(c)
            text = run.read(c, a.read)
            out["read_back"] = text
            out["note"] = a.read
            out["ok"] = a.expect is None or text == a.expect
            out["detail"] = (
                f"read note {a.read!r} ({len(text)} characters)"
                if out["ok"]
                else f"note {a.read!r} holds {text!r}, expected {a.expect!r}"
            )
        else:
            note = "tails-server-" + secrets.token_hex(4)
            line = f"Written through Tor by Tails Server test {secrets.token_hex(8)}\n"
            out["note"] = note
            out["written"] = line

            # Session 1: log in, create the note, type a line into it.
            c1 = run.login(a.user)
            clients.append(c1)
            root, names = run.explore_root(c1)
            b1 = c1.browser
            run.request(
                lambda f: b1.add_note(root, note, "InfText", None, None, True, f, None),
                f"creating note {note!r}",
                c1,
            )
            node = children(b1).get(note)
            if node is None:
                raise Failure(f"note {note!r} was created but is not in the document tree")
            proxy1, session1 = run.open_session(c1, node, f"new note {note!r}", initial=True)
            user1 = run.join(c1, proxy1, session1, a.user)
            data = line.encode("utf-8")
            cbuf = ctypes.create_string_buffer(data, len(data))
            session1.get_buffer().insert_text(0, ctypes.addressof(cbuf), len(data), len(line), user1)
            # Let the insert go out (the request is queued on the connection).
            end = time.time() + 1.0
            while time.time() < end:
                run.io.iteration_timeout(100)

            # Session 2: another connection (another person) opens the note.
            c2 = run.login(a.user + "-2")
            clients.append(c2)
            text = run.read(c2, note)
            out["read_back"] = text
            # Asked once (session 1, first use); session 2 matched the pin.
            out["certificate_prompts"] = len(run.pinned)
            if text == line:
                out["ok"] = True
                out["detail"] = (
                    f"session 1 created note {note!r} and typed a line; session 2 "
                    f"opened it and read the same text back (TLS, password auth)"
                )
            else:
                out["detail"] = f"session 2 read {text!r} from note {note!r}, expected {line!r}"
    except Failure as e:
        out["detail"] = str(e)
    except Exception as e:  # an unexpected library failure, still one JSON line
        out["detail"] = f"client error: {type(e).__name__}: {e}"
    finally:
        for c in clients:
            c.close()
        if run is not None:
            end = time.time() + 0.5
            while time.time() < end:
                run.io.iteration_timeout(100)
            if run.relay:
                run.relay.close()
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: finalizing libinfinity's objects from Python's
    # garbage collector at exit can crash, after the result was printed.
    os._exit(code)
