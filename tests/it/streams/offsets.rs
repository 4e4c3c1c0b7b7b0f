//! Named consumers (`x-stream-consumer-name`): the broker keeps the offset after the
//! highest ack and a later consumer of the same name resumes there, after a restart too;
//! the log itself comes back whole.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_consumer_resumes_after_its_last_ack_across_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_path_buf();
    let start = || {
        let dir = dir.clone();
        TestServer::with(move |s| s.storage.data_dir = dir)
    };
    let named = |o: Option<&str>| {
        let opts = ConsumeOptions::prefetch(10).arg("x-stream-consumer-name", "billing");
        match o {
            Some(o) => opts.arg("x-stream-offset", o),
            None => opts,
        }
    };
    {
        let server = start();
        let c = connect(&server).await;
        c.declare_queue("orders", &stream()).await.unwrap();
        publish_n(&c, "orders", "o", 10).await;
        let mut billing = c.consume("orders", &named(Some("first"))).await.unwrap();
        assert_eq!(offsets(&take(&mut billing, 4).await), vec![0, 1, 2, 3]);
        billing.cancel().await.unwrap();
        // Resumes in the same broker, without an x-stream-offset.
        let mut again = c.consume("orders", &named(None)).await.unwrap();
        assert_eq!(offsets(&take(&mut again, 2).await), vec![4, 5]);
        again.cancel().await.unwrap();
        c.close().await.unwrap();
    }
    let server = start();
    let c = connect(&server).await;
    let info = c.declare_queue("orders", &stream()).await.unwrap();
    assert_eq!(info.messages, 10, "the log came back whole");
    let mut resumed = c.consume("orders", &named(None)).await.unwrap();
    let got = take(&mut resumed, 4).await;
    assert_eq!(offsets(&got), vec![6, 7, 8, 9]);
    assert_eq!(bodies(&got)[0], "o6");
    // New appends after the restart go on from the recovered end.
    publish_n(&c, "orders", "n", 1).await;
    assert_eq!(offsets(&take(&mut resumed, 1).await), vec![10]);
}
