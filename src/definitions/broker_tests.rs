//! Tests of the broker-wide definitions: checked commands, the generation, and the
//! stored form of users with their permissions.

use super::*;
use crate::error::ErrorCode;

fn user(name: &str, vhosts: &[&str]) -> UserDefinition {
    UserDefinition::new(
        name,
        "$pbkdf2-sha256$i=1,l=32$c2FsdA$aGFzaA",
        vhosts.iter().map(|v| v.to_string()),
        false,
        Vec::new(),
    )
}

#[test]
fn vhosts_and_users_change_only_through_checked_commands() {
    let mut d = BrokerDefinitions::new(["/".to_string()], []);
    assert!(d.apply(BrokerCommand::AddVhost("prod".into())).unwrap());
    assert!(!d.apply(BrokerCommand::AddVhost("prod".into())).unwrap());
    let err = d
        .apply(BrokerCommand::PutUser(user("ann", &["nope"])))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    assert!(d
        .apply(BrokerCommand::PutUser(user("ann", &["/"])))
        .unwrap());
    assert!(!d
        .apply(BrokerCommand::PutUser(user("ann", &["/"])))
        .unwrap());
    let grant = BrokerCommand::SetPermissions {
        user: "ann".into(),
        vhost: "prod".into(),
        permission: Permission::all(),
    };
    assert!(d.apply(grant).unwrap());
    assert!(d.user("ann").unwrap().vhosts.contains("prod"));
    // Deleting a vhost takes it from every user.
    assert!(d.apply(BrokerCommand::DeleteVhost("prod".into())).unwrap());
    assert!(!d.user("ann").unwrap().vhosts.contains("prod"));
    let before = d.clone();
    for bad in [
        BrokerCommand::DeleteVhost("prod".into()),
        BrokerCommand::DeleteUser("bob".into()),
        BrokerCommand::AddVhost(String::new()),
        BrokerCommand::ClearPermissions {
            user: "bob".into(),
            vhost: "/".into(),
        },
    ] {
        assert!(d.apply(bad).is_err());
        assert_eq!(d, before);
    }
}

#[test]
fn stored_users_round_trip() {
    let mut d = BrokerDefinitions::new(["/".to_string()], []);
    let mut u = user("ann", &["/"]);
    u.tags = vec!["administrator".into()];
    d.apply(BrokerCommand::PutUser(u.clone())).unwrap();
    let stored = d.stored_users();
    assert_eq!(UserDefinition::from(stored[0].clone()), u);
}

#[test]
fn a_user_stored_before_patterns_existed_keeps_full_grants() {
    // The record as the previous version wrote it: no permissions fields.
    #[derive(serde::Serialize)]
    struct OldUser {
        name: String,
        password_hash: String,
        vhosts: Vec<String>,
        loopback_only: bool,
        tags: Vec<String>,
    }
    let old = OldUser {
        name: "ann".into(),
        password_hash: "$pbkdf2-sha256$i=1,l=32$c2FsdA$aGFzaA".into(),
        vhosts: vec!["/".into()],
        loopback_only: false,
        tags: Vec::new(),
    };
    let bytes = rmp_serde::to_vec_named(&old).unwrap();
    let stored: StoredUser = rmp_serde::from_slice(&bytes).unwrap();
    let u = UserDefinition::from(stored);
    assert_eq!(u.permission("/"), Some(Permission::all()));
    assert_eq!(u.permission("prod"), None);
}

#[test]
fn patterns_and_topic_permissions_round_trip_through_the_store() {
    let mut d = BrokerDefinitions::new(["/".to_string(), "prod".to_string()], []);
    d.apply(BrokerCommand::PutUser(user("ann", &[]))).unwrap();
    let narrow = Permission::new("^ann-", "", "^(ann-.*|amq\\.gen.*)$").unwrap();
    d.apply(BrokerCommand::SetPermissions {
        user: "ann".into(),
        vhost: "prod".into(),
        permission: narrow.clone(),
    })
    .unwrap();
    d.apply(BrokerCommand::SetPermissions {
        user: "ann".into(),
        vhost: "/".into(),
        permission: Permission::all(),
    })
    .unwrap();
    let topic = TopicPermission::new("^{username}\\.", ".*").unwrap();
    d.apply(BrokerCommand::SetTopicPermissions {
        user: "ann".into(),
        vhost: "prod".into(),
        exchange: "amq.topic".into(),
        permission: topic.clone(),
    })
    .unwrap();
    let back = UserDefinition::from(d.stored_users()[0].clone());
    assert_eq!(back, *d.user("ann").unwrap());
    assert_eq!(back.permission("prod"), Some(narrow));
    assert_eq!(back.permission("/"), Some(Permission::all()));
    let topics: Vec<_> = back.topic_permissions_in("prod").collect();
    assert_eq!(topics, vec![("amq.topic", &topic)]);
    // Deleting the vhost takes both away.
    d.apply(BrokerCommand::DeleteVhost("prod".into())).unwrap();
    let u = d.user("ann").unwrap();
    assert!(u.permission("prod").is_none() && u.topic_permissions.is_empty());
}

#[test]
fn every_change_and_only_a_change_bumps_the_generation() {
    let mut d = BrokerDefinitions::new(["/".to_string()], []);
    let g = d.generation().clone();
    let start = g.get();
    d.apply(BrokerCommand::PutUser(user("ann", &["/"])))
        .unwrap();
    assert_eq!(g.get(), start + 1);
    let same = BrokerCommand::SetPermissions {
        user: "ann".into(),
        vhost: "/".into(),
        permission: Permission::all(),
    };
    assert!(!d.apply(same).unwrap());
    assert_eq!(g.get(), start + 1);
    let narrower = BrokerCommand::SetPermissions {
        user: "ann".into(),
        vhost: "/".into(),
        permission: Permission::new("", ".*", ".*").unwrap(),
    };
    assert!(d.apply(narrower).unwrap());
    assert_eq!(g.get(), start + 2);
    let clear = BrokerCommand::ClearTopicPermissions {
        user: "ann".into(),
        vhost: "/".into(),
        exchange: None,
    };
    assert!(!d.apply(clear).unwrap());
    assert_eq!(g.get(), start + 2);
}

#[test]
fn seeded_users_stay_marked_until_a_change_of_their_name_or_their_permissions() {
    let mut d = BrokerDefinitions::new(["/".to_string()], [user("app", &["/"])]);
    // A user already defined is kept as it is, and not marked.
    assert!(d.seed_users(vec![
        user("guest", &["/"]),
        user("ops", &[]),
        user("app", &[])
    ]));
    let marked = |d: &BrokerDefinitions| d.seeded_users().iter().cloned().collect::<Vec<_>>();
    assert_eq!(marked(&d), ["guest", "ops"]);
    d.apply(BrokerCommand::PutUser(user("ops", &["/"])))
        .unwrap();
    assert_eq!(marked(&d), ["guest"]);
    // A permission change (even one that changes nothing) makes the user the
    // cluster's: a snapshot must carry the grant.
    for cmd in [
        BrokerCommand::SetPermissions {
            user: "guest".into(),
            vhost: "/".into(),
            permission: Permission::all(),
        },
        BrokerCommand::ClearPermissions {
            user: "guest".into(),
            vhost: "/".into(),
        },
        BrokerCommand::SetTopicPermissions {
            user: "guest".into(),
            vhost: "/".into(),
            exchange: "amq.topic".into(),
            permission: TopicPermission::new(".*", ".*").unwrap(),
        },
        BrokerCommand::ClearTopicPermissions {
            user: "guest".into(),
            vhost: "/".into(),
            exchange: None,
        },
    ] {
        let mut d = d.clone();
        let before = d.generation().get();
        d.apply(cmd.clone()).unwrap();
        assert!(d.seeded_users().is_empty(), "{cmd:?} leaves it seeded");
        assert!(
            d.generation().get() > before,
            "{cmd:?}: the change is saved"
        );
    }
    d.apply(BrokerCommand::DeleteUser("guest".into())).unwrap();
    assert!(d.seeded_users().is_empty());
}

#[test]
fn a_cluster_name_is_1_to_255_characters_not_bytes() {
    let mut d = BrokerDefinitions::new(["/".to_string()], []);
    // 255 two-byte characters: 510 bytes, still a valid name.
    let accented = "é".repeat(255);
    assert!(d
        .apply(BrokerCommand::SetClusterName(accented.clone()))
        .unwrap());
    assert_eq!(d.cluster_name(), Some(accented.as_str()));
    for bad in [String::new(), "é".repeat(256), "a\nb".to_string()] {
        let e = d.apply(BrokerCommand::SetClusterName(bad)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::PreconditionFailed, "{e}");
    }
}
