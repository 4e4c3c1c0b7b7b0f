//! `actormq serve` (and no subcommand): loads the settings, installs logging, starts the
//! server, runs until SIGINT or SIGTERM, shuts down gracefully.

use super::Error;
use actormq::cluster::ClusterNode;
use actormq::server::ServerHandle;
use actormq::Settings;
use std::path::PathBuf;

/// Runs the broker with the settings of `config` (or `./Settings.toml`).
pub fn run(config: Option<PathBuf>) -> Result<(), Error> {
    let settings = Settings::load(config.as_deref())?;
    actormq::logging::init(&settings.log);
    // `./data` by default, relative to wherever the broker was started: say where.
    let data_dir = &settings.storage.data_dir;
    let absolute = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.clone());
    tracing::info!(data_dir = %absolute.display(), "storage directory");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Handlers first: a SIGTERM sent as soon as the listening line appears must stop
    // the broker gracefully, not kill it with the default action.
    let stop = {
        let _runtime = rt.enter();
        StopSignals::install()?
    };
    let (server, cluster) = start(settings)?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        // The native address last: a reader may stop reading at that line, and a write
        // to a closed pipe must not stop the broker (errors ignored).
        for a in server.amqp_addrs() {
            let _ = writeln!(out, "actormq AMQP listening on {a}");
        }
        for a in server.amqps_addrs() {
            let _ = writeln!(out, "actormq AMQPS listening on {a}");
        }
        if let Some(a) = server.native_tls_addr() {
            let _ = writeln!(out, "actormq TLS listening on {a}");
        }
        if let Some(c) = &cluster {
            let _ = writeln!(out, "actormq cluster port on {}", c.local_addr());
        }
        for a in server.http_addrs() {
            let _ = writeln!(out, "actormq management API on http://{a}/api/");
        }
        for a in server.https_addrs() {
            let _ = writeln!(out, "actormq management API on https://{a}/api/");
        }
        let _ = writeln!(out, "actormq listening on {}", server.local_addr());
        let _ = out.flush();
    }
    rt.block_on(stop.wait());
    tracing::info!("shutting down");
    // Raft first: no committed change may be marked applied once the broker is gone.
    if let Some(c) = cluster {
        c.shutdown();
    }
    server.shutdown();
    Ok(())
}

/// Starts the server: a single node, or (with `[cluster]`) a node of a cluster, whose
/// broker commits definitions changes through the cluster's log.
fn start(settings: Settings) -> Result<(ServerHandle, Option<ClusterNode>), Error> {
    let Some(cs) = settings.cluster.clone() else {
        return Ok((ServerHandle::start(settings)?, None));
    };
    let mut node = ClusterNode::prepare(&cs, &settings.tls, &settings.storage.data_dir)?;
    let broker = actormq::Broker::builder()
        .settings(settings.broker.clone())
        .storage(settings.storage.options())
        .cluster(node.hook())
        .start()?;
    if let Err(e) = node.start(broker.clone()) {
        broker.shutdown();
        return Err(e.into());
    }
    match ServerHandle::start_on(broker, settings) {
        Ok(server) => Ok((server, Some(node))),
        Err(e) => {
            node.shutdown();
            Err(e.into())
        }
    }
}

/// SIGINT and SIGTERM, listened for from the moment they are installed.
struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the handlers (within a tokio runtime).
    fn install() -> std::io::Result<StopSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(StopSignals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignals {})
    }

    /// Waits for either signal.
    async fn wait(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = &mut self;
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
