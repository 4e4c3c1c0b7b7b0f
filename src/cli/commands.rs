//! The client commands: each connects with [`Client`], does its one thing, and closes.

use super::args::{Command, KeyValue};
use super::Error;
use actormq::client::{
    Client, ConnectOptions, ConsumeOptions, ExchangeOptions, PublishConfirm, PublishOptions,
    QueueOptions,
};
use actormq::{FieldTable, Properties};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use std::io::Write;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Runs one client command (everything but `serve` and `hash-password`).
pub async fn run(options: ConnectOptions, command: Command) -> Result<(), Error> {
    let confirms = matches!(command, Command::Publish { confirm: true, .. });
    let client = Client::connect(options.confirms(confirms)).await?;
    execute(&client, command).await?;
    client.close().await?;
    // The broker answers the close after every frame sent before it, so an error it
    // reported outside a request (a publish without --confirm to a missing exchange)
    // has arrived by now.
    match client.take_errors().into_iter().next() {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn table(args: Vec<KeyValue>) -> FieldTable {
    args.into_iter().collect()
}

async fn execute(client: &Client, command: Command) -> Result<(), Error> {
    match command {
        Command::DeclareQueue {
            name,
            durable,
            exclusive,
            auto_delete,
            passive,
            args,
        } => {
            let options = QueueOptions {
                durable,
                exclusive,
                auto_delete,
                passive,
                arguments: table(args),
            };
            let q = client.declare_queue(&name, &options).await?;
            println!("{}\t{}\t{}", q.name, q.messages, q.consumers);
        }
        Command::DeclareExchange {
            name,
            kind,
            durable,
            auto_delete,
        } => {
            let options = ExchangeOptions {
                durable,
                auto_delete,
                ..Default::default()
            };
            client.declare_exchange(&name, &kind, &options).await?;
        }
        Command::Bind {
            exchange,
            queue,
            routing_key,
            args,
        } => {
            client
                .bind_queue(&queue, &exchange, &routing_key, table(args))
                .await?
        }
        Command::DeleteQueue { name } => println!("{}", client.delete_queue(&name).await?),
        Command::DeleteExchange { name } => client.delete_exchange(&name, false).await?,
        Command::Purge { name } => println!("{}", client.purge_queue(&name).await?),
        Command::Publish {
            exchange,
            routing_key,
            persistent,
            confirm,
            headers,
            expiration,
            priority,
            message_id,
            message,
        } => {
            let mut properties = Properties::default();
            if persistent {
                properties.delivery_mode = Some(2);
            }
            properties.expiration = expiration.map(|ms| ms.to_string());
            properties.priority = priority;
            properties.message_id = message_id;
            if !headers.is_empty() {
                properties.headers = Some(table(headers));
            }
            let options = PublishOptions {
                mandatory: false,
                confirm: Some(confirm),
                properties,
            };
            publish(client, &exchange, &routing_key, &options, message).await?;
        }
        Command::Consume {
            queue,
            count,
            prefetch,
            no_ack,
            timeout,
            args,
        } => {
            consume(
                client,
                &queue,
                count,
                prefetch,
                no_ack,
                timeout,
                table(args),
            )
            .await?
        }
        Command::Serve { .. } | Command::HashPassword { .. } | Command::Perf(_) => {
            unreachable!("handled before connecting")
        }
    }
    Ok(())
}

/// Publishes MESSAGE or each line of standard input; with confirms, returns only once
/// every message is confirmed (or with the first refusal).
async fn publish(
    client: &Client,
    exchange: &str,
    routing_key: &str,
    options: &PublishOptions,
    message: Option<String>,
) -> Result<(), Error> {
    let mut pending: FuturesUnordered<PublishConfirm> = FuturesUnordered::new();
    match message {
        Some(m) => pending.push(
            client
                .publish_with(exchange, routing_key, m, options)
                .await?,
        ),
        None => {
            let mut stdin = BufReader::with_capacity(64 * 1024, tokio::io::stdin());
            let mut line = Vec::new();
            loop {
                line.clear();
                if stdin.read_until(b'\n', &mut line).await? == 0 {
                    break;
                }
                let body = strip_newline(&line);
                pending.push(
                    client
                        .publish_with(exchange, routing_key, body, options)
                        .await?,
                );
                // Settle what is already confirmed, so memory stays flat on long inputs.
                while let Some(Some(done)) = pending.next().now_or_never() {
                    done?;
                }
            }
        }
    }
    while let Some(done) = pending.next().await {
        done?;
    }
    Ok(())
}

/// A line without its `\n` or `\r\n`.
fn strip_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Prints bodies, one per line, until `count` messages or `timeout` seconds of silence.
async fn consume(
    client: &Client,
    queue: &str,
    count: Option<u64>,
    prefetch: Option<u32>,
    no_ack: bool,
    timeout: Option<f64>,
    arguments: FieldTable,
) -> Result<(), Error> {
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
    let mut consumer = client.consume(queue, &options).await?;
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
        out.write_all(&delivery.body)?;
        out.write_all(b"\n")?;
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

#[cfg(test)]
mod tests {
    use super::strip_newline;

    #[test]
    fn lines_lose_their_line_ending_only() {
        assert_eq!(strip_newline(b"a\n"), b"a");
        assert_eq!(strip_newline(b"a\r\n"), b"a");
        assert_eq!(strip_newline(b"a"), b"a");
        assert_eq!(strip_newline(b"\n"), b"");
        assert_eq!(strip_newline(b"a\rb\n"), b"a\rb");
    }
}
