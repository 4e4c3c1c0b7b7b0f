//! Publisher confirms: the bookkeeping of outstanding publishes ([`ConfirmTracker`],
//! pure and synchronous) and the [`PublishConfirm`] future a publish hands back.
//!
//! A confirm-tracked publish gets a sequence number (1, 2, 3, ... per connection); the
//! broker answers each with `Confirm` (possibly `multiple`, settling every outstanding
//! number up to it), `Nack`, and before the confirm of an unroutable `mandatory`
//! message, a `Return`.

use super::error::ClientError;
use crate::message::Properties;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::oneshot;

/// A `mandatory` message that reached no queue, given back by the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Returned {
    /// AMQP reply code: 312 (NO_ROUTE).
    pub code: u16,
    /// Reply text, e.g. `NO_ROUTE`.
    pub reason: String,
    /// The exchange it was published to.
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
    /// Its properties.
    pub properties: Properties,
    /// Its body.
    pub body: Bytes,
}

/// The broker's positive answer to one publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Confirmation {
    /// The publish's sequence number; 0 for a publish sent without a confirm (which
    /// resolves at once, as soon as it is queued for the socket).
    pub seq: u64,
    /// For a `mandatory` message that reached no queue: the message, back. The broker
    /// still confirms it (it is safely nowhere).
    pub returned: Option<Returned>,
}

impl Confirmation {
    /// True when the broker confirmed this publish (it asked for a confirm).
    pub fn is_confirmed(&self) -> bool {
        self.seq > 0
    }

    /// True when the message came back unrouted.
    pub fn is_returned(&self) -> bool {
        self.returned.is_some()
    }
}

type ConfirmResult = Result<Confirmation, ClientError>;

/// Resolves when the broker confirms (or refuses) one publish.
///
/// Awaiting it is optional: dropping it does not cancel the publish. With confirms off
/// it is ready at once with [`Confirmation::seq`] 0.
#[must_use = "await it to learn whether the broker took the message (`let _ =` to fire and forget)"]
#[derive(Debug)]
pub struct PublishConfirm {
    seq: u64,
    state: ConfirmState,
}

#[derive(Debug)]
enum ConfirmState {
    /// No confirm asked for: ready at once.
    Untracked,
    /// Awaiting the broker.
    Waiting(oneshot::Receiver<ConfirmResult>),
    /// Already resolved.
    Done,
}

impl PublishConfirm {
    pub(crate) fn untracked() -> Self {
        PublishConfirm {
            seq: 0,
            state: ConfirmState::Untracked,
        }
    }

    pub(crate) fn waiting(seq: u64, rx: oneshot::Receiver<ConfirmResult>) -> Self {
        PublishConfirm {
            seq,
            state: ConfirmState::Waiting(rx),
        }
    }

    /// The publish's sequence number (0 when no confirm was asked for).
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

impl Future for PublishConfirm {
    type Output = ConfirmResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ConfirmResult> {
        let result = match &mut self.state {
            ConfirmState::Untracked => Ok(Confirmation {
                seq: 0,
                returned: None,
            }),
            ConfirmState::Waiting(rx) => match Pin::new(rx).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r.unwrap_or(Err(ClientError::Closed)),
            },
            ConfirmState::Done => panic!("PublishConfirm polled after completion"),
        };
        self.state = ConfirmState::Done;
        Poll::Ready(result)
    }
}

/// One publish awaiting its confirm.
#[derive(Debug)]
struct Outstanding {
    /// Where the answer goes.
    tx: oneshot::Sender<ConfirmResult>,
    /// The message, if the broker returned it (a confirm follows).
    returned: Option<Returned>,
}

/// Outstanding confirm-tracked publishes of one connection, by sequence number.
///
/// Each method answers how many publishes it settled, so the caller can give that many
/// slots back to the publish window.
#[derive(Debug)]
pub(crate) struct ConfirmTracker {
    /// The sequence number the next tracked publish gets.
    next_seq: u64,
    /// Publishes sent and not yet answered.
    outstanding: BTreeMap<u64, Outstanding>,
}

impl Default for ConfirmTracker {
    fn default() -> Self {
        ConfirmTracker {
            next_seq: 1,
            outstanding: BTreeMap::new(),
        }
    }
}

impl ConfirmTracker {
    /// The sequence number the next publish will carry (not yet taken).
    pub(crate) fn peek_seq(&self) -> u64 {
        self.next_seq
    }

    /// Takes [`peek_seq`](Self::peek_seq) for a publish that has been queued.
    pub(crate) fn track(&mut self) -> (u64, PublishConfirm) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let (tx, rx) = oneshot::channel();
        self.outstanding
            .insert(seq, Outstanding { tx, returned: None });
        (seq, PublishConfirm::waiting(seq, rx))
    }

    /// Publishes awaiting an answer.
    #[cfg(test)]
    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// The broker confirmed `seq`, or with `multiple` every outstanding one up to it.
    pub(crate) fn confirm(&mut self, seq: u64, multiple: bool) -> usize {
        let settled = self.take(seq, multiple);
        let n = settled.len();
        for (seq, o) in settled {
            let _ = o.tx.send(Ok(Confirmation {
                seq,
                returned: o.returned,
            }));
        }
        n
    }

    /// The broker refused `seq`.
    pub(crate) fn nack(&mut self, seq: u64, error: ClientError) -> usize {
        match self.outstanding.remove(&seq) {
            Some(o) => {
                let _ = o.tx.send(Err(error));
                1
            }
            None => 0,
        }
    }

    /// The broker returned `seq` unrouted; its confirm follows. False when `seq` is not
    /// outstanding.
    pub(crate) fn returned(&mut self, seq: u64, returned: Returned) -> bool {
        match self.outstanding.get_mut(&seq) {
            Some(o) => {
                o.returned = Some(returned);
                true
            }
            None => false,
        }
    }

    /// The connection is gone: every outstanding publish fails with `error`.
    pub(crate) fn fail_all(&mut self, error: &ClientError) -> usize {
        let all = std::mem::take(&mut self.outstanding);
        let n = all.len();
        for (_, o) in all {
            let _ = o.tx.send(Err(error.clone()));
        }
        n
    }

    fn take(&mut self, seq: u64, multiple: bool) -> Vec<(u64, Outstanding)> {
        if multiple {
            let rest = self.outstanding.split_off(&(seq + 1));
            std::mem::replace(&mut self.outstanding, rest)
                .into_iter()
                .collect()
        } else {
            self.outstanding
                .remove(&seq)
                .map(|o| vec![(seq, o)])
                .unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use futures_util::FutureExt;

    fn ready(c: &mut PublishConfirm) -> Option<ConfirmResult> {
        c.now_or_never()
    }

    #[test]
    fn sequence_numbers_start_at_one_and_increase() {
        let mut t = ConfirmTracker::default();
        assert_eq!(t.peek_seq(), 1);
        let (a, _ca) = t.track();
        let (b, _cb) = t.track();
        assert_eq!((a, b), (1, 2));
        assert_eq!(t.peek_seq(), 3);
    }

    #[test]
    fn a_multiple_confirm_settles_everything_up_to_its_seq() {
        let mut t = ConfirmTracker::default();
        let mut c: Vec<_> = (0..5).map(|_| t.track().1).collect();
        assert_eq!(t.confirm(3, true), 3);
        for c in &mut c[..3] {
            assert!(ready(c).unwrap().unwrap().is_confirmed());
        }
        assert!(ready(&mut c[3]).is_none());
        assert_eq!(t.outstanding(), 2);
        assert_eq!(t.confirm(3, true), 0, "already settled");
        assert_eq!(t.confirm(5, false), 1);
        assert!(ready(&mut c[3]).is_none());
        assert_eq!(ready(&mut c[4]).unwrap().unwrap().seq, 5);
    }

    #[test]
    fn a_nack_fails_only_its_publish_with_the_broker_code() {
        let mut t = ConfirmTracker::default();
        let (_, mut a) = t.track();
        let (_, mut b) = t.track();
        assert_eq!(
            t.nack(2, ClientError::server(ErrorCode::NotFound, "no x")),
            1
        );
        let e = ready(&mut b).unwrap().unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::NotFound));
        assert!(ready(&mut a).is_none());
        assert_eq!(t.nack(2, ClientError::Closed), 0);
    }

    #[test]
    fn a_return_rides_on_the_following_confirm() {
        let mut t = ConfirmTracker::default();
        let (seq, mut c) = t.track();
        let r = Returned {
            code: 312,
            reason: "NO_ROUTE".into(),
            exchange: "x".into(),
            routing_key: "k".into(),
            properties: Properties::default(),
            body: Bytes::from_static(b"b"),
        };
        assert!(t.returned(seq, r.clone()));
        assert!(!t.returned(99, r.clone()));
        assert!(ready(&mut c).is_none(), "a return alone settles nothing");
        t.confirm(seq, false);
        assert_eq!(ready(&mut c).unwrap().unwrap().returned, Some(r));
    }

    #[test]
    fn failing_all_settles_every_outstanding_publish() {
        let mut t = ConfirmTracker::default();
        let mut c: Vec<_> = (0..3).map(|_| t.track().1).collect();
        assert_eq!(t.fail_all(&ClientError::Closed), 3);
        for c in &mut c {
            assert!(matches!(ready(c), Some(Err(ClientError::Closed))));
        }
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn an_untracked_publish_is_ready_at_once() {
        let mut c = PublishConfirm::untracked();
        assert_eq!(c.seq(), 0);
        let got = ready(&mut c).unwrap().unwrap();
        assert!(!got.is_confirmed());
    }
}
