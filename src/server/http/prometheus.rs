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
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) -> &mut Self {
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
        let _ = writeln!(self.out, " {value}");
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
