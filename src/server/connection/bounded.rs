//! Bounded waits for the frame path.
//!
//! A request holds every later frame of its connection until it is answered (ordering,
//! PROTOCOL.md §8.1). So no request may wait forever: issue 16 found a cancel pipelined
//! after `delete_queue` waiting on a queue that had stopped, which froze the connection
//! for good. Every wait in the frame path goes through [`bounded`]: past
//! `server.request_timeout_ms` the request fails with `INTERNAL_ERROR` naming the
//! operation, and the connection goes on with its next frame.
//!
//! A request that gave up may still take effect afterwards. Where a late effect would
//! leave the connection holding something it does not know of (a consumer attached, a
//! message fetched by `get`), the work runs through [`detached`], whose `undo` is called
//! with a result nobody took.

use crate::error::BrokerError;
use crate::protocol::wire::Op;
use std::future::Future;
use std::time::Duration;
use tokio::sync::oneshot;

/// The error of a request not answered within `limit`.
pub(crate) fn timed_out(what: &str, limit: Duration) -> BrokerError {
    BrokerError::internal(format!(
        "{what} got no answer within {} ms (server.request_timeout_ms); it may still take effect",
        limit.as_millis()
    ))
}

/// Waits for `fut` at most `limit`; past it, the [`timed_out`] error (logged).
pub(crate) async fn bounded<T>(
    what: &'static str,
    limit: Duration,
    fut: impl Future<Output = Result<T, BrokerError>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(res) => res,
        Err(_) => {
            tracing::warn!(
                op = what,
                limit_ms = limit.as_millis() as u64,
                "request timed out"
            );
            Err(timed_out(what, limit))
        }
    }
}

/// Runs `work` as a task of its own (on the current arbiter) and resolves with its
/// result. If whoever waits gives up first (the future is dropped: a timeout, or the
/// connection stopped), the result is handed to `undo` instead: exactly once, whether
/// it came before or after the drop.
pub(crate) fn detached<T: 'static>(
    work: impl Future<Output = Result<T, BrokerError>> + 'static,
    undo: impl FnOnce(T) + Clone + 'static,
) -> impl Future<Output = Result<T, BrokerError>> {
    let (tx, rx) = oneshot::channel();
    let undo_late = undo.clone();
    actix_rt::spawn(async move {
        if let Err(Ok(v)) = tx.send(work.await) {
            undo_late(v);
        }
    });
    let mut pending = Pending {
        rx,
        undo: Some(undo),
    };
    async move {
        (&mut pending.rx)
            .await
            .unwrap_or_else(|_| Err(BrokerError::internal("the request's task ended")))
    }
}

/// The waiting side of [`detached`]; undoes a result that arrived but was never taken.
struct Pending<T, F: FnOnce(T)> {
    /// Where the task's result comes.
    rx: oneshot::Receiver<Result<T, BrokerError>>,
    /// Called with a result left in `rx` when dropped.
    undo: Option<F>,
}

impl<T, F: FnOnce(T)> Drop for Pending<T, F> {
    fn drop(&mut self) {
        // Closed first: from here on the task's send fails and the task undoes.
        self.rx.close();
        if let (Ok(Ok(v)), Some(undo)) = (self.rx.try_recv(), self.undo.take()) {
            undo(v);
        }
    }
}

/// The operation's name as on the wire (logs and timeout errors).
pub(crate) fn op_name(op: &Op) -> &'static str {
    match op {
        Op::DeclareExchange { .. } => "declare_exchange",
        Op::DeleteExchange { .. } => "delete_exchange",
        Op::DeclareQueue { .. } => "declare_queue",
        Op::DeleteQueue { .. } => "delete_queue",
        Op::PurgeQueue { .. } => "purge_queue",
        Op::Bind { .. } => "bind",
        Op::Unbind { .. } => "unbind",
        Op::BindExchange { .. } => "bind_exchange",
        Op::UnbindExchange { .. } => "unbind_exchange",
        Op::Consume { .. } => "consume",
        Op::Cancel { .. } => "cancel",
        Op::Get { .. } => "get",
        Op::Close => "close",
        Op::DeclareSuperStream { .. } => "declare_super_stream",
        Op::DeleteSuperStream { .. } => "delete_super_stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use std::cell::Cell;
    use std::rc::Rc;

    #[actix_rt::test]
    async fn a_wait_that_never_ends_fails_naming_the_operation() {
        let limit = Duration::from_millis(10);
        let e = bounded("cancel", limit, std::future::pending::<Result<(), _>>())
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InternalError);
        assert!(
            e.message().starts_with("cancel got no answer within 10 ms"),
            "{e}"
        );
    }

    #[actix_rt::test]
    async fn an_answer_in_time_is_passed_on() {
        let got = bounded("get", Duration::from_secs(60), async { Ok(7) }).await;
        assert_eq!(got, Ok(7));
    }

    fn counter() -> (Rc<Cell<u32>>, impl FnOnce(u32) + Clone) {
        let undone = Rc::new(Cell::new(0));
        let u = undone.clone();
        (undone, move |v| u.set(u.get() + v))
    }

    #[actix_rt::test]
    async fn a_result_taken_is_not_undone() {
        let (undone, undo) = counter();
        assert_eq!(detached(async { Ok(5) }, undo).await, Ok(5));
        assert_eq!(undone.get(), 0);
    }

    /// Yields until `cond` holds (the spawned task runs on this thread).
    async fn until(cond: impl Fn() -> bool) {
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(std::time::Instant::now() < end, "condition not reached");
            tokio::task::yield_now().await;
        }
    }

    #[actix_rt::test]
    async fn a_result_nobody_waits_for_is_undone_once() {
        // Given up before the work finished: the task undoes.
        let (undone, undo) = counter();
        let (go, wait) = oneshot::channel::<()>();
        let fut = detached(
            async move {
                let _ = wait.await;
                Ok(3)
            },
            undo,
        );
        drop(fut);
        let _ = go.send(());
        until(|| undone.get() == 3).await;
        // Finished (most likely) but never taken: the drop undoes, or the task does.
        let (undone, undo) = counter();
        let fut = detached(async { Ok(4) }, undo);
        tokio::task::yield_now().await;
        drop(fut);
        until(|| undone.get() == 4).await;
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        assert_eq!(undone.get(), 4, "undone once");
    }
}
