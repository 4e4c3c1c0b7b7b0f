//! The client commands: each connects with [`Client`], does its one thing, and closes.
//! `publish` is in `publish.rs`, `consume` and `get` in `consume.rs`.

use super::args::{Binding, Command};
use super::consume::{self, ConsumeRequest};
use super::flags::KeyValue;
use super::Error;
use actormq::client::{Client, ConnectOptions, ExchangeOptions, QueueOptions};
use actormq::FieldTable;

/// Runs one client command (everything but `serve`, `hash-password` and `perf`).
pub async fn run(options: ConnectOptions, command: Command) -> Result<(), Error> {
    let client = Client::connect(options.confirms(false)).await?;
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
            ..
        } => {
            let options = QueueOptions {
                durable,
                exclusive,
                auto_delete,
                passive,
                arguments: table(args),
            };
            let q = client.declare_queue(&name, &options).await?;
            println!(
                "name: {}\nmessages: {}\nconsumers: {}",
                q.name, q.messages, q.consumers
            );
        }
        Command::DeclareExchange {
            name,
            kind,
            durable,
            auto_delete,
            internal,
            args,
            ..
        } => {
            let options = ExchangeOptions {
                durable,
                auto_delete,
                internal,
                passive: false,
                arguments: table(args),
            };
            client.declare_exchange(&name, &kind, &options).await?;
        }
        Command::Bind(b) => bind(client, b, true).await?,
        Command::Unbind(b) => bind(client, b, false).await?,
        Command::DeleteQueue {
            name,
            if_unused,
            if_empty,
            ..
        } => println!(
            "{}",
            client.delete_queue_if(&name, if_unused, if_empty).await?
        ),
        Command::DeleteExchange {
            name, if_unused, ..
        } => client.delete_exchange(&name, if_unused).await?,
        Command::Purge { name, .. } => println!("{}", client.purge_queue(&name).await?),
        Command::Publish(p) => super::publish::publish(client, *p).await?,
        Command::Consume {
            queue,
            count,
            prefetch,
            no_ack,
            timeout,
            args,
            format,
            ..
        } => {
            let request = ConsumeRequest {
                queue,
                count,
                prefetch,
                no_ack,
                timeout,
                arguments: table(args),
                format,
            };
            consume::consume(client, request).await?
        }
        Command::Get {
            queue,
            ack_mode,
            format,
            ..
        } => consume::get(client, &queue, ack_mode, format).await?,
        Command::Serve { .. }
        | Command::HashPassword { .. }
        | Command::Perf { .. }
        | Command::Mgmt(_)
        | Command::Cluster(_) => {
            unreachable!("handled before connecting")
        }
    }
    Ok(())
}

/// `bind` (`add`) or `unbind`, to a queue or to an exchange.
async fn bind(client: &Client, b: Binding, add: bool) -> Result<(), Error> {
    let args = table(b.args);
    let (exchange, key) = (b.exchange.as_str(), b.routing_key.as_str());
    match (b.queue, b.to_exchange) {
        (Some(q), None) if add => client.bind_queue(&q, exchange, key, args).await?,
        (Some(q), None) => client.unbind_queue(&q, exchange, key, args).await?,
        (None, Some(x)) if add => client.bind_exchange(&x, exchange, key, args).await?,
        (None, Some(x)) => client.unbind_exchange(&x, exchange, key, args).await?,
        _ => unreachable!("clap requires exactly one of --queue and --to-exchange"),
    }
    Ok(())
}
