//! One service's page: what it is, its connection (address, key line, QR
//! codes, copy buttons, a warning when client authorization is off), its
//! options as widgets that follow their catalog kinds, and its authorized
//! clients. Every change is a request; the daemon checks it, and says why
//! when it refuses.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use adw::prelude::*;
use gtk::glib;
use tails_server::api::{
    Credentials, ErrorKind, OptionReport, Reply, Request, ServiceAction, ServiceInfo, ServiceReport,
};

use crate::ui::{self, Ctx};

/// Shows an option's value in its widget.
type ShowValue = Box<dyn Fn(&OptionReport)>;

pub struct ServicePage {
    ctx: Ctx,
    name: String,
    root: adw::PreferencesPage,
    about: adw::PreferencesGroup,
    warning: adw::ActionRow,
    address: gtk::Label,
    key: gtk::Label,
    key_row: adw::ActionRow,
    info: gtk::Label,
    qr_address: gtk::Picture,
    qr_key: gtk::Picture,
    options: adw::PreferencesGroup,
    /// Each option's widget, made from the first `info`; set in place after.
    setters: RefCell<Vec<(String, ShowValue)>>,
    clients: adw::PreferencesGroup,
    client_rows: RefCell<Vec<gtk::Widget>>,
    shown_clients: RefCell<Vec<(String, bool)>>,
    last: RefCell<Option<ServiceReport>>,
    updating: Rc<Cell<bool>>,
}

fn label(text: &str, accessible: &str) -> gtk::Label {
    let l = gtk::Label::builder()
        .label(text)
        .selectable(true)
        .wrap(true)
        .wrap_mode(gtk::pango::WrapMode::Char)
        .xalign(0.0)
        .build();
    ui::name(&l, accessible);
    // GTK renames a label after its text at every change: the description
    // keeps saying what the text is (to screen readers, and the tests).
    l.update_property(&[gtk::accessible::Property::Description(accessible)]);
    l
}

fn button(icon: &str, accessible: &str) -> gtk::Button {
    let b = gtk::Button::from_icon_name(icon);
    b.add_css_class("flat");
    b.set_valign(gtk::Align::Center);
    b.set_tooltip_text(Some(accessible));
    ui::name(&b, accessible);
    b
}

impl ServicePage {
    pub fn new(ctx: Ctx, name: &str) -> Rc<ServicePage> {
        let root = adw::PreferencesPage::new();
        let about = adw::PreferencesGroup::builder().title(name).build();
        root.add(&about);

        let conn = adw::PreferencesGroup::builder().title("Connection").build();
        let warning = adw::ActionRow::builder()
            .title("Client authorization is off")
            .subtitle("Anyone who learns the address can reach this service, and a hosted onion service whose address leaks is far easier to locate than a client. Turn the client-auth option on.")
            .build();
        warning.add_prefix(&gtk::Image::from_icon_name("dialog-warning-symbolic"));
        warning.add_css_class("error");
        ui::name(&warning, "Warning: client authorization is off");
        warning.set_visible(false);
        conn.add(&warning);

        let address = label("(not published)", "Onion address");
        let copy_address = button("edit-copy-symbolic", "Copy address");
        let arow = adw::ActionRow::builder().title("Address").build();
        arow.add_suffix(&address);
        arow.add_suffix(&copy_address);
        address.set_hexpand(true);
        conn.add(&arow);

        let key = label("", "Key line");
        let copy_key = button("edit-copy-symbolic", "Copy key");
        let krow = adw::ActionRow::builder()
            .title("Key")
            .subtitle("The client's key line, for Tor Browser or tor's ClientOnionAuthDir")
            .build();
        let key_row = krow.clone();
        krow.add_suffix(&key);
        krow.add_suffix(&copy_key);
        key.set_hexpand(true);
        conn.add(&krow);

        let info = label("", "Connection information");
        let irow = adw::ActionRow::builder().title("How to connect").build();
        irow.add_suffix(&info);
        info.set_hexpand(true);
        conn.add(&irow);

        let qrs = gtk::Box::new(gtk::Orientation::Horizontal, 24);
        qrs.set_halign(gtk::Align::Center);
        qrs.set_margin_top(12);
        let qr_address = gtk::Picture::new();
        let qr_key = gtk::Picture::new();
        for (p, caption) in [
            (&qr_address, "QR code of the address"),
            (&qr_key, "QR code of the key line"),
        ] {
            p.set_size_request(220, 220);
            p.set_can_shrink(false);
            p.set_content_fit(gtk::ContentFit::Contain);
            ui::name(p, caption);
            let b = gtk::Box::new(gtk::Orientation::Vertical, 6);
            b.append(p);
            b.append(&gtk::Label::new(Some(caption)));
            qrs.append(&b);
        }
        conn.add(&qrs);
        root.add(&conn);

        let options = adw::PreferencesGroup::builder()
            .title("Options")
            .description("Checked by the daemon, saved, and applied at once.")
            .build();
        root.add(&options);
        let clients = adw::PreferencesGroup::builder()
            .title("Authorized clients")
            .description("Only these clients can reach the service: each has its own key.")
            .build();
        root.add(&clients);

        let page = Rc::new(ServicePage {
            ctx,
            name: name.to_owned(),
            root,
            about,
            warning,
            address,
            key,
            key_row,
            info,
            qr_address,
            qr_key,
            options,
            setters: RefCell::new(Vec::new()),
            clients,
            client_rows: RefCell::new(Vec::new()),
            shown_clients: RefCell::new(Vec::new()),
            last: RefCell::new(None),
            updating: Rc::new(Cell::new(false)),
        });
        let p = Rc::downgrade(&page);
        copy_address.connect_clicked(move |_| {
            if let Some(p) = p.upgrade() {
                let a = p.address.text();
                if a.ends_with(".onion") {
                    ui::copy(&p.ctx, "The address", &a);
                }
            }
        });
        let p = Rc::downgrade(&page);
        copy_key.connect_clicked(move |_| {
            if let Some(p) = p.upgrade() {
                let k = p.key.text();
                if !k.is_empty() {
                    ui::copy(&p.ctx, "The key line", &k);
                }
            }
        });
        page
    }

    pub fn widget(&self) -> &adw::PreferencesPage {
        &self.root
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The daemon pushed a change: look at the service again.
    pub fn changed(self: &Rc<Self>, report: Option<ServiceReport>) {
        *self.last.borrow_mut() = report;
        self.load();
    }

    fn request(&self, action: ServiceAction) -> Request {
        Request::Service {
            service: self.name.clone(),
            action,
        }
    }

    fn load(self: &Rc<Self>) {
        let p = self.clone();
        self.ctx
            .request(self.request(ServiceAction::Info), None, move |r| match r {
                Ok(Reply::Info(i)) => {
                    p.show_info(&i);
                    p.load_credentials(&i);
                }
                Ok(_) => {}
                Err(e) => p.ctx.toast(&format!("{}: {e}", p.name)),
            });
    }

    /// The connection a person passes on: with client authorization, the
    /// key line of the first client whose key is held here (`default`, the
    /// one the first enable made, before the others).
    fn load_credentials(self: &Rc<Self>, i: &ServiceInfo) {
        if i.state.address.is_none() {
            // No address yet: the service was never enabled.
            self.show_unpublished();
            return;
        }
        let held = || i.clients.iter().filter(|c| c.host_holds_key);
        let client = held()
            .find(|c| c.name == tails_server::services::FIRST_CLIENT)
            .or_else(|| held().next())
            .map(|c| c.name.clone());
        self.key_row.set_subtitle(&match (&client, i.client_auth) {
            (_, false) => "None: client authorization is off".to_owned(),
            (Some(c), true) => {
                format!("The key line of client {c}, for Tor Browser or tor's ClientOnionAuthDir")
            }
            (None, true) => "Every client gave its own key: this computer holds none".to_owned(),
        });
        let p = self.clone();
        self.ctx.request(
            self.request(ServiceAction::Credentials {
                client: client.filter(|_| i.client_auth),
            }),
            None,
            move |r| match r {
                Ok(Reply::Credentials(c)) => p.show_credentials(&c),
                _ => p.show_unpublished(),
            },
        );
    }

    fn show_unpublished(&self) {
        self.address
            .set_text("(not published: switch the service on)");
        self.key.set_text("");
        self.info.set_text("");
        self.qr_address.set_paintable(None::<&gtk::gdk::Paintable>);
        self.qr_key.set_paintable(None::<&gtk::gdk::Paintable>);
    }

    fn show_credentials(&self, c: &Credentials) {
        if self.address.text() != c.address {
            self.address.set_text(&c.address);
            self.qr_address
                .set_paintable(crate::qr::texture(&c.address).as_ref());
        }
        let line = c.auth_private.clone().unwrap_or_default();
        if self.key.text() != line {
            self.key.set_text(&line);
            self.qr_key.set_paintable(
                if line.is_empty() {
                    None
                } else {
                    crate::qr::texture(&line)
                }
                .as_ref(),
            );
        }
        self.info.set_text(c.connection_info.trim());
        self.warning.set_visible(!c.client_auth);
    }

    fn show_info(self: &Rc<Self>, i: &ServiceInfo) {
        self.updating.set(true);
        self.about.set_description(Some(&format!(
            "{}\nClient: {}\n{}",
            i.description,
            i.client_application.trim(),
            i.documentation.trim()
        )));
        self.warning.set_visible(!i.client_auth);
        if self.setters.borrow().is_empty() {
            for o in &i.options {
                let set = self.option_row(o);
                self.setters.borrow_mut().push((o.name.clone(), set));
            }
        }
        for o in &i.options {
            if let Some((_, set)) = self.setters.borrow().iter().find(|(n, _)| *n == o.name) {
                set(o);
            }
        }
        let now: Vec<(String, bool)> = i
            .clients
            .iter()
            .map(|c| (c.name.clone(), c.host_holds_key))
            .collect();
        if *self.shown_clients.borrow() != now || self.client_rows.borrow().is_empty() {
            self.show_clients(&now, i.client_auth);
            *self.shown_clients.borrow_mut() = now;
        }
        self.updating.set(false);
    }

    /// Send a new value of `option`; a change that loses something is asked
    /// about first.
    fn set_option(self: &Rc<Self>, option: &str, value: String, yes: bool) {
        let p = self.clone();
        let opt = option.to_owned();
        let v = value.clone();
        self.ctx.request(
            self.request(ServiceAction::SetOption {
                option: option.to_owned(),
                value,
                yes,
            }),
            None,
            move |r| match r {
                Ok(_) => {
                    p.options.set_description(Some(
                        "Checked by the daemon, saved, and applied at once.",
                    ));
                    p.ctx.toast(&format!("{opt} is changed"));
                    p.load();
                }
                Err(e) if e.kind() == Some(ErrorKind::Confirm) => {
                    let again = p.clone();
                    p.ctx.confirm(
                        &format!("Change {opt}?"),
                        &e.to_string(),
                        "_Change",
                        move || again.set_option(&opt, v.clone(), true),
                    );
                    p.load();
                }
                Err(e) => {
                    p.options.set_description(Some(&format!("Refused: {e}")));
                    p.ctx.toast(&format!("{opt}: {e}"));
                    p.load();
                }
            },
        );
    }

    /// The widget of one option, by its kind; returns how to show a value.
    fn option_row(self: &Rc<Self>, o: &OptionReport) -> ShowValue {
        let name = o.name.clone();
        let title = o.name.replace('-', " ");
        let updating = self.updating.clone();
        let weak = Rc::downgrade(self);
        let send = move |value: String| {
            if let Some(p) = weak.upgrade() {
                p.set_option(&name, value, false);
            }
        };
        match o.kind.as_str() {
            "bool" => {
                let row = adw::ActionRow::builder()
                    .title(title.as_str())
                    .subtitle(glib::markup_escape_text(&o.description).as_str())
                    .build();
                let sw = gtk::Switch::builder().valign(gtk::Align::Center).build();
                ui::name(&sw, &format!("Option {}", o.name));
                row.add_suffix(&sw);
                row.set_activatable_widget(Some(&sw));
                self.options.add(&row);
                let u = updating.clone();
                sw.connect_active_notify(move |sw| {
                    if !u.get() {
                        send(sw.is_active().to_string());
                    }
                });
                Box::new(move |o| sw.set_active(o.json.as_bool().unwrap_or(false)))
            }
            "int" | "port" => {
                let (min, max) = o.range.unwrap_or((0, 65535));
                let row = adw::ActionRow::builder()
                    .title(title.as_str())
                    .subtitle(glib::markup_escape_text(&o.description).as_str())
                    .build();
                let spin = gtk::SpinButton::with_range(min as f64, max as f64, 1.0);
                spin.set_valign(gtk::Align::Center);
                ui::name(&spin, &format!("Option {}", o.name));
                let apply = button("object-select-symbolic", &format!("Apply {}", o.name));
                row.add_suffix(&spin);
                row.add_suffix(&apply);
                self.options.add(&row);
                let s = spin.clone();
                apply.connect_clicked(move |_| send((s.value() as i64).to_string()));
                Box::new(move |o| {
                    if let Some(v) = o.json.as_i64() {
                        spin.set_value(v as f64);
                    }
                })
            }
            "enum" => {
                let choices: Vec<&str> = o.choices.iter().map(String::as_str).collect();
                let model = gtk::StringList::new(&choices);
                let row = adw::ComboRow::builder()
                    .title(title.as_str())
                    .subtitle(glib::markup_escape_text(&o.description).as_str())
                    .model(&model)
                    .build();
                ui::name(&row, &format!("Option {}", o.name));
                self.options.add(&row);
                let u = updating.clone();
                let values = o.choices.clone();
                row.connect_selected_notify(move |r| {
                    if !u.get() {
                        if let Some(v) = values.get(r.selected() as usize) {
                            send(v.clone());
                        }
                    }
                });
                let values = o.choices.clone();
                Box::new(move |o| {
                    if let Some(i) = values.iter().position(|v| *v == o.value) {
                        row.set_selected(i as u32);
                    }
                })
            }
            "secret" => {
                let row = adw::PasswordEntryRow::builder()
                    .title(format!("{title} (hidden; Show to read it)").as_str())
                    .show_apply_button(true)
                    .build();
                row.set_tooltip_text(Some(&o.description));
                ui::name(&row, &format!("Option {}", o.name));
                let show = button("view-reveal-symbolic", &format!("Show {}", o.name));
                let regen = button("view-refresh-symbolic", &format!("Regenerate {}", o.name));
                row.add_suffix(&show);
                row.add_suffix(&regen);
                self.options.add(&row);
                let send2 = send.clone();
                row.connect_apply(move |r| send2(r.text().to_string()));
                let length = o.length.unwrap_or(24);
                let weak = Rc::downgrade(self);
                let opt = o.name.clone();
                regen.connect_clicked(move |_| {
                    // The daemon checks it like any value.
                    match tails_catalog::Secret::generate(length) {
                        Ok(v) => send(v.reveal().to_owned()),
                        Err(e) => {
                            if let Some(p) = weak.upgrade() {
                                p.ctx
                                    .toast(&format!("{opt}: no new secret ({e}); try again"));
                            }
                        }
                    }
                });
                let weak = Rc::downgrade(self);
                let r = row.clone();
                let opt = o.name.clone();
                show.connect_clicked(move |_| {
                    let Some(p) = weak.upgrade() else { return };
                    let r = r.clone();
                    p.ctx.act(
                        p.request(ServiceAction::GetOption {
                            option: opt.clone(),
                        }),
                        move |_, reply| {
                            if let Reply::Value(v) = reply {
                                r.set_text(&v);
                            }
                        },
                    );
                });
                // The value is never sent unasked: nothing to show.
                Box::new(|_| {})
            }
            _ => {
                let row = adw::EntryRow::builder()
                    .title(title.as_str())
                    .show_apply_button(true)
                    .build();
                row.set_tooltip_text(Some(&o.description));
                ui::name(&row, &format!("Option {}", o.name));
                self.options.add(&row);
                row.connect_apply(move |r| send(r.text().to_string()));
                Box::new(move |o| {
                    if !row.has_focus() && row.text() != o.value {
                        row.set_text(&o.value);
                    }
                })
            }
        }
    }

    fn show_clients(self: &Rc<Self>, clients: &[(String, bool)], client_auth: bool) {
        for w in self.client_rows.borrow_mut().drain(..) {
            self.clients.remove(&w);
        }
        let mut rows = Vec::new();
        for (client, held) in clients {
            let row = adw::ActionRow::builder()
                .title(client.as_str())
                .subtitle(if *held {
                    "Its key pair was made here: copy its key line and pass it on"
                } else {
                    "It gave its own public key: this computer never had its private key"
                })
                .build();
            ui::name(&row, &format!("Client {client}"));
            if *held {
                let copy = button("edit-copy-symbolic", &format!("Copy key of {client}"));
                let qr = button("view-grid-symbolic", &format!("QR code of {client}'s key"));
                row.add_suffix(&copy);
                row.add_suffix(&qr);
                let weak = Rc::downgrade(self);
                let c = client.clone();
                copy.connect_clicked(move |_| {
                    if let Some(p) = weak.upgrade() {
                        p.client_key(&c, false);
                    }
                });
                let weak = Rc::downgrade(self);
                let c = client.clone();
                qr.connect_clicked(move |_| {
                    if let Some(p) = weak.upgrade() {
                        p.client_key(&c, true);
                    }
                });
            }
            let revoke = button("user-trash-symbolic", &format!("Revoke {client}"));
            revoke.add_css_class("destructive-action");
            row.add_suffix(&revoke);
            let weak = Rc::downgrade(self);
            let c = client.clone();
            revoke.connect_clicked(move |_| {
                let Some(p) = weak.upgrade() else { return };
                let again = p.clone();
                let c2 = c.clone();
                p.ctx.confirm(
                    &format!("Revoke {c}?"),
                    "Its key stops working at once; it cannot reach the service any more.",
                    "_Revoke",
                    move || {
                        let p = again.clone();
                        again.ctx.act(
                            again.request(ServiceAction::RemoveClient { name: c2.clone() }),
                            move |ctx, reply| {
                                if let Reply::Done(m) = reply {
                                    ctx.toast(&m);
                                }
                                p.load();
                            },
                        );
                    },
                );
            });
            self.clients.add(&row);
            rows.push(row.upcast::<gtk::Widget>());
        }
        if client_auth {
            let add = adw::EntryRow::builder()
                .title("Add a client (its name)")
                .show_apply_button(true)
                .build();
            ui::name(&add, "New client name");
            let weak = Rc::downgrade(self);
            add.connect_apply(move |r| {
                let Some(p) = weak.upgrade() else { return };
                let name = r.text().to_string();
                r.set_text("");
                let again = p.clone();
                p.ctx.act(
                    p.request(ServiceAction::AddClient {
                        name,
                        public_key: None,
                    }),
                    move |ctx, reply| {
                        if let Reply::Credentials(c) = reply {
                            ctx.toast(c.done.as_deref().unwrap_or("the client is added"));
                        }
                        again.load();
                    },
                );
            });
            self.clients.add(&add);
            rows.push(add.upcast());
        }
        *self.client_rows.borrow_mut() = rows;
    }

    /// One client's key line: on the clipboard, or as a QR code.
    fn client_key(&self, client: &str, qr: bool) {
        let req = self.request(ServiceAction::Credentials {
            client: Some(client.to_owned()),
        });
        let who = client.to_owned();
        self.ctx.act(req, move |ctx, reply| {
            let Reply::Credentials(c) = reply else { return };
            let Some(line) = c.auth_private.as_deref() else {
                ctx.toast(&format!("{who}'s key is not held here"));
                return;
            };
            if !qr {
                ui::copy(ctx, &format!("{who}'s key line"), line);
                return;
            }
            let d = adw::MessageDialog::new(
                Some(&ctx.window),
                Some(&format!("{who}'s key")),
                Some("Scan it with the client's device; it gives access to the service."),
            );
            let pic = gtk::Picture::new();
            pic.set_paintable(crate::qr::texture(line).as_ref());
            pic.set_size_request(260, 260);
            ui::name(&pic, &format!("QR code of {who}'s key line"));
            d.set_extra_child(Some(&pic));
            d.add_responses(&[("close", "_Close")]);
            d.present();
        });
    }
}
