//! Policies and operator policies, as RabbitMQ's: a name, a regular expression on queue
//! or exchange names, what it applies to, a priority, and a definition (the settings it
//! gives). Pure: which policy applies to an object, and the settings that result, are
//! computed here; the registry hands the result to the running actors.
//!
//! RabbitMQ's rules, written once here:
//! - per object, the matching policy of highest priority wins (ties: the first name in
//!   byte order, so the answer never depends on the order policies were set), and so
//!   does, separately, the matching operator policy;
//! - the two are merged: for the limits (`max-length`, `max-length-bytes`,
//!   `message-ttl`, `expires`, `delivery-limit`) the lower value applies, for any other
//!   key the operator policy's;
//! - against the object's own declare arguments: for the limits the lower of argument
//!   and policy applies, for any other key the argument wins.

use crate::error::{BrokerError, ErrorCode};
use crate::message::{FieldTable, FieldValue};
use std::sync::Arc;

/// A policy or an operator policy (separate namespaces, as in RabbitMQ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyKind {
    /// A policy (`/api/policies`), set by users with the `policymaker` tag.
    Policy,
    /// An operator policy (`/api/operator-policies`): an administrator's cap on what
    /// policies and arguments may set.
    Operator,
}

impl PolicyKind {
    /// How messages and errors name it.
    pub fn label(self) -> &'static str {
        match self {
            PolicyKind::Policy => "policy",
            PolicyKind::Operator => "operator policy",
        }
    }
}

/// What a policy applies to (RabbitMQ's `apply-to`, with RabbitMQ 3.12+'s per queue
/// type values, so that a policy for quorum queues leaves classic queues alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyTo {
    /// Queues of every type.
    Queues,
    /// Classic queues only.
    ClassicQueues,
    /// Quorum queues only.
    QuorumQueues,
    /// Stream queues only.
    Streams,
    /// Exchanges only.
    Exchanges,
    /// Queues of every type and exchanges.
    All,
}

/// What a policy is matched against: an exchange or a queue of some type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An exchange.
    Exchange,
    /// A classic queue (no `x-queue-type`, or `classic`).
    ClassicQueue,
    /// A quorum queue.
    QuorumQueue,
    /// A stream queue.
    Stream,
}

impl Target {
    /// The target a queue declared with `arguments` is: its `x-queue-type`.
    pub fn queue(arguments: &FieldTable) -> Target {
        match arguments.get("x-queue-type").and_then(FieldValue::as_str) {
            Some("quorum") => Target::QuorumQueue,
            Some("stream") => Target::Stream,
            _ => Target::ClassicQueue,
        }
    }
}

impl ApplyTo {
    /// Parses RabbitMQ's spelling (`queues`, `classic_queues`, `quorum_queues`,
    /// `streams`, `exchanges`, `all`).
    ///
    /// ```
    /// use actormq::definitions::ApplyTo;
    /// assert_eq!(ApplyTo::parse("quorum_queues"), Ok(ApplyTo::QuorumQueues));
    /// assert!(ApplyTo::parse("topics").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<ApplyTo, String> {
        match s {
            "queues" => Ok(ApplyTo::Queues),
            "classic_queues" => Ok(ApplyTo::ClassicQueues),
            "quorum_queues" => Ok(ApplyTo::QuorumQueues),
            "streams" => Ok(ApplyTo::Streams),
            "exchanges" => Ok(ApplyTo::Exchanges),
            "all" => Ok(ApplyTo::All),
            other => Err(format!(
                "apply-to '{other}': expected queues, classic_queues, quorum_queues, streams, exchanges or all"
            )),
        }
    }

    /// RabbitMQ's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyTo::Queues => "queues",
            ApplyTo::ClassicQueues => "classic_queues",
            ApplyTo::QuorumQueues => "quorum_queues",
            ApplyTo::Streams => "streams",
            ApplyTo::Exchanges => "exchanges",
            ApplyTo::All => "all",
        }
    }

    /// True when it applies to objects of `target`.
    pub fn covers(self, target: Target) -> bool {
        use ApplyTo as A;
        use Target as T;
        match (self, target) {
            (A::All, _) => true,
            (A::Exchanges, t) => t == T::Exchange,
            (A::Queues, t) => t != T::Exchange,
            (A::ClassicQueues, t) => t == T::ClassicQueue,
            (A::QuorumQueues, t) => t == T::QuorumQueue,
            (A::Streams, t) => t == T::Stream,
        }
    }
}

/// What a definition key's value must be.
#[derive(Clone, Copy)]
enum Expect {
    NonNegative,
    Positive,
    Str,
    OneOf(&'static [&'static str]),
}

/// How a key meets the object's own argument.
#[derive(Clone, Copy, PartialEq)]
enum Merge {
    /// A limit: the lower value applies.
    Lower,
    /// The argument wins over the policy; the operator policy over the policy.
    ArgumentWins,
    /// Accepted and reported, acted on by nothing (no streams, no lazy mode here).
    Reported,
}

/// The known definition keys: (key, value, merge rule, queue argument it sets, allowed
/// in an operator policy).
const KEYS: &[(&str, Expect, Merge, Option<&str>, bool)] = &[
    (
        "max-length",
        Expect::NonNegative,
        Merge::Lower,
        Some("x-max-length"),
        true,
    ),
    (
        "max-length-bytes",
        Expect::NonNegative,
        Merge::Lower,
        Some("x-max-length-bytes"),
        true,
    ),
    (
        "message-ttl",
        Expect::NonNegative,
        Merge::Lower,
        Some("x-message-ttl"),
        true,
    ),
    (
        "expires",
        Expect::Positive,
        Merge::Lower,
        Some("x-expires"),
        true,
    ),
    (
        "delivery-limit",
        Expect::NonNegative,
        Merge::Lower,
        Some("x-delivery-limit"),
        true,
    ),
    (
        "overflow",
        Expect::OneOf(&["drop-head", "reject-publish", "reject-publish-dlx"]),
        Merge::ArgumentWins,
        Some("x-overflow"),
        true,
    ),
    (
        "dead-letter-exchange",
        Expect::Str,
        Merge::ArgumentWins,
        Some("x-dead-letter-exchange"),
        false,
    ),
    (
        "dead-letter-routing-key",
        Expect::Str,
        Merge::ArgumentWins,
        Some("x-dead-letter-routing-key"),
        false,
    ),
    (
        "dead-letter-strategy",
        Expect::OneOf(&["at-most-once", "at-least-once"]),
        Merge::ArgumentWins,
        Some("x-dead-letter-strategy"),
        false,
    ),
    (
        "alternate-exchange",
        Expect::Str,
        Merge::ArgumentWins,
        None,
        false,
    ),
    (
        "queue-mode",
        Expect::OneOf(&["default", "lazy"]),
        Merge::Reported,
        None,
        false,
    ),
    ("max-age", Expect::Str, Merge::Reported, None, false),
    (
        "stream-max-segment-size-bytes",
        Expect::Positive,
        Merge::Reported,
        None,
        false,
    ),
];

fn key(name: &str) -> Option<&'static (&'static str, Expect, Merge, Option<&'static str>, bool)> {
    KEYS.iter().find(|k| k.0 == name)
}

/// One policy or operator policy of a virtual host.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Its name (unique per kind and virtual host).
    pub name: String,
    /// Policy or operator policy.
    pub kind: PolicyKind,
    /// The regular expression on names, as given.
    pub pattern: String,
    /// What it applies to.
    pub apply_to: ApplyTo,
    /// Higher wins.
    pub priority: i64,
    /// The settings it gives, by RabbitMQ's key names (`max-length`, ...).
    pub definition: FieldTable,
    /// `pattern`, compiled.
    regex: Arc<regex::Regex>,
}

impl PartialEq for Policy {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.kind == other.kind
            && self.pattern == other.pattern
            && self.apply_to == other.apply_to
            && self.priority == other.priority
            && self.definition == other.definition
    }
}

impl Policy {
    /// A validated policy: a pattern that compiles, a non-empty definition of known keys
    /// with values of the right type (and, for an operator policy, only the keys
    /// RabbitMQ lets operator policies set). The error names the policy and the key.
    pub fn new(
        kind: PolicyKind,
        name: &str,
        pattern: &str,
        apply_to: ApplyTo,
        priority: i64,
        definition: FieldTable,
    ) -> Result<Policy, BrokerError> {
        let bad = |why: String| {
            BrokerError::precondition(format!("invalid {} '{name}': {why}", kind.label()))
        };
        if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
            return Err(bad(
                "a name is 1-255 characters, no control characters".into()
            ));
        }
        let regex = regex::Regex::new(pattern).map_err(|e| {
            bad(format!(
                "pattern '{pattern}' is not a regular expression: {e}"
            ))
        })?;
        if definition.is_empty() {
            return Err(bad("its definition is empty".into()));
        }
        for (k, v) in &definition {
            let Some(&(_, expect, _, _, operator_ok)) = key(k) else {
                let known: Vec<&str> = KEYS.iter().map(|k| k.0).collect();
                return Err(bad(format!(
                    // RabbitMQ's words ("not recognised"), which tools match on.
                    "policy setting '{k}' is not recognised (known: {})",
                    known.join(", ")
                )));
            };
            if kind == PolicyKind::Operator && !operator_ok {
                return Err(bad(format!(
                    "'{k}' cannot be set by an operator policy (only limits and overflow)"
                )));
            }
            let fine = match (expect, v) {
                (Expect::NonNegative, FieldValue::Int(i)) => *i >= 0,
                (Expect::Positive, FieldValue::Int(i)) => *i > 0,
                (Expect::Str, FieldValue::Str(_)) => true,
                (Expect::OneOf(allowed), FieldValue::Str(s)) => allowed.contains(&s.as_str()),
                _ => false,
            };
            if !fine {
                let expected = match expect {
                    Expect::NonNegative => "a non-negative integer".to_string(),
                    Expect::Positive => "a positive integer".to_string(),
                    Expect::Str => "a string".to_string(),
                    Expect::OneOf(allowed) => format!("one of {}", allowed.join(", ")),
                };
                return Err(bad(format!(
                    "'{k}' must be {expected}, got {} {v}",
                    v.type_name()
                )));
            }
        }
        if kind == PolicyKind::Operator && apply_to == ApplyTo::Exchanges {
            return Err(bad("an operator policy applies to queues".into()));
        }
        Ok(Policy {
            name: name.to_string(),
            kind,
            pattern: pattern.to_string(),
            apply_to,
            priority,
            definition,
            regex: Arc::new(regex),
        })
    }

    /// True when it applies to the object `name` of `target`.
    pub fn matches(&self, name: &str, target: Target) -> bool {
        self.apply_to.covers(target) && self.regex.is_match(name)
    }
}

/// What applies to one object: the winning policy and operator policy, and their
/// merged definition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effective {
    /// The policy that applies, if any.
    pub policy: Option<String>,
    /// The operator policy that applies, if any.
    pub operator_policy: Option<String>,
    /// The two definitions merged (RabbitMQ's `effective_policy_definition`).
    pub definition: FieldTable,
}

/// The winner among `candidates`: highest priority, then the first name.
fn winner<'a>(candidates: impl Iterator<Item = &'a Policy>) -> Option<&'a Policy> {
    candidates.min_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(&b.name)))
}

fn lower(a: &FieldValue, b: &FieldValue) -> FieldValue {
    match (a.as_int(), b.as_int()) {
        (Some(x), Some(y)) => FieldValue::Int(x.min(y)),
        (Some(_), None) => a.clone(),
        _ => b.clone(),
    }
}

/// What applies to the object `name` of `target` among `policies`.
pub fn effective<'a>(
    policies: impl IntoIterator<Item = &'a Policy>,
    name: &str,
    target: Target,
) -> Effective {
    let matching: Vec<&Policy> = policies
        .into_iter()
        .filter(|p| p.matches(name, target))
        .collect();
    let user = winner(
        matching
            .iter()
            .copied()
            .filter(|p| p.kind == PolicyKind::Policy),
    );
    let op = winner(
        matching
            .iter()
            .copied()
            .filter(|p| p.kind == PolicyKind::Operator),
    );
    let mut definition = user.map(|p| p.definition.clone()).unwrap_or_default();
    if let Some(op) = op {
        for (k, v) in &op.definition {
            let merged = match (definition.get(k), key(k)) {
                (Some(mine), Some((_, _, Merge::Lower, _, _))) => lower(mine, v),
                _ => v.clone(),
            };
            definition.insert(k.clone(), merged);
        }
    }
    Effective {
        policy: user.map(|p| p.name.clone()),
        operator_policy: op.map(|p| p.name.clone()),
        definition,
    }
}

/// A queue's declare `arguments` with what `effective` gives merged in, as the queue
/// acts on them: for a limit the lower of argument and policy, for anything else the
/// argument when there is one.
pub fn queue_arguments(arguments: &FieldTable, effective: &Effective) -> FieldTable {
    let mut out = arguments.clone();
    for (k, v) in &effective.definition {
        let Some(&(_, _, merge, Some(arg), _)) = key(k) else {
            continue;
        };
        let merged = match (out.get(arg), merge) {
            (Some(mine), Merge::Lower) => lower(mine, v),
            (Some(mine), _) => mine.clone(),
            (None, _) => v.clone(),
        };
        out.insert(arg.to_string(), merged);
    }
    out
}

/// An exchange's alternate exchange: its `alternate-exchange` argument, else the
/// policy's.
pub fn alternate_exchange(arguments: &FieldTable, effective: &Effective) -> Option<String> {
    arguments
        .get("alternate-exchange")
        .or_else(|| effective.definition.get("alternate-exchange"))
        .and_then(FieldValue::as_str)
        .map(str::to_string)
}

/// The refusal of clearing a policy that is not there.
pub(super) fn no_policy(kind: PolicyKind, name: &str, vhost: &str) -> BrokerError {
    BrokerError::new(
        ErrorCode::NotFound,
        format!("no {} '{name}' in vhost '{vhost}'", kind.label()),
    )
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
