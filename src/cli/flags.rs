//! Flag groups shared by several commands (connection, message properties, output
//! format) and the parsers of typed arguments.

use actormq::{FieldValue, Properties};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// Where and as whom to connect: the flags of every command that talks to a broker.
#[derive(Debug, Clone, Default, Args)]
pub struct ConnFlags {
    /// Broker to talk to; the port defaults to 5680 [default: 127.0.0.1:5680].
    #[arg(long, value_name = "HOST[:PORT]")]
    pub server: Option<String>,
    /// User name [default: guest].
    #[arg(long)]
    pub user: Option<String>,
    /// Password. Other users can read it in `ps`: prefer --password-file or the
    /// ACTORMQ_PASSWORD variable. Without any, `guest` for the user guest, else a
    /// prompt when standard input is a terminal.
    #[arg(long, conflicts_with = "password_file")]
    pub password: Option<String>,
    /// Read the password from the first line of FILE.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Virtual host [default: /].
    #[arg(long)]
    pub vhost: Option<String>,
    /// Connect with TLS (to the broker's `server.tls_bind`; the port defaults to 5681).
    /// Implied by --ca-file.
    #[arg(long)]
    pub tls: bool,
    /// CA certificates (PEM) the broker's certificate must chain to.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), for a broker with `tls.verify = "peer"`. Implies
    /// --tls. With no password given (--password, --password-file, ACTORMQ_PASSWORD),
    /// logs in as the user the certificate names (the EXTERNAL mechanism).
    #[arg(long, value_name = "FILE", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// The private key (PEM) of --cert-file.
    #[arg(long, value_name = "FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
}

/// The same flags before the subcommand (`actormq --server H:P purge q`): hidden from
/// the help, which shows them on each command.
#[derive(Debug, Clone, Default, Args)]
pub struct LeadingConnFlags {
    /// See the command's --server.
    #[arg(long = "server", hide = true)]
    pub server: Option<String>,
    /// See the command's --user.
    #[arg(long = "user", hide = true)]
    pub user: Option<String>,
    /// See the command's --password.
    #[arg(long = "password", hide = true)]
    pub password: Option<String>,
    /// See the command's --password-file.
    #[arg(long = "password-file", hide = true)]
    pub password_file: Option<PathBuf>,
    /// See the command's --vhost.
    #[arg(long = "vhost", hide = true)]
    pub vhost: Option<String>,
}

impl LeadingConnFlags {
    /// The first flag given, by name, if any.
    pub fn any_given(&self) -> Option<&'static str> {
        [
            (self.server.is_some(), "--server"),
            (self.user.is_some(), "--user"),
            (self.password.is_some(), "--password"),
            (self.password_file.is_some(), "--password-file"),
            (self.vhost.is_some(), "--vhost"),
        ]
        .into_iter()
        .find_map(|(given, name)| given.then_some(name))
    }

    /// `flags`, with what it lacks taken from these leading flags.
    pub fn fill(self, flags: ConnFlags) -> ConnFlags {
        ConnFlags {
            server: flags.server.or(self.server),
            user: flags.user.or(self.user),
            password: flags.password.or(self.password),
            password_file: flags.password_file.or(self.password_file),
            vhost: flags.vhost.or(self.vhost),
            ..flags
        }
    }
}

/// The common message properties of `publish`.
#[derive(Debug, Clone, Default, Args)]
pub struct PropertyFlags {
    /// Mark messages persistent (kept across restarts in durable queues).
    #[arg(long)]
    pub persistent: bool,
    /// MIME type of the body (`content_type`), e.g. application/json.
    #[arg(long)]
    pub content_type: Option<String>,
    /// Encoding of the body (`content_encoding`), e.g. gzip.
    #[arg(long)]
    pub content_encoding: Option<String>,
    /// Correlates a reply with its request (`correlation_id`).
    #[arg(long)]
    pub correlation_id: Option<String>,
    /// Queue to reply to (`reply_to`).
    #[arg(long)]
    pub reply_to: Option<String>,
    /// Application message id (also the key of x-dedup-window).
    #[arg(long)]
    pub message_id: Option<String>,
    /// Per-message TTL in milliseconds (the `expiration` property).
    #[arg(long, value_name = "MS")]
    pub expiration: Option<u64>,
    /// Message priority, 0-255 (honoured by queues with x-max-priority).
    #[arg(long)]
    pub priority: Option<u8>,
    /// Application message type (the `type` property).
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// The publishing application (`app_id`).
    #[arg(long)]
    pub app_id: Option<String>,
    /// Message header (typed as for declare-queue; `x-delay=MS` delays delivery).
    /// Repeatable.
    #[arg(long = "header", value_name = "K=V", value_parser = parse_key_value)]
    pub headers: Vec<KeyValue>,
}

impl PropertyFlags {
    /// The properties these flags set.
    pub fn properties(self) -> Properties {
        Properties {
            content_type: self.content_type,
            content_encoding: self.content_encoding,
            headers: (!self.headers.is_empty()).then(|| self.headers.into_iter().collect()),
            delivery_mode: self.persistent.then_some(2),
            priority: self.priority,
            correlation_id: self.correlation_id,
            reply_to: self.reply_to,
            expiration: self.expiration.map(|ms| ms.to_string()),
            message_id: self.message_id,
            kind: self.kind,
            app_id: self.app_id,
            ..Default::default()
        }
    }
}

/// How `consume` and `get` print a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The body, then a newline.
    #[default]
    Body,
    /// One JSON object per line: exchange, routing_key, redelivered, properties,
    /// headers, body (text, or base64 when not UTF-8: see body_encoding).
    Json,
}

/// How `publish` splits its input into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Split {
    /// One message per line (`\n` or `\r\n` removed): the default for standard input.
    Line,
    /// One message per NUL-terminated record, so bodies may span lines.
    Nul,
    /// The whole input is one message: the default for --body-file.
    None,
}

/// What `get` does with the message once printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum AckMode {
    /// Acknowledge it: the message leaves the queue.
    #[default]
    Ack,
    /// Put it back (marked redelivered): a peek.
    Requeue,
    /// Get it without acknowledgement: the broker forgets it as it sends it.
    NoAck,
}

/// A `KEY=VALUE` argument, typed as RabbitMQ's tools type it.
pub type KeyValue = (String, FieldValue);

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
pub fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("'{s}' is not a number of seconds")),
    }
}

/// A queue name for `declare-queue`: not empty. A server-named queue declared by a
/// command that exits at once would be left behind, unused and unnamed to the user
/// (or, exclusive, deleted before anyone could use it).
pub fn parse_queue_name(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err(
            "a queue name is needed: a server-named queue (\"\") declared from the command \
             line would outlive the command with nobody to use it"
                .into(),
        )
    } else {
        Ok(s.to_string())
    }
}
