//! Publishes messages with publisher confirms to a running broker.
//!
//! ```sh
//! cargo run --release                       # terminal 1: the broker
//! cargo run --release --example producer    # terminal 2: 10,000 messages to "demo"
//! cargo run --release --example consumer    # terminal 3: reads them back
//! ```
//!
//! Options: `producer [ADDR] [COUNT]` (default 127.0.0.1:5680, 10000).

use actormq::client::{Client, ConnectOptions, PublishOptions, QueueOptions};
use futures_util::stream::{FuturesUnordered, StreamExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:5680".into());
    let count: u64 = args
        .next()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(10_000);

    let client = Client::connect(ConnectOptions::new(addr)).await?;
    client
        .declare_queue("demo", &QueueOptions::durable())
        .await?;

    // Pipelined: publish returns as soon as the frame is queued; the confirms are
    // awaited as they come, with the client bounding how many are outstanding.
    let options = PublishOptions::default().persistent();
    let mut confirms = FuturesUnordered::new();
    for i in 0..count {
        let body = format!("message {i}");
        confirms.push(client.publish_with("", "demo", body, &options).await?);
        while let Some(Some(r)) = futures_util::FutureExt::now_or_never(confirms.next()) {
            r?;
        }
    }
    while let Some(r) = confirms.next().await {
        r?;
    }
    println!("published and confirmed {count} messages to queue 'demo'");
    client.close().await?;
    Ok(())
}
