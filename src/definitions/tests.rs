use super::*;
use crate::error::ErrorCode;
use crate::message::FieldTable;

fn exchange(name: &str, durable: bool) -> Command {
    let mut s = ExchangeSpec::new(name, "direct");
    s.durable = durable;
    Command::DeclareExchange(s)
}

fn queue(name: &str, durable: bool) -> Command {
    let mut spec = QueueSpec::new(name);
    spec.durable = durable;
    Command::DeclareQueue {
        spec,
        server_named: false,
    }
}

fn binding(x: &str, q: &str, key: &str) -> BindingRecord {
    BindingRecord {
        exchange: x.into(),
        target: BindTarget::Queue(q.into()),
        routing_key: key.into(),
        arguments: FieldTable::new(),
    }
}

fn e2e(src: &str, dst: &str) -> BindingRecord {
    BindingRecord {
        exchange: src.into(),
        target: BindTarget::Exchange(dst.into()),
        routing_key: String::new(),
        arguments: FieldTable::new(),
    }
}

fn defs() -> VhostDefinitions {
    VhostDefinitions::new("/")
}

#[test]
fn a_new_vhost_has_the_predeclared_exchanges_and_stores_none_of_them() {
    let d = defs();
    for (name, kind) in PREDECLARED {
        assert_eq!(d.exchange(name).unwrap().kind, kind);
    }
    assert_eq!(d.durable(), StoredVhost::default());
}

#[test]
fn declaring_twice_is_one_change_and_a_different_declare_is_refused() {
    let mut d = defs();
    assert!(d.apply(exchange("x", true)).unwrap().created);
    assert!(d.apply(exchange("x", true)).unwrap().is_noop());
    let err = d.apply(exchange("x", false)).unwrap_err();
    assert_eq!(err.code(), ErrorCode::PreconditionFailed);
    assert!(err.message().contains("durable"), "{err}");
    assert!(d.exchange("x").unwrap().durable, "unchanged by the refusal");
}

#[test]
fn reserved_and_invalid_names_are_refused_with_the_right_codes() {
    let mut d = defs();
    let code = |d: &mut VhostDefinitions, c| d.apply(c).unwrap_err().code();
    assert_eq!(
        code(&mut d, exchange("amq.mine", false)),
        ErrorCode::AccessRefused
    );
    assert_eq!(code(&mut d, exchange("", false)), ErrorCode::AccessRefused);
    assert_eq!(
        code(&mut d, exchange("bad name", false)),
        ErrorCode::PreconditionFailed
    );
    assert_eq!(
        code(&mut d, queue("amq.q", false)),
        ErrorCode::AccessRefused
    );
    assert_eq!(
        code(&mut d, queue("sp ace", false)),
        ErrorCode::PreconditionFailed
    );
    let server_named = Command::DeclareQueue {
        spec: QueueSpec::new("amq.gen-abc"),
        server_named: true,
    };
    assert!(d.apply(server_named).unwrap().created);
    let refused = Command::DeleteExchange {
        name: "amq.topic".into(),
        if_unused: false,
    };
    assert_eq!(code(&mut d, refused), ErrorCode::AccessRefused);
}

#[test]
fn bind_needs_both_ends_and_not_the_default_exchange() {
    let mut d = defs();
    d.apply(queue("q", false)).unwrap();
    let err = d
        .apply(Command::Bind(binding("nope", "q", "k")))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    assert_eq!(err.message(), "no exchange 'nope' in vhost '/'");
    let err = d
        .apply(Command::Bind(binding("amq.direct", "nope", "k")))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    let err = d.apply(Command::Bind(binding("", "q", "k"))).unwrap_err();
    assert_eq!(err.code(), ErrorCode::AccessRefused);
    assert!(
        d.apply(Command::Bind(binding("amq.direct", "q", "k")))
            .unwrap()
            .created
    );
    assert!(d
        .apply(Command::Bind(binding("amq.direct", "q", "k")))
        .unwrap()
        .is_noop());
    assert_eq!(d.bindings().len(), 1);
}

#[test]
fn deleting_a_queue_takes_its_bindings_and_an_auto_delete_source_left_without_any() {
    let mut d = defs();
    let mut auto = ExchangeSpec::new("auto", "fanout");
    auto.auto_delete = true;
    d.apply(Command::DeclareExchange(auto)).unwrap();
    d.apply(exchange("kept", false)).unwrap();
    d.apply(queue("q", false)).unwrap();
    d.apply(Command::Bind(binding("auto", "q", ""))).unwrap();
    d.apply(Command::Bind(binding("kept", "q", ""))).unwrap();
    let applied = d.apply(Command::DeleteQueue { name: "q".into() }).unwrap();
    assert_eq!(applied.removed_queues.len(), 1);
    assert_eq!(applied.removed_bindings.len(), 2);
    let removed: Vec<&str> = applied
        .removed_exchanges
        .iter()
        .map(|x| x.name.as_str())
        .collect();
    assert_eq!(removed, ["auto"]);
    assert!(d.exchange("kept").is_some());
    assert!(d.bindings().is_empty());
}

#[test]
fn deleting_an_exchange_takes_bindings_in_both_directions_and_cascades() {
    let mut d = defs();
    let mut auto = ExchangeSpec::new("upstream", "fanout");
    auto.auto_delete = true;
    d.apply(Command::DeclareExchange(auto)).unwrap();
    d.apply(exchange("mid", false)).unwrap();
    d.apply(queue("q", false)).unwrap();
    d.apply(Command::Bind(e2e("upstream", "mid"))).unwrap();
    d.apply(Command::Bind(binding("mid", "q", "k"))).unwrap();
    let refused = Command::DeleteExchange {
        name: "mid".into(),
        if_unused: true,
    };
    assert_eq!(
        d.apply(refused).unwrap_err().code(),
        ErrorCode::PreconditionFailed
    );
    let applied = d
        .apply(Command::DeleteExchange {
            name: "mid".into(),
            if_unused: false,
        })
        .unwrap();
    let removed: Vec<&str> = applied
        .removed_exchanges
        .iter()
        .map(|x| x.name.as_str())
        .collect();
    assert_eq!(removed, ["mid", "upstream"]);
    assert_eq!(applied.removed_bindings.len(), 2);
    assert!(d.bindings().is_empty());
    // Deleting what is not there changes nothing.
    let again = d
        .apply(Command::DeleteExchange {
            name: "mid".into(),
            if_unused: true,
        })
        .unwrap();
    assert!(again.is_noop());
}

#[test]
fn only_durable_changes_ask_for_a_save_and_the_snapshot_is_the_durable_part() {
    let mut d = defs();
    assert!(!d.apply(queue("transient", false)).unwrap().durable_changed);
    assert!(d.apply(queue("kept", true)).unwrap().durable_changed);
    assert!(d.apply(exchange("dx", true)).unwrap().durable_changed);
    assert!(
        !d.apply(Command::Bind(binding("dx", "transient", "a")))
            .unwrap()
            .durable_changed
    );
    assert!(
        d.apply(Command::Bind(binding("dx", "kept", "b")))
            .unwrap()
            .durable_changed
    );
    let mut exclusive = QueueSpec::new("mine");
    exclusive.durable = true;
    exclusive.exclusive = true;
    let applied = d
        .apply(Command::DeclareQueue {
            spec: exclusive,
            server_named: false,
        })
        .unwrap();
    assert!(
        !applied.durable_changed,
        "exclusive queues are never stored"
    );
    let stored = d.durable();
    assert_eq!(stored.exchanges.len(), 1);
    assert_eq!(stored.queues.len(), 1);
    assert_eq!(stored.bindings.len(), 1);
    assert_eq!(stored.bindings[0].routing_key, "b");
    d.apply(Command::Bind(binding("dx", "mine", "c"))).unwrap();
    d.apply(exchange("tx", false)).unwrap();
    // What a cluster replicates: the transient ones too, never the exclusive queue
    // (one connection's) nor its binding.
    let replicated = d.replicated();
    let queues: Vec<(&str, bool)> = replicated
        .queues
        .iter()
        .map(|q| (q.name.as_str(), q.durable))
        .collect();
    assert_eq!(queues, [("kept", true), ("transient", false)]);
    let exchanges: Vec<(&str, bool)> = replicated
        .exchanges
        .iter()
        .map(|x| (x.name.as_str(), x.durable))
        .collect();
    assert_eq!(exchanges, [("dx", true), ("tx", false)]);
    let keys: Vec<&str> = replicated
        .bindings
        .iter()
        .map(|b| b.routing_key.as_str())
        .collect();
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(d.durable(), stored, "the durable part is unchanged by them");
}

#[test]
fn the_restore_commands_of_a_snapshot_rebuild_the_same_durable_definitions() {
    let mut d = defs();
    d.apply(exchange("dx", true)).unwrap();
    let mut e = ExchangeSpec::new("dy", "topic");
    e.durable = true;
    e.internal = true;
    d.apply(Command::DeclareExchange(e)).unwrap();
    d.apply(queue("q1", true)).unwrap();
    d.apply(queue("q2", true)).unwrap();
    d.apply(queue("t", false)).unwrap();
    d.apply(Command::Bind(binding("dx", "q1", "a"))).unwrap();
    d.apply(Command::Bind(binding("dx", "q2", "b"))).unwrap();
    d.apply(Command::Bind(e2e("dx", "dy"))).unwrap();
    d.apply(Command::Bind(binding("dx", "t", "c"))).unwrap();
    let stored = d.durable();
    let mut rebuilt = defs();
    for c in VhostDefinitions::restore_commands(stored.clone()) {
        rebuilt.apply(c).unwrap();
    }
    assert_eq!(rebuilt.durable(), stored);
}

#[test]
fn a_refused_command_changes_nothing() {
    let mut d = defs();
    d.apply(exchange("x", true)).unwrap();
    d.apply(queue("q", true)).unwrap();
    d.apply(Command::Bind(binding("x", "q", "k"))).unwrap();
    let before = d.clone();
    for c in [
        exchange("x", false),
        queue("q", false),
        Command::DeleteExchange {
            name: "x".into(),
            if_unused: true,
        },
        Command::Bind(binding("x", "missing", "k")),
        Command::Unbind(binding("missing", "q", "k")),
    ] {
        assert!(d.check(&c).is_err());
        assert!(d.apply(c).is_err());
        assert_eq!(d, before);
    }
}

#[test]
fn policies_are_commands_stored_and_restored() {
    use crate::definitions::{ApplyTo, Policy, PolicyKind};
    use crate::message::FieldValue;
    let mut d = VhostDefinitions::new("/");
    let mut definition = crate::message::FieldTable::new();
    definition.insert("max-length".into(), FieldValue::Int(5));
    let p = Policy::new(
        PolicyKind::Policy,
        "cap",
        "^q",
        ApplyTo::Queues,
        1,
        definition,
    )
    .unwrap();
    let applied = d.apply(Command::SetPolicy(p.clone())).unwrap();
    assert!(applied.created && applied.policies_changed && applied.durable_changed);
    assert!(d.apply(Command::SetPolicy(p.clone())).unwrap().is_noop());
    let mut q = QueueSpec::new("q1");
    q.durable = true;
    d.apply(Command::DeclareQueue {
        spec: q.clone(),
        server_named: false,
    })
    .unwrap();
    assert_eq!(
        d.queue_effective_arguments(&q)["x-max-length"],
        FieldValue::Int(5)
    );
    // The snapshot brings the policy back first, so restored queues start with it.
    let restored = VhostDefinitions::restore_commands(d.durable());
    assert!(matches!(&restored[0], Command::SetPolicy(r) if *r == p));
    let mut again = VhostDefinitions::new("/");
    for cmd in restored {
        again.apply(cmd).unwrap();
    }
    assert_eq!(again, d);
    let clear = Command::ClearPolicy {
        kind: PolicyKind::Policy,
        name: "cap".into(),
    };
    assert!(d.apply(clear.clone()).unwrap().policies_changed);
    let err = d.apply(clear).unwrap_err();
    assert_eq!(err.code(), crate::error::ErrorCode::NotFound);
    assert!(d.policies().next().is_none());
}
