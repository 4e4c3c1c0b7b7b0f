//! `actormq cluster ...`: asks a node's cluster port (`cluster.bind`) for the cluster's
//! status, to add or remove a node, or to grow or shrink quorum queue groups
//! (forwarded to the leader by the node asked).
//! The port answers only a client that proves the cluster's secret (and, with
//! `cluster.tls`, presents a certificate of the cluster's CA): the secret comes from
//! `--secret` / `ACTORMQ__CLUSTER__SECRET`, or with TLS from a node's settings file
//! (`--config`).

use super::Error;
use actormq::cluster::quorum::grow::{ChangeKind, GroupChange};
use actormq::cluster::{ask, Answer, Question, Transport};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `actormq cluster [--config FILE | --secret S] <command>`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// A node's settings file: its `[cluster]` secret and, with `cluster.tls`, its
    /// `[tls]` certificate, key and CA (environment overrides apply).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// The cluster secret (without `--config`).
    #[arg(
        long,
        env = "ACTORMQ__CLUSTER__SECRET",
        hide_env_values = true,
        global = true
    )]
    secret: Option<String>,
    #[command(subcommand)]
    command: ClusterCommand,
}

/// The cluster subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members, the leader, each node's log and applied indexes and its lag behind
    /// the leader; `--json` for a JSON object.
    Status {
        /// A node's cluster address (`cluster.bind`).
        #[arg(long, default_value = "127.0.0.1:25672")]
        node: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Adds node ID at cluster address ADDR: caught up as a learner, then a voter.
    AddNode {
        /// A node's cluster address (`cluster.bind`).
        #[arg(long, default_value = "127.0.0.1:25672")]
        node: String,
        /// The new node's `cluster.node_id`.
        id: u64,
        /// The new node's cluster address.
        addr: String,
    },
    /// Removes node ID from the cluster.
    RemoveNode {
        /// A node's cluster address (`cluster.bind`).
        #[arg(long, default_value = "127.0.0.1:25672")]
        node: String,
        /// The node's `cluster.node_id`.
        id: u64,
    },
    /// Adds node ID as a member of every quorum queue group it is not a member of
    /// (RabbitMQ's `rabbitmq-queues grow`): a node added to the cluster takes its share
    /// of the copies. The group's leader catches the new member up before it votes.
    Grow {
        /// A node's cluster address (`cluster.bind`).
        #[arg(long, default_value = "127.0.0.1:25672")]
        node: String,
        /// The node to add: its `cluster.node_id`.
        id: u64,
        /// Only groups with an even number of members (an odd group survives as many
        /// failures as one member more would make it survive).
        #[arg(long)]
        even: bool,
        #[command(flatten)]
        select: Select,
    },
    /// Takes node ID out of every quorum queue group it is a member of, but never a
    /// group's last member (RabbitMQ's `rabbitmq-queues shrink`): drains a node of its
    /// copies before it is stopped or removed.
    Shrink {
        /// A node's cluster address (`cluster.bind`).
        #[arg(long, default_value = "127.0.0.1:25672")]
        node: String,
        /// The node to take out: its `cluster.node_id`.
        id: u64,
        #[command(flatten)]
        select: Select,
    },
}

/// Which quorum queue groups `grow` and `shrink` change: all by default.
#[derive(Debug, Args)]
pub struct Select {
    /// Only the queues of this virtual host.
    #[arg(long)]
    vhost: Option<String>,
    /// Only this queue (with `--vhost`, or in every virtual host).
    #[arg(long)]
    queue: Option<String>,
}

impl Select {
    fn change(self, kind: ChangeKind, node: u64) -> Question {
        Question::ChangeGroups(GroupChange {
            kind,
            node,
            vhost: self.vhost,
            queue: self.queue,
        })
    }
}

/// The transport `args` describe.
fn transport(args: &ClusterArgs) -> Result<Transport, Error> {
    let Some(path) = &args.config else {
        return Ok(Transport::plain(args.secret.as_deref().unwrap_or("")));
    };
    let settings = actormq::Settings::load(Some(path))?;
    let Some(cluster) = &settings.cluster else {
        return Err(format!("{}: no [cluster] section", path.display()).into());
    };
    Ok(Transport::new(cluster, &settings.tls)?.as_cli())
}

/// Runs a cluster subcommand.
pub fn run(args: ClusterArgs) -> Result<(), Error> {
    let transport = Arc::new(transport(&args)?);
    let cmd = args.command;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (node, question, json) = match cmd {
        ClusterCommand::Status { node, json } => (node, Question::Status, json),
        ClusterCommand::AddNode { node, id, addr } => (node, Question::AddNode { id, addr }, false),
        ClusterCommand::RemoveNode { node, id } => (node, Question::RemoveNode { id }, false),
        ClusterCommand::Grow {
            node,
            id,
            even,
            select,
        } => {
            let kind = ChangeKind::Grow { even_only: even };
            (node, select.change(kind, id), false)
        }
        ClusterCommand::Shrink { node, id, select } => {
            (node, select.change(ChangeKind::Shrink, id), false)
        }
    };
    let answer = rt.block_on(ask(transport, &node, question, Duration::from_secs(90)))?;
    match answer {
        Answer::Done => println!("ok"),
        Answer::Groups(c) => println!(
            "ok: {} quorum queue groups changed, {} left as they were",
            c.changed, c.kept
        ),
        Answer::Status(s) if json => println!("{}", serde_json::to_string_pretty(&s)?),
        Answer::Status(s) => {
            let leader = s
                .leader
                .map_or_else(|| "none".to_string(), |l| l.to_string());
            println!("leader: {leader}");
            println!(
                "{:<6} {:<22} {:<13} {:>6} {:>9} {:>9} {:>5} {:>8}  alarms",
                "id", "address", "role", "term", "log", "applied", "lag", "protocol"
            );
            let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
            let mut all_groups = Vec::new();
            for (v, lag) in s.nodes {
                let alarms = if v.alarms.is_empty() {
                    "-".to_string()
                } else {
                    v.alarms.join(",")
                };
                println!(
                    "{:<6} {:<22} {:<13} {:>6} {:>9} {:>9} {:>5} {:>8}  {}",
                    v.id,
                    v.addr,
                    v.role,
                    v.term,
                    opt(v.last_log_index),
                    opt(v.applied_index),
                    opt(lag),
                    opt(v.protocol.map(u64::from)),
                    alarms
                );
                all_groups.extend(v.groups.iter().map(|g| (v.id, g.clone())));
            }
            if !all_groups.is_empty() {
                println!("quorum queue groups (each node's member):");
                println!(
                    "{:<8} {:<6} {:<12} {:>6} {:>9} {:>9}",
                    "group", "node", "role", "leader", "log", "applied"
                );
                all_groups.sort_by_key(|(node, g)| (g.id, *node));
                for (node, g) in all_groups {
                    println!(
                        "{:<8} {:<6} {:<12} {:>6} {:>9} {:>9}",
                        g.id,
                        node,
                        g.role,
                        opt(g.leader),
                        opt(g.last_log_index),
                        opt(g.applied_index)
                    );
                }
            }
        }
    }
    Ok(())
}
