//! Virtual hosts and users are runtime definitions: created and deleted without a
//! restart, applied to the next login at once, kept in the data directory, which is
//! authoritative from then on (the settings only seed a new one).

use super::{runtime, within};
use actormq::client::{Client, ConnectOptions, PublishOptions, QueueOptions};
use actormq::definitions::UserDefinition;
use actormq::server::auth::hash_password;
use actormq::server::ServerHandle;
use actormq::{ErrorCode, Settings};
use std::path::Path;

fn start(dir: &Path, vhosts: &[&str]) -> ServerHandle {
    let mut s = Settings::default();
    s.server.bind = "127.0.0.1:0".into();
    s.amqp.bind = vec!["127.0.0.1:0".into()];
    s.http.bind = Vec::new(); // the management API only where a test asks for it
    s.broker.workers = 2;
    s.broker.vhosts = vhosts.iter().map(|v| v.to_string()).collect();
    s.storage.data_dir = dir.to_path_buf();
    s.storage.segment_size = super::SEGMENT_SIZE;
    ServerHandle::start(s).expect("the server starts")
}

async fn connect(
    server: &ServerHandle,
    user: &str,
    password: &str,
    vhost: &str,
) -> Result<Client, actormq::client::ClientError> {
    Client::connect(
        ConnectOptions::new(server.local_addr().to_string())
            .credentials(user, password)
            .vhost(vhost)
            .confirms(true),
    )
    .await
}

fn app_user(password: &str, vhosts: &[&str]) -> UserDefinition {
    UserDefinition::new(
        "app",
        &hash_password(password),
        vhosts.iter().map(|v| v.to_string()),
        false,
        vec!["management".into()],
    )
}

#[test]
fn vhosts_and_users_change_at_run_time_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();

    let server = start(dir.path(), &["/"]);
    let broker = server.broker().clone();
    rt.block_on(async {
        // Unknown until created.
        let refused = connect(&server, "app", "pw", "prod").await.unwrap_err();
        assert_eq!(refused.code(), Some(ErrorCode::AccessRefused), "{refused}");
        broker.add_vhost("prod").await.unwrap();
        let err = broker
            .put_user(app_user("pw", &["nowhere"]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
        broker.put_user(app_user("pw", &["prod"])).await.unwrap();

        // The next login sees both, with no restart.
        let app = connect(&server, "app", "pw", "prod").await.unwrap();
        app.declare_queue("orders", &QueueOptions::durable())
            .await
            .unwrap();
        let c = app
            .publish_with("", "orders", "o-1", &PublishOptions::default().persistent())
            .await
            .unwrap();
        within("a confirm", c).await.unwrap();
        let refused = connect(&server, "app", "pw", "/").await.unwrap_err();
        assert_eq!(refused.code(), Some(ErrorCode::AccessRefused));

        // A permission taken away applies to the next login.
        broker.set_permissions("app", "/").await.unwrap();
        connect(&server, "app", "pw", "/").await.unwrap();
        broker.clear_permissions("app", "/").await.unwrap();
        assert!(connect(&server, "app", "pw", "/").await.is_err());

        // A second user, deleted again.
        let mut bob = app_user("pw2", &["prod"]);
        bob.name = "bob".into();
        broker.put_user(bob).await.unwrap();
        connect(&server, "bob", "pw2", "prod").await.unwrap();
        broker.delete_user("bob").await.unwrap();
        assert!(connect(&server, "bob", "pw2", "prod").await.is_err());
    });
    server.shutdown();

    // Restarted with settings that name neither: the data directory is authoritative.
    let server = start(dir.path(), &["/", "seed-only"]);
    rt.block_on(async {
        let app = connect(&server, "app", "pw", "prod")
            .await
            .expect("the user and the vhost came back");
        let q = app
            .declare_queue("orders", &QueueOptions::durable())
            .await
            .unwrap();
        assert_eq!(q.messages, 1);
        assert!(connect(&server, "bob", "pw2", "prod").await.is_err());
        let vhosts = server.broker().vhosts();
        assert!(!vhosts.contains(&"seed-only".to_string()), "{vhosts:?}");
        // guest was seeded on the first start and is still there.
        connect(&server, "guest", "guest", "/").await.unwrap();

        // Deleting a vhost deletes what it held, now and after a restart.
        server.broker().delete_vhost("prod").await.unwrap();
        let gone = connect(&server, "app", "pw", "prod").await.unwrap_err();
        assert_eq!(gone.code(), Some(ErrorCode::NotFound), "{gone}");
        let user = server
            .broker()
            .users()
            .into_iter()
            .find(|u| u.name == "app")
            .unwrap();
        assert!(user.vhosts.is_empty(), "its permission went with it");
    });
    server.shutdown();

    let server = start(dir.path(), &["/"]);
    rt.block_on(async {
        assert!(!server.broker().vhosts().contains(&"prod".to_string()));
        // Created again, it starts empty: the old queue and its message are gone.
        server.broker().add_vhost("prod").await.unwrap();
        server
            .broker()
            .set_permissions("app", "prod")
            .await
            .unwrap();
        let app = connect(&server, "app", "pw", "prod").await.unwrap();
        let passive = QueueOptions::durable().passive();
        let err = app.declare_queue("orders", &passive).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");
        let q = app
            .declare_queue("orders", &QueueOptions::durable())
            .await
            .unwrap();
        assert_eq!(q.messages, 0, "the deleted queue's message stayed deleted");
    });
    server.shutdown();
}

/// Users deleted stay deleted: the settings seed the users of a new data directory once.
#[test]
fn deleted_users_are_not_seeded_again() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let server = start(dir.path(), &["/"]);
    rt.block_on(server.broker().delete_user("guest")).unwrap();
    assert!(server.broker().users().is_empty());
    server.shutdown();
    let server = start(dir.path(), &["/"]);
    assert!(
        server.broker().users().is_empty(),
        "the default user came back: {:?}",
        server.broker().users()
    );
    server.shutdown();
}

/// The cluster's name (`PUT /api/cluster-name`) is kept in the data directory.
#[test]
fn the_cluster_name_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let server = start(dir.path(), &["/"]);
    assert_eq!(server.broker().cluster_name(), None);
    rt.block_on(server.broker().set_cluster_name("eu-prod"))
        .unwrap();
    server.shutdown();
    let server = start(dir.path(), &["/"]);
    assert_eq!(server.broker().cluster_name().as_deref(), Some("eu-prod"));
    server.shutdown();
}
