//! The users a node seeded from its own `Settings.toml` are its own: a node that joins
//! through a snapshot keeps those the cluster never had (as a node sent the log keeps
//! them), loses one whose name the cluster deleted (as replaying the delete would),
//! and none of them reaches the other nodes. A seeded user the cluster changed (its
//! record or its permissions) is the cluster's, and the snapshot carries it.

use super::snapshots::{applied, churn_until_purged, cluster, extra, ok};
use super::{free_port, leader, Node};
use actormq::server::auth::hash_password;
use tokio::task::block_in_place;

/// `[[users]]` entries: each `(name, password)` an administrator of `/`.
fn users_section(users: &[(&str, &str)]) -> String {
    users
        .iter()
        .map(|(name, pw)| {
            format!(
                "[[users]]\nname = \"{name}\"\npassword_hash = \"{}\"\nvhosts = [\"/\"]\ntags = [\"administrator\"]\n",
                hash_password(pw)
            )
        })
        .collect()
}

async fn user_names(node: &Node) -> Vec<String> {
    let r = node.api().get("/api/users").await;
    ok(r.status, "users");
    let mut names: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_through_a_snapshot_keeps_its_own_seeded_users_but_not_one_the_cluster_deleted_and_gets_its_grants(
) {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| cluster(dir.path()));
    {
        let all: Vec<_> = nodes.iter().collect();
        block_in_place(|| leader(&all));
    }
    let api = nodes[0].api();
    ok(
        api.put("/api/users/app", r#"{"password":"pw","tags":""}"#)
            .await
            .status,
        "user",
    );
    ok(
        api.put("/api/users/retired", r#"{"password":"pw","tags":""}"#)
            .await
            .status,
        "user to delete",
    );
    ok(api.delete("/api/users/retired").await.status, "delete");
    // A grant to a seeded user makes it the cluster's: the snapshot carries it.
    ok(api.put("/api/vhosts/extra", "{}").await.status, "vhost");
    ok(
        api.put(
            "/api/permissions/extra/guest",
            r#"{"configure":".*","write":".*","read":".*"}"#,
        )
        .await
        .status,
        "grant to guest",
    );
    let defined = block_in_place(|| applied(&nodes[0]));
    {
        let all: Vec<_> = nodes.iter().collect();
        churn_until_purged(&nodes[0], &all, defined).await;
    }

    // Node 4 seeds guest, its own admin, and a user of the name the cluster deleted.
    let addr = format!("127.0.0.1:{}", free_port());
    let section = users_section(&[("guest", "guest"), ("n4-admin", "n4"), ("retired", "x")]);
    let fourth = block_in_place(|| {
        Node::start_with(&dir.path().join("n4"), 4, &addr, &[], &extra(), &section)
    });
    assert_eq!(user_names(&fourth).await, ["guest", "n4-admin", "retired"]);
    let added = block_in_place(|| nodes[1].cli(&["add-node", "4", &addr]));
    assert_eq!(added.unwrap().trim(), "ok");
    let want = ["app", "guest", "n4-admin"];
    let end = std::time::Instant::now() + crate::support::DEADLINE * 2;
    loop {
        let got = user_names(&fourth).await;
        if got == want {
            break;
        }
        assert!(std::time::Instant::now() < end, "node 4's users: {got:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        fourth
            .logs()
            .contains("installing a snapshot of the definitions"),
        "node 4 was sent the log, not a snapshot"
    );
    let granted = fourth.api().get("/api/permissions/extra/guest").await;
    ok(granted.status, "the cluster's grant to guest on node 4");
    // Its own admin still logs in there, and stayed its own.
    let me = fourth.api().user("n4-admin", "n4").get("/api/whoami").await;
    ok(me.status, "n4-admin on node 4");
    for n in &nodes {
        assert_eq!(user_names(n).await, ["app", "guest"], "node {}", n.id);
    }
    assert_eq!(me.json()["name"], "n4-admin");
    super::assert_no_panic(&nodes);
}
