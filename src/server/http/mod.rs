//! The management HTTP API and the Prometheus `/metrics` endpoint: actix-web, served on
//! the broker's own actix System (its server's worker is an arbiter of that System), so
//! handlers reach the queue and registry actors with plain `send`s.
//!
//! RabbitMQ's paths and JSON field names for the common subset (see
//! `docs/MANAGEMENT.md`), so the scripts and tools operators already have keep working.
//! Nothing here is fed per message: every count is read from the actors (and the
//! connections' atomics) when a request asks for it, as DESIGN.md's "Statistics" says.

mod access;
mod channels;
mod connections;
mod definitions;
mod defs;
mod error;
mod exchanges;
mod health;
mod limits;
mod list;
mod messages;
mod metrics;
mod nodes;
mod overview;
mod parameters;
mod permissions;
mod policies;
pub mod prometheus;
mod queues;
mod rates;
mod routing;
mod stats;
mod superstreams;
mod ui;

use super::{prepare, FrontEnd, ServerError, ServerShared};
use actix_web::{web, App, HttpServer};
use routing::Routes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// What every handler gets: the front ends' shared state.
#[derive(Clone)]
pub(crate) struct Api {
    /// Broker, users, connections, settings.
    pub shared: Arc<ServerShared>,
    /// Previous readings of every object, to make rates, and the history of totals.
    pub rates: Arc<rates::Rates>,
    /// When this HTTP front end started (the node's uptime as `/api/nodes` shows it).
    pub started: Instant,
}

impl FrontEnd {
    /// Serves the management HTTP API and `/metrics` on `listener` (already bound) until
    /// [`stop`](Self::stop); returns the address it listens on.
    pub fn listen_http(&self, listener: std::net::TcpListener) -> Result<SocketAddr, ServerError> {
        self.serve_http(listener, None)
    }

    /// Serves the same API over TLS (HTTPS) on `listener`, with the `[tls]` certificate
    /// (re-read on SIGHUP, as for the other TLS listeners); a TLS error if `[tls]`
    /// names no certificate.
    pub fn listen_https(&self, listener: std::net::TcpListener) -> Result<SocketAddr, ServerError> {
        let tls = self.tls()?;
        self.serve_http(listener, Some(tls.following()))
    }

    fn serve_http(
        &self,
        listener: std::net::TcpListener,
        tls: Option<tokio_rustls::rustls::ServerConfig>,
    ) -> Result<SocketAddr, ServerError> {
        let addr = prepare(&listener)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let api = Api {
            shared: self.shared.clone(),
            rates: Arc::default(),
            started: Instant::now(),
        };
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(api.clone()))
                .configure(|cfg| register(&mut Routes::on(cfg)))
                .default_service(web::to(error::no_route))
        })
        // One worker: the API is light next to the broker, which owns the cores.
        .workers(1)
        // The broker handles SIGINT / SIGTERM (FrontEnd::stop stops this server).
        .disable_signals()
        .shutdown_timeout(self.shared.settings.broker.shutdown_timeout_secs);
        let server = match tls {
            None => server.listen(listener),
            Some(config) => server.listen_rustls_0_23(listener, config),
        }
        .map_err(|source| ServerError::Bind {
            addr: addr.to_string(),
            source,
        })?
        .run();
        self.shared.lock_http().push(server.handle());
        self.shared.record_listener(scheme, addr);
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
        tracing::info!(%addr, scheme, "management HTTP API listening");
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

/// Every route served, as (method, path) with actix's `{param}` placeholders: the
/// router's own table (recorded as it is built), for documentation and the test that
/// keeps `docs/openapi.yaml` in step with it.
///
/// ```
/// let routes = actormq::server::http::served_routes();
/// assert!(routes.contains(&("GET", "/api/overview")));
/// ```
pub fn served_routes() -> Vec<(&'static str, &'static str)> {
    let mut r = Routes::recording();
    register(&mut r);
    r.into_list()
}

/// Every route served. Another area adds its module's `routes` here.
fn register(r: &mut Routes) {
    r.get("/metrics", metrics::metrics);
    ui::routes(r);
    overview::routes(r);
    health::routes(r);
    nodes::routes(r);
    defs::routes(r);
    permissions::routes(r);
    queues::routes(r);
    messages::routes(r);
    exchanges::routes(r);
    connections::routes(r);
    channels::routes(r);
    policies::routes(r);
    definitions::routes(r);
    superstreams::routes(r);
    limits::routes(r);
    parameters::routes(r);
}
