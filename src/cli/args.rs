//! The command line, as clap derive types. Flag groups and parsers are in `flags.rs`.

use super::flags::{
    parse_key_value, parse_queue_name, parse_secs, AckMode, ConnFlags, Format, KeyValue,
    LeadingConnFlags, PropertyFlags, Split,
};
use super::mgmt::MgmtCommand;
use clap::{ArgGroup, Parser, Subcommand};
use std::path::PathBuf;

/// A message broker on actix actors, with RabbitMQ semantics.
///
/// Commands that talk to a broker take --server, --user, --password-file (or
/// ACTORMQ_PASSWORD) and --vhost, after the command or before it.
#[derive(Debug, Parser)]
#[command(name = "actormq", version, about)]
pub struct Cli {
    /// Connection flags given before the subcommand.
    #[command(flatten)]
    pub leading: LeadingConnFlags,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load generator: producers and consumers against the broker, reporting rates,
    /// end-to-end latency and (with --broker-pid) the broker's CPU and peak RSS.
    Perf {
        /// Connection.
        #[command(flatten)]
        conn: ConnFlags,
        /// The load.
        #[command(flatten)]
        args: actormq::perf::PerfArgs,
    },
    /// A cluster's status and membership (docs/CLUSTERING.md), asked of a node's
    /// cluster port.
    Cluster(super::cluster::ClusterArgs),
    /// Run the broker (the default). Reads ./Settings.toml when present; the listening
    /// address is `server.bind` there (or ACTORMQ__SERVER__BIND).
    Serve {
        /// Settings file to read instead of ./Settings.toml.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Declare a queue; prints its name, ready messages and consumers, one per line
    /// (`name: q`, `messages: 0`, `consumers: 0`).
    DeclareQueue {
        /// Connection.
        #[command(flatten)]
        conn: ConnFlags,
        /// Queue name (not empty: a server-named queue would outlive the command).
        #[arg(value_parser = parse_queue_name)]
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
        /// Connection.
        #[command(flatten)]
        conn: ConnFlags,
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
        /// Only reachable through exchange-to-exchange bindings.
        #[arg(long)]
        internal: bool,
        /// Exchange argument, e.g. alternate-exchange=ae. Repeatable.
        #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        args: Vec<KeyValue>,
    },
    /// Bind a queue (--queue) or an exchange (--to-exchange) to an exchange.
    Bind(Binding),
    /// Remove a binding made with `bind` (same flags).
    Unbind(Binding),
    /// Delete a queue; prints how many messages it held.
    DeleteQueue {
        /// Connection.
        #[command(flatten)]
        conn: ConnFlags,
        /// Queue name.
        name: String,
        /// Only if it has no consumers (PRECONDITION_FAILED otherwise).
        #[arg(long)]
        if_unused: bool,
        /// Only if it has no messages (PRECONDITION_FAILED otherwise).
        #[arg(long)]
        if_empty: bool,
    },
    /// Delete an exchange.
    DeleteExchange {
        /// Connection.
        #[command(flatten)]
        conn: ConnFlags,
        /// Exchange name.
        name: String,
        /// Only if nothing is bound to it (PRECONDITION_FAILED otherwise).
        #[arg(long)]
        if_unused: bool,
    },
    /// Remove a queue's ready messages; prints how many.
    Purge {
        /// Connection.
        #[command(flatten)]
        conn: ConnFlags,
        /// Queue name.
        name: String,
    },
    /// Publish MESSAGE, the file of --body-file, or standard input (one message per
    /// line, or per NUL-terminated record with --split nul).
    Publish(Box<Publish>),
    /// Consume from a queue, printing one body (or JSON object) per line.
    Consume {
        /// Connection.
        #[command(flatten)]
        conn: ConnFlags,
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
        /// Output: the bodies, or one JSON object per message.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Get one message from a queue and print it; exits 1 when the queue is empty.
    Get {
        /// Connection.
        #[command(flatten)]
        conn: ConnFlags,
        /// Queue name.
        #[arg(long)]
        queue: String,
        /// What to do with the message once printed.
        #[arg(long, value_enum, default_value_t)]
        ack_mode: AckMode,
        /// Output: the body, or a JSON object (with message_count, the messages left).
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Operating commands, over the management HTTP API.
    #[command(flatten)]
    Mgmt(MgmtCommand),
    /// Print a PBKDF2 hash of a password for a `[[users]]` entry of Settings.toml.
    HashPassword {
        /// The password; else prompted for (without echo) when standard input is a
        /// terminal, or read from its first line.
        #[arg(value_name = "PASSWORD")]
        secret: Option<String>,
    },
}

/// The flags of `bind` and `unbind`.
#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("destination").required(true).args(["queue", "to_exchange"])))]
pub struct Binding {
    /// Connection.
    #[command(flatten)]
    pub conn: ConnFlags,
    /// Source exchange.
    #[arg(long)]
    pub exchange: String,
    /// Destination queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Destination exchange (an exchange-to-exchange binding).
    #[arg(long, value_name = "EXCHANGE")]
    pub to_exchange: Option<String>,
    /// Binding key.
    #[arg(long, default_value = "")]
    pub routing_key: String,
    /// Binding argument (typed as for declare-queue). Repeatable.
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub args: Vec<KeyValue>,
}

/// The flags of `publish`.
#[derive(Debug, clap::Args)]
pub struct Publish {
    /// Connection.
    #[command(flatten)]
    pub conn: ConnFlags,
    /// Exchange ("" = the default exchange, which routes to the queue named by the
    /// routing key).
    #[arg(long, default_value = "")]
    pub exchange: String,
    /// Routing key.
    #[arg(long)]
    pub routing_key: String,
    /// Wait for the broker to confirm every message, print a summary line (published,
    /// confirmed, nacked, and returned or unroutable), exit 1 if any was nacked.
    #[arg(long)]
    pub confirm: bool,
    /// Messages that reach no queue come back: print them on standard error and exit 1.
    #[arg(long)]
    pub mandatory: bool,
    /// Message properties.
    #[command(flatten)]
    pub properties: PropertyFlags,
    /// Read the body from FILE (`-` = standard input), the whole file as one message
    /// unless --split says otherwise.
    #[arg(long, value_name = "FILE", conflicts_with = "message")]
    pub body_file: Option<PathBuf>,
    /// How input is split into messages [default: line for standard input, none for
    /// --body-file].
    #[arg(long, value_enum, conflicts_with = "message")]
    pub split: Option<Split>,
    /// The message body; read from standard input when omitted.
    pub message: Option<String>,
}

impl Command {
    /// The connection flags of a command that talks to a broker.
    pub fn conn_mut(&mut self) -> Option<&mut ConnFlags> {
        match self {
            Command::Perf { conn, .. }
            | Command::DeclareQueue { conn, .. }
            | Command::DeclareExchange { conn, .. }
            | Command::DeleteQueue { conn, .. }
            | Command::DeleteExchange { conn, .. }
            | Command::Purge { conn, .. }
            | Command::Consume { conn, .. }
            | Command::Get { conn, .. } => Some(conn),
            Command::Bind(b) | Command::Unbind(b) => Some(&mut b.conn),
            Command::Publish(p) => Some(&mut p.conn),
            Command::Serve { .. }
            | Command::HashPassword { .. }
            | Command::Mgmt(_)
            | Command::Cluster(_) => None,
        }
    }
}

#[cfg(test)]
mod tests;
