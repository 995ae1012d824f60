//! The GUI's one way to the daemon: its API, through the same client code
//! as the CLI, run on a tokio runtime beside GTK's main loop. Nothing here
//! keeps state: every value the GUI shows comes from a reply or an event.

use tails_server::api::{ApiError, ErrorKind, Reply, Request};
use tails_server::client::{self, Event, Watched};
use tails_server::paths::Paths;

/// A request's end, as the GUI handles it.
#[derive(Debug)]
pub enum Failure {
    /// The daemon refused or failed: its words, and its kind.
    Api(ApiError),
    /// The daemon could not be reached.
    Client(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Api(e) => f.write_str(&e.message),
            Failure::Client(m) => f.write_str(m),
        }
    }
}

impl Failure {
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Failure::Api(e) => Some(e.kind),
            Failure::Client(_) => None,
        }
    }
}

/// What the watch brings to the GUI.
pub enum Update {
    Watched(Watched),
    /// The connection ended (the daemon stopped) or cannot be made: why.
    Gone(String),
}

#[derive(Clone)]
pub struct Daemon {
    rt: tokio::runtime::Handle,
    paths: Paths,
}

impl Daemon {
    pub fn new(rt: tokio::runtime::Handle, paths: Paths) -> Daemon {
        Daemon { rt, paths }
    }

    /// Send `req`; its steps (progress, tor's bootstrap) go to `steps` as
    /// one line each.
    pub async fn call(
        &self,
        req: Request,
        steps: Option<async_channel::Sender<String>>,
    ) -> Result<Reply, Failure> {
        let paths = self.paths.clone();
        let job = self.rt.spawn(async move {
            let conn = client::connect_or_start(&paths)
                .await
                .map_err(|e| Failure::Client(e.to_string()))?;
            let reply = client::call(conn, &req, |ev| {
                if let Some(tx) = &steps {
                    let _ = tx.try_send(match ev {
                        Event::Step(s) => s.to_owned(),
                        Event::Tor(p) => format!("Tor: {}% ({})", p.progress, p.summary),
                    });
                }
            })
            .await
            .map_err(|e| Failure::Client(e.to_string()))?;
            match reply {
                Reply::Error(e) => Err(Failure::Api(e)),
                r => Ok(r),
            }
        });
        match job.await {
            Ok(r) => r,
            Err(e) => Err(Failure::Client(format!("the request was lost: {e}"))),
        }
    }

    /// Watch the daemon for as long as the GUI runs: every report goes to
    /// the returned channel. When the daemon stops (after `down`), it is
    /// connected to again (which starts it again, as any client does); a
    /// daemon that cannot be reached is tried again every few seconds.
    pub fn watch(&self) -> async_channel::Receiver<Update> {
        let (tx, rx) = async_channel::unbounded();
        let paths = self.paths.clone();
        self.rt.spawn(async move {
            loop {
                let why = match client::connect_or_start(&paths).await {
                    Ok(conn) => {
                        let sent = tx.clone();
                        // The GUI's end gone: the watch too.
                        match client::watch(conn, move |w| {
                            sent.try_send(Update::Watched(w)).is_ok()
                        })
                        .await
                        {
                            Ok(()) => "the daemon stopped".to_owned(),
                            Err(e) => e.to_string(),
                        }
                    }
                    Err(e) => e.to_string(),
                };
                if tx.send(Update::Gone(why)).await.is_err() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        });
        rx
    }
}
