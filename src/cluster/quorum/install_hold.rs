//! No election while a member installs a snapshot it received: the last chunk came
//! from the leader just now, but the decode and install (seconds for hundreds of
//! megabytes on a loaded machine) held back the answers to the leader's heartbeats
//! past the election timeout, so the member stood for election, the leader stepped
//! down and the transfer started over, again and again (44.8 s to catch up in a
//! bench-lagging run, 11 transfers of the same 174 MB).
//!
//! Test only: `ACTORMQ_TEST_SNAPSHOT_INSTALL_PAUSE_MS` makes every install of a
//! snapshot received wait that long first, with elections already off. Test
//! `cluster::snapshot_install` needs an install that outlasts the election timeout,
//! which a real one does only with a queue of hundreds of megabytes on a loaded
//! machine (and on a quiet one not at all): too large and too slow for a test, and a
//! pass that would depend on the machine's speed. Not a setting: never set it on a
//! node in service.

use super::group::QueueTypes;
use openraft::Raft;
use std::sync::OnceLock;
use std::time::Duration;

/// The variable of the test-only pause (see the module's doc).
pub const TEST_PAUSE_VAR: &str = "ACTORMQ_TEST_SNAPSHOT_INSTALL_PAUSE_MS";

/// Elections of a member turned off while alive (openraft's runtime switch), back on
/// when dropped (also when the install is cancelled).
pub(super) struct NoElection<'a>(&'a Raft<QueueTypes>);

impl<'a> NoElection<'a> {
    pub(super) fn new(raft: &'a Raft<QueueTypes>) -> Self {
        raft.runtime_config().elect(false);
        NoElection(raft)
    }
}

impl Drop for NoElection<'_> {
    fn drop(&mut self) {
        self.0.runtime_config().elect(true);
    }
}

/// Waits the test-only pause before an install, if the variable sets one.
pub(super) async fn test_pause() {
    static PAUSE: OnceLock<Option<Duration>> = OnceLock::new();
    let pause = PAUSE.get_or_init(|| {
        let ms = std::env::var(TEST_PAUSE_VAR).ok()?.parse().ok()?;
        tracing::warn!(
            ms,
            "{TEST_PAUSE_VAR} is set: every snapshot install waits this long first (test only)"
        );
        Some(Duration::from_millis(ms))
    });
    if let Some(pause) = pause {
        tokio::time::sleep(*pause).await;
    }
}
