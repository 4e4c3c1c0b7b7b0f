//! A clean shutdown loses nothing: what a client was told (a confirm) stays, and what the
//! broker acknowledged having received (an ack followed by an answered request) stays
//! settled after the restart.

use super::{runtime, within};
use crate::support::TestServer;
use actormq::client::{Client, ConnectOptions, PublishOptions, QueueOptions};
use actormq::server::ServerHandle;
use actormq::Settings;
use std::path::Path;

/// Settings on ephemeral ports only: a test never takes a well-known port (5672, 15672)
/// that another broker on the machine may hold.
fn settings(dir: &Path) -> Settings {
    let mut s = Settings::default();
    s.server.bind = "127.0.0.1:0".into();
    s.amqp.bind = vec!["127.0.0.1:0".into()];
    s.http.bind = Vec::new(); // the management API only where a test asks for it
    s.broker.workers = 2;
    s.storage.data_dir = dir.to_path_buf();
    s.storage.segment_size = super::SEGMENT_SIZE;
    s
}

fn start(dir: &Path) -> ServerHandle {
    ServerHandle::start(settings(dir)).expect("the server starts on its data directory")
}

async fn connect(server: &ServerHandle) -> Client {
    Client::connect(ConnectOptions::new(server.local_addr().to_string()).confirms(true))
        .await
        .expect("the client connects")
}

/// The race of the foundations issue: an ack the broker has taken (the request after it
/// was answered) was lost by a clean shutdown 5 times in 40, because the shutdown
/// stopped the actors before the queues had written the ack. 60 rounds, each with a
/// fresh confirm, get and ack right before the shutdown.
#[test]
fn an_ack_taken_before_a_clean_shutdown_stays_taken_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    for round in 0..60u32 {
        let server = start(dir.path());
        rt.block_on(async {
            let client = connect(&server).await;
            let q = client
                .declare_queue("jobs", &QueueOptions::durable())
                .await
                .unwrap();
            assert_eq!(
                q.messages, 0,
                "round {round}: the queue came back non-empty"
            );
            let confirm = client
                .publish_with(
                    "",
                    "jobs",
                    format!("job {round}"),
                    &PublishOptions::default().persistent(),
                )
                .await
                .unwrap();
            within("the confirm", confirm).await.expect("confirmed");
            let got = client
                .get("jobs", false)
                .await
                .unwrap()
                .expect("the message just confirmed");
            client.ack(got.delivery.delivery_tag).unwrap();
            // Frames are handled in order: once this is answered, the ack was taken.
            let q = client
                .declare_queue("jobs", &QueueOptions::durable())
                .await
                .unwrap();
            assert_eq!(q.messages, 0);
        });
        server.shutdown();
    }
}

/// A confirmed persistent message that nobody consumed is there after a clean shutdown.
#[test]
fn a_confirmed_message_survives_a_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let server = start(dir.path());
    rt.block_on(async {
        let client = connect(&server).await;
        client
            .declare_queue("kept", &QueueOptions::durable())
            .await
            .unwrap();
        let mut confirms = Vec::new();
        for i in 0..100 {
            let c = client
                .publish_with(
                    "",
                    "kept",
                    format!("{i}"),
                    &PublishOptions::default().persistent(),
                )
                .await
                .unwrap();
            confirms.push(c);
        }
        for c in confirms {
            within("a confirm", c).await.expect("confirmed");
        }
    });
    server.shutdown();
    let server = start(dir.path());
    rt.block_on(async {
        let client = connect(&server).await;
        let q = client
            .declare_queue("kept", &QueueOptions::durable())
            .await
            .unwrap();
        assert_eq!(q.messages, 100);
    });
    server.shutdown();
}

/// A client is told why its connection closes when the broker shuts down.
#[test]
fn clients_are_told_when_the_broker_shuts_down() {
    let rt = runtime();
    let server = TestServer::start();
    let client = rt.block_on(connect(server.handle()));
    server.handle().shutdown();
    rt.block_on(async {
        crate::support::eventually("the client sees the close", || async {
            client.closed_reason().is_some()
        })
        .await;
    });
    let reason = client.closed_reason().unwrap();
    assert_eq!(
        reason.code(),
        Some(actormq::ErrorCode::ConnectionForced),
        "{reason}"
    );
}

/// The same race in-process: an embedded session's ack goes straight to the queue, and
/// `BrokerHandle::shutdown` must let the queue write it before the broker stops.
#[test]
fn an_embedded_ack_right_before_shutdown_stays_taken() {
    use actormq::Message;
    use actormq::QueueOptions;
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    for round in 0..60u32 {
        let broker = super::embedded(dir.path());
        rt.block_on(async {
            let session = broker.session();
            let q = session
                .declare_queue("jobs", &QueueOptions::durable())
                .await
                .unwrap();
            assert_eq!(q.messages, 0, "round {round}: the acked message came back");
            let m = Message::new("", "jobs", format!("job {round}")).persistent();
            let confirm = session.publish(m).await.unwrap();
            within("the confirm", confirm).await.expect("confirmed");
            let got = session
                .get("jobs", false)
                .await
                .unwrap()
                .expect("the message");
            got.ack();
        });
        broker.shutdown();
    }
}

/// A shutdown asked for from inside the broker (on one of its own threads) neither
/// panics nor hangs: it runs on a thread of its own, and the data directory is released.
#[test]
fn a_shutdown_from_a_broker_thread_completes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let broker = server.broker().clone();
    server
        .broker()
        .context()
        .next_arbiter()
        .spawn(async move { broker.shutdown() });
    // Released once the stop is done: a new broker can open the same directory.
    let mut again = None;
    crate::support::eventually_sync("the data directory is released", || {
        // Only the data directory's lock can refuse this start (the default
        // settings' AMQP and HTTP ports, held by any other broker, failed it before).
        match ServerHandle::start(settings(dir.path())) {
            Ok(h) => {
                again = Some(h);
                true
            }
            Err(_) => false,
        }
    });
    again.unwrap().shutdown();
}
