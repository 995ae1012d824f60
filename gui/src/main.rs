//! `tails-server-gui`: Tails Server for people who will never type
//! `set-option`. A GTK4 + libadwaita client of the daemon's API, and
//! nothing more: it keeps no state of its own and changes nothing but
//! through the API, so the CLI and the GUI always show the same server.

mod bridge;
mod greeter;
mod qr;
mod server_page;
mod service_page;
mod ui;
mod window;

use adw::prelude::*;
use clap::Parser;
use gtk::glib;

/// The application id (also the desktop file's and the icon's name).
pub const APP_ID: &str = "org.boum.tails.Server";

fn main() -> glib::ExitCode {
    let args = tails_server::cli::GuiArgs::parse();
    // The API's client code is async (tokio); GTK keeps the main thread.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tails-server-gui: cannot start its runtime: {e}");
            return glib::ExitCode::FAILURE;
        }
    };
    let daemon = bridge::Daemon::new(rt.handle().clone(), tails_server::paths::Paths::from_env());
    let app = adw::Application::builder().application_id(APP_ID).build();
    app.connect_activate(move |app| {
        if args.greeter {
            greeter::present(app, daemon.clone());
        } else {
            window::present(app, daemon.clone());
        }
    });
    // GTK sees no arguments: clap had them.
    app.run_with_args::<&str>(&[])
}
