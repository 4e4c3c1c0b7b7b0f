//! Operating commands, as `rabbitmqctl` and `rabbitmqadmin`: listing, status, users,
//! vhosts, permissions, policies, definitions export / import, closing a connection.
//! They go through the management HTTP API ([`http`]), so they answer exactly what
//! the API answers, with the same permissions (the user's tags).

mod http;
mod list;
mod run;

pub use run::run;

use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Where the management API is and as whom to ask.
#[derive(Debug, Clone, Default, Args)]
pub struct MgmtFlags {
    /// The management API [default: the first `[http] bind` address of the settings
    /// (./Settings.toml, ACTORMQ__HTTP__BIND), else http://127.0.0.1:15672].
    #[arg(long, value_name = "URL")]
    pub http_url: Option<String>,
    /// Settings file the default --http-url is read from, instead of ./Settings.toml.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// User name [default: guest].
    #[arg(long)]
    pub user: Option<String>,
    /// Password (visible in `ps`: prefer --password-file or ACTORMQ_PASSWORD). Without
    /// any, `guest` for the user guest, else a prompt on a terminal.
    #[arg(long, conflicts_with = "password_file")]
    pub password: Option<String>,
    /// Read the password from the first line of FILE.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Virtual host (what it means, and its default, is said by each command).
    #[arg(long)]
    pub vhost: Option<String>,
}

/// What `list` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListKind {
    /// Queues with their counts and policy.
    Queues,
    /// Exchanges.
    Exchanges,
    /// Bindings.
    Bindings,
    /// Client connections.
    Connections,
    /// Channels.
    Channels,
    /// Consumers.
    Consumers,
    /// Users (all vhosts).
    Users,
    /// Virtual hosts.
    Vhosts,
    /// Policies.
    Policies,
    /// Operator policies.
    OperatorPolicies,
    /// Permissions: configure, write and read patterns per user and vhost.
    Permissions,
    /// Topic permissions: write and read patterns per user, vhost and exchange.
    TopicPermissions,
}

/// How `list` and `status` print.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum TableFormat {
    /// Aligned columns with a header line.
    #[default]
    Table,
    /// JSON: the API's objects (only the --columns fields when given).
    Json,
}

/// The operating subcommands.
#[derive(Debug, Subcommand)]
pub enum MgmtCommand {
    /// List queues, exchanges, bindings, connections, channels, consumers, users,
    /// vhosts or policies (of --vhost; all vhosts when omitted).
    List {
        /// Management API.
        #[command(flatten)]
        flags: MgmtFlags,
        /// What to list.
        #[arg(value_enum)]
        what: ListKind,
        /// Fields to show, comma-separated (the API's names; dotted for nested ones,
        /// e.g. queue.name).
        #[arg(long, value_delimiter = ',')]
        columns: Vec<String>,
        /// Output.
        #[arg(long, value_enum, default_value_t)]
        format: TableFormat,
    },
    /// The broker's version, uptime, listeners, memory, alarms and object counts.
    Status {
        /// Management API.
        #[command(flatten)]
        flags: MgmtFlags,
        /// Output.
        #[arg(long, value_enum, default_value_t)]
        format: TableFormat,
    },
    /// Close a client connection (its `name` as `list connections` shows it).
    CloseConnection {
        /// Management API.
        #[command(flatten)]
        flags: MgmtFlags,
        /// The connection's name.
        name: String,
        /// Told to the client.
        #[arg(long, default_value = "Closed via actormq close-connection")]
        reason: String,
    },
    /// Create a user (or replace its password and tags).
    AddUser {
        /// Management API.
        #[command(flatten)]
        flags: MgmtFlags,
        /// The new user's name.
        name: String,
        /// The new user's password.
        new_password: String,
        /// Tags, comma-separated (administrator, monitoring, policymaker, management).
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
    },
    /// Delete a user.
    DeleteUser {
        /// Management API.
        #[command(flatten)]
        flags: MgmtFlags,
        /// The user.
        name: String,
    },
    /// Set a user's tags (none clears them).
    SetUserTags {
        /// Management API.
        #[command(flatten)]
        flags: MgmtFlags,
        /// The user.
        name: String,
        /// The tags.
        tags: Vec<String>,
    },
    /// Create a virtual host.
    AddVhost {
        /// Management API.
        #[command(flatten)]
        flags: MgmtFlags,
        /// Its name.
        name: String,
    },
    /// Delete a virtual host with everything in it.
    DeleteVhost {
        /// Management API.
        #[command(flatten)]
        flags: MgmtFlags,
        /// Its name.
        name: String,
    },
    /// Set what a user may do in --vhost [default: /]: RabbitMQ's configure, write and
    /// read regular expressions on queue and exchange names (matched anywhere in the
    /// name: anchor with ^ and $; '' allows nothing), positional as `rabbitmqctl
    /// set_permissions USER CONF WRITE READ` or as flags; each defaults to '.*'.
    SetPermissions {
        /// Management API.
        #[command(flatten)]
        flags: MgmtFlags,
        /// The user.
        #[arg(value_name = "USER")]
        grantee: String,
        /// Configure, write and read patterns, in this order.
        #[arg(num_args = 0..=3, conflicts_with_all = ["configure", "write", "read"])]
        patterns: Vec<String>,
        /// Names the user may declare and delete [default: .*].
        #[arg(long, allow_hyphen_values = true)]
        configure: Option<String>,
        /// Names the user may publish to and bind [default: .*].
        #[arg(long, allow_hyphen_values = true)]
        write: Option<String>,
        /// Names the user may consume from, get from, purge and bind from [default: .*].
        #[arg(long, allow_hyphen_values = true)]
        read: Option<String>,
    },
    /// Take --vhost [default: /] away from a user (all three patterns).
    ClearPermissions {
        /// Management API.
        #[command(flatten)]
        flags: MgmtFlags,
        /// The user.
        #[arg(value_name = "USER")]
        grantee: String,
    },
    /// Set a user's topic permission on a topic exchange of --vhost [default: /]:
    /// regular expressions on the routing keys it may publish with (write) and the
    /// binding keys it may bind with (read); {username}, {vhost} and {client_id} are
    /// replaced by the connection's values.
    SetTopicPermissions {
        /// Management API.
        #[command(flatten)]
        flags: MgmtFlags,
        /// The user.
        #[arg(value_name = "USER")]
        grantee: String,
        /// The topic exchange.
        exchange: String,
        /// Routing keys it may publish with.
        #[arg(allow_hyphen_values = true)]
        write: String,
        /// Binding keys it may bind with.
        #[arg(allow_hyphen_values = true)]
        read: String,
    },
    /// Clear a user's topic permissions in --vhost [default: /]: on EXCHANGE, or all.
    ClearTopicPermissions {
        /// Management API.
        #[command(flatten)]
        flags: MgmtFlags,
        /// The user.
        #[arg(value_name = "USER")]
        grantee: String,
        /// Only this exchange's.
        exchange: Option<String>,
    },
    /// Write the definitions (users, vhosts, permissions, policies, queues, exchanges,
    /// bindings) in RabbitMQ's format to FILE (`-` = standard output); with --vhost,
    /// that vhost's only.
    ExportDefinitions {
        /// Management API.
        #[command(flatten)]
        flags: MgmtFlags,
        /// Where to write.
        file: PathBuf,
    },
    /// Import definitions in RabbitMQ's format from FILE (`-` = standard input); with
    /// --vhost, a vhost's file into that vhost. All or nothing: a bad item is refused
    /// naming it before anything is applied.
    ImportDefinitions {
        /// Management API.
        #[command(flatten)]
        flags: MgmtFlags,
        /// What to read.
        file: PathBuf,
    },
    /// Set a policy (or with --operator an operator policy) in --vhost [default: /],
    /// e.g. `set-policy cap '^jobs\.' '{"max-length":1000}' --apply-to queues`.
    SetPolicy {
        /// Management API.
        #[command(flatten)]
        flags: MgmtFlags,
        /// Its name.
        name: String,
        /// Regular expression on queue / exchange names.
        pattern: String,
        /// Its definition, a JSON object (max-length, message-ttl, dead-letter-exchange,
        /// ...).
        definition: String,
        /// Higher wins.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i64,
        /// queues, exchanges or all [default: all; queues for an operator policy].
        #[arg(long)]
        apply_to: Option<String>,
        /// An operator policy.
        #[arg(long)]
        operator: bool,
    },
    /// Declare a super stream (a partitioned stream) in --vhost [default: /]: its
    /// exchange, partition streams and bindings, as `rabbitmq-streams
    /// add_super_stream` (e.g. `add-super-stream invoices --partitions 3`).
    #[command(group(clap::ArgGroup::new("layout").required(true).args(["partitions", "binding_keys"])))]
    AddSuperStream {
        /// Management API.
        #[command(flatten)]
        flags: MgmtFlags,
        /// Its name.
        name: String,
        /// N partitions NAME-0 .. NAME-N-1, routed by the hash of the routing key.
        #[arg(long)]
        partitions: Option<u32>,
        /// One partition NAME-KEY per key (comma-separated), routed by the key.
        #[arg(long, value_delimiter = ',')]
        binding_keys: Vec<String>,
        /// Retention by size of each partition (x-max-length-bytes).
        #[arg(long)]
        max_length_bytes: Option<u64>,
        /// Retention by age of each partition (x-max-age, e.g. 7D, 12h).
        #[arg(long)]
        max_age: Option<String>,
        /// Segment size of each partition (x-stream-max-segment-size-bytes).
        #[arg(long)]
        stream_max_segment_size_bytes: Option<u64>,
    },
    /// Delete a super stream of --vhost [default: /]: its partition streams (with their
    /// records) and its exchange.
    DeleteSuperStream {
        /// Management API.
        #[command(flatten)]
        flags: MgmtFlags,
        /// Its name.
        name: String,
    },
    /// Clear a policy (or with --operator an operator policy) of --vhost [default: /].
    ClearPolicy {
        /// Management API.
        #[command(flatten)]
        flags: MgmtFlags,
        /// Its name.
        name: String,
        /// An operator policy.
        #[arg(long)]
        operator: bool,
    },
    /// Set the limits of --vhost [default: /] as rabbitmqctl set_vhost_limits does: a
    /// JSON object such as `'{"max-connections": 100, "max-queues": 500}'` that replaces
    /// them (a limit it does not name is cleared; a negative value is no limit).
    SetVhostLimits {
        /// Management API.
        #[command(flatten)]
        flags: MgmtFlags,
        /// The limits, a JSON object.
        definition: String,
    },
    /// Clear every limit of --vhost [default: /] (rabbitmqctl clear_vhost_limits).
    ClearVhostLimits {
        /// Management API.
        #[command(flatten)]
        flags: MgmtFlags,
    },
}

impl MgmtCommand {
    /// The management flags of the command.
    pub fn flags_mut(&mut self) -> &mut MgmtFlags {
        match self {
            MgmtCommand::List { flags, .. }
            | MgmtCommand::Status { flags, .. }
            | MgmtCommand::CloseConnection { flags, .. }
            | MgmtCommand::AddUser { flags, .. }
            | MgmtCommand::DeleteUser { flags, .. }
            | MgmtCommand::SetUserTags { flags, .. }
            | MgmtCommand::AddVhost { flags, .. }
            | MgmtCommand::DeleteVhost { flags, .. }
            | MgmtCommand::SetPermissions { flags, .. }
            | MgmtCommand::ClearPermissions { flags, .. }
            | MgmtCommand::SetTopicPermissions { flags, .. }
            | MgmtCommand::ClearTopicPermissions { flags, .. }
            | MgmtCommand::ExportDefinitions { flags, .. }
            | MgmtCommand::ImportDefinitions { flags, .. }
            | MgmtCommand::SetPolicy { flags, .. }
            | MgmtCommand::AddSuperStream { flags, .. }
            | MgmtCommand::DeleteSuperStream { flags, .. }
            | MgmtCommand::ClearPolicy { flags, .. }
            | MgmtCommand::SetVhostLimits { flags, .. }
            | MgmtCommand::ClearVhostLimits { flags, .. } => flags,
        }
    }
}
