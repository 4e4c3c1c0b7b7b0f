//! RabbitMQ's permission model as values: per user and virtual host three regular
//! expressions ([`Permission`]: `configure`, `write`, `read`) on resource names, and per
//! user, virtual host and topic exchange two more ([`TopicPermission`]: `write`, `read`)
//! on routing keys.
//!
//! Matching is RabbitMQ's (`re:run` with no options): a pattern matches when it matches
//! *anywhere* in the name, so `^` and `$` anchor only when written; the empty pattern
//! is a synonym of `^$`, which matches no resource (no queue or exchange is named "":
//! the default exchange is checked as `amq.default`). Topic patterns may name
//! `{username}`, `{vhost}` and `{client_id}`; they are replaced by the connection's
//! values, regex-escaped (RabbitMQ escapes them since 3.8), and a variable the
//! connection has no value for (`{client_id}` outside MQTT) stays as literal text.
//!
//! Patterns are compiled once when set (an invalid one is PRECONDITION_FAILED naming
//! it), so a check is one regex match, and the channel caches its decisions.

use crate::error::{clip, BrokerError};
use regex::Regex;
use std::fmt;

/// One of the three kinds of access RabbitMQ tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Perm {
    /// Create, delete or change a resource.
    Configure,
    /// Put messages into a resource (publish to an exchange, bind a queue).
    Write,
    /// Take messages out of a resource (consume, get, purge, bind from an exchange).
    Read,
}

impl Perm {
    /// The word in RabbitMQ's refusals (`configure`, `write`, `read`).
    pub fn as_str(self) -> &'static str {
        match self {
            Perm::Configure => "configure",
            Perm::Write => "write",
            Perm::Read => "read",
        }
    }
}

/// A compiled permission pattern that remembers its source (stored, exported and
/// compared as written).
#[derive(Clone)]
pub struct Pattern {
    source: String,
    regex: Regex,
}

impl Pattern {
    /// Compiles `source`; the empty string is `^$` (as in RabbitMQ). `what` names the
    /// field in the error.
    ///
    /// ```
    /// use actormq::definitions::Pattern;
    /// let p = Pattern::new("^app\\.", "configure").unwrap();
    /// assert!(p.is_match("app.jobs"));
    /// assert!(!p.is_match("other.app.jobs"));
    /// // Unanchored: matches anywhere, as RabbitMQ's re:run does.
    /// assert!(Pattern::new("jobs", "read").unwrap().is_match("app.jobs.eu"));
    /// // The empty pattern matches no resource.
    /// assert!(!Pattern::new("", "write").unwrap().is_match("amq.default"));
    /// assert!(Pattern::new("(", "read").is_err());
    /// ```
    pub fn new(source: &str, what: &str) -> Result<Pattern, BrokerError> {
        let effective = if source.is_empty() { "^$" } else { source };
        let regex = Regex::new(effective).map_err(|e| {
            BrokerError::precondition(format!("invalid {what} pattern '{}': {e}", clip(source)))
        })?;
        Ok(Pattern {
            source: source.to_string(),
            regex,
        })
    }

    /// `.*`: everything.
    pub fn all() -> Pattern {
        Pattern::new(".*", "").expect(".* compiles")
    }

    /// True when the pattern matches anywhere in `name`.
    pub fn is_match(&self, name: &str) -> bool {
        self.regex.is_match(name)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

/// What a user may do in one virtual host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    /// Names of the queues and exchanges it may declare, delete and change.
    pub configure: Pattern,
    /// Names of the exchanges it may publish to, and queues and exchanges it may bind.
    pub write: Pattern,
    /// Names of the queues it may consume, get from and purge, and exchanges it may
    /// bind from.
    pub read: Pattern,
}

impl Permission {
    /// Compiles the three patterns (an invalid one is PRECONDITION_FAILED naming it).
    pub fn new(configure: &str, write: &str, read: &str) -> Result<Permission, BrokerError> {
        Ok(Permission {
            configure: Pattern::new(configure, "configure")?,
            write: Pattern::new(write, "write")?,
            read: Pattern::new(read, "read")?,
        })
    }

    /// `.*` three times: everything (what a grant written before patterns existed means).
    pub fn all() -> Permission {
        Permission {
            configure: Pattern::all(),
            write: Pattern::all(),
            read: Pattern::all(),
        }
    }

    /// True when it is `.*` three times.
    pub fn is_all(&self) -> bool {
        *self == Permission::all()
    }

    /// The pattern of `perm`.
    pub fn pattern(&self, perm: Perm) -> &Pattern {
        match perm {
            Perm::Configure => &self.configure,
            Perm::Write => &self.write,
            Perm::Read => &self.read,
        }
    }
}

/// What a user may do with routing keys on one topic exchange of one virtual host.
/// The patterns are kept as written: their variables are expanded per connection
/// ([`TopicPermission::compile`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPermission {
    /// Routing keys it may publish with.
    pub write: String,
    /// Binding keys it may bind with (queues or exchanges to this exchange).
    pub read: String,
}

/// The values a connection gives the variables of topic patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicVariables {
    /// `{username}`.
    pub username: String,
    /// `{vhost}`.
    pub vhost: String,
    /// `{client_id}`, when the protocol has one (RabbitMQ: MQTT only).
    pub client_id: Option<String>,
}

impl TopicPermission {
    /// Checks that both patterns compile (with sample values for the variables).
    pub fn new(write: &str, read: &str) -> Result<TopicPermission, BrokerError> {
        let t = TopicPermission {
            write: write.to_string(),
            read: read.to_string(),
        };
        let sample = TopicVariables {
            username: "u".into(),
            vhost: "v".into(),
            client_id: Some("c".into()),
        };
        t.compile(Perm::Write, &sample)?;
        t.compile(Perm::Read, &sample)?;
        // Unexpanded variables must compile too (they stay literal).
        t.compile(Perm::Write, &TopicVariables::default())?;
        Ok(t)
    }

    /// The pattern of `perm` (`Write` or `Read`) with `vars` expanded, compiled. The
    /// empty pattern is `^$`: it allows the empty routing key only (RabbitMQ's rule).
    pub fn compile(&self, perm: Perm, vars: &TopicVariables) -> Result<Pattern, BrokerError> {
        let source = match perm {
            Perm::Read => &self.read,
            _ => &self.write,
        };
        let source = if source.is_empty() { "^$" } else { source };
        Pattern::new(&expand(source, vars), perm.as_str())
    }
}

/// Replaces `{username}`, `{vhost}` and `{client_id}` in `pattern` by their values,
/// regex-escaped; a variable without a value stays, as literal text.
///
/// ```
/// use actormq::definitions::{expand_topic_variables, TopicVariables};
/// let vars = TopicVariables { username: "a.b".into(), vhost: "/".into(), client_id: None };
/// assert_eq!(expand_topic_variables("^{username}\\.", &vars), "^a\\.b\\.");
/// assert_eq!(expand_topic_variables("{client_id}", &vars), "\\{client_id\\}");
/// ```
pub fn expand_topic_variables(pattern: &str, vars: &TopicVariables) -> String {
    expand(pattern, vars)
}

fn expand(pattern: &str, vars: &TopicVariables) -> String {
    let values = [
        ("{username}", Some(vars.username.as_str())),
        ("{vhost}", Some(vars.vhost.as_str())),
        ("{client_id}", vars.client_id.as_deref()),
    ];
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    'scan: while !rest.is_empty() {
        for (name, value) in values {
            if let Some(after) = rest.strip_prefix(name) {
                match value {
                    Some(v) => out.push_str(&regex::escape(v)),
                    // No value: the placeholder is literal text (as PCRE reads it).
                    None => out.push_str(&regex::escape(name)),
                }
                rest = after;
                continue 'scan;
            }
        }
        let c = rest.chars().next().expect("not empty");
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_anywhere_unless_anchored() {
        let p = Permission::new("^app-", "x", "").unwrap();
        assert!(p.configure.is_match("app-1"));
        assert!(!p.configure.is_match("my-app-1"));
        assert!(p.write.is_match("box"));
        // The empty pattern matches nothing that can be named.
        for name in ["q", "amq.default", "amq.gen-abc"] {
            assert!(!p.read.is_match(name));
        }
        assert!(Permission::all().is_all());
        assert!(!p.is_all());
    }

    #[test]
    fn an_invalid_pattern_names_its_field() {
        let e = Permission::new(".*", "(", ".*").unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::PreconditionFailed);
        assert!(e.message().contains("invalid write pattern '('"), "{e}");
        let e = TopicPermission::new(".*", "[").unwrap_err();
        assert!(e.message().contains("read"), "{e}");
    }

    #[test]
    fn topic_variables_are_expanded_escaped() {
        let vars = TopicVariables {
            username: "ann.b".into(),
            vhost: "prod".into(),
            client_id: Some("dev*1".into()),
        };
        let t = TopicPermission::new("^{username}\\.{vhost}\\.", "^{client_id}$").unwrap();
        let w = t.compile(Perm::Write, &vars).unwrap();
        assert!(w.is_match("ann.b.prod.x"));
        // The dot of the user name is literal, not "any character".
        assert!(!w.is_match("annxb.prod.x"));
        let r = t.compile(Perm::Read, &vars).unwrap();
        assert!(r.is_match("dev*1"));
        assert!(!r.is_match("devvv1"));
        // Without a client id the placeholder is literal text.
        let none = TopicVariables {
            client_id: None,
            ..vars
        };
        let r = t.compile(Perm::Read, &none).unwrap();
        assert!(r.is_match("{client_id}"));
        assert!(!r.is_match("dev*1"));
    }

    #[test]
    fn an_empty_topic_pattern_allows_the_empty_key_only() {
        let t = TopicPermission::new("", ".*").unwrap();
        let w = t.compile(Perm::Write, &TopicVariables::default()).unwrap();
        assert!(w.is_match(""));
        assert!(!w.is_match("a"));
    }
}
