//! The main window: the catalog's services as a list (icon, description,
//! state, a switch each), a service's own page, and the server page. It
//! follows the daemon's events: every value shown comes from the last
//! snapshot the daemon pushed, or from a reply.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use adw::prelude::*;
use gtk::glib;
use tails_server::api::{Reply, Request, ServiceAction, ServiceReport, Snapshot};
use tails_server::client::Watched;

use crate::bridge::{Daemon, Update};
use crate::server_page::ServerPage;
use crate::service_page::ServicePage;
use crate::ui::{self, Ctx};

/// One service in the list.
struct Row {
    row: adw::ActionRow,
    switch: gtk::Switch,
    spinner: gtk::Spinner,
    /// A request of ours for it is under way.
    busy: Cell<bool>,
}

pub struct Window {
    ctx: Ctx,
    list: adw::PreferencesGroup,
    rows: RefCell<BTreeMap<String, Rc<Row>>>,
    nav: gtk::Stack,
    back: gtk::Button,
    page: RefCell<Option<Rc<ServicePage>>>,
    server: Rc<ServerPage>,
    /// The last snapshot the daemon pushed.
    last: RefCell<Option<Snapshot>>,
    /// Widgets are being set from an event, not by the person.
    updating: Cell<bool>,
}

/// Build the window and start following the daemon.
pub fn present(app: &adw::Application, daemon: Daemon) {
    let window = adw::ApplicationWindow::builder()
        .application(app)
        .title("Tails Server")
        .default_width(760)
        .default_height(720)
        .build();
    let toasts = adw::ToastOverlay::new();
    let ctx = Ctx {
        daemon: daemon.clone(),
        window: window.clone(),
        toasts: toasts.clone(),
    };

    let header = adw::HeaderBar::new();
    let views = adw::ViewStack::new();
    let title = adw::ViewSwitcherTitle::builder()
        .title("Tails Server")
        .stack(&views)
        .build();
    header.set_title_widget(Some(&title));
    let back = gtk::Button::from_icon_name("go-previous-symbolic");
    ui::name(&back, "Back to the services");
    back.set_tooltip_text(Some("Back to the services"));
    back.set_visible(false);
    header.pack_start(&back);

    // The services: the list, and one service's page beside it.
    let list_page = adw::PreferencesPage::new();
    let list = adw::PreferencesGroup::builder()
        .title("Services")
        .description("Each service is published as a Tor onion service from the App VM. Switch one on to start and publish it.")
        .build();
    list_page.add(&list);
    let nav = gtk::Stack::builder()
        .transition_type(gtk::StackTransitionType::SlideLeftRight)
        .build();
    nav.add_named(&list_page, Some("list"));
    let services = views.add_titled(&nav, Some("services"), "Services");
    services.set_icon_name(Some("network-server-symbolic"));

    let server = ServerPage::new(ctx.clone());
    let sp = views.add_titled(server.widget(), Some("server"), "Server");
    sp.set_icon_name(Some("computer-symbolic"));

    let content = gtk::Box::new(gtk::Orientation::Vertical, 0);
    content.append(&header);
    content.append(&views);
    views.set_vexpand(true);
    let switcher = adw::ViewSwitcherBar::builder().stack(&views).build();
    title
        .bind_property("title-visible", &switcher, "reveal")
        .sync_create()
        .build();
    content.append(&switcher);
    toasts.set_child(Some(&content));
    window.set_content(Some(&toasts));

    let w = Rc::new(Window {
        ctx,
        list,
        rows: RefCell::new(BTreeMap::new()),
        nav,
        back: back.clone(),
        page: RefCell::new(None),
        server,
        last: RefCell::new(None),
        updating: Cell::new(false),
    });
    let weak = Rc::downgrade(&w);
    back.connect_clicked(move |_| {
        if let Some(w) = weak.upgrade() {
            w.close_page();
        }
    });
    // Escape goes back from a service's page, as in GNOME's settings.
    let keys = gtk::EventControllerKey::new();
    let weak = Rc::downgrade(&w);
    keys.connect_key_pressed(move |_, key, _, _| {
        if key == gtk::gdk::Key::Escape {
            if let Some(w) = weak.upgrade() {
                if w.page.borrow().is_some() {
                    w.close_page();
                    return glib::Propagation::Stop;
                }
            }
        }
        glib::Propagation::Proceed
    });
    window.add_controller(keys);

    let events = daemon.watch();
    let keep = w.clone();
    glib::spawn_future_local(async move {
        while let Ok(u) = events.recv().await {
            keep.update(u);
        }
    });
    window.present();
}

/// A service's state in words.
pub fn state_words(enabled: bool, r: Option<&ServiceReport>) -> String {
    match r {
        _ if !enabled => "Off".into(),
        Some(r) if r.error.is_some() => {
            format!("Failed: {}", r.error.as_deref().unwrap_or_default())
        }
        Some(r) if r.published => "Published".into(),
        Some(r) if r.running => "Running, being published…".into(),
        _ => "Starting…".into(),
    }
}

impl Window {
    fn update(self: &Rc<Self>, u: Update) {
        match u {
            Update::Watched(Watched::State(s)) => self.snapshot(*s),
            Update::Watched(Watched::Step(m)) => self.server.step(&m),
            Update::Watched(Watched::Tor(p)) => self.server.tor(&p),
            Update::Gone(why) => self.server.gone(&why),
        }
    }

    fn snapshot(self: &Rc<Self>, s: Snapshot) {
        self.updating.set(true);
        for svc in &s.catalog {
            let row = self.row(&svc.name, &svc.description, &svc.icon_name);
            let report = s.status.services.iter().find(|r| r.name == svc.name);
            let words = state_words(svc.enabled, report);
            row.row.set_subtitle(&glib::markup_escape_text(&format!(
                "{} — {words}",
                svc.description
            )));
            if !row.busy.get() {
                row.switch.set_active(svc.enabled);
                row.spinner.set_spinning(
                    svc.enabled && report.is_some_and(|r| !r.published && r.error.is_none()),
                );
            }
        }
        self.server.snapshot(&s);
        let page = self.page.borrow().clone();
        if let Some(p) = page {
            let report = s
                .status
                .services
                .iter()
                .find(|r| r.name == p.name())
                .cloned();
            p.changed(report);
        }
        *self.last.borrow_mut() = Some(s);
        self.updating.set(false);
    }

    /// The row of `name`, made the first time.
    fn row(self: &Rc<Self>, name: &str, description: &str, icon: &str) -> Rc<Row> {
        if let Some(r) = self.rows.borrow().get(name) {
            return r.clone();
        }
        let row = adw::ActionRow::builder()
            .title(name)
            .subtitle(glib::markup_escape_text(description).as_str())
            .activatable(true)
            .build();
        ui::name(&row, &format!("Service {name}"));
        let image = gtk::Image::from_icon_name(icon);
        image.set_pixel_size(32);
        row.add_prefix(&image);
        let spinner = gtk::Spinner::new();
        ui::name(&spinner, &format!("{name} is being started"));
        let switch = gtk::Switch::builder().valign(gtk::Align::Center).build();
        ui::name(&switch, &format!("Enable {name}"));
        switch.set_tooltip_text(Some(&format!("Start and publish {name}")));
        let open = gtk::Button::from_icon_name("go-next-symbolic");
        open.add_css_class("flat");
        open.set_valign(gtk::Align::Center);
        ui::name(&open, &format!("Open {name}"));
        open.set_tooltip_text(Some(&format!("{name}: address, key, options and clients")));
        row.add_suffix(&spinner);
        row.add_suffix(&switch);
        row.add_suffix(&open);
        self.list.add(&row);
        let r = Rc::new(Row {
            row: row.clone(),
            switch: switch.clone(),
            spinner,
            busy: Cell::new(false),
        });
        self.rows.borrow_mut().insert(name.to_owned(), r.clone());
        let weak = Rc::downgrade(self);
        let n = name.to_owned();
        switch.connect_active_notify(move |sw| {
            if let Some(w) = weak.upgrade() {
                if !w.updating.get() {
                    w.switched(&n, sw.is_active());
                }
            }
        });
        let weak = Rc::downgrade(self);
        let n = name.to_owned();
        let go = move || {
            if let Some(w) = weak.upgrade() {
                w.open_page(&n);
            }
        };
        let go2 = go.clone();
        open.connect_clicked(move |_| go());
        row.connect_activated(move |_| go2());
        r
    }

    /// The person switched `name` on or off.
    fn switched(self: &Rc<Self>, name: &str, on: bool) {
        let Some(row) = self.rows.borrow().get(name).cloned() else {
            return;
        };
        row.busy.set(true);
        row.spinner.set_spinning(true);
        row.switch.set_sensitive(false);
        let (steps, got) = async_channel::unbounded::<String>();
        let shown = row.clone();
        glib::spawn_future_local(async move {
            while let Ok(m) = got.recv().await {
                shown.row.set_subtitle(&glib::markup_escape_text(&m));
            }
        });
        let action = if on {
            ServiceAction::Enable
        } else {
            ServiceAction::Disable
        };
        let w = self.clone();
        let n = name.to_owned();
        self.ctx.request(
            Request::Service {
                service: name.to_owned(),
                action,
            },
            Some(steps),
            move |r| {
                row.busy.set(false);
                row.switch.set_sensitive(true);
                row.spinner.set_spinning(false);
                match r {
                    Ok(Reply::Credentials(c)) => {
                        w.ctx.toast(&format!("{n} is published at {}", c.address));
                        for warning in &c.warnings {
                            w.ctx.toast(warning);
                        }
                    }
                    Ok(Reply::Done(m)) => w.ctx.toast(&m),
                    Ok(_) => {}
                    Err(e) => w.ctx.toast(&format!("{n}: {e}")),
                }
                // The daemon's word, not the switch's position. (Taken
                // first: `snapshot` stores it again, and an `if let` would
                // still hold the borrow.)
                let last = w.last.borrow_mut().take();
                if let Some(s) = last {
                    w.snapshot(s);
                }
            },
        );
    }

    fn open_page(self: &Rc<Self>, name: &str) {
        let page = ServicePage::new(self.ctx.clone(), name);
        if let Some(old) = self.nav.child_by_name("page") {
            self.nav.remove(&old);
        }
        self.nav.add_named(page.widget(), Some("page"));
        self.nav.set_visible_child_name("page");
        self.back.set_visible(true);
        let report = self
            .last
            .borrow()
            .as_ref()
            .and_then(|s| s.status.services.iter().find(|r| r.name == name).cloned());
        page.changed(report);
        *self.page.borrow_mut() = Some(page);
    }

    fn close_page(&self) {
        self.nav.set_visible_child_name("list");
        self.back.set_visible(false);
        self.page.borrow_mut().take();
        if let Some(r) = self.rows.borrow().values().next() {
            r.row.grab_focus();
        }
    }
}
