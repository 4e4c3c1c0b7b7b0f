//! The command line, as clap derive types, and the parsing of `KEY=VALUE` arguments.

use actormq::FieldValue;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// A message broker on actix actors, with RabbitMQ semantics.
#[derive(Debug, Parser)]
#[command(name = "actormq", version, about)]
pub struct Cli {
    /// Broker to talk to.
    #[arg(
        long,
        global = true,
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:5680"
    )]
    pub server: String,
    /// User name.
    #[arg(long, global = true, default_value = "guest")]
    pub user: String,
    /// Password.
    #[arg(long, global = true, default_value = "guest")]
    pub password: String,
    /// Virtual host.
    #[arg(long, global = true, default_value = "/")]
    pub vhost: String,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// A `KEY=VALUE` argument, typed as RabbitMQ's tools type it.
pub type KeyValue = (String, FieldValue);

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load generator: producers and consumers against the broker, reporting rates,
    /// end-to-end latency and (with --broker-pid) the broker's CPU and peak RSS.
    Perf(actormq::perf::PerfArgs),
    /// Run the broker (the default). Reads ./Settings.toml when present.
    Serve {
        /// Settings file to read instead of ./Settings.toml.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Declare a queue; prints its name, ready messages and consumers, tab-separated.
    DeclareQueue {
        /// Queue name.
        name: String,
        /// Survive a broker restart.
        #[arg(long)]
        durable: bool,
        /// Owned by this connection (so deleted when the command exits).
        #[arg(long)]
        exclusive: bool,
        /// Delete when the last consumer leaves.
        #[arg(long)]
        auto_delete: bool,
        /// Only check that the queue exists (NOT_FOUND otherwise).
        #[arg(long)]
        passive: bool,
        /// Queue argument, e.g. x-message-ttl=60000 (integers, true / false and floats
        /// are typed, anything else is a string). Repeatable.
        #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        args: Vec<KeyValue>,
    },
    /// Declare an exchange.
    DeclareExchange {
        /// Exchange name.
        name: String,
        /// Type: direct, fanout, topic, headers, or one registered with the broker.
        #[arg(long = "type", value_name = "TYPE")]
        kind: String,
        /// Survive a broker restart.
        #[arg(long)]
        durable: bool,
        /// Delete when the last binding goes.
        #[arg(long)]
        auto_delete: bool,
    },
    /// Bind a queue to an exchange.
    Bind {
        /// Source exchange.
        #[arg(long)]
        exchange: String,
        /// Destination queue.
        #[arg(long)]
        queue: String,
        /// Binding key.
        #[arg(long, default_value = "")]
        routing_key: String,
        /// Binding argument (typed as for declare-queue). Repeatable.
        #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        args: Vec<KeyValue>,
    },
    /// Delete a queue; prints how many messages it held.
    DeleteQueue {
        /// Queue name.
        name: String,
    },
    /// Delete an exchange.
    DeleteExchange {
        /// Exchange name.
        name: String,
    },
    /// Remove a queue's ready messages; prints how many.
    Purge {
        /// Queue name.
        name: String,
    },
    /// Publish MESSAGE, or without it one message per line of standard input.
    Publish {
        /// Exchange ("" = the default exchange, which routes to the queue named by the
        /// routing key).
        #[arg(long, default_value = "")]
        exchange: String,
        /// Routing key.
        #[arg(long)]
        routing_key: String,
        /// Mark messages persistent (kept across restarts in durable queues).
        #[arg(long)]
        persistent: bool,
        /// Wait for the broker to confirm every message; exit non-zero if one is refused.
        #[arg(long)]
        confirm: bool,
        /// Message header (typed as for declare-queue; `x-delay=MS` delays delivery).
        /// Repeatable.
        #[arg(long = "header", value_name = "K=V", value_parser = parse_key_value)]
        headers: Vec<KeyValue>,
        /// Per-message TTL in milliseconds (the `expiration` property).
        #[arg(long, value_name = "MS")]
        expiration: Option<u64>,
        /// Message priority, 0-255 (honoured by queues with x-max-priority).
        #[arg(long)]
        priority: Option<u8>,
        /// Application message id (also the key of x-dedup-window).
        #[arg(long)]
        message_id: Option<String>,
        /// The message body; read from standard input when omitted.
        message: Option<String>,
    },
    /// Consume from a queue, printing one body per line.
    Consume {
        /// Queue name.
        #[arg(long)]
        queue: String,
        /// Exit after this many messages.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Unacknowledged messages at most (default: N when --count is given, up to
        /// 1000; else 100).
        #[arg(long, value_name = "N")]
        prefetch: Option<u32>,
        /// Do not acknowledge: the broker forgets messages as it sends them.
        #[arg(long)]
        no_ack: bool,
        /// Exit after this many seconds without a message.
        #[arg(long, value_name = "SECS", value_parser = parse_secs)]
        timeout: Option<f64>,
        /// Consumer argument, e.g. x-priority=10. Repeatable.
        #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        args: Vec<KeyValue>,
    },
    /// Print a PBKDF2 hash of a password for a `[[users]]` entry of Settings.toml.
    HashPassword {
        /// The password; read from the first line of standard input when omitted.
        // Not named `password`: clap would merge it with the global --password.
        #[arg(value_name = "PASSWORD")]
        secret: Option<String>,
    },
}

/// Parses `KEY=VALUE`: the key is everything before the first `=`, the value is typed
/// by [`FieldValue::parse_cli`] (`x-message-ttl=60000` is an integer).
pub fn parse_key_value(s: &str) -> Result<KeyValue, String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), FieldValue::parse_cli(v))),
        Some(_) => Err(format!("'{s}' has an empty key; expected KEY=VALUE")),
        None => Err(format!("'{s}' has no '='; expected KEY=VALUE")),
    }
}

/// Parses a non-negative, finite number of seconds.
fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("'{s}' is not a number of seconds")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("actormq").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn key_values_are_typed_like_rabbitmq_tools() {
        assert_eq!(
            parse_key_value("x-message-ttl=60000"),
            Ok(("x-message-ttl".into(), FieldValue::Int(60000)))
        );
        assert_eq!(
            parse_key_value("x-single-active-consumer=true"),
            Ok(("x-single-active-consumer".into(), FieldValue::Bool(true)))
        );
        assert_eq!(
            parse_key_value("x-queue-type=quorum"),
            Ok(("x-queue-type".into(), FieldValue::Str("quorum".into())))
        );
        assert_eq!(
            parse_key_value("x-message-ttl=abc"),
            Ok(("x-message-ttl".into(), FieldValue::Str("abc".into())))
        );
        assert_eq!(
            parse_key_value("k=a=b"),
            Ok(("k".into(), FieldValue::Str("a=b".into())))
        );
        assert_eq!(
            parse_key_value("k="),
            Ok(("k".into(), FieldValue::Str("".into())))
        );
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=v").is_err());
    }

    #[test]
    fn no_subcommand_means_serve_with_default_globals() {
        let cli = parse(&[]);
        assert!(cli.command.is_none());
        assert_eq!(cli.server, "127.0.0.1:5680");
        assert_eq!(
            (cli.user.as_str(), cli.password.as_str()),
            ("guest", "guest")
        );
        assert_eq!(cli.vhost, "/");
    }

    #[test]
    fn global_flags_go_before_or_after_the_subcommand() {
        let cli = parse(&["--server", "h:1", "purge", "q", "--vhost", "v"]);
        assert_eq!(cli.server, "h:1");
        assert_eq!(cli.vhost, "v");
        assert!(matches!(cli.command, Some(Command::Purge { name }) if name == "q"));
    }

    #[test]
    fn declare_queue_takes_flags_and_repeated_args() {
        let cli = parse(&[
            "declare-queue",
            "q",
            "--durable",
            "--passive",
            "--arg",
            "x-message-ttl=60000",
            "--arg",
            "x-dead-letter-exchange=dlx",
        ]);
        let Some(Command::DeclareQueue {
            name,
            durable,
            exclusive,
            auto_delete,
            passive,
            args,
        }) = cli.command
        else {
            panic!("not declare-queue")
        };
        assert_eq!(name, "q");
        assert!(durable && passive && !exclusive && !auto_delete);
        assert_eq!(
            args,
            vec![
                ("x-message-ttl".into(), FieldValue::Int(60000)),
                (
                    "x-dead-letter-exchange".into(),
                    FieldValue::Str("dlx".into())
                ),
            ]
        );
    }

    #[test]
    fn publish_and_consume_flags_parse() {
        let cli = parse(&[
            "publish",
            "--exchange",
            "x",
            "--routing-key",
            "k",
            "--persistent",
            "--confirm",
            "--header",
            "n=1",
            "hello",
        ]);
        let Some(Command::Publish {
            exchange,
            routing_key,
            persistent,
            confirm,
            headers,
            message,
            ..
        }) = cli.command
        else {
            panic!("not publish")
        };
        assert_eq!((exchange.as_str(), routing_key.as_str()), ("x", "k"));
        assert!(persistent && confirm);
        assert_eq!(headers, vec![("n".into(), FieldValue::Int(1))]);
        assert_eq!(message.as_deref(), Some("hello"));

        let cli = parse(&[
            "consume",
            "--queue",
            "q",
            "--count",
            "3",
            "--timeout",
            "1.5",
        ]);
        let Some(Command::Consume {
            count,
            timeout,
            no_ack,
            prefetch,
            ..
        }) = cli.command
        else {
            panic!("not consume")
        };
        assert_eq!(
            (count, timeout, no_ack, prefetch),
            (Some(3), Some(1.5), false, None)
        );
    }

    #[test]
    fn hash_password_takes_its_own_argument_not_the_global_password() {
        let cli = parse(&["hash-password"]);
        assert!(matches!(
            cli.command,
            Some(Command::HashPassword { secret: None })
        ));
        let cli = parse(&["--password", "p", "hash-password", "s"]);
        assert!(matches!(cli.command, Some(Command::HashPassword { secret: Some(s) }) if s == "s"));
    }

    #[test]
    fn declare_exchange_requires_a_type_and_publish_a_routing_key() {
        let no_type = Cli::try_parse_from(["actormq", "declare-exchange", "x"]);
        assert!(no_type.is_err());
        let no_key = Cli::try_parse_from(["actormq", "publish", "m"]);
        assert!(no_key.is_err());
        let bad_arg = Cli::try_parse_from(["actormq", "declare-queue", "q", "--arg", "oops"]);
        assert!(bad_arg.is_err());
    }
}
