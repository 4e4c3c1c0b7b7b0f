//! [`Completion`]: what an append hands back at once, resolved when the batch is stored;
//! with a payload, what a page-in read hands back, resolved with the messages read.
//!
//! A future for async callers (a queue actor spawns it and confirms when it resolves) and
//! a blocking [`Completion::wait`] for plain threads. Backed by a tokio oneshot, which
//! needs no runtime to send on, so the writer thread completes it from plain std code.

use super::error::StorageError;
use crate::message::Message;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::oneshot;

/// The outcome of an append.
pub type StoreResult = Result<(), StorageError>;

/// Messages read back from the store by id (see
/// [`crate::storage::MessageStore::read`]), in the order asked.
pub type Pages = Vec<(u64, Arc<Message>)>;

/// Resolves once a batch is stored (see [`crate::storage::MessageStore::append`]), or,
/// as `Completion<Pages>`, once a read is answered.
#[must_use = "a completion tells whether the batch was stored"]
#[derive(Debug)]
pub struct Completion<T = ()>(Inner<T>);

#[derive(Debug)]
enum Inner<T> {
    /// Already known (the memory store, or an append refused at once).
    Done(Option<Result<T, StorageError>>),
    /// Waiting for the writer thread.
    Waiting(oneshot::Receiver<Result<T, StorageError>>),
}

impl<T> Completion<T> {
    /// A completion that is already resolved.
    pub fn ready(result: Result<T, StorageError>) -> Self {
        Completion(Inner::Done(Some(result)))
    }

    /// A pending completion and the [`Completer`] that resolves it.
    pub fn pending() -> (Completer<T>, Completion<T>) {
        let (tx, rx) = oneshot::channel();
        (Completer(tx), Completion(Inner::Waiting(rx)))
    }

    /// Blocks the calling thread until resolved. Never call it on an async runtime's
    /// thread (an actor's, for instance): await the completion there instead.
    pub fn wait(self) -> Result<T, StorageError> {
        match self.0 {
            Inner::Done(r) => r.unwrap_or(Err(StorageError::Closed)),
            Inner::Waiting(rx) => rx.blocking_recv().unwrap_or(Err(StorageError::Closed)),
        }
    }

    /// The result if already resolved, without waiting; `None` while pending.
    pub fn try_result(&mut self) -> Option<Result<T, StorageError>> {
        match &mut self.0 {
            Inner::Done(r) => r.take(),
            Inner::Waiting(rx) => match rx.try_recv() {
                Ok(r) => Some(r),
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => Some(Err(StorageError::Closed)),
            },
        }
    }
}

impl<T: Unpin> Future for Completion<T> {
    type Output = Result<T, StorageError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Neither variant is structurally pinned: a oneshot receiver is Unpin.
        let this = self.get_mut();
        match &mut this.0 {
            Inner::Done(r) => Poll::Ready(r.take().unwrap_or(Err(StorageError::Closed))),
            Inner::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(StorageError::Closed))),
        }
    }
}

/// The sending half of a pending [`Completion`], held by whoever does the work.
/// Dropping it unresolved resolves the completion to [`StorageError::Closed`].
#[derive(Debug)]
pub struct Completer<T = ()>(oneshot::Sender<Result<T, StorageError>>);

impl<T> Completer<T> {
    /// Resolves the completion (a caller that stopped waiting is not an error).
    pub fn complete(self, result: Result<T, StorageError>) {
        let _ = self.0.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_completion_resolves_when_completed() {
        let (tx, mut c) = Completion::pending();
        assert!(c.try_result().is_none());
        tx.complete(Ok(()));
        assert!(c.wait().is_ok());
    }

    #[test]
    fn a_dropped_completer_resolves_to_closed() {
        let (tx, c) = Completion::<()>::pending();
        drop(tx);
        assert!(matches!(c.wait(), Err(StorageError::Closed)));
    }

    #[tokio::test]
    async fn a_completion_is_a_future() {
        let (tx, c) = Completion::pending();
        std::thread::spawn(move || tx.complete(Ok(())));
        assert!(c.await.is_ok());
        assert!(Completion::ready(Ok(())).await.is_ok());
    }
}
