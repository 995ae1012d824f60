//! Runtime shared by the two guest agents (`torvm/`, `appvm/`).
//!
//! Each agent is PID 1 of its VM. [`pid1`] does the early work a kernel leaves
//! to init (pseudo file systems, modules in dependency order, the reaper),
//! [`net`] configures interfaces found by MAC address, [`disk`] mounts a
//! persistent disk found by its serial, and [`server`] answers
//! the host on vsock with the messages of `tails-proto`, running commands
//! through [`exec`].

pub mod disk;
pub mod exec;
pub mod net;
pub mod pid1;
pub mod server;

/// Write one line to the console (the VM's serial log on the host).
/// Lines carry the VM's uptime, like the kernel's, to see where boot time goes.
pub fn log(msg: impl std::fmt::Display) {
    let up = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    let up = up.split_whitespace().next().unwrap_or("?");
    eprintln!("[{up:>8}] tails-agent: {msg}");
}

/// The life of an agent: as PID 1, run `early_init` then split off the reaper;
/// then configure the `network`, then serve the host until power-off. Any failure before
/// the server is up powers the VM off (as init) or exits: a VM whose agent
/// cannot serve is useless and must not linger half-configured.
pub fn run_agent(
    role: tails_proto::Role,
    early_init: fn() -> Result<(), String>,
    network: &[net::Plan],
    ext: std::sync::Arc<dyn server::Extension>,
) -> ! {
    // PID 1 starts with no PATH; everything the agent runs is found here.
    // SAFETY (set_var): still single-threaded.
    unsafe { std::env::set_var("PATH", "/usr/sbin:/usr/bin:/sbin:/bin") };
    if pid1::is_init() {
        if let Err(e) = early_init() {
            log(format!("early init failed: {e}"));
            pid1::power_off();
        }
        if let Err(e) = pid1::split_reaper() {
            log(format!("cannot fork the agent: {e}"));
            pid1::power_off();
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log(format!("cannot start the runtime: {e}"));
            std::process::exit(1);
        }
    };
    let result = rt.block_on(async {
        for plan in network {
            match net::configure(plan).await {
                Ok(Some(dev)) => log(format!("{dev} is {}/{}", plan.addr, plan.prefix)),
                Ok(None) => log(format!("no NIC {}: skipped", plan.mac)),
                Err(e) => return Err(format!("network set-up failed: {e}")),
            }
        }
        server::serve(role, ext)
            .await
            .map_err(|e| format!("vsock server failed: {e}"))
    });
    if let Err(e) = result {
        log(e);
    }
    std::process::exit(1);
}
