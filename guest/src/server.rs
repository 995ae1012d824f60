//! The vsock server through which the host controls a guest agent.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tails_proto::msg::{GuestMsg, HostMsg, Role, AGENT_PORT, MAX_GUEST_FRAME, MAX_HOST_FRAME};
use tails_proto::{read_frame, write_frame};
use tokio::sync::Semaphore;
use tokio_vsock::{VsockAddr, VsockListener, VMADDR_CID_ANY};

/// At most this many host connections are served at once.
const MAX_CONNECTIONS: usize = 16;
/// A host connection idle for this long is closed.
const IDLE: Duration = Duration::from_secs(600);
const WRITE: Duration = Duration::from_secs(30);

/// What an agent answers beyond the common requests (ping, exec, power-off).
pub trait Extension: Send + Sync + 'static {
    /// Answer `msg`, which is not one of the common requests.
    fn handle(&self, msg: HostMsg) -> Pin<Box<dyn Future<Output = GuestMsg> + Send + '_>>;
}

/// An agent with no requests of its own.
pub struct NoExtension(pub Role);

impl Extension for NoExtension {
    fn handle(&self, _msg: HostMsg) -> Pin<Box<dyn Future<Output = GuestMsg> + Send + '_>> {
        let role = self.0;
        Box::pin(async move {
            GuestMsg::Error {
                message: format!("the {role} agent does not handle this request"),
            }
        })
    }
}

/// Serve the host forever on vsock [`AGENT_PORT`].
pub async fn serve(role: Role, ext: Arc<dyn Extension>) -> std::io::Result<()> {
    let listener = VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, AGENT_PORT))?;
    crate::log(format!("{role} agent listening on vsock port {AGENT_PORT}"));
    let started = Instant::now();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = listener.accept().await?;
        // Only the host (CID 2) may control the agent; vhost-device-vsock
        // groups already keep the other guest away, this is defence in depth.
        if peer.cid() != 2 {
            crate::log(format!("refused connection from CID {}", peer.cid()));
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            crate::log("too many host connections; refusing one");
            continue;
        };
        let ext = ext.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = session(role, stream, started, &*ext).await {
                crate::log(format!("host session ended: {e}"));
            }
        });
    }
}

async fn session(
    role: Role,
    mut s: tokio_vsock::VsockStream,
    started: Instant,
    ext: &dyn Extension,
) -> Result<(), tails_proto::FrameError> {
    let hello = GuestMsg::Hello {
        role,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    write_frame(&mut s, &hello, MAX_GUEST_FRAME, WRITE).await?;
    loop {
        let msg: HostMsg = match read_frame(&mut s, MAX_HOST_FRAME, IDLE).await {
            Ok(m) => m,
            Err(tails_proto::FrameError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        };
        let reply = match msg {
            HostMsg::Ping => GuestMsg::Pong {
                uptime_ms: started.elapsed().as_millis() as u64,
            },
            HostMsg::Exec(req) => GuestMsg::Exec(crate::exec::run(req).await),
            HostMsg::PowerOff => {
                write_frame(&mut s, &GuestMsg::PoweringOff, MAX_GUEST_FRAME, WRITE).await?;
                crate::log("power-off ordered by the host");
                tokio::time::sleep(Duration::from_millis(100)).await;
                crate::pid1::power_off();
            }
            other => ext.handle(other).await,
        };
        write_frame(&mut s, &reply, MAX_GUEST_FRAME, WRITE).await?;
    }
}
