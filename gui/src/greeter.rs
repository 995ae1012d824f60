//! The greeter's screen (`tails-server-gui --greeter`), shown by a
//! greeter or a first-run step before the session starts: the "Isolate via
//! virtualization" switch and the persistent store's passphrase. On
//! Continue: the store is unlocked (if a passphrase is given), the choice
//! is saved through the daemon (and kept in the store when it is
//! unlocked), and with isolation on the stack comes up now, as at every
//! boot; off, nothing of Tails Server starts.

use adw::prelude::*;
use gtk::glib;
use tails_server::api::{ApiSecret, PersistenceAction, Reply, Request};

use crate::bridge::Daemon;
use crate::ui::{self, Ctx};

pub fn present(app: &adw::Application, daemon: Daemon) {
    let window = adw::ApplicationWindow::builder()
        .application(app)
        .title("Tails Server")
        .default_width(640)
        .default_height(700)
        .build();
    let toasts = adw::ToastOverlay::new();
    let ctx = Ctx {
        daemon,
        window: window.clone(),
        toasts: toasts.clone(),
    };
    // The application's icon, when it is installed (the Debian package).
    let icon = gtk::gdk::Display::default()
        .map(|d| gtk::IconTheme::for_display(&d))
        .filter(|t| t.has_icon(crate::APP_ID))
        .map_or("network-server-symbolic", |_| crate::APP_ID);
    let page = adw::StatusPage::builder()
        .icon_name(icon)
        .title("Tails Server")
        .description("Group services as Tor onion services from this computer, in two virtual machines that never learn who or where it is.")
        .build();
    let group = adw::PreferencesGroup::new();
    let row = adw::ActionRow::builder()
        .title("Isolate via virtualization")
        .subtitle("Start the Tor VM and the App VM now and at every boot, with the services whose autostart option is on. Off: nothing of Tails Server starts.")
        .build();
    let switch = gtk::Switch::builder().valign(gtk::Align::Center).build();
    ui::name(&switch, "Isolate via virtualization");
    row.add_suffix(&switch);
    row.set_activatable_widget(Some(&switch));
    group.add(&row);
    let pass = adw::PasswordEntryRow::builder()
        .title("Persistent store passphrase (optional)")
        .build();
    ui::name(&pass, "Persistent store passphrase");
    pass.set_visible(false);
    group.add(&pass);
    let said = gtk::Label::builder().wrap(true).margin_top(12).build();
    ui::name(&said, "Greeter status");
    // A label's name follows its text in GTK 4.8: the description stays.
    said.update_property(&[gtk::accessible::Property::Description("Greeter status")]);
    let go = gtk::Button::with_mnemonic("_Continue");
    go.add_css_class("suggested-action");
    go.add_css_class("pill");
    go.set_halign(gtk::Align::Center);
    go.set_margin_top(18);
    ui::name(&go, "Continue");
    let body = gtk::Box::new(gtk::Orientation::Vertical, 6);
    body.append(&group);
    body.append(&go);
    body.append(&said);
    let clamp = adw::Clamp::builder().maximum_size(520).child(&body).build();
    page.set_child(Some(&clamp));
    toasts.set_child(Some(&page));
    window.set_content(Some(&toasts));

    // Whether there is a store to unlock, then what is saved (in that
    // order: once "Now: …" shows, the screen is complete).
    {
        let (switch, said, pass) = (switch.clone(), said.clone(), pass.clone());
        let c = ctx.clone();
        ctx.request(
            Request::Persistence(PersistenceAction::Status),
            None,
            move |r| {
                // What the screen adds to the daemon's word about isolation.
                let store = match r {
                    Ok(Reply::Persistence(p)) if p.exists && !p.unlocked => {
                        pass.set_visible(true);
                        " The persistent store is locked: its passphrase unlocks it.".to_owned()
                    }
                    Ok(Reply::Persistence(_)) => String::new(),
                    Ok(_) => " The persistent store's state is not known: the daemon's answer was not about it.".to_owned(),
                    Err(e) => format!(" The persistent store's state is not known: {e}."),
                };
                c.request(
                    Request::Isolate {
                        set: None,
                        start: false,
                    },
                    None,
                    move |r| match r {
                        Ok(Reply::Isolate(i)) => {
                            switch.set_active(i.on);
                            said.set_text(&format!(
                                "Now: {} (decided by {}).{store}",
                                if i.on { "on" } else { "off" },
                                i.decided_by
                            ));
                        }
                        Ok(_) => {}
                        Err(e) => said.set_text(&format!("{e}.{store}")),
                    },
                );
            },
        );
    }

    // Once the choice is saved, the button closes the screen.
    let finished = std::rc::Rc::new(std::cell::Cell::new(false));
    go.connect_clicked(move |go| {
        if finished.get() {
            ctx.window.close();
            return;
        }
        go.set_sensitive(false);
        let on = switch.is_active();
        let secret = zeroize::Zeroizing::new(pass.text().to_string());
        pass.set_text("");
        let (ctx, said, go, finished) = (ctx.clone(), said.clone(), go.clone(), finished.clone());
        glib::spawn_future_local(async move {
            if !secret.is_empty() {
                said.set_text("Unlocking the persistent store…");
                let r = ctx
                    .daemon
                    .call(
                        Request::Persistence(PersistenceAction::Unlock {
                            passphrase: ApiSecret(secret),
                        }),
                        None,
                    )
                    .await;
                if let Err(e) = r {
                    said.set_text(&e.to_string());
                    go.set_sensitive(true);
                    return;
                }
            }
            said.set_text(if on { "Starting Tails Server…" } else { "Saving…" });
            let (steps, got) = async_channel::unbounded::<String>();
            let shown = said.clone();
            glib::spawn_future_local(async move {
                while let Ok(m) = got.recv().await {
                    shown.set_text(&m);
                }
            });
            match ctx
                .daemon
                .call(Request::Isolate { set: Some(on), start: on }, Some(steps))
                .await
            {
                Ok(Reply::Isolate(i)) => {
                    let kept = if i.in_store { ", kept in the persistent store" } else { "" };
                    said.set_text(&match (&i.done, i.on) {
                        (Some(d), _) => format!("{d}{kept}."),
                        (None, true) => format!("Isolation is on{kept}."),
                        (None, false) => format!(
                            "Isolation is off (decided by {}){kept}: nothing of Tails Server starts.",
                            i.decided_by
                        ),
                    });
                    go.set_label("_Done");
                    go.set_sensitive(true);
                    finished.set(true);
                }
                Ok(_) => go.set_sensitive(true),
                Err(e) => {
                    said.set_text(&e.to_string());
                    go.set_sensitive(true);
                }
            }
        });
    });
    window.present();
}
