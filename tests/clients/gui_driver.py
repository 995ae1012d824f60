#!/usr/bin/python3
"""Drive the real tails-server-gui through its accessibility tree (AT-SPI).

One command per run; on success one JSON line on stdout and exit 0, on any
failure (a widget not found, a wait that timed out) one line on stderr and
exit 1. Run with Debian's python3-pyatspi (/usr/bin/python3), with DISPLAY
and DBUS_SESSION_BUS_ADDRESS of the GUI's session (see tests/src/gui.rs).

Widgets are found by their accessible names (gui/src/*.rs, `ui::name`). GTK
4.8 makes a row's name its given name followed by its title ("Service nginx
nginx"), so a name matches when it is the given one or starts with it and a
space. A label's name follows its text, so the GUI also gives the labels
this reads their name as their accessible description.

Most things are done through AT-SPI's Action interface (buttons, switches).
GTK 4.8 has no action on entry rows and combo rows, and cannot grab focus
through AT-SPI, so those get a real click (XTest through at-spi2-registryd)
after the page is scrolled to show them, then real keys. The window is at
(0, 0) of the Xvfb screen (no window manager), so its coordinates are the
screen's.

Commands:
  wait-ready [--timeout S]
  list
  toggle <service> on|off
  wait-state <service> <prefix> [--timeout S]
  open <service>
  back
  credentials <service> [--timeout S]
  set-option <service> <option> <value> [--yes] [--timeout S]
  clients <service>
  revoke <service> <client> [--timeout S]
  add-client <service> <name> [--timeout S]
  toasts [--containing TEXT] [--timeout S]
  screenshot <path.png> [--page services|service:<name>|server|greeter]
  server
  stop-server [--timeout S]
  greeter-state
  greeter-continue on|off [--passphrase P] [--timeout S]
"""

import argparse
import json
import sys
import time

import gi

gi.require_version("Atspi", "2.0")
import pyatspi  # noqa: E402
from gi.repository import GLib  # noqa: E402

APP_NAME = "tails-server-gui"
KEY_RETURN = 0xFF0D
KEY_HOME = 0xFF50
KEY_DOWN = 0xFF54
KEY_ESCAPE = 0xFF1B
DEFAULT_OPTIONS_TEXT = "Checked by the daemon, saved, and applied at once."


class DriverError(Exception):
    """What went wrong, in one line."""


# --- the tree -------------------------------------------------------------


def safe(f, default=None):
    """`f()`, or `default` when the object went away meanwhile."""
    try:
        return f()
    except (GLib.Error, NotImplementedError, AttributeError, LookupError):
        return default


def role(a):
    return safe(a.getRoleName, "")


def name(a):
    return safe(lambda: a.name, "") or ""


def description(a):
    return safe(lambda: a.description, "") or ""


def children(a):
    out = []
    n = safe(lambda: a.childCount, 0) or 0
    for i in range(n):
        c = safe(lambda: a.getChildAtIndex(i))
        if c is not None:
            out.append(c)
    return out


def walk(root, prune=None):
    """Every accessible under `root` (itself first), depth first; the
    subtrees of those `prune` accepts are skipped."""
    stack = [root]
    while stack:
        a = stack.pop()
        yield a
        if prune is not None and a is not root and prune(a):
            continue
        stack.extend(reversed(children(a)))


def is_named(a, wanted):
    n = name(a)
    return n == wanted or n.startswith(wanted + " ")


def find(root, pred, prune=None):
    for a in walk(root, prune):
        if safe(lambda: pred(a), False):
            return a
    return None


def find_all(root, pred, prune=None):
    return [a for a in walk(root, prune) if safe(lambda: pred(a), False)]


def by_name(root, wanted, roles=None):
    return find(
        root,
        lambda a: is_named(a, wanted) and (roles is None or role(a) in roles),
    )


def text_of(a):
    """A label's or an entry's text (its name when it has no Text)."""
    t = safe(a.queryText)
    if t is not None:
        n = safe(lambda: t.characterCount, 0) or 0
        s = safe(lambda: t.getText(0, n))
        if s is not None:
            return s
    return name(a)


def visible(a):
    return bool(safe(lambda: a.getState().contains(pyatspi.STATE_VISIBLE), False))


def checked(a):
    return bool(safe(lambda: a.getState().contains(pyatspi.STATE_CHECKED), False))


def sensitive(a):
    return bool(safe(lambda: a.getState().contains(pyatspi.STATE_SENSITIVE), False))


def wait_for(what, timeout, f, seen=None):
    """Poll `f` until it returns something true; its value. On timeout the
    error says what was awaited and, with `seen`, what was last seen."""
    end = time.monotonic() + timeout
    while True:
        v = safe(f)
        if v:
            return v
        if time.monotonic() > end:
            last = f"; last seen: {safe(seen)}" if seen is not None else ""
            raise DriverError(f"timed out after {timeout:g} s waiting for {what}{last}")
        time.sleep(0.2)


def the_app(timeout=30):
    def look():
        desktop = pyatspi.Registry.getDesktop(0)
        for a in children(desktop):
            if name(a) == APP_NAME:
                return a
        return None

    return wait_for(f"the application {APP_NAME} on the AT-SPI bus", timeout, look)


def frame(app):
    f = find(app, lambda a: role(a) == "frame" and name(a) == "Tails Server")
    if f is None:
        raise DriverError("the GUI has no window named Tails Server")
    return f


def dialogs(app):
    return [c for c in children(app) if role(c) == "dialog"]


def need(root, wanted, roles=None, timeout=10):
    return wait_for(
        f"the widget named {wanted!r}",
        timeout,
        lambda: by_name(root, wanted, roles),
    )


def do(a, preferred=("click", "toggle", "activate", "press")):
    """Run the widget's action (the first of `preferred` it has, else its
    first)."""
    act = safe(a.queryAction)
    n = safe(lambda: act.nActions, 0) if act is not None else 0
    if not n:
        raise DriverError(f"{name(a)!r} ({role(a)}) has no action")
    names = [safe(lambda i=i: act.getName(i), "") for i in range(n)]
    index = next((names.index(p) for p in preferred if p in names), 0)
    if not act.doAction(index):
        raise DriverError(f"the action {names[index]!r} of {name(a)!r} failed")


def button_labelled(root, label):
    """A push button whose name, mnemonic stripped, is or ends with
    `label` (a dialog's response: "_Revoke Revoke")."""

    def match(a):
        if role(a) != "push button":
            return False
        n = name(a).replace("_", "")
        return n == label or n.endswith(" " + label) or n.startswith(label + " ")

    return find(root, match)


# --- real pointer and keys -------------------------------------------------


def extents(a):
    e = a.queryComponent().getExtents(pyatspi.DESKTOP_COORDS)
    return e.x, e.y, e.width, e.height


def mouse(x, y, event):
    pyatspi.Registry.generateMouseEvent(int(x), int(y), event)


def key(keysym):
    pyatspi.Registry.generateKeyboardEvent(keysym, None, pyatspi.KEY_SYM)
    time.sleep(0.1)


def scroll_into_view(win, a, timeout=15):
    """Scroll the page (the wheel over the window's left margin, where no
    widget takes it) until `a` is inside the window; its extents."""
    _, _, fw, fh = extents(win)
    top, bottom = 60, fh - 10
    end = time.monotonic() + timeout
    last = None
    same = 0
    while True:
        x, y, w, h = extents(a)
        if y >= top and y + h <= bottom and w > 0 and h > 0:
            return x, y, w, h
        if time.monotonic() > end or same > 5:
            raise DriverError(f"cannot scroll {name(a)!r} into view (at y={y}, window height {fh})")
        same = same + 1 if (x, y) == last else 0
        last = (x, y)
        mouse(12, fh // 2, "abs")
        mouse(12, fh // 2, "b5c" if y + h > bottom else "b4c")
        time.sleep(0.12)


def scroll_to_top(win):
    _, _, _, fh = extents(win)
    mouse(12, fh // 2, "abs")
    for _ in range(40):
        mouse(12, fh // 2, "b4c")
        time.sleep(0.02)
    time.sleep(0.3)


def park_pointer(win):
    """The pointer to the window's left margin: off any widget, and off the
    toasts (libadwaita holds a toast for as long as the pointer is on it)."""
    _, _, _, fh = extents(win)
    mouse(12, fh // 2, "abs")


def real_click(win, a):
    # A toast at the bottom of the window would take the click.
    dismiss_toasts(win)
    x, y, w, h = scroll_into_view(win, a)
    mouse(x + w // 2, y + h // 2, "b1c")
    time.sleep(0.3)
    park_pointer(win)


# --- the GUI's screens -----------------------------------------------------


def back_button(win):
    b = by_name(win, "Back to the services", ("push button",))
    return b if b is not None and visible(b) else None


def page_root(win):
    """The open service page (the scroll pane around its address label)."""
    label = find(win, lambda a: role(a) == "label" and description(a) == "Onion address")
    if label is None:
        return None
    a = label
    while a is not None and role(a) != "scroll pane":
        a = safe(lambda: a.parent)
    return a


def page_service(page):
    """The service whose page this is (its first group's title)."""
    first = find(page, lambda a: role(a) == "label")
    return name(first) if first is not None else None


def options_loaded(page):
    lst = find(page, lambda a: role(a) == "list" and name(a) == "Options")
    return lst is not None and len(children(lst)) > 0


def show_services(app):
    win = frame(app)
    tab = find(win, lambda a: role(a) == "page tab" and name(a) == "Services")
    if tab is not None:
        do(tab)
    b = back_button(win)
    if b is not None:
        do(b)
        wait_for("the services list", 10, lambda: back_button(win) is None)
    return win


def open_page(app, service, timeout=30):
    """Open `service`'s page anew (a fresh page: no description or value
    left from before) and wait until its options are loaded."""
    win = show_services(app)
    do(need(win, f"Open {service}", ("push button",)))

    def loaded():
        p = page_root(win)
        if p is not None and page_service(p) == service and options_loaded(p):
            return p
        return None

    return win, wait_for(f"the page of {service}", timeout, loaded)


def service_rows(win):
    def is_row(a):
        return role(a) == "list item" and name(a).startswith("Service ")

    # The list's rows are not inside the service page's scroll pane.
    return find_all(win, is_row)


def row_service(row):
    rest = name(row)[len("Service "):]
    return rest.split(" ", 1)[0]


def labels_of(row):
    """The row's labels in order (not those inside its buttons)."""
    return [
        a
        for a in walk(row, prune=lambda a: role(a) in ("push button", "check box"))
        if role(a) == "label"
    ]


def row_subtitle(row):
    ls = labels_of(row)
    return text_of(ls[1]) if len(ls) > 1 else ""


def state_of(subtitle):
    return subtitle.rsplit(" — ", 1)[1] if " — " in subtitle else subtitle


def service_row(win, service):
    return by_name(win, f"Service {service}", ("list item",))


def toasts(win):
    """The texts of the toasts showing now."""
    out = []
    for t in find_all(
        win,
        lambda a: name(a) == "AdwToastWidget",
        prune=lambda a: role(a) == "scroll pane",
    ):
        out.extend(text_of(a) for a in walk(t) if role(a) == "label")
    return out


def dismiss_toasts(win, timeout=10):
    """Close the toasts showing (their close button), and those queued
    behind them, so that what shows next is new."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        shown = find_all(
            win,
            lambda a: name(a) == "AdwToastWidget",
            prune=lambda a: role(a) == "scroll pane",
        )
        if not shown:
            return
        for t in shown:
            close = find(t, lambda a: role(a) == "push button")
            if close is not None:
                safe(lambda: do(close))
        time.sleep(0.3)
    raise DriverError(f"the toasts do not go: {toasts(win)}")


def options_description(page):
    """The options group's description (the label after its title)."""
    title = find(page, lambda a: role(a) == "label" and name(a) == "Options")
    if title is None:
        return None
    sibs = children(title.parent)
    i = next((k for k, s in enumerate(sibs) if s == title), None)
    if i is None or i + 1 >= len(sibs):
        return None
    return text_of(sibs[i + 1])


def clients_of(page):
    out = []
    for a in find_all(page, lambda a: role(a) == "list item" and name(a).startswith("Client ")):
        out.append(name(a)[len("Client "):].split(" ", 1)[0])
    return out


# --- commands --------------------------------------------------------------


def cmd_wait_ready(app, args):
    win = frame(app)
    wait_for(
        "the services list (a row named 'Service nginx')",
        args.timeout,
        lambda: service_row(win, "nginx"),
        seen=lambda: [name(r) for r in service_rows(win)],
    )
    return {"ready": True, "services": sorted(row_service(r) for r in service_rows(win))}


def cmd_list(app, args):
    win = frame(app)
    wait_for("a service in the list", args.timeout, lambda: service_rows(win))
    return {"services": {row_service(r): state_of(row_subtitle(r)) for r in service_rows(win)}}


def cmd_toggle(app, args):
    if args.onoff not in ("on", "off"):
        raise DriverError(f"toggle takes on or off, not {args.onoff!r}")
    win = frame(app)
    sw = need(win, f"Enable {args.service}", ("check box", "toggle button"))
    wait_for(f"the switch of {args.service} to take input", args.timeout, lambda: sensitive(sw))
    want = args.onoff == "on"
    if checked(sw) == want:
        return {"service": args.service, "changed": False, "on": want}
    do(sw, ("toggle", "click", "activate"))
    return {"service": args.service, "changed": True, "on": want}


def cmd_wait_state(app, args):
    win = frame(app)
    last = {"state": None}

    def reached():
        row = service_row(win, args.service)
        if row is None:
            return None
        last["state"] = state_of(row_subtitle(row))
        return last["state"] if last["state"].startswith(args.prefix) else None

    state = wait_for(
        f"{args.service} to be {args.prefix!r}",
        args.timeout,
        reached,
        seen=lambda: repr(last["state"]),
    )
    return {"service": args.service, "state": state}


def cmd_open(app, args):
    open_page(app, args.service, args.timeout)
    return {"opened": args.service}


def cmd_back(app, args):
    win = frame(app)
    b = back_button(win)
    if b is not None:
        do(b)
        wait_for("the services list", args.timeout, lambda: back_button(win) is None)
    return {"back": True}


def read_credentials(win, page):
    def label(desc):
        a = find(page, lambda a: role(a) == "label" and description(a) == desc)
        return text_of(a) if a is not None else None

    warning = by_name(page, "Warning: client authorization is off")
    return {
        "address": label("Onion address"),
        "key": label("Key line") or "",
        "warning": warning is not None and visible(warning),
    }


def cmd_credentials(app, args):
    win, page = open_page(app, args.service, args.timeout)
    last = {}

    def published():
        last.update(read_credentials(win, page))
        return (last.get("address") or "").endswith(".onion")

    wait_for(
        f"the address of {args.service}",
        args.timeout,
        published,
        seen=lambda: repr(last.get("address")),
    )
    return read_credentials(win, page)


def parse_bool(v):
    if v.lower() in ("true", "on", "yes", "1"):
        return True
    if v.lower() in ("false", "off", "no", "0"):
        return False
    raise DriverError(f"{v!r} is not a boolean (true/false, on/off)")


def choose_in_combo(app, win, combo, value):
    """Pick `value` in a combo row: a real click opens its popover, then
    Home, Down as many times as its place, Return."""
    current = [text_of(a) for a in labels_of(combo)]
    real_click(win, combo)

    def items():
        pop = find(combo, lambda a: name(a) == "GtkPopover")
        if pop is None:
            return None
        lst = find(pop, lambda a: role(a) == "list")
        found = [c for c in children(lst)] if lst is not None else []
        texts = []
        for it in found:
            ls = [text_of(x) for x in walk(it) if role(x) == "label"]
            texts.append(ls[0] if ls else "")
        return texts or None

    choices = wait_for("the combo row's choices", 10, items)
    if value not in choices:
        key(KEY_ESCAPE)
        raise DriverError(f"{value!r} is not one of the choices {choices} (shown: {current})")
    key(KEY_HOME)
    for _ in range(choices.index(value)):
        key(KEY_DOWN)
    key(KEY_RETURN)


def cmd_set_option(app, args):
    win, page = open_page(app, args.service, args.timeout)
    opt, value = args.option, args.value
    w = need(page, f"Option {opt}")
    r = role(w)
    changed = f"{opt} is changed"
    # A toast of an earlier change (of the same option, maybe) is not this
    # one's.
    dismiss_toasts(win)
    if r in ("check box", "toggle button"):
        if checked(w) == parse_bool(value):
            return {"shown": options_description(page), "unchanged": True}
        do(w, ("toggle", "click", "activate"))
    elif r == "spin button":
        v = w.queryValue()
        try:
            number = float(value)
        except ValueError:
            raise DriverError(f"{opt} is a number: {value!r} is not") from None
        if not v.minimumValue <= number <= v.maximumValue:
            raise DriverError(
                f"the GUI's {opt} takes {v.minimumValue:g} to {v.maximumValue:g}: it cannot send {value}"
            )
        apply = need(page, f"Apply {opt}", ("push button",))
        # A reload of the page may set the daemon's value back meanwhile.
        for _ in range(5):
            v.currentValue = number
            time.sleep(0.2)
            if w.queryValue().currentValue == number:
                break
        do(apply)
    elif r == "combo box":
        current = [text_of(a) for a in labels_of(w)]
        if current and current[-1] == value:
            return {"shown": options_description(page), "unchanged": True}
        choose_in_combo(app, win, w, value)
    elif r in ("text", "password text", "entry"):
        real_click(win, w)
        et = w.queryEditableText()
        if not et.setTextContents(value):
            raise DriverError(f"cannot type into {opt}")
        time.sleep(0.2)
        key(KEY_RETURN)
    else:
        raise DriverError(f"Option {opt} is a {r!r}: this driver does not know it")

    seen = {}

    def outcome():
        d = options_description(page)
        seen["shown"], seen["toasts"] = d, toasts(win)
        if d and d.startswith("Refused:"):
            return {"shown": d}
        if changed in seen["toasts"]:
            return {"shown": d, "toast": changed}
        for dlg in dialogs(app):
            if name(dlg) == f"Change {opt}?":
                body = [text_of(a) for a in walk(dlg) if role(a) == "label"]
                answer = "Change" if args.yes else "Cancel"
                b = button_labelled(dlg, answer)
                if b is None:
                    raise DriverError(f"the dialog {name(dlg)!r} has no {answer} button")
                do(b)
                if not args.yes:
                    return {"shown": d, "asked": " ".join(body[1:2])}
        return None

    return wait_for(
        f"the GUI to say whether {opt} = {value!r} was taken",
        args.timeout,
        outcome,
        seen=lambda: json.dumps(seen),
    )


def cmd_clients(app, args):
    _, page = open_page(app, args.service, args.timeout)
    return {"clients": clients_of(page)}


def cmd_revoke(app, args):
    win, page = open_page(app, args.service, args.timeout)
    do(need(page, f"Revoke {args.client}", ("push button",)))

    def confirm():
        for d in dialogs(app):
            if name(d) == f"Revoke {args.client}?":
                return button_labelled(d, "Revoke")
        return None

    do(wait_for(f"the dialog 'Revoke {args.client}?'", 10, confirm))
    wait_for(
        f"the row of {args.client} to go",
        args.timeout,
        lambda: args.client not in clients_of(page),
        seen=lambda: {"clients": clients_of(page), "toasts": toasts(win)},
    )
    return {"revoked": args.client, "clients": clients_of(page)}


def cmd_add_client(app, args):
    win, page = open_page(app, args.service, args.timeout)
    entry = need(page, "New client name", ("text", "entry"))
    real_click(win, entry)
    before = set(toasts(win))
    if not entry.queryEditableText().setTextContents(args.name):
        raise DriverError("cannot type into 'New client name'")
    time.sleep(0.2)
    key(KEY_RETURN)
    seen = {}

    def outcome():
        seen["clients"], seen["toasts"] = clients_of(page), toasts(win)
        if args.name in seen["clients"]:
            return {"added": args.name, "clients": seen["clients"]}
        new = [t for t in seen["toasts"] if t not in before]
        if new:
            seen.setdefault("first_toast", time.monotonic())
            # Its row comes with the next reload: give it a moment.
            if time.monotonic() - seen["first_toast"] > 3:
                return {"added": False, "toast": new[0], "clients": seen["clients"]}
        return None

    return wait_for(
        f"the client {args.name} to be added",
        args.timeout,
        outcome,
        seen=lambda: json.dumps({k: v for k, v in seen.items() if k != "first_toast"}),
    )


def cmd_toasts(app, args):
    win = frame(app)
    if args.containing is None:
        return {"toasts": toasts(win)}
    found = wait_for(
        f"a toast saying {args.containing!r}",
        args.timeout,
        lambda: [t for t in toasts(win) if args.containing in t],
        seen=lambda: toasts(win),
    )
    return {"toasts": found}


def cmd_screenshot(app, args):
    page = args.page
    if page == "services":
        win = show_services(app)
    elif page == "server":
        # From the services list: no back button in the header.
        win = show_services(app)
        tab = find(win, lambda a: role(a) == "page tab" and name(a) == "Server")
        if tab is None:
            raise DriverError("no view switcher button named Server")
        do(tab)
    elif page == "greeter":
        win = frame(app)
    elif page.startswith("service:"):
        service = page[len("service:"):]
        win, p = open_page(app, service, args.timeout)
        # Its address, when it has one, comes with the credentials' reply.
        try:
            wait_for("the address", 3, lambda: (read_credentials(win, p)["address"] or "").endswith(".onion"))
        except DriverError:
            pass
    else:
        raise DriverError(f"unknown page {page!r}: services, service:<name> or server")
    dismiss_toasts(win)
    scroll_to_top(win)
    park_pointer(win)
    time.sleep(0.5)
    x, y, w, h = extents(win)

    gi.require_version("Gdk", "3.0")
    from gi.repository import Gdk

    root = Gdk.get_default_root_window()
    if root is None:
        raise DriverError("no X display for the screenshot")
    rw, rh = root.get_width(), root.get_height()
    x, y = max(0, x), max(0, y)
    w = min(w, rw - x) if w > 0 else rw
    h = min(h, rh - y) if h > 0 else rh
    pb = Gdk.pixbuf_get_from_window(root, x, y, w, h)
    if pb is None:
        raise DriverError("could not read the screen")
    pb.savev(args.path, "png", [], [])
    return {"path": args.path, "page": page, "size": [w, h]}


def cmd_server(app, args):
    win = frame(app)
    out = {}
    for row_name, key_name in (
        ("Server state", "state"),
        ("Tor VM", "torvm"),
        ("App VM", "appvm"),
        ("Persistent store", "store"),
    ):
        row = need(win, row_name, ("list item",))
        out[key_name] = row_subtitle(row)
    bar = need(win, "Tor bootstrap", ("progress bar",))
    value = safe(lambda: bar.queryValue().currentValue)
    out["tor_bootstrap"] = {"text": description(bar), "fraction": value}
    return out


def cmd_stop_server(app, args):
    """Stop the server from its page (Stop, then the dialog's Stop), and
    wait until the page says it is down (or that the daemon went)."""
    win = show_services(app)
    tab = find(win, lambda a: role(a) == "page tab" and name(a) == "Server")
    if tab is None:
        raise DriverError("no view switcher button named Server")
    do(tab)
    do(need(win, "Stop the server", ("push button",)))

    def confirm():
        for d in dialogs(app):
            if name(d) == "Stop the server?":
                return button_labelled(d, "Stop")
        return None

    do(wait_for("the dialog 'Stop the server?'", 10, confirm))
    row = need(win, "Server state", ("list item",))
    seen = {}

    def down():
        seen["state"] = row_subtitle(row)
        return seen["state"] if seen["state"] in ("Down",) or seen["state"].startswith("Not connected") else None

    state = wait_for("the server to be down", args.timeout, down, seen=lambda: seen.get("state"))
    return {"state": state}


# --- the greeter's screen (tails-server-gui --greeter) ---------------------


def greeter_widgets(app):
    win = frame(app)
    switch = need(win, "Isolate via virtualization", ("check box", "toggle button"))
    said = find(win, lambda a: role(a) == "label" and description(a) == "Greeter status")
    # Its name is its label's ("_Continue", later "_Done") after the one
    # given; either way a push button labelled so.
    go = wait_for(
        "the Continue button",
        30,
        lambda: by_name(win, "Continue", ("push button",)) or button_labelled(win, "Continue") or button_labelled(win, "Done"),
        seen=lambda: [name(a) for a in find_all(win, lambda a: role(a) == "push button")],
    )
    return win, switch, said, go


def greeter_state(app):
    win, switch, said, go = greeter_widgets(app)
    entry = by_name(win, "Persistent store passphrase")
    return {
        "isolate": checked(switch),
        "status": text_of(said) if said is not None else None,
        "passphrase_asked": entry is not None and visible(entry),
        "button": name(go).replace("_", ""),
    }


def cmd_greeter_state(app, args):
    win, _, said, _ = greeter_widgets(app)
    # What the daemon said at start ("Now: on|off (decided by …)", and
    # whether the store is locked).
    wait_for("the greeter's first word", args.timeout, lambda: said is not None and text_of(said).startswith("Now: "),
             seen=lambda: text_of(said) if said is not None else None)
    if "store is locked" in text_of(said):
        # The field was shown before the words: its state may reach the
        # accessibility tree a little later on a loaded machine.
        wait_for("the passphrase field to show", 10, lambda: greeter_state(app)["passphrase_asked"],
                 seen=lambda: json.dumps(greeter_state(app)))
    return greeter_state(app)


def cmd_greeter_continue(app, args):
    if args.onoff not in ("on", "off"):
        raise DriverError(f"greeter-continue takes on or off, not {args.onoff!r}")
    win, switch, said, go = greeter_widgets(app)
    if checked(switch) != (args.onoff == "on"):
        do(switch, ("toggle", "click", "activate"))
        wait_for("the switch to follow", 5, lambda: checked(switch) == (args.onoff == "on"))
    if args.passphrase is not None:
        entry = need(win, "Persistent store passphrase")
        real_click(win, entry)
        if not entry.queryEditableText().setTextContents(args.passphrase):
            raise DriverError("cannot type into 'Persistent store passphrase'")
        time.sleep(0.2)
    do(go)
    seen = {}

    def finished():
        seen.update(greeter_state(app))
        status = seen.get("status") or ""
        # Done: the button says Done; refused: it is sensitive again and
        # the status is not a step under way.
        if seen["button"].startswith("Done"):
            return dict(seen)
        if sensitive(go) and status and not status.endswith("…") and not status.startswith("Now: "):
            return dict(seen)
        return None

    return wait_for("the greeter to finish", args.timeout, finished, seen=lambda: json.dumps(seen))


COMMANDS = {
    "wait-ready": cmd_wait_ready,
    "list": cmd_list,
    "toggle": cmd_toggle,
    "wait-state": cmd_wait_state,
    "open": cmd_open,
    "back": cmd_back,
    "credentials": cmd_credentials,
    "set-option": cmd_set_option,
    "clients": cmd_clients,
    "revoke": cmd_revoke,
    "add-client": cmd_add_client,
    "toasts": cmd_toasts,
    "screenshot": cmd_screenshot,
    "server": cmd_server,
    "stop-server": cmd_stop_server,
    "greeter-state": cmd_greeter_state,
    "greeter-continue": cmd_greeter_continue,
}


def parser():
    p = argparse.ArgumentParser(description="Drive tails-server-gui through AT-SPI.")
    sub = p.add_subparsers(dest="command", required=True)

    def add(cmd, *positional, timeout=30.0):
        s = sub.add_parser(cmd)
        for a in positional:
            s.add_argument(a)
        s.add_argument("--timeout", type=float, default=timeout, help="seconds (default %(default)s)")
        return s

    add("wait-ready", timeout=60.0)
    add("list")
    add("toggle", "service", "onoff")
    add("wait-state", "service", "prefix", timeout=60.0)
    add("open", "service")
    add("back")
    add("credentials", "service")
    add("set-option", "service", "option", "value").add_argument(
        "--yes", action="store_true", help="accept a confirmation the daemon asks for"
    )
    add("clients", "service")
    add("revoke", "service", "client")
    add("add-client", "service", "name")
    add("toasts").add_argument(
        "--containing", help="wait until a toast holding this text shows"
    )
    add("screenshot", "path").add_argument(
        "--page", default="services", help="services, service:<name> or server"
    )
    add("server")
    add("stop-server", timeout=120.0)
    add("greeter-state")
    add("greeter-continue", "onoff", timeout=60.0).add_argument(
        "--passphrase", help="type this into the persistent store's passphrase"
    )
    return p


def main():
    args = parser().parse_args()
    try:
        app = the_app()
        result = COMMANDS[args.command](app, args)
    except DriverError as e:
        print(f"gui_driver {args.command}: {e}", file=sys.stderr)
        return 1
    except GLib.Error as e:
        print(f"gui_driver {args.command}: AT-SPI: {e.message}", file=sys.stderr)
        return 1
    except Exception as e:  # one line, whatever it is
        print(f"gui_driver {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
