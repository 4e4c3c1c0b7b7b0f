//! The options of `actormq perf` (names fixed: scripts rely on them) and the enums they
//! take.

use serde::Serialize;

/// Exchange types the tool can set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PerfExchange {
    /// Each message to one queue (round-robin over the queues).
    Direct,
    /// Each message to every queue.
    Fanout,
    /// Each message to one queue through a `key.#` pattern.
    Topic,
}

/// The AMQP client `actormq perf --amqp-url` measures with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AmqpClient {
    /// The lapin crate.
    Lapin,
    /// The tool's own lean client.
    Raw,
}

/// The options of `actormq perf` (names fixed: scripts rely on them).
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct PerfArgs {
    /// Publishing connections.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Consumers (spread over the queues, round-robin).
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Queues bound to the exchange.
    #[arg(long, default_value_t = 1)]
    pub queues: usize,
    /// Exchange type.
    #[arg(long, value_enum, default_value = "direct")]
    pub exchange_type: PerfExchange,
    /// Body size in bytes (at least 8: the send timestamp).
    #[arg(long, default_value_t = 16)]
    pub size: usize,
    /// Total publish rate in messages per second; 0 = as fast as the broker allows.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Total consume rate limit in messages per second; 0 = unlimited.
    #[arg(long, default_value_t = 0)]
    pub consumer_rate: u64,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Warm-up seconds, not measured.
    #[arg(long, default_value_t = 1)]
    pub warmup: u64,
    /// Ask for publisher confirms.
    #[arg(long)]
    pub confirm: bool,
    /// Unconfirmed publishes outstanding per producer.
    #[arg(long, default_value_t = 1000)]
    pub confirm_window: usize,
    /// Persistent messages in durable queues.
    #[arg(long)]
    pub persistent: bool,
    /// Consumer prefetch.
    #[arg(long, default_value_t = 100)]
    pub prefetch: u32,
    /// Consume without acks.
    #[arg(long)]
    pub auto_ack: bool,
    /// Ack every N deliveries with one multiple ack (1 = ack each).
    #[arg(long, default_value_t = 1)]
    pub multi_ack: u64,
    /// Consumer connections (consumers spread over them); default one per consumer.
    #[arg(long)]
    pub connections: Option<usize>,
    /// The broker's pid, to report its CPU and peak RSS.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Threads of the load generator's runtime (1 = current-thread, the leanest).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Extra connections opened before the run that do nothing but stay open (to
    /// measure memory per connection and idle CPU).
    #[arg(long, default_value_t = 0)]
    pub idle_connections: usize,
    /// Measure an AMQP 0-9-1 broker (RabbitMQ) at this URL instead, e.g.
    /// amqp://guest:guest@127.0.0.1:5672/%2f (lapin needs the `amqp` cargo feature).
    /// A cluster's nodes as a comma-separated list (as `--server a,b,c` for actormq's
    /// native protocol): connections are spread over them in turn (the first also sets
    /// up the queues), and the failover mode moves to the next one on a failure.
    #[arg(long)]
    pub amqp_url: Option<String>,
    /// The AMQP client of `--amqp-url`: lapin (a thread per connection), or `raw`, a
    /// lean client of the tool's own built like actormq's native client (to tell
    /// what the broker costs from what lapin costs).
    #[arg(long, value_enum, default_value = "lapin")]
    pub amqp_client: AmqpClient,
    /// Prefix of the exchange and queue names the tool declares.
    #[arg(long, default_value = "perf")]
    pub prefix: String,
    /// Use the queues an earlier run left (same --prefix, --queues): nothing is deleted
    /// or declared. With --producers 0, measures draining a backlog (a lazy queue read
    /// back from disk, for instance).
    #[arg(long)]
    pub predeclared: bool,
    /// Delete the queues at the end (after the depth is read), so that a backlog left
    /// behind does not cost the broker anything during whatever runs next.
    #[arg(long)]
    pub delete_queues: bool,
    /// Stream queues (`x-queue-type = stream`, durable): publishes are appended
    /// (confirmed once on disk with --confirm), every consumer reads its stream from
    /// `first` (each consumer of one queue reads all of it).
    #[arg(long)]
    pub stream: bool,
    /// The queue type to declare (`x-queue-type`, RabbitMQ's names): quorum and stream
    /// queues are always durable. `--stream` is the same as `--queue-type stream`.
    #[arg(long, value_enum, default_value = "classic")]
    pub queue_type: QueueType,
    /// Failover mode (see `failover`): one publisher with confirms on one queue for
    /// --duration seconds, moving to the next server of the list (`--server a,b,c` or
    /// `--amqp-url u1,u2,u3`) whenever its connection fails, republishing what was left
    /// unconfirmed; reports the failover time and checks at the end, by consuming the
    /// queue, that every confirmed message is there. SIGINT or SIGTERM ends the
    /// publishing early (the check still runs).
    #[arg(long)]
    pub failover: bool,
    /// Failover mode: seconds without a confirm (with publishes outstanding) after
    /// which the connection counts as failed, and for which the servers are tried in
    /// turn before the run gives up.
    #[arg(long, default_value_t = 30)]
    pub failover_timeout: u64,
}

/// Queue types the tool declares (`x-queue-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// No `x-queue-type`: the broker's classic queue.
    #[default]
    Classic,
    /// `x-queue-type = quorum`: replicated (in a cluster), durable.
    Quorum,
    /// `x-queue-type = stream`: an append-only log, durable.
    Stream,
}

/// The servers of a comma-separated list (`a,b,c`), in order; an error when it names
/// none.
pub fn servers(list: &str) -> Result<Vec<String>, String> {
    let v: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if v.is_empty() {
        return Err(format!("no server in '{list}'"));
    }
    Ok(v)
}

impl Default for PerfArgs {
    fn default() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            a: PerfArgs,
        }
        Wrap::parse_from(["perf"]).a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_list_keeps_its_order_and_drops_blanks() {
        assert_eq!(
            servers("127.0.0.1:1, 127.0.0.1:2,,127.0.0.1:3").unwrap(),
            ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
        );
        assert_eq!(servers("h:5672").unwrap(), ["h:5672"]);
        let e = servers(" , ").unwrap_err();
        assert!(e.contains("no server"), "{e}");
    }

    #[test]
    fn the_defaults_are_a_classic_queue_without_failover() {
        let a = PerfArgs::default();
        assert_eq!(a.queue_type, QueueType::Classic);
        assert!(!a.failover);
        assert_eq!(a.confirm_window, 1000);
    }
}
