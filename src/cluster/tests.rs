//! Unit tests of the cluster's pure parts: settings, the replicated change's forms,
//! the wire frames, and the changes a snapshot installs.

use super::op::Op;
use super::rpc::{read_frame, write_frame, NodeView, Reply, Rpc};
use super::settings::ClusterSettings;
use super::snapshot::vhost_ops;
use super::types::DefinitionsSnapshot;
use crate::definitions::{BrokerCommand, Permission, TopicPermission, UserDefinition};
use crate::storage::{StoredBinding, StoredBindingTarget, StoredQueue, StoredVhost};

fn settings(text: &str) -> ClusterSettings {
    toml::from_str(text).expect("valid [cluster]")
}

#[test]
fn the_definitions_log_is_snapshotted_every_snapshot_entries_and_purged_behind() {
    let s = settings("node_id = 1");
    assert_eq!(
        (s.snapshot_entries, s.snapshot_keep_entries),
        (10_000, 1_000)
    );
    let c = super::definitions_config(&s);
    assert_eq!(
        c.snapshot_policy,
        openraft::SnapshotPolicy::LogsSinceLast(10_000)
    );
    assert_eq!(c.max_in_snapshot_log_to_keep, 1_000);
    assert!(c.validate().is_ok());
    let s = settings("node_id = 1\nsnapshot_entries = 50\nsnapshot_keep_entries = 5");
    let c = super::definitions_config(&s);
    assert_eq!(
        c.snapshot_policy,
        openraft::SnapshotPolicy::LogsSinceLast(50)
    );
    assert_eq!(c.max_in_snapshot_log_to_keep, 5);
    let never = super::definitions_config(&settings("node_id = 1\nsnapshot_entries = 0"));
    assert_eq!(never.snapshot_policy, openraft::SnapshotPolicy::Never);
}

#[test]
fn cluster_settings_have_defaults_and_the_members_include_this_node() {
    let s = settings("node_id = 2\nbind = \"127.0.0.1:25673\"\nseeds = [{ id = 1, address = \"127.0.0.1:25672\" }]");
    assert_eq!(s.heartbeat_ms, 150);
    assert_eq!(
        (s.election_timeout_min_ms, s.election_timeout_max_ms),
        (400, 600)
    );
    assert!(s.check().is_ok());
    let members: Vec<_> = s.members().into_iter().collect();
    assert_eq!(
        members,
        vec![
            (1, "127.0.0.1:25672".to_string()),
            (2, "127.0.0.1:25673".to_string())
        ]
    );
}

#[test]
fn bad_cluster_settings_are_refused_naming_the_key() {
    let e = settings("node_id = 1\nheartbeat_ms = 2000")
        .check()
        .unwrap_err();
    assert!(e.contains("cluster.election_timeout_min_ms"), "{e}");
    let e = settings("node_id = 1\nelection_timeout_max_ms = 300")
        .check()
        .unwrap_err();
    assert!(e.contains("cluster.election_timeout_max_ms"), "{e}");
    let e = settings("node_id = 1\nseeds = [{ id = 1, address = \"10.0.0.9:1\" }]")
        .check()
        .unwrap_err();
    assert!(e.contains("cluster.seeds"), "{e}");
    assert!(toml::from_str::<ClusterSettings>("node_id = 1\nport = 3").is_err());
}

#[test]
fn a_short_secret_is_refused_unless_the_port_is_loopback_only() {
    let exposed = "node_id = 1\nbind = \"0.0.0.0:25672\"";
    let e = settings(exposed).check().unwrap_err();
    assert!(e.contains("cluster.secret is 0 bytes"), "{e}");
    assert!(e.contains("ACTORMQ__CLUSTER__SECRET"), "{e}");
    let short = format!("{exposed}\nsecret = \"fifteen-bytes!!\"");
    assert!(settings(&short).check().is_err());
    let long = format!("{exposed}\nsecret = \"sixteen-bytes!!!\"");
    assert!(settings(&long).check().is_ok());
    for loopback in ["127.0.0.1:25672", "[::1]:25672", "localhost:25672"] {
        let s = settings(&format!("node_id = 1\nbind = \"{loopback}\""));
        assert!(s.loopback_only(), "{loopback}");
        assert!(s.check().is_ok(), "{loopback}");
    }
    // The secret never shows in Debug output (settings may be logged).
    let s = settings(&long);
    assert!(!format!("{s:?}").contains("sixteen"), "{s:?}");
}

#[test]
fn broker_commands_round_trip_through_their_replicated_form() {
    let user = UserDefinition::new(
        "alice",
        "$pbkdf2-sha256$x",
        ["/".to_string()],
        false,
        vec!["monitoring".into()],
    );
    for cmd in [
        BrokerCommand::AddVhost("v".into()),
        BrokerCommand::DeleteVhost("v".into()),
        BrokerCommand::PutUser(user),
        BrokerCommand::DeleteUser("alice".into()),
        BrokerCommand::SetPermissions {
            user: "alice".into(),
            vhost: "/".into(),
            permission: Permission::new("^a-", "", ".*").unwrap(),
        },
        BrokerCommand::SetTopicPermissions {
            user: "alice".into(),
            vhost: "/".into(),
            exchange: "amq.topic".into(),
            permission: TopicPermission::new("^{username}\\.", ".*").unwrap(),
        },
        BrokerCommand::ClearTopicPermissions {
            user: "alice".into(),
            vhost: "/".into(),
            exchange: None,
        },
        BrokerCommand::ClearPermissions {
            user: "alice".into(),
            vhost: "/".into(),
        },
    ] {
        let op = Op::of_broker(cmd.clone());
        let bytes = rmp_serde::to_vec(&op).unwrap();
        let back: Op = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back.broker_command(), Some(cmd));
    }
    let vhost_op = Op::DeleteQueue {
        vhost: "/".into(),
        name: "q".into(),
    };
    assert_eq!(vhost_op.broker_command(), None);
}

#[tokio::test]
async fn frames_round_trip_and_an_oversized_length_is_refused() {
    let (mut a, mut b) = tokio::io::duplex(1 << 16);
    write_frame(&mut a, 7, &Rpc::Local).await.unwrap();
    let (id, rpc): (u64, Rpc) = read_frame(&mut b).await.unwrap().expect("a frame");
    assert_eq!(id, 7);
    assert!(matches!(rpc, Rpc::Local));
    let view = NodeView {
        id: 3,
        role: "leader".into(),
        ..NodeView::default()
    };
    write_frame(&mut b, 8, &Reply::Local(view.clone()))
        .await
        .unwrap();
    let (id, reply): (u64, Reply) = read_frame(&mut a).await.unwrap().unwrap();
    assert_eq!(id, 8);
    assert!(matches!(reply, Reply::Local(v) if v == view));
    use tokio::io::AsyncWriteExt;
    a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let e = read_frame::<_, Rpc>(&mut b).await.unwrap_err();
    assert!(e.to_string().contains("larger than"), "{e}");
    drop(a);
    assert!(read_frame::<_, Rpc>(&mut b).await.unwrap().is_none());
}

#[tokio::test]
async fn a_frame_is_its_length_then_the_encoded_id_and_value() {
    // The bytes as they were written before frames were encoded in place.
    let view = NodeView {
        id: 2,
        role: "follower".into(),
        ..NodeView::default()
    };
    let body = rmp_serde::to_vec(&(9u64, &Reply::Local(view.clone()))).unwrap();
    let mut expected = (body.len() as u32).to_be_bytes().to_vec();
    expected.extend_from_slice(&body);
    let mut written = Vec::new();
    write_frame(&mut written, 9, &Reply::Local(view))
        .await
        .unwrap();
    assert_eq!(written, expected);
}

fn queue(name: &str) -> StoredQueue {
    StoredQueue {
        name: name.into(),
        durable: true,
        auto_delete: false,
        arguments: Default::default(),
    }
}

#[test]
fn a_snapshot_deletes_what_it_lacks_before_declaring_what_it_has() {
    let binding = StoredBinding {
        source: "amq.direct".into(),
        destination: StoredBindingTarget::Queue("old".into()),
        routing_key: "k".into(),
        arguments: Default::default(),
    };
    let have = StoredVhost {
        queues: vec![queue("old"), queue("kept")],
        bindings: vec![binding.clone()],
        ..Default::default()
    };
    let want = StoredVhost {
        queues: vec![queue("kept"), queue("new")],
        ..Default::default()
    };
    let mut snap = DefinitionsSnapshot::default();
    snap.homes
        .entry("/".into())
        .or_default()
        .insert("new".into(), 2);
    let mut ops = Vec::new();
    let moved = Default::default();
    vhost_ops("/", &have, &want, &moved, &snap.homes, &mut ops);
    // The binding goes with its queue (no unbind of its own).
    assert_eq!(
        ops[0],
        Op::DeleteQueue {
            vhost: "/".into(),
            name: "old".into()
        }
    );
    assert!(!ops.contains(&Op::Unbind {
        vhost: "/".into(),
        binding
    }));
    let declared: Vec<(String, u64)> = ops
        .iter()
        .filter_map(|o| match o {
            Op::DeclareQueue { queue, home, .. } => Some((queue.name.clone(), *home)),
            _ => None,
        })
        .collect();
    assert_eq!(declared, vec![("kept".into(), 0), ("new".into(), 2)]);
}

#[test]
fn transient_definitions_are_recorded_until_deleted() {
    use super::drift::{note_transient, Transient};
    use crate::storage::StoredExchange;
    let exchange = |name: &str, durable: bool| Op::DeclareExchange {
        vhost: "/".into(),
        exchange: StoredExchange {
            name: name.into(),
            kind: "fanout".into(),
            durable,
            auto_delete: false,
            internal: false,
            arguments: Default::default(),
        },
    };
    let queue = |name: &str, durable: bool| Op::DeclareQueue {
        vhost: "/".into(),
        queue: StoredQueue {
            name: name.into(),
            durable,
            auto_delete: false,
            arguments: Default::default(),
        },
        server_named: false,
        home: 1,
        limits: None,
    };
    let bind = |source: &str, q: &str| Op::Bind {
        vhost: "/".into(),
        binding: StoredBinding {
            source: source.into(),
            destination: StoredBindingTarget::Queue(q.into()),
            routing_key: String::new(),
            arguments: Default::default(),
        },
    };
    let mut t = Transient::new();
    for op in [
        exchange("durable-x", true),
        queue("durable-q", true),
        bind("durable-x", "durable-q"),
    ] {
        note_transient(&mut t, &op);
    }
    assert!(t.is_empty(), "durable definitions are the metadata store's");
    for op in [
        exchange("tx", false),
        queue("tq", false),
        bind("tx", "tq"),
        bind("durable-x", "tq"),
        bind("durable-x", "durable-q"),
    ] {
        note_transient(&mut t, &op);
    }
    let v = &t["/"];
    assert_eq!(v.exchanges.len(), 1);
    assert_eq!(v.queues.len(), 1);
    assert_eq!(v.bindings.len(), 2, "bindings with a transient end only");
    note_transient(
        &mut t,
        &Op::DeleteQueue {
            vhost: "/".into(),
            name: "tq".into(),
        },
    );
    assert!(
        t["/"].bindings.is_empty(),
        "the queue's bindings went with it"
    );
    note_transient(&mut t, &Op::DeleteVhost("/".into()));
    assert!(t.is_empty());
}

#[test]
fn a_quorum_declare_carries_the_limits_its_proposers_policies_give_it() {
    use crate::definitions::{ApplyTo, Command, Policy, PolicyKind, VhostDefinitions};
    use crate::message::{FieldTable, FieldValue};
    let mut defs = VhostDefinitions::new("/");
    let mut definition = FieldTable::new();
    definition.insert("max-length".into(), FieldValue::Int(2));
    definition.insert("overflow".into(), "reject-publish".into());
    let p = Policy::new(
        PolicyKind::Policy,
        "cap",
        "^q",
        ApplyTo::Queues,
        1,
        definition,
    )
    .unwrap();
    defs.apply(Command::SetPolicy(p)).unwrap();
    let mut quorum = queue("q1");
    quorum
        .arguments
        .insert("x-queue-type".into(), "quorum".into());
    quorum
        .arguments
        .insert("x-max-length".into(), FieldValue::Int(5));
    let limits = super::quorum_limits(&defs, &quorum).expect("a quorum queue's");
    assert_eq!((limits.max_length, limits.reject_publish), (Some(2), true));
    // A classic queue's declare carries none.
    assert_eq!(super::quorum_limits(&defs, &queue("q2")), None);
}

#[test]
fn a_declare_entry_written_before_limits_were_carried_still_decodes() {
    use crate::storage::StoredExchange;
    // The first variants of `Op` as the builds before wrote them.
    #[derive(serde::Serialize)]
    #[allow(dead_code)]
    enum Before {
        DeclareExchange {
            vhost: String,
            exchange: StoredExchange,
        },
        DeleteExchange {
            vhost: String,
            name: String,
            if_unused: bool,
        },
        DeclareQueue {
            vhost: String,
            queue: StoredQueue,
            server_named: bool,
            home: u64,
        },
    }
    let old = Before::DeclareQueue {
        vhost: "/".into(),
        queue: queue("q1"),
        server_named: false,
        home: 2,
    };
    let mut bytes = Vec::new();
    rmp_serde::encode::write(&mut bytes, &old).unwrap();
    let op: Op = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(
        op,
        Op::DeclareQueue {
            vhost: "/".into(),
            queue: queue("q1"),
            server_named: false,
            home: 2,
            limits: None,
        }
    );
}
