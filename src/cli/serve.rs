//! `actormq serve` (and no subcommand): loads the settings, installs logging, starts the
//! server, runs until SIGINT or SIGTERM, shuts down gracefully.

use super::Error;
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
    let server = ServerHandle::start(settings)?;
    println!("actormq listening on {}", server.local_addr());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        ctrl_c.await?;
        Ok::<(), std::io::Error>(())
    })?;
    tracing::info!("shutting down");
    server.shutdown();
    Ok(())
}
