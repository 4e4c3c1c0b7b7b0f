//! `consume` (a stream of messages) and `get` (one message), printed as bodies or JSON.

use super::flags::{AckMode, Format};
use super::output::write_delivery;
use super::Error;
use actormq::client::{Client, ConsumeOptions};
use actormq::FieldTable;
use futures_util::StreamExt;
use std::io::Write;
use std::time::Duration;

/// What `consume` was asked for.
pub struct ConsumeRequest {
    /// The queue.
    pub queue: String,
    /// Messages to print before exiting; `None` = until the timeout or forever.
    pub count: Option<u64>,
    /// Unacknowledged messages at most.
    pub prefetch: Option<u32>,
    /// Consume without acknowledgement.
    pub no_ack: bool,
    /// Seconds of silence after which to exit.
    pub timeout: Option<f64>,
    /// Consumer arguments.
    pub arguments: FieldTable,
    /// How to print.
    pub format: Format,
}

/// Prints messages until `count` of them or `timeout` seconds of silence.
pub async fn consume(client: &Client, req: ConsumeRequest) -> Result<(), Error> {
    let ConsumeRequest {
        queue,
        count,
        prefetch,
        no_ack,
        timeout,
        arguments,
        format,
    } = req;
    if count == Some(0) {
        return Ok(());
    }
    let prefetch = prefetch.unwrap_or(match count {
        Some(n) => n.min(1000) as u32,
        None => 100,
    });
    // A no-ack consumer ignores prefetch: the broker would push (and so lose) messages
    // beyond --count. With a count, --no-ack therefore acks each message on receipt.
    let options = ConsumeOptions {
        prefetch,
        no_ack: no_ack && count.is_none(),
        arguments,
        ..Default::default()
    };
    let mut consumer = client.consume(&queue, &options).await?;
    let timeout = timeout.map(Duration::from_secs_f64);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut received = 0u64;
    while count.is_none_or(|n| received < n) {
        let next = match timeout {
            Some(t) => match tokio::time::timeout(t, consumer.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => consumer.next().await,
        };
        let Some(delivery) = next else { break };
        let delivery = delivery?;
        if no_ack {
            delivery.ack()?;
        }
        write_delivery(&mut out, &delivery, format, None)?;
        out.flush()?;
        if !no_ack {
            // After printing: a message is only gone once it was written out.
            delivery.ack()?;
        }
        received += 1;
    }
    out.flush()?;
    consumer.cancel().await?;
    Ok(())
}

/// Gets one message, prints it, then settles it as `ack_mode` says. An empty queue is
/// an error (exit status 1), so a script can loop until it.
pub async fn get(
    client: &Client,
    queue: &str,
    ack_mode: AckMode,
    format: Format,
) -> Result<(), Error> {
    let Some(got) = client.get(queue, ack_mode == AckMode::NoAck).await? else {
        return Err(format!("queue '{queue}' is empty").into());
    };
    let mut out = std::io::stdout().lock();
    write_delivery(&mut out, &got.delivery, format, Some(got.message_count))?;
    out.flush()?;
    match ack_mode {
        AckMode::Ack => got.delivery.ack()?,
        AckMode::Requeue => got.delivery.reject(true)?,
        AckMode::NoAck => {}
    }
    Ok(())
}
