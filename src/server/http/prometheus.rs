//! The Prometheus text exposition format (version 0.0.4), written by hand.
//!
//! Why not the `prometheus` or `metrics` crates: both model metrics as registered
//! objects that code updates as events happen, then render. Here every value is read
//! from the actors at scrape time and then thrown away (DESIGN.md: statistics are read
//! when asked), so a registry would be rebuilt per scrape only to be rendered once. The
//! format itself is small: `# HELP`, `# TYPE`, then `name{label="value"} number` lines,
//! with three characters escaped in label values. This module writes exactly that.

use std::fmt::Write;

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A total that only grows (its name ends in `_total`).
    Counter,
    /// Counts of observations in cumulative buckets (`_bucket{le=...}`, `_sum`,
    /// `_count`).
    Histogram,
}

/// A page of metrics being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

/// The content type Prometheus expects for this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Exposition {
    /// An empty page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. Its samples follow.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) -> &mut Self {
        self.sample_value(name, labels, &value.to_string())
    }

    /// One sample with a fractional value (seconds, bounds).
    pub fn sample_f64(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.sample_value(name, labels, &float(value))
    }

    /// A histogram family: `buckets` are (upper bound, cumulative count) without the
    /// `+Inf` one, which is `count`.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        buckets: &[(f64, u64)],
        count: u64,
        sum: f64,
    ) -> &mut Self {
        self.family(name, Kind::Histogram, help);
        let bucket = format!("{name}_bucket");
        for (le, n) in buckets {
            self.sample(&bucket, &[("le", &float(*le))], *n);
        }
        self.sample(&bucket, &[("le", "+Inf")], count)
            .sample_f64(&format!("{name}_sum"), &[], sum)
            .sample(&format!("{name}_count"), &[], count)
    }

    fn sample_value(&mut self, name: &str, labels: &[(&str, &str)], value: &str) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(value);
        self.out.push('\n');
        self
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: u64) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// The finished page.
    pub fn finish(self) -> String {
        self.out
    }
}

/// A float as the format writes it (`NaN`, `+Inf`, `-Inf`, or plain decimal).
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        v.to_string()
    }
}

/// Label values escape backslash, double quote and line feed.
fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_samples_are_written_in_the_text_format() {
        let mut e = Exposition::new();
        e.single("up_total", Kind::Counter, "Things.", 3);
        e.family("depth", Kind::Gauge, "Ready messages.").sample(
            "depth",
            &[("vhost", "/"), ("queue", "q")],
            7,
        );
        assert_eq!(
            e.finish(),
            "# HELP up_total Things.\n# TYPE up_total counter\nup_total 3\n\
             # HELP depth Ready messages.\n# TYPE depth gauge\ndepth{vhost=\"/\",queue=\"q\"} 7\n"
        );
    }

    #[test]
    fn a_histogram_has_cumulative_buckets_a_sum_and_a_count() {
        let mut e = Exposition::new();
        e.histogram("lat_seconds", "Latency.", &[(0.001, 2), (0.01, 3)], 4, 1.5);
        assert_eq!(
            e.finish(),
            "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n\
             lat_seconds_bucket{le=\"0.001\"} 2\nlat_seconds_bucket{le=\"0.01\"} 3\n\
             lat_seconds_bucket{le=\"+Inf\"} 4\nlat_seconds_sum 1.5\nlat_seconds_count 4\n"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut e = Exposition::new();
        e.family("m", Kind::Gauge, "a\\b\nc")
            .sample("m", &[("queue", "a\"b\\c\nd")], 1);
        assert_eq!(
            e.finish(),
            "# HELP m a\\\\b\\nc\n# TYPE m gauge\nm{queue=\"a\\\"b\\\\c\\nd\"} 1\n"
        );
    }
}
