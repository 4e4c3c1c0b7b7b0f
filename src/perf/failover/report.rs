//! A failover run's report: its figures, and the human-readable table.

use super::history::{self, Gaps, HistoryCheck};
use super::{Clock, FailoverReport};
use crate::perf::{percentiles, Latency, PerfArgs, PerfReport};
use std::time::{Duration, Instant};

/// The report of a run: the publisher's counts in `f`, the gaps, the check.
#[allow(clippy::too_many_arguments)]
pub fn finish(
    args: PerfArgs,
    mut f: FailoverReport,
    gaps: Gaps,
    clock: Clock,
    latency: hdrhistogram::Histogram<u64>,
    secs: f64,
    end: Instant,
    depth: u64,
    check: Result<HistoryCheck, String>,
) -> Result<PerfReport, String> {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    f.failovers_ms = gaps.failovers.iter().map(|d| ms(*d)).collect();
    f.failover_ms = f.failovers_ms.first().copied();
    f.recovered_unix_ms = gaps.recovered_at.map(|t| clock.unix_ms(t));
    f.unrecovered_ms = gaps.unrecovered(end).map(ms);
    if let Some((gap, from, to)) = gaps.max {
        f.max_confirm_gap_ms = ms(gap);
        f.max_gap_from_unix_ms = clock.unix_ms(from);
        f.max_gap_to_unix_ms = clock.unix_ms(to);
    }
    match check {
        Ok(c) => f.check = Some(c),
        Err(e) => f.check_error = Some(e),
    }
    let conf: Latency = percentiles(&latency);
    Ok(PerfReport {
        published_per_sec: f.published as f64 / secs,
        confirmed_per_sec: f.confirmed as f64 / secs,
        consumed_per_sec: 0.0,
        latency_us: Latency::default(),
        confirm_latency_us: Some(conf),
        queue_depth_end: depth,
        broker_cpu_cores: None,
        broker_us_per_msg: None,
        broker_peak_rss: None,
        client_cpu_cores: None,
        publish_failures: f.nacked,
        // The failover run counts what was never confirmed in its own report.
        unconfirmed_at_end: 0,
        failover: Some(f),
        options: args,
    })
}

impl FailoverReport {
    /// The human-readable table of a failover run.
    pub fn table(&self, r: &PerfReport) -> String {
        let mut s = format!(
            "failover run: size {} B, confirm window {}, queue type {:?}\n",
            r.options.size.max(history::HEADER),
            r.options.confirm_window,
            r.options.queue_type
        );
        s.push_str(&format!("confirmed/s   {:>12.0}\n", r.confirmed_per_sec));
        if let Some(c) = &r.confirm_latency_us {
            s.push_str(&format!(
                "confirm µs    p50 {} p95 {} p99 {} p99.9 {} max {}\n",
                c.p50, c.p95, c.p99, c.p999, c.max
            ));
        }
        s.push_str(&format!(
            "published {} confirmed {} nacked {} lost with a connection {} republished {} unconfirmed at end {}\n",
            self.published, self.confirmed, self.nacked, self.lost_with_connection, self.republished, self.unconfirmed_at_end
        ));
        s.push_str(&format!("reconnects {}\n", self.reconnects));
        for e in &self.errors {
            s.push_str(&format!("  connection failed: {e}\n"));
        }
        match self.failover_ms {
            Some(f) => s.push_str(&format!(
                "failover      {f:.0} ms (last confirm before the failure to the first after)\n"
            )),
            None => match self.unrecovered_ms {
                Some(u) => s.push_str(&format!(
                "failover      over {u:.0} ms (no confirm after the failure before the run ended)\n"
            )),
                None => s.push_str("failover      - (the publisher's connection never failed)\n"),
            },
        }
        s.push_str(&format!(
            "longest confirm gap {:.0} ms\n",
            self.max_confirm_gap_ms
        ));
        if let Some(g) = &self.gave_up {
            s.push_str(&format!("gave up: {g}\n"));
        }
        match (&self.check, &self.check_error) {
            (Some(c), _) => s.push_str(&format!(
                "history check: consumed {} (distinct {}), confirmed and missing {}{}, duplicates {}, unconfirmed but present {}\n",
                c.consumed,
                c.distinct,
                c.confirmed_missing,
                if c.missing_sample.is_empty() { String::new() } else { format!(" e.g. {:?}", c.missing_sample) },
                c.duplicates,
                c.unconfirmed_present
            )),
            (None, Some(e)) => s.push_str(&format!("history check: could not consume the queue: {e}\n")),
            (None, None) => {}
        }
        s
    }
}
