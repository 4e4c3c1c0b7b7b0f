//! The Rust client (`actormq::client`) against a real broker on an ephemeral port.

mod consume;
mod flow_bound;
mod heartbeat;
mod ops;
mod publish;
mod selflock;
mod semantics;

use crate::support::{TestServer, DEADLINE};
use actormq::client::{Client, ConnectOptions};
use std::future::Future;

/// Options for the test server's default user.
fn options(server: &TestServer) -> ConnectOptions {
    ConnectOptions::new(server.addr.to_string())
}

/// A connection with confirms on.
async fn connect(server: &TestServer) -> Client {
    Client::connect(options(server)).await.expect("connects")
}

/// Awaits `fut`, failing the test if it takes longer than the generous deadline.
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("not within {DEADLINE:?}: {what}"))
}
