//! What a run measured, and its table and JSON forms.

use super::{FailoverReport, PerfArgs};
use serde::Serialize;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct PerfReport {
    /// The options of the run.
    pub options: PerfArgs,
    /// Publishes per second in the measured window.
    pub published_per_sec: f64,
    /// Confirms per second in the measured window.
    pub confirmed_per_sec: f64,
    /// Deliveries consumed per second in the measured window.
    pub consumed_per_sec: f64,
    /// End-to-end latency (publish to consume) in the measured window.
    pub latency_us: Latency,
    /// Confirm latency (publish to confirm) when confirms were on.
    pub confirm_latency_us: Option<Latency>,
    /// Messages left in the queues at the end.
    pub queue_depth_end: u64,
    /// Broker CPU over the measured window, in cores.
    pub broker_cpu_cores: Option<f64>,
    /// Broker CPU per message in the measured window, in microseconds: per consumed
    /// message, or per confirmed (else published) one when nothing was consumed. The
    /// figure to compare when the client, not the broker, sets the rate.
    pub broker_us_per_msg: Option<f64>,
    /// Highest broker RSS sampled, bytes.
    pub broker_peak_rss: Option<u64>,
    /// This tool's CPU over the measured window, in cores.
    pub client_cpu_cores: Option<f64>,
    /// Publishes the broker refused (nacks) or returned.
    pub publish_failures: u64,
    /// Publishes whose confirm had not come when the run ended, after waiting for
    /// it a while (a broker holding its publishers back may keep them longer).
    pub unconfirmed_at_end: u64,
    /// What the failover mode (`--failover`) measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverReport>,
}

impl PerfReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        if let Some(f) = &self.failover {
            return f.table(self);
        }
        let o = &self.options;
        let mut s = String::new();
        s.push_str(&format!(
            "producers {} consumers {} queues {} exchange {:?} size {} B rate {} confirm {} persistent {} prefetch {} auto-ack {} multi-ack {}\n",
            o.producers, o.consumers, o.queues, o.exchange_type, o.size, o.rate, o.confirm, o.persistent, o.prefetch, o.auto_ack, o.multi_ack
        ));
        s.push_str(&format!("published/s   {:>12.0}\n", self.published_per_sec));
        if o.confirm {
            s.push_str(&format!("confirmed/s   {:>12.0}\n", self.confirmed_per_sec));
        }
        s.push_str(&format!("consumed/s    {:>12.0}\n", self.consumed_per_sec));
        let l = &self.latency_us;
        s.push_str(&format!(
            "latency µs    p50 {} p95 {} p99 {} p99.9 {} max {}\n",
            l.p50, l.p95, l.p99, l.p999, l.max
        ));
        if let Some(c) = &self.confirm_latency_us {
            s.push_str(&format!(
                "confirm µs    p50 {} p95 {} p99 {} p99.9 {} max {}\n",
                c.p50, c.p95, c.p99, c.p999, c.max
            ));
        }
        s.push_str(&format!("queue depth at end {}\n", self.queue_depth_end));
        if let Some(c) = self.broker_cpu_cores {
            s.push_str(&format!("broker CPU    {c:.2} cores\n"));
        }
        if let Some(u) = self.broker_us_per_msg {
            s.push_str(&format!("broker CPU    {u:.2} µs per message\n"));
        }
        if let Some(r) = self.broker_peak_rss {
            s.push_str(&format!(
                "broker peak RSS {:.1} MiB\n",
                r as f64 / 1048576.0
            ));
        }
        if let Some(c) = self.client_cpu_cores {
            s.push_str(&format!("perf client CPU {c:.2} cores\n"));
        }
        if self.publish_failures > 0 {
            s.push_str(&format!(
                "publish failures (nacks, returns) {}\n",
                self.publish_failures
            ));
        }
        if self.unconfirmed_at_end > 0 {
            s.push_str(&format!(
                "confirms not received by the end {}\n",
                self.unconfirmed_at_end
            ));
        }
        s
    }

    /// The JSON report.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }
}
