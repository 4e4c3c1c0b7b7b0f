//! [`MemoryStore`]: the [`MessageStore`] contract kept in memory, for transient queues
//! and tests. An append is applied at once and its completion is already resolved;
//! `recover` answers the current state, as a restart of a process that keeps the store
//! would see it.

use super::completion::{Completion, Pages};
use super::error::StorageError;
use super::record::{QueueId, Record, Recovered};
use super::replay::Replay;
use super::MessageStore;
use std::sync::{Arc, Mutex};

/// A message store in memory. Clones share the same state.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    /// The replayed state, bodies kept.
    state: Arc<Mutex<Replay<()>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl MessageStore for MemoryStore {
    fn append(&self, batch: Vec<Record>, _sync: bool) -> Completion {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for record in &batch {
            let body = match record {
                Record::Publish { message, .. } => Some(message.clone()),
                _ => None,
            };
            state.apply(record, (), body, &mut |_| {});
        }
        Completion::ready(Ok(()))
    }

    fn flush(&self) -> Completion {
        Completion::ready(Ok(()))
    }

    fn recover(&self) -> Result<Recovered, StorageError> {
        Ok(self
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .recovered())
    }

    fn error(&self) -> Option<StorageError> {
        None
    }

    fn read(&self, queue: &QueueId, ids: Vec<u64>) -> Completion<Pages> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let pages = ids
            .into_iter()
            .filter_map(|id| Some((id, state.message(queue, id)?)))
            .collect();
        Completion::ready(Ok(pages))
    }
}
