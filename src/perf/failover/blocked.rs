//! The broker's resource alarms as a failover run sees them. A broker whose memory or
//! disk alarm is raised tells its publishing connections `connection.blocked` and reads
//! no more of their publishes until `connection.unblocked`: no confirm comes, on any
//! node of a cluster whose every member holds the queue. That silence is no failure of
//! the connection, and moving to another server does not end it: the run waits it out
//! and reports it apart from the failovers (a run without a consumer fills a queue
//! held in memory to the watermark: 1 GiB by default, about 700k messages of 1 KiB,
//! 10 s after the start at full speed, which the first cluster benchmark took for a
//! second failover).

use std::time::{Duration, Instant};

/// The spans the publisher's connection was blocked by the broker.
#[derive(Debug, Default)]
pub struct Blocked {
    since: Option<Instant>,
    /// The spans that ended: from, to.
    pub spans: Vec<(Instant, Instant)>,
}

impl Blocked {
    /// The connection is `blocked` (or not) at `now`; answers `blocked`.
    pub fn observe(&mut self, blocked: bool, now: Instant) -> bool {
        match (self.since, blocked) {
            (None, true) => self.since = Some(now),
            (Some(from), false) => {
                self.spans.push((from, now));
                self.since = None;
            }
            _ => {}
        }
        blocked
    }

    /// Ends a span still open at `end` (the connection failed, or the run ended).
    pub fn close(&mut self, end: Instant) {
        if let Some(from) = self.since.take() {
            self.spans.push((from, end));
        }
    }

    /// The time blocked, the spans that ended.
    pub fn total(&self) -> Duration {
        self.spans.iter().map(|(from, to)| *to - *from).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_counted_from_the_first_blocked_sight_to_the_first_unblocked() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut b = Blocked::default();
        assert!(!b.observe(false, at(0)));
        assert!(b.observe(true, at(100)));
        b.observe(true, at(300));
        b.observe(false, at(400));
        b.observe(false, at(500));
        b.observe(true, at(1000));
        assert_eq!(
            b.total(),
            Duration::from_millis(300),
            "the open span not yet"
        );
        b.close(at(1250));
        b.close(at(2000));
        assert_eq!(b.spans, vec![(at(100), at(400)), (at(1000), at(1250))]);
        assert_eq!(b.total(), Duration::from_millis(550));
    }
}
