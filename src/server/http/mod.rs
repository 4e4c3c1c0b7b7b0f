//! The management HTTP API and the Prometheus `/metrics` endpoint: actix-web, served on
//! the broker's own actix System (its server's worker is an arbiter of that System), so
//! handlers reach the queue and registry actors with plain `send`s.
//!
//! RabbitMQ's paths and JSON field names for the common subset (see
//! `docs/MANAGEMENT.md`), so the scripts and tools operators already have keep working.
//! Nothing here is fed per message: every count is read from the actors (and the
//! connections' atomics) when a request asks for it, as DESIGN.md's "Statistics" says.

mod access;
mod connections;
mod definitions;
mod defs;
mod error;
mod exchanges;
mod list;
mod metrics;
mod overview;
mod policies;
pub mod prometheus;
mod queues;
mod stats;

use super::{prepare, FrontEnd, ServerError, ServerShared};
use actix_web::{web, App, HttpServer};
use std::net::SocketAddr;
use std::sync::Arc;

/// What every handler gets: the front ends' shared state.
#[derive(Clone)]
pub(crate) struct Api {
    /// Broker, users, connections, settings.
    pub shared: Arc<ServerShared>,
}

impl FrontEnd {
    /// Serves the management HTTP API and `/metrics` on `listener` (already bound) until
    /// [`stop`](Self::stop); returns the address it listens on.
    pub fn listen_http(&self, listener: std::net::TcpListener) -> Result<SocketAddr, ServerError> {
        let addr = prepare(&listener)?;
        let api = Api {
            shared: self.shared.clone(),
        };
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(api.clone()))
                .configure(routes)
                .default_service(web::to(error::no_route))
        })
        // One worker: the API is light next to the broker, which owns the cores.
        .workers(1)
        // The broker handles SIGINT / SIGTERM (FrontEnd::stop stops this server).
        .disable_signals()
        .shutdown_timeout(self.shared.settings.broker.shutdown_timeout_secs)
        .listen(listener)
        .map_err(|source| ServerError::Bind {
            addr: addr.to_string(),
            source,
        })?
        .run();
        self.shared.lock_http().push(server.handle());
        self.shared.record_listener("http", addr);
        // The server future starts the accept thread and the worker, on the broker's
        // System (the worker becomes one of its arbiters), and ends when stopped.
        self.shared
            .broker
            .context()
            .next_arbiter()
            .spawn(async move {
                if let Err(e) = server.await {
                    tracing::error!(error = %e, "management HTTP server failed");
                }
            });
        tracing::info!(%addr, "management HTTP API listening");
        Ok(addr)
    }
}

/// Stops every HTTP server of the front end (in-flight requests finish first).
pub(crate) async fn stop_all(shared: &ServerShared) {
    let handles: Vec<_> = shared.lock_http().drain(..).collect();
    for h in handles {
        h.stop(true).await;
    }
}

/// Every route served.
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics::metrics))
        .route("/api/overview", web::get().to(overview::overview))
        .route("/api/whoami", web::get().to(overview::whoami))
        .route("/api/health/checks/alarms", web::get().to(overview::alarms))
        .route(
            "/api/aliveness-test/{vhost}",
            web::get().to(overview::aliveness),
        )
        .configure(defs::routes)
        .configure(queues::routes)
        .configure(exchanges::routes)
        .configure(connections::routes)
        .configure(policies::routes)
        .configure(definitions::routes);
}
