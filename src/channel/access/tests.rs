//! The checks of [`Access`] on pure definitions: the table, the names checked, topic
//! permissions, and decisions cached until the definitions change.

use super::*;
use crate::definitions::{BrokerCommand, BrokerDefinitions, UserDefinition};
use crate::error::ErrorCode;
use std::sync::{Arc, RwLock};

fn defs_with(user: &str, permission: Permission) -> SharedDefinitions {
    let mut d = BrokerDefinitions::new(["/".to_string()], []);
    d.apply(BrokerCommand::PutUser(UserDefinition::new(
        user,
        "$pbkdf2-sha256$i=1,l=32$c2FsdA$aGFzaA",
        [],
        false,
        Vec::new(),
    )))
    .unwrap();
    set(&mut d, user, permission);
    Arc::new(RwLock::new(d))
}

fn set(d: &mut BrokerDefinitions, user: &str, permission: Permission) {
    d.apply(BrokerCommand::SetPermissions {
        user: user.into(),
        vhost: "/".into(),
        permission,
    })
    .unwrap();
}

fn channel(defs: &SharedDefinitions, user: &str) -> Channel {
    let mut ch = Channel::new(crate::broker::messages::OwnerId(1));
    ch.set_access(Access::new(defs.clone(), user, "/"));
    ch
}

fn bind(
    ch: &mut Channel,
    source: &str,
    target: BindTarget,
    key: &str,
) -> Result<TopicGate, BrokerError> {
    ch.may_bind(source, &target, key)
}

#[test]
fn the_table_names_permission_resource_vhost_and_user() {
    let defs = defs_with(
        "ann",
        Permission::new("^ann\\.", "^ann\\.", "^ann\\.").unwrap(),
    );
    let mut ch = channel(&defs, "ann");
    ch.may_delete_exchange("ann.x").unwrap();
    let e = ch.may_delete_exchange("bob.x").unwrap_err();
    assert_eq!(e.code(), ErrorCode::AccessRefused);
    assert_eq!(
        e.message(),
        "configure access to exchange 'bob.x' in vhost '/' refused for user 'ann'"
    );
    let e = ch.may_read_queue("bob.q").unwrap_err();
    assert!(
        e.message().starts_with("read access to queue 'bob.q'"),
        "{e}"
    );
    // queue.bind: write on the queue, read on the exchange.
    let gate = bind(&mut ch, "ann.x", BindTarget::Queue("ann.q".into()), "k").unwrap();
    assert!(gate.0.is_none());
    let e = bind(&mut ch, "bob.x", BindTarget::Queue("ann.q".into()), "k").unwrap_err();
    assert!(
        e.message().starts_with("read access to exchange 'bob.x'"),
        "{e}"
    );
    let e = bind(&mut ch, "ann.x", BindTarget::Exchange("bob.y".into()), "k").unwrap_err();
    assert!(
        e.message().starts_with("write access to exchange 'bob.y'"),
        "{e}"
    );
    // Passive declares need nothing.
    ch.may_declare_queue(&QueueSpec::new("bob.q"), true)
        .unwrap();
    assert!(ch
        .may_declare_queue(&QueueSpec::new("bob.q"), false)
        .is_err());
}

#[test]
fn the_default_exchange_and_server_named_queues_have_their_names() {
    let defs = defs_with(
        "ann",
        Permission::new("^amq\\.gen-", "^amq\\.default$", "").unwrap(),
    );
    let mut ch = channel(&defs, "ann");
    ch.may_declare_queue(&QueueSpec::new(""), false).unwrap();
    assert!(ch
        .may_declare_queue(&QueueSpec::new("jobs"), false)
        .is_err());
    let a = ch.access.as_mut().unwrap();
    a.check_publish("", || false, "jobs").unwrap();
    let e = a.check_publish("amq.direct", || false, "jobs").unwrap_err();
    assert!(e.message().contains("exchange 'amq.direct'"), "{e}");
    // The empty read pattern allows nothing.
    assert!(ch.may_read_queue("amq.gen-abc").is_err());
}

#[test]
fn alternate_and_dead_letter_exchanges_need_write_on_them_and_read_here() {
    use crate::message::FieldValue;
    let defs = defs_with("ann", Permission::new(".*", "^dlx$", "^q$").unwrap());
    let mut ch = channel(&defs, "ann");
    let mut q = QueueSpec::new("q");
    q.arguments.insert(
        "x-dead-letter-exchange".into(),
        FieldValue::Str("dlx".into()),
    );
    ch.may_declare_queue(&q, false).unwrap();
    q.name = "other".into();
    let e = ch.may_declare_queue(&q, false).unwrap_err();
    assert!(
        e.message().starts_with("read access to queue 'other'"),
        "{e}"
    );
    let mut x = ExchangeSpec::new("x", "direct");
    x.arguments
        .insert("alternate-exchange".into(), FieldValue::Str("ae".into()));
    let e = ch.may_declare_exchange(&x, false).unwrap_err();
    assert!(
        e.message().starts_with("write access to exchange 'ae'"),
        "{e}"
    );
    ch.may_declare_exchange(&x, true).unwrap();
}

#[test]
fn a_change_applies_to_an_open_channel_through_the_generation() {
    let defs = defs_with("ann", Permission::all());
    let mut ch = channel(&defs, "ann");
    let a = ch.access.as_mut().unwrap();
    a.check_publish("orders", || false, "k").unwrap();
    // Cached now: the same decision without reading the definitions.
    assert_eq!(a.publish.get("orders"), Some(&(true, false)));
    set(
        &mut defs.write().unwrap(),
        "ann",
        Permission::new(".*", "^audit$", ".*").unwrap(),
    );
    let e = a.check_publish("orders", || false, "k").unwrap_err();
    assert!(
        e.message().starts_with("write access to exchange 'orders'"),
        "{e}"
    );
    a.check_publish("audit", || false, "k").unwrap();
    // Clearing the permission refuses everything; deleting the user too.
    defs.write()
        .unwrap()
        .apply(BrokerCommand::ClearPermissions {
            user: "ann".into(),
            vhost: "/".into(),
        })
        .unwrap();
    assert!(a.check_publish("audit", || false, "k").is_err());
}

#[test]
fn topic_permissions_apply_to_topic_exchanges_with_variables() {
    let defs = defs_with("ann", Permission::all());
    defs.write()
        .unwrap()
        .apply(BrokerCommand::SetTopicPermissions {
            user: "ann".into(),
            vhost: "/".into(),
            exchange: "amq.topic".into(),
            permission: TopicPermission::new("^{username}\\.", "^{vhost}\\.").unwrap(),
        })
        .unwrap();
    let mut ch = channel(&defs, "ann");
    let a = ch.access.as_mut().unwrap();
    a.check_publish("amq.topic", || true, "ann.orders").unwrap();
    let e = a
        .check_publish("amq.topic", || true, "bob.orders")
        .unwrap_err();
    assert_eq!(
        e.message(),
        "write access to topic 'bob.orders' in exchange 'amq.topic' in vhost '/' refused for user 'ann'"
    );
    // Another exchange, or the same name of another type: no topic check.
    a.check_publish("events", || true, "bob.orders").unwrap();
    let gate = bind(&mut ch, "amq.topic", BindTarget::Queue("q".into()), "/.x").unwrap();
    assert!(gate.0.is_none());
    let gate = bind(
        &mut ch,
        "amq.topic",
        BindTarget::Queue("q".into()),
        "other.x",
    )
    .unwrap();
    let (x, e) = gate.0.expect("refused if topic");
    assert_eq!(x, "amq.topic");
    assert!(
        e.message().starts_with("read access to topic 'other.x'"),
        "{e}"
    );
}

#[test]
fn a_trusted_channel_checks_nothing() {
    let mut ch = Channel::new(crate::broker::messages::OwnerId(1));
    ch.may_delete_queue("anything").unwrap();
    assert!(bind(&mut ch, "x", BindTarget::Queue("q".into()), "k")
        .unwrap()
        .0
        .is_none());
}
