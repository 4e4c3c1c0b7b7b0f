//! What becomes of publish entries that were in flight together when the first of
//! them came back not committed because its member did not (or no longer) lead.
//!
//! Why a rule is needed: with two entries in flight, the first may be refused (its
//! member had just lost the lead) while the second, proposed after, is accepted once
//! the member leads again and commits. Writing the first again would then put it
//! *behind* the second in the queue: publishes from one channel out of order. So an
//! entry refused with an entry after it committed is nacked instead (the client's
//! confirm says so and nothing is lost silently); the refused entries after the last
//! committed one are written again, in order, through whichever member leads.
//!
//! Refused means never committed: openraft answers a proposal whose entry was
//! truncated, or that was never appended, with `ForwardToLeader`; a proposal whose
//! entry a later leader commits is answered with its result on this member too.

use crate::cluster::quorum::group::GroupResponse;
use crate::cluster::quorum::wire::GroupWriteError;

/// What to do with one entry's publishes.
#[derive(Debug, PartialEq)]
pub enum Then {
    /// Committed: confirm each with its id.
    Confirm(GroupResponse),
    /// Not committed and not to be written again: nack each with this reason.
    Nack(String),
    /// Not committed, nothing after it committed: write it again, in this order.
    Retry,
}

/// The fate of entries proposed in this order, from their answers.
pub fn settle(answers: Vec<Result<GroupResponse, GroupWriteError>>) -> Vec<Then> {
    let last_committed = answers.iter().rposition(|a| a.is_ok());
    answers
        .into_iter()
        .enumerate()
        .map(|(i, a)| match a {
            Ok(r) => Then::Confirm(r),
            Err(GroupWriteError::Failed(e)) => Then::Nack(e),
            Err(GroupWriteError::NotLeader(_)) if last_committed.is_some_and(|c| i < c) => {
                Then::Nack(
                    "not committed (the queue's leader changed) while a later publish was: \
                     written again it would follow that one"
                        .into(),
                )
            }
            Err(GroupWriteError::NotLeader(_)) => Then::Retry,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ids: &[u64]) -> Result<GroupResponse, GroupWriteError> {
        Ok(GroupResponse {
            enqueued: ids.iter().map(|i| Some(*i)).collect(),
            ..Default::default()
        })
    }

    fn refused() -> Result<GroupResponse, GroupWriteError> {
        Err(GroupWriteError::NotLeader(Some("127.0.0.1:1".into())))
    }

    fn kinds(t: &[Then]) -> Vec<&'static str> {
        t.iter()
            .map(|t| match t {
                Then::Confirm(_) => "confirm",
                Then::Nack(_) => "nack",
                Then::Retry => "retry",
            })
            .collect()
    }

    #[test]
    fn refused_entries_with_nothing_committed_after_them_are_written_again_in_order() {
        let t = settle(vec![refused(), refused()]);
        assert_eq!(kinds(&t), ["retry", "retry"]);
        let t = settle(vec![ok(&[1, 2]), refused()]);
        assert_eq!(kinds(&t), ["confirm", "retry"]);
        assert_eq!(t[0], Then::Confirm(ok(&[1, 2]).unwrap()));
    }

    #[test]
    fn a_refused_entry_before_a_committed_one_is_nacked_not_written_behind_it() {
        let t = settle(vec![refused(), ok(&[7])]);
        assert_eq!(kinds(&t), ["nack", "confirm"]);
        let t = settle(vec![refused(), ok(&[7]), refused()]);
        assert_eq!(kinds(&t), ["nack", "confirm", "retry"]);
    }

    #[test]
    fn a_failed_entry_is_nacked_with_its_reason_wherever_it_is() {
        let failed = || Err(GroupWriteError::Failed("not committed within 10s".into()));
        let t = settle(vec![failed(), refused()]);
        assert_eq!(t[0], Then::Nack("not committed within 10s".into()));
        assert_eq!(t[1], Then::Retry);
    }
}
