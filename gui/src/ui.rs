//! Small pieces every page uses: accessible names, toasts, dialogs, and
//! running a request from a button without freezing the window.

use adw::prelude::*;
use gtk::glib;

use crate::bridge::{Daemon, Failure};
use tails_server::api::{Reply, Request};

/// Give `w` the name screen readers (and the tests) know it by.
pub fn name(w: &impl IsA<gtk::Accessible>, label: &str) {
    w.update_property(&[gtk::accessible::Property::Label(label)]);
}

/// What every page shares: the daemon, the window, its toasts.
#[derive(Clone)]
pub struct Ctx {
    pub daemon: Daemon,
    pub window: adw::ApplicationWindow,
    pub toasts: adw::ToastOverlay,
}

impl Ctx {
    /// A short message at the bottom of the window.
    pub fn toast(&self, text: &str) {
        let t = adw::Toast::new(&glib::markup_escape_text(text));
        t.set_timeout(6);
        self.toasts.add_toast(t);
    }

    /// Send `req` and call `done` with the reply on GTK's thread.
    pub fn request(
        &self,
        req: Request,
        steps: Option<async_channel::Sender<String>>,
        done: impl FnOnce(Result<Reply, Failure>) + 'static,
    ) {
        let daemon = self.daemon.clone();
        glib::spawn_future_local(async move {
            done(daemon.call(req, steps).await);
        });
    }

    /// Send `req`; say its failure in a toast, and its success with `ok`.
    pub fn act(&self, req: Request, ok: impl FnOnce(&Ctx, Reply) + 'static) {
        let ctx = self.clone();
        self.request(req, None, move |r| match r {
            Ok(reply) => ok(&ctx, reply),
            Err(e) => ctx.toast(&e.to_string()),
        });
    }

    /// Send `req`; say how it ended (its `Done` words, or its failure).
    pub fn act_say(&self, req: Request) {
        self.act(req, |ctx, r| {
            if let Reply::Done(m) = r {
                ctx.toast(&m);
            }
        });
    }

    /// Ask a yes/no question; `yes` runs if the person agrees.
    pub fn confirm(&self, heading: &str, body: &str, action: &str, yes: impl Fn() + 'static) {
        let d = adw::MessageDialog::new(Some(&self.window), Some(heading), Some(body));
        d.add_responses(&[("cancel", "_Cancel"), ("yes", action)]);
        d.set_response_appearance("yes", adw::ResponseAppearance::Destructive);
        d.set_default_response(Some("cancel"));
        d.set_close_response("cancel");
        d.connect_response(None, move |_, r| {
            if r == "yes" {
                yes();
            }
        });
        d.present();
    }

    /// Ask for a passphrase (twice when `twice`); `got` gets it.
    pub fn passphrase(
        &self,
        heading: &str,
        body: &str,
        action: &str,
        twice: bool,
        got: impl Fn(zeroize::Zeroizing<String>) + 'static,
    ) {
        let d = adw::MessageDialog::new(Some(&self.window), Some(heading), Some(body));
        let boxed = gtk::Box::new(gtk::Orientation::Vertical, 6);
        let first = gtk::PasswordEntry::builder().show_peek_icon(true).build();
        name(&first, "Passphrase");
        first.set_placeholder_text(Some("Passphrase"));
        boxed.append(&first);
        let second = gtk::PasswordEntry::builder().show_peek_icon(true).build();
        name(&second, "Passphrase again");
        second.set_placeholder_text(Some("Passphrase again"));
        if twice {
            boxed.append(&second);
        }
        d.set_extra_child(Some(&boxed));
        d.add_responses(&[("cancel", "_Cancel"), ("ok", action)]);
        d.set_response_appearance("ok", adw::ResponseAppearance::Suggested);
        d.set_default_response(Some("ok"));
        d.set_close_response("cancel");
        let ctx = self.clone();
        d.connect_response(None, move |_, r| {
            if r != "ok" {
                return;
            }
            let p = zeroize::Zeroizing::new(first.text().to_string());
            first.set_text("");
            if twice {
                let again = zeroize::Zeroizing::new(second.text().to_string());
                second.set_text("");
                if *again != *p {
                    ctx.toast("the two passphrases differ: nothing was changed");
                    return;
                }
            }
            got(p);
        });
        d.present();
    }
}

/// Put `text` on the clipboard and say so.
pub fn copy(ctx: &Ctx, what: &str, text: &str) {
    ctx.window.clipboard().set_text(text);
    ctx.toast(&format!("{what} copied"));
}
