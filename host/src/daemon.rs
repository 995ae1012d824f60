//! The daemon: owns the stack and serves the CLI on a root-only Unix socket.
//!
//! It lives as long as the stack: started by `up`, gone after `down` (or after
//! an `up` that failed), with every runtime file removed.

use crate::accel;
use crate::ctl::{Network, Reply, Request, StatusReport, MAX_CTL_FRAME};
use crate::log;
use crate::paths::{find_program, Paths};
use crate::stack::Stack;
use crate::vmm::qemu::Qemu;
use anyhow::{Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;
use tails_proto::{read_frame, write_frame};
use tails_proto::{TorConfig, TorNetwork};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, RwLock};

const IO: Duration = Duration::from_secs(30);

struct Daemon {
    paths: Paths,
    /// Written by `up` and `down` only; status and exec share it, so a slow
    /// guest delays its own answer and nothing else.
    stack: RwLock<Option<Stack>>,
    /// Tells the accept loop to stop (after `down` or a failed `up`).
    quit: mpsc::Sender<()>,
    /// Published onion services of this stack: service → address.
    published: tokio::sync::Mutex<std::collections::BTreeMap<String, String>>,
}

/// Run the daemon in the foreground until the stack is down.
pub async fn run(paths: Paths) -> Result<()> {
    std::fs::create_dir_all(&paths.runtime)
        .with_context(|| format!("create {}", paths.runtime.display()))?;
    std::fs::set_permissions(&paths.runtime, std::fs::Permissions::from_mode(0o711))?;
    let sock = paths.control_socket();
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).with_context(|| format!("bind {}", sock.display()))?;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))?;
    std::fs::write(paths.daemon_pid(), std::process::id().to_string())?;
    let (tx, mut rx) = mpsc::channel(1);
    let d = Arc::new(Daemon {
        paths: paths.clone(),
        stack: RwLock::new(None),
        quit: tx,
        published: tokio::sync::Mutex::new(Default::default()),
    });
    log(format!("listening on {}", sock.display()));
    loop {
        tokio::select! {
            _ = rx.recv() => break,
            r = listener.accept() => {
                let (conn, _) = r?;
                let d = d.clone();
                tokio::spawn(async move {
                    if let Err(e) = d.serve(conn).await {
                        log(format!("client: {e:#}"));
                    }
                });
            }
        }
    }
    // Let the last reply reach its client before the socket goes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Only while the runtime directory is still ours: a new daemon may
    // already have taken it over after our client returned.
    let ours = std::fs::read_to_string(paths.daemon_pid())
        .is_ok_and(|p| p.trim() == std::process::id().to_string());
    if ours {
        crate::stack::remove_runtime(&paths);
    }
    log("stopped");
    Ok(())
}

impl Daemon {
    async fn serve(self: Arc<Self>, mut conn: UnixStream) -> Result<()> {
        // Root only: the socket is 0600 root, and the peer is checked too.
        let cred = conn.peer_cred()?;
        if cred.uid() != 0 {
            anyhow::bail!("refused client uid {}", cred.uid());
        }
        let req: Request = read_frame(&mut conn, MAX_CTL_FRAME, IO).await?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Reply>();
        let me = self.clone();
        let work = tokio::spawn(async move { me.handle(req, tx).await });
        while let Some(reply) = rx.recv().await {
            // A client that went away must not stop the work it started.
            let _ = write_frame(&mut conn, &reply, MAX_CTL_FRAME, IO).await;
        }
        work.await?;
        Ok(())
    }

    async fn handle(&self, req: Request, tx: mpsc::UnboundedSender<Reply>) {
        let reply = match req {
            Request::Up { network, bridges } => self.up(network, bridges, &tx).await,
            Request::Down => self.down().await,
            Request::Status => match self.status(&tx).await {
                Some(r) => r,
                None => return,
            },
            r @ (Request::Enable { .. }
            | Request::Disable { .. }
            | Request::ServiceState { .. }) => match self.service_request(r, &tx).await {
                Some(r) => r,
                None => return,
            },
            Request::Exec {
                vm,
                argv,
                timeout_secs,
                stdin,
            } => {
                let Ok(guard) = self.stack.try_read() else {
                    self.busy(&tx);
                    return;
                };
                match guard.as_ref() {
                    None => Reply::Error("tails-server is not up: run `tails-server up`".into()),
                    Some(s) => match s
                        .exec(vm, argv, Duration::from_secs(timeout_secs), stdin)
                        .await
                    {
                        Ok(out) => Reply::Exec(out),
                        Err(e) => Reply::Error(e),
                    },
                }
            }
        };
        let _ = tx.send(reply);
    }

    async fn up(
        &self,
        network: Network,
        bridges: Vec<String>,
        tx: &mpsc::UnboundedSender<Reply>,
    ) -> Reply {
        let mut guard = self.stack.write().await;
        if let Some(s) = guard.as_ref() {
            return Reply::Done(format!(
                "tails-server is already up (network {}; see `tails-server status`)",
                s.network().name()
            ));
        }
        let progress_tx = tx.clone();
        let progress = move |m: String| {
            log(&m);
            let _ = progress_tx.send(Reply::Progress(m));
        };
        if network == Network::None && !bridges.is_empty() {
            let _ = self.quit.try_send(());
            return Reply::Error("bridges need an uplink: use --network public or local".into());
        }
        match self.start(network, bridges, &progress).await {
            Ok(stack) => *guard = Some(stack),
            Err(e) => {
                log(format!("up failed: {e:#}"));
                let _ = self.quit.try_send(());
                return Reply::Error(format!("{e:#}"));
            }
        }
        // Readers (status) may look while tor bootstraps.
        let guard = guard.downgrade();
        let Some(stack) = guard.as_ref() else {
            return Reply::Error("the stack vanished during up".into());
        };
        if network == Network::None {
            return Reply::Done(
                "tails-server is up: both VMs are ready (no uplink, tor not started)".into(),
            );
        }
        wait_bootstrap(stack, network, tx).await
    }

    async fn start(
        &self,
        network: Network,
        bridges: Vec<String>,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Stack> {
        let qemu = find_program("qemu-system-x86_64")
            .context("qemu-system-x86_64 is not installed: run ./setup.sh")?;
        let vhost = find_program("vhost-device-vsock")
            .context("vhost-device-vsock is not installed: run ./setup.sh")?;
        let inputs = crate::image_inputs(&self.paths);
        let images = tails_images::find(&inputs)
            .context("cannot read the image cache")?
            .context(
                "the guest images are missing or out of date: run `tails-server image build`",
            )?;
        let mut testnet_subnet = None;
        let tor = match network {
            Network::None => None,
            Network::Public => Some(TorConfig {
                network: TorNetwork::Public,
                bridges,
            }),
            Network::Local => {
                let cfg = tails_testnet::Config::default();
                testnet_subnet =
                    Some(tails_testnet::subnet(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?);
                let options = tokio::task::spawn_blocking(move || {
                    tails_testnet::join_options(&cfg)
                })
                .await?
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context(
                    "the local Tor network is not usable: run `tails-server testnet up` first",
                )?;
                Some(TorConfig {
                    network: TorNetwork::Local { options },
                    bridges,
                })
            }
        };
        progress("choosing the accelerator".into());
        let torvm_user = crate::stack::user(crate::stack::USERS[1].0, crate::stack::USERS[1].1)?;
        let (paths, q, k) = (self.paths.clone(), qemu.clone(), images.vmlinux.clone());
        let accel = tokio::task::spawn_blocking(move || {
            accel::detect(
                &paths,
                &q,
                &k,
                torvm_user,
                &crate::stack::vm_groups(accel::Accel::Kvm),
            )
        })
        .await?;
        let bridges = tor.as_ref().map(|t| t.bridges.clone()).unwrap_or_default();
        let upstreams = crate::firewall::upstreams(testnet_subnet.as_deref(), &bridges)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let backend = Qemu { binary: qemu };
        Ok(Stack::up(
            &self.paths,
            &backend,
            &images,
            &vhost,
            accel,
            crate::stack::Uplink { tor, upstreams },
            progress,
        )
        .await?)
    }

    async fn down(&self) -> Reply {
        let stack = self.stack.write().await.take();
        if let Some(s) = stack {
            s.down().await;
        }
        let _ = self.quit.try_send(());
        Reply::Done("tails-server is down".into())
    }

    /// A service request on the running stack; `None` when busy (the busy
    /// answer is sent already).
    async fn service_request(
        &self,
        req: Request,
        tx: &mpsc::UnboundedSender<Reply>,
    ) -> Option<Reply> {
        let Ok(guard) = self.stack.try_read() else {
            self.busy(tx);
            return None;
        };
        let Some(stack) = guard.as_ref() else {
            return Some(Reply::Error(
                "tails-server is not up: run `tails-server up`".into(),
            ));
        };
        let r = match req {
            Request::Enable { service } => self.enable(stack, &service).await,
            Request::Disable { service } => self.disable(stack, &service).await,
            Request::ServiceState { service } => self.service_state(stack, &service).await,
            _ => Err(anyhow::anyhow!("not a service request")),
        };
        Some(r.unwrap_or_else(|e| Reply::Error(format!("{e:#}"))))
    }

    /// The catalog's entry for `name`, or a one-line error saying what to do.
    fn service(&self, name: &str) -> Result<tails_catalog::Service> {
        let (catalog, _errors) = tails_catalog::Catalog::load_dir(&self.paths.services());
        catalog.get(name).cloned().with_context(|| {
            format!("unknown service `{name}`: `tails-server list` shows the services")
        })
    }

    /// Start `name` in the App VM and publish it; the address.
    async fn enable(&self, stack: &Stack, name: &str) -> Result<Reply> {
        use tails_proto::msg::{HostMsg, OnionPublish, ServiceFile, ServiceStart};
        let svc = self.service(name)?;
        let store = crate::services::Store::new(self.paths.service_state());
        let mut st = store.load(&svc)?;
        let key = store.onion_key(name)?;
        let address = key.onion_address();
        let auth = crate::services::client_auth_on(&st.values);
        if auth && st.clients.is_empty() {
            crate::services::add_client(&mut st, crate::services::FIRST_CLIENT)?;
        }
        let target_port = svc.default_target_port();
        let addr_text = address.to_string();
        let plan = svc
            .render_start(
                &st.values,
                &tails_catalog::Builtins {
                    address: &addr_text,
                    target_port,
                },
            )
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        let start = ServiceStart {
            name: name.to_owned(),
            argv: plan.command,
            user: plan.user,
            files: plan
                .files
                .into_iter()
                .map(|f| ServiceFile {
                    path: f.path.display().to_string(),
                    mode: f.mode,
                    contents: f.contents.into_bytes(),
                })
                .collect(),
            port: target_port,
        };
        let client_auth = if auth {
            st.clients.values().map(|c| c.public_base32()).collect()
        } else {
            Vec::new()
        };
        let req = OnionPublish {
            key: key.tor_add_onion_key().to_string(),
            service_id: address.without_suffix(),
            virtual_port: crate::services::virtual_port(&svc, &st.values),
            target_port,
            client_auth,
            timeout_ms: 180_000,
        };
        // Both at once: the service starts in the App VM while tor builds
        // and uploads the descriptor. `enable` answers when both are done;
        // if either fails, both are undone.
        log(format!(
            "enabling {name}: starting it in the App VM and publishing its onion service"
        ));
        let (running, published) = tokio::join!(
            stack.service(HostMsg::StartService(start), name),
            stack.publish_onion(req)
        );
        let stop = || async {
            let _ = stack
                .service(
                    HostMsg::StopService {
                        name: name.to_owned(),
                    },
                    name,
                )
                .await;
        };
        let (sid, uploads) = match (running, published) {
            (Ok(true), Ok(p)) => p,
            (running, published) => {
                // Nothing half-done.
                stop().await;
                let _ = stack.remove_onion(&address.without_suffix()).await;
                match (running, published) {
                    (Err(e), _) | (_, Err(e)) => anyhow::bail!("{e}"),
                    _ => anyhow::bail!(
                        "{name} did not keep running in the App VM: see its console log"
                    ),
                }
            }
        };
        if sid != address.without_suffix() {
            let _ = stack.remove_onion(&address.without_suffix()).await;
            anyhow::bail!("the Tor VM published another address than the key's: refusing it");
        }
        st.enabled = true;
        store.save(&svc, &st)?;
        self.published
            .lock()
            .await
            .insert(name.to_owned(), addr_text.clone());
        log(format!("{name} published ({uploads} descriptor upload(s))"));
        Ok(Reply::Done(format!(
            "{name} is enabled and published at {addr_text}"
        )))
    }

    /// Take `name`'s onion service down and stop it.
    async fn disable(&self, stack: &Stack, name: &str) -> Result<Reply> {
        use tails_proto::msg::HostMsg;
        let svc = self.service(name)?;
        let store = crate::services::Store::new(self.paths.service_state());
        let mut st = store.load(&svc)?;
        if let Some(address) = store.address(name) {
            stack
                .remove_onion(&address.without_suffix())
                .await
                .map_err(anyhow::Error::msg)?;
        }
        self.published.lock().await.remove(name);
        stack
            .service(
                HostMsg::StopService {
                    name: name.to_owned(),
                },
                name,
            )
            .await
            .map_err(anyhow::Error::msg)?;
        st.enabled = false;
        store.save(&svc, &st)?;
        Ok(Reply::Done(format!("{name} is disabled")))
    }

    async fn service_state(&self, stack: &Stack, name: &str) -> Result<Reply> {
        let svc = self.service(name)?;
        let running = stack
            .service(
                tails_proto::msg::HostMsg::ServiceState {
                    name: svc.name().to_owned(),
                },
                name,
            )
            .await
            .map_err(anyhow::Error::msg)?;
        let address = self.published.lock().await.get(name).cloned();
        Ok(Reply::Service(crate::ctl::ServiceReport {
            running,
            published: address.is_some(),
            address,
        }))
    }

    /// Answer for a request that arrives while `up` or `down` holds the stack.
    fn busy(&self, tx: &mpsc::UnboundedSender<Reply>) {
        let _ = tx.send(Reply::Error(
            "tails-server is starting or stopping; try again in a moment".into(),
        ));
    }

    async fn status(&self, tx: &mpsc::UnboundedSender<Reply>) -> Option<Reply> {
        let Ok(guard) = self.stack.try_read() else {
            self.busy(tx);
            return None;
        };
        Some(match guard.as_ref() {
            None => Reply::Error("tails-server is not up: run `tails-server up`".into()),
            Some(s) => Reply::Status(StatusReport {
                daemon_pid: std::process::id(),
                accel: s.accel.name().into(),
                backend: s.backend.into(),
                network: s.network(),
                vsock: s.vsock_state(),
                host_firewall: s.firewall(),
                path_out: s.path_out(),
                vms: s.status().await,
            }),
        })
    }
}

/// Follow tor's bootstrap until 100 %, streaming it to the client. Past the
/// deadline the stack stays up (tor keeps trying) and the client is told so.
async fn wait_bootstrap(
    stack: &Stack,
    network: Network,
    tx: &mpsc::UnboundedSender<Reply>,
) -> Reply {
    let limit = match network {
        Network::Local => Duration::from_secs(180),
        _ => Duration::from_secs(540),
    };
    let start = std::time::Instant::now();
    let mut last = None;
    loop {
        match stack.tor_progress().await {
            Ok(p) if p.progress >= 100 => {
                log("tor bootstrapped");
                let _ = tx.send(Reply::Tor(p));
                return Reply::Done(format!(
                    "tails-server is up: both VMs are ready and tor is bootstrapped on the {} network",
                    network.name()
                ));
            }
            Ok(p) if !p.running => {
                return Reply::Error(format!("tor is not running in the Tor VM: {}", p.summary));
            }
            Ok(p) => {
                if last.as_ref() != Some(&p) {
                    log(format!("tor bootstrap {}%: {}", p.progress, p.summary));
                    let _ = tx.send(Reply::Tor(p.clone()));
                    last = Some(p);
                }
            }
            Err(e) => log(format!("tor status: {e}")),
        }
        if start.elapsed() > limit {
            let at = last
                .map(|p| format!("{}%: {}", p.progress, p.summary))
                .unwrap_or_else(|| "no progress".into());
            return Reply::Error(format!(
                "tor has not bootstrapped after {} s ({at}); the VMs stay up and tor keeps trying: watch `tails-server status`, or stop with `tails-server down`",
                limit.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
