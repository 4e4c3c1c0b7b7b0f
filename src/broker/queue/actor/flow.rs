//! A queue's flow control over its publishers' answers: above the flow threshold the
//! queue holds each publisher's answer until it reopens, so publishers' windows fill
//! and they stop (docs/ARCHITECTURE.md, backpressure).

/// Longest a queue holds the answer of a publisher that is also one of its consumers
/// with acks, while the queue is over the flow threshold (see `flow_should_close`):
/// that publisher's acks wait unread behind its held publishes, so an unbounded hold
/// could lock it for good. Every other publisher is held until the flow reopens.
pub(super) const FLOW_MAX_HOLD: std::time::Duration = std::time::Duration::from_millis(200);

/// Closes the queue's flow (if open) and answers what a publisher's answer waits on
/// until it reopens: see [`hold_until_reopened`].
pub(super) fn close_flow(
    flow: &tokio::sync::watch::Sender<bool>,
) -> tokio::sync::watch::Receiver<bool> {
    flow.send_if_modified(|open| std::mem::replace(open, false));
    flow.subscribe()
}

/// Waits until the flow `rx` watches reopens: a publisher that also consumes from the
/// queue with acks (`own_acks`) at most [`FLOW_MAX_HOLD`], since its acks wait unread
/// behind its held publishes; it is slowed, never stuck.
pub(super) async fn hold_until_reopened(
    mut rx: tokio::sync::watch::Receiver<bool>,
    own_acks: bool,
) {
    let reopened = rx.wait_for(|open| *open);
    if own_acks {
        let _ = tokio::time::timeout(FLOW_MAX_HOLD, reopened).await;
    } else {
        let _ = reopened.await;
    }
}
