//! Test helpers shared by every module: a real broker on an ephemeral port, and
//! condition waits (never bare sleeps).

#![allow(dead_code)]

use actormq::server::ServerHandle;
use actormq::Settings;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Generous deadline for condition waits: the machines are shared and noisy.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A broker listening on 127.0.0.1:0, with its storage in a temporary directory, shut
/// down when dropped.
pub struct TestServer {
    pub handle: Option<ServerHandle>,
    pub addr: SocketAddr,
    /// The storage directory (removed after the server stops).
    pub data: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a server with default settings (guest/guest, loopback).
    pub fn start() -> TestServer {
        Self::with(|_| {})
    }

    /// Starts a server after `tweak` adjusts the settings.
    pub fn with(tweak: impl FnOnce(&mut Settings)) -> TestServer {
        let data = tempfile::tempdir().expect("a temporary data directory");
        let mut s = Settings::default();
        s.server.bind = "127.0.0.1:0".into();
        s.amqp.bind = vec!["127.0.0.1:0".into()];
        s.http.bind = Vec::new(); // the management API only where a test asks for it
        s.broker.workers = 2;
        s.storage.data_dir = data.path().to_path_buf();
        tweak(&mut s);
        let handle = ServerHandle::start(s).expect("server starts");
        let addr = handle.local_addr();
        TestServer {
            handle: Some(handle),
            addr,
            data: Some(data),
        }
    }

    pub fn handle(&self) -> &ServerHandle {
        self.handle.as_ref().expect("running")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        self.data.take();
    }
}

/// Polls `cond` until it holds or the deadline passes (then panics with `what`).
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + DEADLINE;
    loop {
        if cond().await {
            return;
        }
        if Instant::now() > end {
            panic!("condition not reached within {DEADLINE:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Synchronous variant of [`eventually`] for blocking tests.
pub fn eventually_sync(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        if Instant::now() > end {
            panic!("condition not reached within {DEADLINE:?}: {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
