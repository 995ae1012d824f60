//! The server page: the stack up or down and on which network (public,
//! with bridges, or the embedded local one), tor's bootstrap, the two VMs,
//! and the persistent store (create, unlock with its passphrase, lock).

use std::rc::Rc;

use adw::prelude::*;
use gtk::glib;
use tails_server::api::{
    ApiSecret, Network, PersistenceAction, Reply, Request, Snapshot, TorProgress,
};

use crate::ui::{self, Ctx};

pub struct ServerPage {
    ctx: Ctx,
    root: adw::PreferencesPage,
    state: adw::ActionRow,
    network: adw::ComboRow,
    bridges: adw::EntryRow,
    start: gtk::Button,
    stop: gtk::Button,
    tor: gtk::ProgressBar,
    step: gtk::Label,
    vms: adw::PreferencesGroup,
    vm_rows: [adw::ActionRow; 2],
    store: adw::ActionRow,
    create: gtk::Button,
    unlock: gtk::Button,
    lock: gtk::Button,
}

const NETWORKS: [Network; 3] = [Network::Public, Network::Local, Network::None];

fn network_words(n: Network) -> &'static str {
    match n {
        Network::Public => "The Tor network",
        Network::Local => "The embedded private Tor network (tests)",
        Network::None => "No network (VMs only)",
    }
}

impl ServerPage {
    pub fn new(ctx: Ctx) -> Rc<ServerPage> {
        let root = adw::PreferencesPage::new();
        let stack = adw::PreferencesGroup::builder()
            .title("Tails Server")
            .description("Two virtual machines: the Tor VM, the only one on the network, and the App VM, which runs the services and reaches the world only through the Tor VM.")
            .build();
        let state = adw::ActionRow::builder()
            .title("State")
            .subtitle("…")
            .build();
        ui::name(&state, "Server state");
        stack.add(&state);
        let words: Vec<&str> = NETWORKS.iter().map(|n| network_words(*n)).collect();
        let network = adw::ComboRow::builder()
            .title("Network")
            .model(&gtk::StringList::new(&words))
            .build();
        ui::name(&network, "Network");
        stack.add(&network);
        let bridges = adw::EntryRow::builder()
            .title("Bridges (optional; lines separated by commas)")
            .build();
        ui::name(&bridges, "Bridges");
        stack.add(&bridges);
        let buttons = gtk::Box::new(gtk::Orientation::Horizontal, 12);
        buttons.set_margin_top(12);
        let start = gtk::Button::with_mnemonic("_Start the server");
        start.add_css_class("suggested-action");
        ui::name(&start, "Start the server");
        let stop = gtk::Button::with_mnemonic("S_top the server");
        stop.add_css_class("destructive-action");
        ui::name(&stop, "Stop the server");
        buttons.append(&start);
        buttons.append(&stop);
        stack.add(&buttons);
        let tor = gtk::ProgressBar::builder()
            .show_text(true)
            .margin_top(12)
            .build();
        ui::name(&tor, "Tor bootstrap");
        stack.add(&tor);
        let step = gtk::Label::builder().xalign(0.0).wrap(true).build();
        step.add_css_class("dim-label");
        ui::name(&step, "Last step");
        stack.add(&step);
        root.add(&stack);

        let vms = adw::PreferencesGroup::builder()
            .title("Virtual machines")
            .build();
        let vm_rows = ["Tor VM", "App VM"].map(|t| {
            let r = adw::ActionRow::builder().title(t).subtitle("down").build();
            ui::name(&r, t);
            vms.add(&r);
            r
        });
        root.add(&vms);

        let persist = adw::PreferencesGroup::builder()
            .title("Persistent storage")
            .description("An encrypted store on this computer for the services whose persistence option is on: their keys, options and data. Its passphrase never enters a VM.")
            .build();
        let store = adw::ActionRow::builder()
            .title("Store")
            .subtitle("…")
            .build();
        ui::name(&store, "Persistent store");
        let create = gtk::Button::with_mnemonic("_Create…");
        let unlock = gtk::Button::with_mnemonic("_Unlock…");
        unlock.add_css_class("suggested-action");
        let lock = gtk::Button::with_mnemonic("_Lock");
        for (b, n) in [
            (&create, "Create the store"),
            (&unlock, "Unlock the store"),
            (&lock, "Lock the store"),
        ] {
            b.set_valign(gtk::Align::Center);
            ui::name(b, n);
            store.add_suffix(b);
        }
        persist.add(&store);
        root.add(&persist);

        let page = Rc::new(ServerPage {
            ctx,
            root,
            state,
            network,
            bridges,
            start,
            stop,
            tor,
            step,
            vms,
            vm_rows,
            store,
            create,
            unlock,
            lock,
        });
        page.wire();
        page
    }

    pub fn widget(&self) -> &adw::PreferencesPage {
        &self.root
    }

    fn wire(self: &Rc<Self>) {
        let p = Rc::downgrade(self);
        self.start.connect_clicked(move |_| {
            if let Some(p) = p.upgrade() {
                p.up();
            }
        });
        let p = Rc::downgrade(self);
        self.stop.connect_clicked(move |_| {
            let Some(p) = p.upgrade() else { return };
            let again = p.clone();
            p.ctx.confirm(
                "Stop the server?",
                "Every service stops, both VMs are shut down, and the persistent store is locked.",
                "_Stop",
                move || {
                    again.stop.set_sensitive(false);
                    again.ctx.act_say(Request::Down);
                },
            );
        });
        self.store_dialog(
            &self.unlock,
            "Unlock the persistent store",
            "Its passphrase opens it on this computer only.",
            "_Unlock",
            false,
            "Unlocking… (this takes a few seconds)",
            |passphrase| PersistenceAction::Unlock { passphrase },
        );
        self.store_dialog(
            &self.create,
            "Create the persistent store",
            "Choose a long passphrase: it is the only way to open the store, and it cannot be recovered.",
            "_Create",
            true,
            "Creating the store… (this takes a while)",
            |passphrase| PersistenceAction::Create {
                passphrase,
                size_mib: 1024,
            },
        );
        let ctx = self.ctx.clone();
        self.lock
            .connect_clicked(move |_| ctx.act_say(Request::Persistence(PersistenceAction::Lock)));
    }

    /// `button` asks for the store's passphrase (twice when `twice`) and
    /// sends what `action` makes of it.
    #[allow(clippy::too_many_arguments)]
    fn store_dialog(
        &self,
        button: &gtk::Button,
        heading: &'static str,
        body: &'static str,
        verb: &'static str,
        twice: bool,
        working: &'static str,
        action: fn(ApiSecret) -> PersistenceAction,
    ) {
        let ctx = self.ctx.clone();
        button.connect_clicked(move |_| {
            let c = ctx.clone();
            ctx.passphrase(heading, body, verb, twice, move |pass| {
                c.toast(working);
                c.act_say(Request::Persistence(action(ApiSecret(pass))));
            });
        });
    }

    fn up(self: &Rc<Self>) {
        let network = NETWORKS
            .get(self.network.selected() as usize)
            .copied()
            .unwrap_or(Network::Public);
        let bridges: Vec<String> = self
            .bridges
            .text()
            .split(',')
            .map(|b| b.trim().to_owned())
            .filter(|b| !b.is_empty())
            .collect();
        self.start.set_sensitive(false);
        self.state.set_subtitle("Starting…");
        let (steps, got) = async_channel::unbounded::<String>();
        let p = self.clone();
        glib::spawn_future_local(async move {
            while let Ok(m) = got.recv().await {
                p.step(&m);
            }
        });
        let p = self.clone();
        self.ctx
            .request(Request::Up { network, bridges }, Some(steps), move |r| {
                p.start.set_sensitive(true);
                match r {
                    Ok(Reply::Done(m)) => p.ctx.toast(&m),
                    Ok(_) => {}
                    Err(e) => p.ctx.toast(&e.to_string()),
                }
            });
    }

    /// A step of what someone asked.
    pub fn step(&self, m: &str) {
        self.step.set_text(m);
    }

    pub fn tor(&self, p: &TorProgress) {
        self.tor
            .set_fraction(f64::from(p.progress.min(100)) / 100.0);
        let text = format!("Tor: {}% — {}", p.progress, p.summary);
        self.tor.set_text(Some(&text));
        // GTK 4.8 does not expose a progress bar's text: its description
        // says it (to screen readers, and the tests).
        self.tor
            .update_property(&[gtk::accessible::Property::Description(&text)]);
    }

    /// The daemon is gone (stopped after `down`) or cannot be reached.
    pub fn gone(&self, why: &str) {
        self.state
            .set_subtitle(&glib::markup_escape_text(&format!("Not connected: {why}")));
    }

    pub fn snapshot(&self, s: &Snapshot) {
        let st = &s.status;
        let up = st.desired.up;
        let words = match (&st.stack, st.desired.network) {
            (Some(stack), _) => format!("Up on {}", network_words(stack.network).to_lowercase()),
            (None, Some(n)) if up => format!("Starting on {}…", network_words(n).to_lowercase()),
            _ => "Down".to_owned(),
        };
        let words = match &st.supervisor.last_error {
            Some(e) if up => format!("{words}; last error: {e}"),
            _ => words,
        };
        self.state.set_subtitle(&glib::markup_escape_text(&words));
        self.start.set_visible(!up);
        self.stop.set_visible(up);
        self.stop.set_sensitive(true);
        self.network.set_sensitive(!up);
        self.bridges.set_sensitive(!up);
        if let Some(n) = st.desired.network {
            if let Some(i) = NETWORKS.iter().position(|x| *x == n) {
                self.network.set_selected(i as u32);
            }
        }
        let vms = st.stack.as_ref().map(|s| s.vms.as_slice()).unwrap_or(&[]);
        for (row, role) in self.vm_rows.iter().zip([
            tails_server::api::Role::Torvm,
            tails_server::api::Role::Appvm,
        ]) {
            let text = match vms.iter().find(|v| v.name == role) {
                Some(v) => {
                    if let Some(t) = &v.tor {
                        self.tor(t);
                    }
                    format!(
                        "{}, agent {}, {} MiB, restarted {} times",
                        v.state,
                        v.agent,
                        v.memory_mib.unwrap_or(0),
                        v.restarts
                    )
                }
                None => "down".into(),
            };
            row.set_subtitle(&glib::markup_escape_text(&text));
        }
        self.vms.set_description(
            st.stack
                .as_ref()
                .map(|s| {
                    format!(
                        "{} acceleration; the App VM's way out: {}",
                        s.accel, s.path_out
                    )
                })
                .as_deref(),
        );
        let ps = &s.persistence;
        let words = match (ps.exists, ps.unlocked) {
            (false, _) => "Not created: every service is amnesic".to_owned(),
            (true, false) => "Locked".to_owned(),
            (true, true) => "Unlocked".to_owned(),
        };
        self.store.set_subtitle(&words);
        self.create.set_visible(!ps.exists);
        self.unlock.set_visible(ps.exists && !ps.unlocked);
        self.lock.set_visible(ps.unlocked);
        self.lock.set_sensitive(!up);
    }
}
