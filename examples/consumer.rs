//! Consumes from the queue the `producer` example fills, acking each message.
//!
//! ```sh
//! cargo run --release --example consumer    # with `cargo run --release` running
//! ```
//!
//! Options: `consumer [ADDR] [COUNT]` (default 127.0.0.1:5680, 10000). Exits after
//! COUNT messages, or after 5 s without one.

use actormq::client::{Client, ConnectOptions, ConsumeOptions, QueueOptions};
use futures_util::StreamExt;
use std::time::Duration;

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
    let mut consumer = client
        .consume("demo", &ConsumeOptions::prefetch(500))
        .await?;
    let mut received = 0;
    while received < count {
        match tokio::time::timeout(Duration::from_secs(5), consumer.next()).await {
            Ok(Some(delivery)) => {
                let delivery = delivery?;
                if received < 3 || received + 1 == count {
                    println!("{}", String::from_utf8_lossy(&delivery.body));
                } else if received == 3 {
                    println!("...");
                }
                delivery.ack()?;
                received += 1;
            }
            Ok(None) => break,
            Err(_) => {
                println!("no message for 5 s");
                break;
            }
        }
    }
    println!("received {received} messages from queue 'demo'");
    client.close().await?;
    Ok(())
}
