//! The pure bookkeeping of a failover run: which ids were confirmed, the gaps between
//! confirms, and the check of what a queue gave back against what was confirmed.

use serde::Serialize;
use std::time::{Duration, Instant};

/// Bytes at the start of a failover run's body: the send time, then the message id.
pub const HEADER: usize = 16;

/// Writes the send time (ns since the run's epoch) and the id into `body`'s header.
pub fn stamp(body: &mut [u8], sent: u64, id: u64) {
    body[..8].copy_from_slice(&sent.to_le_bytes());
    body[8..16].copy_from_slice(&id.to_le_bytes());
}

/// The id a body was stamped with, none when it is too short to carry one.
pub fn id_of(body: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(body.get(8..16)?.try_into().ok()?))
}

/// Confirm times: the longest silence between two confirms, and for each connection
/// failure the time from the last confirm before it to the first confirm after it
/// (what a publisher sees of a failover).
#[derive(Debug, Default)]
pub struct Gaps {
    last: Option<Instant>,
    /// The last confirm before a failure not yet followed by a confirm (or the failure's
    /// own time when nothing was confirmed before it).
    open: Option<Instant>,
    /// Each failure's gap, in order.
    pub failovers: Vec<Duration>,
    /// When the first failure's gap ended (its first confirm).
    pub recovered_at: Option<Instant>,
    /// The longest gap between two confirms, and where it began and ended.
    pub max: Option<(Duration, Instant, Instant)>,
}

impl Gaps {
    /// A confirm arrived at `now`.
    pub fn confirm(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let gap = now.saturating_duration_since(last);
            if self.max.is_none_or(|(m, _, _)| gap > m) {
                self.max = Some((gap, last, now));
            }
        }
        if let Some(from) = self.open.take() {
            self.failovers.push(now.saturating_duration_since(from));
            self.recovered_at.get_or_insert(now);
        }
        self.last = Some(now);
    }

    /// How long a failure has gone without a confirm after it, at `end` (none when
    /// every failure was followed by a confirm).
    pub fn unrecovered(&self, end: Instant) -> Option<Duration> {
        self.open.map(|from| end.saturating_duration_since(from))
    }

    /// The connection failed at `now`; a second failure before the next confirm is
    /// part of the same failover.
    pub fn fail(&mut self, now: Instant) {
        if self.open.is_none() {
            self.open = Some(self.last.unwrap_or(now));
        }
    }
}

/// What was confirmed and what came back.
#[derive(Debug, Default)]
pub struct History {
    confirmed: Vec<bool>,
    seen: Vec<u32>,
    foreign: u64,
}

impl History {
    /// Message `id` was confirmed (again, maybe: a republished one).
    pub fn confirm(&mut self, id: u64) -> bool {
        let i = id as usize;
        if self.confirmed.len() <= i {
            self.confirmed.resize(i + 1, false);
        }
        !std::mem::replace(&mut self.confirmed[i], true)
    }

    /// The queue gave back message `id` (none: a body without an id); ids at or past
    /// `published` were not this run's.
    pub fn consumed(&mut self, id: Option<u64>, published: u64) {
        match id {
            Some(id) if id < published => {
                let i = id as usize;
                if self.seen.len() <= i {
                    self.seen.resize(i + 1, 0);
                }
                self.seen[i] += 1;
            }
            _ => self.foreign += 1,
        }
    }

    /// The check: every confirmed id must have come back.
    pub fn check(&self) -> HistoryCheck {
        let seen = |i: usize| self.seen.get(i).copied().unwrap_or(0);
        let missing: Vec<u64> = (0..self.confirmed.len())
            .filter(|&i| self.confirmed[i] && seen(i) == 0)
            .map(|i| i as u64)
            .collect();
        HistoryCheck {
            consumed: self.seen.iter().map(|n| u64::from(*n)).sum::<u64>() + self.foreign,
            distinct: self.seen.iter().filter(|n| **n > 0).count() as u64,
            confirmed_missing: missing.len() as u64,
            missing_sample: missing.into_iter().take(20).collect(),
            duplicates: self
                .seen
                .iter()
                .map(|n| u64::from(n.saturating_sub(1)))
                .sum(),
            unconfirmed_present: (0..self.seen.len())
                .filter(|&i| self.seen[i] > 0 && !self.confirmed.get(i).copied().unwrap_or(false))
                .count() as u64,
            foreign: self.foreign,
        }
    }
}

/// The history check of a failover run: the queue consumed to the end against the
/// confirmed ids.
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct HistoryCheck {
    /// Messages consumed.
    pub consumed: u64,
    /// Distinct ids among them.
    pub distinct: u64,
    /// Confirmed ids that did not come back: lost messages (must be 0).
    pub confirmed_missing: u64,
    /// The first of them.
    pub missing_sample: Vec<u64>,
    /// Copies beyond the first (a republish of a message whose confirm was lost with
    /// the connection: at-least-once, as with any broker).
    pub duplicates: u64,
    /// Ids that came back but were never confirmed (stored, their confirm lost).
    pub unconfirmed_present: u64,
    /// Bodies without one of this run's ids.
    pub foreign: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_and_a_short_body_has_no_id() {
        let mut b = vec![0u8; 32];
        stamp(&mut b, 7, 123_456_789);
        assert_eq!(id_of(&b), Some(123_456_789));
        assert_eq!(u64::from_le_bytes(b[..8].try_into().unwrap()), 7);
        assert_eq!(id_of(&b[..12]), None);
    }

    #[test]
    fn the_failover_runs_from_the_last_confirm_before_a_failure_to_the_first_after() {
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let mut g = Gaps::default();
        g.confirm(ms(0));
        g.confirm(ms(10));
        g.fail(ms(50));
        g.fail(ms(300)); // the reconnect failed too: the same failover
        g.confirm(ms(1210));
        g.confirm(ms(1220));
        assert_eq!(g.failovers, vec![Duration::from_millis(1200)]);
        assert_eq!(g.recovered_at, Some(ms(1210)));
        assert_eq!(g.unrecovered(ms(1230)), None);
        let (gap, from, to) = g.max.unwrap();
        assert_eq!(
            (gap, from, to),
            (Duration::from_millis(1200), ms(10), ms(1210))
        );
        // A later, shorter one is counted on its own; the longest gap stays.
        g.fail(ms(1300));
        g.confirm(ms(1400));
        assert_eq!(g.failovers.len(), 2);
        assert_eq!(g.failovers[1], Duration::from_millis(180));
        assert_eq!(g.max.unwrap().0, Duration::from_millis(1200));
        assert_eq!(g.recovered_at, Some(ms(1210)), "the first failover's end");
        // A failure nothing was confirmed after runs to the end of the run.
        g.fail(ms(1500));
        assert_eq!(g.unrecovered(ms(9400)), Some(Duration::from_millis(8000)));
    }

    #[test]
    fn a_failure_before_any_confirm_counts_from_the_failure() {
        let t = Instant::now();
        let mut g = Gaps::default();
        g.fail(t);
        g.confirm(t + Duration::from_millis(40));
        assert_eq!(g.failovers, vec![Duration::from_millis(40)]);
        assert!(g.max.is_none());
    }

    #[test]
    fn the_check_finds_a_lost_confirmed_message_duplicates_and_strays() {
        let mut h = History::default();
        for id in [0, 1, 2, 4] {
            assert!(h.confirm(id));
        }
        assert!(!h.confirm(2), "a second confirm of one id is not a new one");
        for id in [0, 1, 1, 3, 4] {
            h.consumed(Some(id), 5);
        }
        h.consumed(Some(99), 5);
        h.consumed(None, 5);
        let c = h.check();
        assert_eq!(
            c,
            HistoryCheck {
                consumed: 7,
                distinct: 4,
                confirmed_missing: 1,
                missing_sample: vec![2],
                duplicates: 1,
                unconfirmed_present: 1,
                foreign: 2,
            }
        );
    }

    #[test]
    fn everything_back_passes() {
        let mut h = History::default();
        for id in 0..1000 {
            h.confirm(id);
            h.consumed(Some(id), 1000);
        }
        let c = h.check();
        assert_eq!(c.confirmed_missing, 0);
        assert_eq!((c.consumed, c.distinct, c.duplicates), (1000, 1000, 0));
    }
}
