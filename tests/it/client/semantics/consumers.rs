//! Over the network: consumer timeouts, single active consumer, consumer priorities and
//! alternate exchanges.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacked_delivery_times_out_and_comes_back_without_touching_the_connection() {
    let server = TestServer::start();
    let client = connect(&server).await;
    declare(
        &client,
        "q",
        &[("x-consumer-timeout", FieldValue::Int(200))],
    )
    .await;
    let mut c = client
        .consume("q", &ConsumeOptions::prefetch(1))
        .await
        .unwrap();
    send(&client, "", "q", "job", &PublishOptions::default())
        .await
        .unwrap();
    let first = next(&mut c).await;
    let second = next(&mut c).await;
    assert!(second.redelivered && second.delivery_count >= 2);
    assert_ne!(first.delivery_tag, second.delivery_tag);
    // A late ack of the first tag is accepted and settles nothing.
    first.ack().unwrap();
    assert_eq!(ready(&client, "q").await, 0);
    // Settle it, stop consuming, and take back whatever came again meanwhile.
    second.ack().unwrap();
    c.cancel().await.unwrap();
    while let Some(d) = within("the stream's end", c.next()).await {
        d.unwrap().ack().unwrap();
    }
    for left in drain(&client, "q").await {
        assert_eq!(left, "job");
    }
    assert_eq!(ready(&client, "q").await, 0);
    assert!(
        client.closed_reason().is_none(),
        "the connection is untouched"
    );
    assert!(
        client.take_errors().is_empty(),
        "{:?}",
        client.take_errors()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_single_active_consumer_hands_over_when_its_connection_closes() {
    let server = TestServer::start();
    let first_client = connect(&server).await;
    let second_client = connect(&server).await;
    declare(
        &second_client,
        "q",
        &[("x-single-active-consumer", true.into())],
    )
    .await;
    let mut first = first_client
        .consume("q", &ConsumeOptions::prefetch(10))
        .await
        .unwrap();
    let mut second = second_client
        .consume("q", &ConsumeOptions::prefetch(10))
        .await
        .unwrap();
    for i in 0..3 {
        send(
            &second_client,
            "",
            "q",
            &format!("m{i}"),
            &PublishOptions::default(),
        )
        .await
        .unwrap();
    }
    let got: Vec<Delivery> = vec![
        next(&mut first).await,
        next(&mut first).await,
        next(&mut first).await,
    ];
    assert_eq!(got.iter().map(text).collect::<Vec<_>>(), ["m0", "m1", "m2"]);
    got[0].ack().unwrap();
    first_client.close().await.unwrap();
    drop(got);
    drop(first);
    let taken = [next(&mut second).await, next(&mut second).await];
    assert_eq!(
        (text(&taken[0]), text(&taken[1])),
        ("m1".into(), "m2".into())
    );
    assert!(taken.iter().all(|d| d.redelivered));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_priority_consumer_is_served_first_and_a_bad_priority_refused() {
    let server = TestServer::start();
    let client = connect(&server).await;
    declare(&client, "q", &[]).await;
    let mut urgent = client
        .consume(
            "q",
            &ConsumeOptions::prefetch(1).arg("x-priority", FieldValue::Int(5)),
        )
        .await
        .unwrap();
    let mut normal = client
        .consume("q", &ConsumeOptions::prefetch(10))
        .await
        .unwrap();
    for i in 0..3 {
        send(
            &client,
            "",
            "q",
            &format!("m{i}"),
            &PublishOptions::default(),
        )
        .await
        .unwrap();
    }
    assert_eq!(text(&next(&mut urgent).await), "m0");
    assert_eq!(text(&next(&mut normal).await), "m1");
    assert_eq!(text(&next(&mut normal).await), "m2");
    let e = client
        .consume("q", &ConsumeOptions::prefetch(1).arg("x-priority", "top"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::PreconditionFailed));
    assert!(e.to_string().contains("'x-priority'"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_message_goes_to_the_alternate_exchange() {
    let server = TestServer::start();
    let client = connect(&server).await;
    client
        .declare_exchange(
            "orders",
            "direct",
            &ExchangeOptions::default().arg("alternate-exchange", "orders.ae"),
        )
        .await
        .unwrap();
    client
        .declare_exchange("orders.ae", "fanout", &ExchangeOptions::default())
        .await
        .unwrap();
    declare(&client, "unrouted", &[]).await;
    client
        .bind_queue("unrouted", "orders.ae", "", FieldTable::new())
        .await
        .unwrap();
    let c = send(
        &client,
        "orders",
        "nobody",
        "stray",
        &PublishOptions::default().mandatory(),
    )
    .await
    .unwrap();
    assert!(!c.is_returned(), "routed through the alternate exchange");
    assert_eq!(drain(&client, "unrouted").await, ["stray"]);
}
