//! Which policy applies, how it merges with arguments, what is refused.

use super::*;

fn def(pairs: &[(&str, FieldValue)]) -> FieldTable {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn policy(kind: PolicyKind, name: &str, pattern: &str, priority: i64, d: FieldTable) -> Policy {
    Policy::new(kind, name, pattern, ApplyTo::All, priority, d).unwrap()
}

#[test]
fn the_highest_priority_wins_and_an_operator_policy_lowers_limits() {
    let int = FieldValue::Int;
    let policies = [
        policy(
            PolicyKind::Policy,
            "wide",
            ".*",
            0,
            def(&[("max-length", int(100))]),
        ),
        policy(
            PolicyKind::Policy,
            "jobs",
            "^jobs",
            5,
            def(&[("max-length", int(50)), ("overflow", "drop-head".into())]),
        ),
        policy(
            PolicyKind::Policy,
            "also",
            "^jobs",
            5,
            def(&[("max-length", int(1))]),
        ),
        policy(
            PolicyKind::Operator,
            "cap",
            ".*",
            0,
            def(&[
                ("max-length", int(20)),
                ("overflow", "reject-publish".into()),
            ]),
        ),
    ];
    let e = effective(&policies, "jobs.eu", Target::ClassicQueue);
    // "also" and "jobs" tie on priority: the first name wins.
    assert_eq!(e.policy.as_deref(), Some("also"));
    assert_eq!(e.operator_policy.as_deref(), Some("cap"));
    assert_eq!(e.definition["max-length"], int(1));
    assert_eq!(e.definition["overflow"], "reject-publish".into());
    let e = effective(&policies, "other", Target::QuorumQueue);
    assert_eq!(e.policy.as_deref(), Some("wide"));
    assert_eq!(e.definition["max-length"], int(20));
    let queues_only = Policy::new(
        PolicyKind::Policy,
        "q",
        ".*",
        ApplyTo::Queues,
        9,
        def(&[("max-length", int(3))]),
    )
    .unwrap();
    assert!(
        queues_only.matches("x", Target::Stream) && !queues_only.matches("x", Target::Exchange)
    );
}

#[test]
fn arguments_win_but_for_limits_where_the_lower_applies() {
    let int = FieldValue::Int;
    let e = Effective {
        policy: Some("p".into()),
        operator_policy: None,
        definition: def(&[
            ("max-length", int(10)),
            ("message-ttl", int(500)),
            ("dead-letter-exchange", "from-policy".into()),
            ("queue-mode", "lazy".into()),
        ]),
    };
    let args = def(&[
        ("x-max-length", int(3)),
        ("x-message-ttl", int(9000)),
        ("x-dead-letter-exchange", "mine".into()),
    ]);
    let merged = queue_arguments(&args, &e);
    assert_eq!(merged["x-max-length"], int(3));
    assert_eq!(merged["x-message-ttl"], int(500));
    assert_eq!(merged["x-dead-letter-exchange"], "mine".into());
    assert!(!merged.contains_key("queue-mode"));
    assert_eq!(
        queue_arguments(&FieldTable::new(), &e)["x-max-length"],
        int(10)
    );
    let ae = def(&[("alternate-exchange", "ae".into())]);
    let pol = Effective {
        definition: def(&[("alternate-exchange", "from-policy".into())]),
        ..Effective::default()
    };
    assert_eq!(alternate_exchange(&ae, &pol).as_deref(), Some("ae"));
    assert_eq!(
        alternate_exchange(&FieldTable::new(), &pol).as_deref(),
        Some("from-policy")
    );
}

#[test]
fn bad_policies_are_refused_naming_the_problem() {
    let ok = def(&[("max-length", FieldValue::Int(1))]);
    let make = |kind, pattern: &str, d: FieldTable| {
        Policy::new(kind, "p", pattern, ApplyTo::Queues, 0, d)
            .unwrap_err()
            .message()
            .to_string()
    };
    assert!(make(PolicyKind::Policy, "(", ok.clone()).contains("regular expression"));
    assert!(make(PolicyKind::Policy, ".*", FieldTable::new()).contains("empty"));
    let unknown = def(&[("ha-mode", "all".into())]);
    assert!(make(PolicyKind::Policy, ".*", unknown).contains("'ha-mode'"));
    let negative = def(&[("expires", FieldValue::Int(0))]);
    assert!(make(PolicyKind::Policy, ".*", negative).contains("positive"));
    let dlx = def(&[("dead-letter-exchange", "x".into())]);
    assert!(make(PolicyKind::Operator, ".*", dlx).contains("operator policy"));
    assert!(ApplyTo::parse("topics").is_err());
    for t in [
        "queues",
        "classic_queues",
        "quorum_queues",
        "streams",
        "exchanges",
        "all",
    ] {
        assert_eq!(ApplyTo::parse(t).map(ApplyTo::as_str), Ok(t));
    }
}
