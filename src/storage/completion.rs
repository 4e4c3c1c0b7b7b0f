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
        (
            Completer(Some(Sink::Oneshot(tx))),
            Completion(Inner::Waiting(rx)),
        )
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
///
/// Or, made with [`Completer::calling`], a function run with the result on the thread
/// that resolves it: a stream's writer thread answers a publisher from there after its
/// fsync, instead of waking a queue actor's thread only to pass the answer on.
pub struct Completer<T = ()>(Option<Sink<T>>);

/// Where a [`Completer`]'s result goes.
enum Sink<T> {
    /// To the [`Completion`] made with it.
    Oneshot(oneshot::Sender<Result<T, StorageError>>),
    /// To a function (see [`Completer::calling`]).
    Call(Box<dyn FnOnce(Result<T, StorageError>) + Send>),
}

impl<T> std::fmt::Debug for Completer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.0 {
            Some(Sink::Oneshot(_)) => "oneshot",
            Some(Sink::Call(_)) => "call",
            None => "done",
        };
        f.debug_tuple("Completer").field(&kind).finish()
    }
}

impl<T> Completer<T> {
    /// A completer that runs `f` with the result, on the thread that resolves it (or
    /// with [`StorageError::Closed`] where it is dropped unresolved). `f` must be quick:
    /// a writer thread runs it between two fsyncs.
    ///
    /// ```
    /// use actormq::storage::{Completer, StorageError};
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let done = Completer::<()>::calling(move |r| tx.send(r.is_ok()).unwrap());
    /// drop(done); // never resolved: the function hears Closed
    /// assert_eq!(rx.recv().unwrap(), false);
    /// ```
    pub fn calling(f: impl FnOnce(Result<T, StorageError>) + Send + 'static) -> Self {
        Completer(Some(Sink::Call(Box::new(f))))
    }

    /// Resolves the completion (a caller that stopped waiting is not an error).
    pub fn complete(mut self, result: Result<T, StorageError>) {
        match self.0.take() {
            Some(Sink::Oneshot(tx)) => {
                let _ = tx.send(result);
            }
            Some(Sink::Call(f)) => f(result),
            None => {}
        }
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        // A dropped oneshot sender already reads as Closed on the other side.
        if let Some(Sink::Call(f)) = self.0.take() {
            f(Err(StorageError::Closed));
        }
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

    #[test]
    fn a_calling_completer_runs_once_with_the_result_or_closed_when_dropped() {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = tx.clone();
        Completer::<()>::calling(move |r| t.send(r.map_err(|e| e.to_string())).unwrap())
            .complete(Ok(()));
        drop(Completer::<()>::calling(move |r| {
            tx.send(r.map_err(|e| e.to_string())).unwrap()
        }));
        assert_eq!(rx.recv().unwrap(), Ok(()));
        assert_eq!(rx.recv().unwrap(), Err(StorageError::Closed.to_string()));
        assert!(rx.try_recv().is_err(), "each ran once");
    }
}
