//! Settings: `Settings.toml` (or the file given with `--config`), then environment
//! overrides `ACTORMQ__SECTION__KEY` (e.g. `ACTORMQ__SERVER__BIND=127.0.0.1:0`).
//!
//! Every key has a default, so an empty file (or none) is a working broker. An unknown
//! key or a bad value is a start-up error that names the `section.key`, the value and
//! what is allowed (see `load.rs`).

mod limits;
mod load;
mod tls;

pub use limits::LimitsSettings;
pub use load::load_users_file;
pub use tls::{CertLoginFrom, SanType, TlsSettings, TlsVerify};

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// All settings of a broker.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The network front end.
    pub server: ServerSettings,
    /// The AMQP 0-9-1 listener.
    pub amqp: AmqpSettings,
    /// The broker core.
    pub broker: BrokerSettings,
    /// The management HTTP API and Prometheus metrics.
    pub http: HttpSettings,
    /// Certificate, key and client-certificate policy of the TLS listeners.
    pub tls: TlsSettings,
    /// Consumers per channel, headers' depth and size.
    pub limits: LimitsSettings,
    /// Logging.
    pub log: LogSettings,
    /// Durable storage: where durable entities and persistent messages are kept.
    pub storage: StorageSettings,
    /// Users allowed to connect; empty = the default `guest` / `guest` user, loopback only.
    pub users: Vec<UserSettings>,
    /// A TOML file with more `[[users]]` entries, read at start-up.
    pub users_file: Option<PathBuf>,
    /// `[cluster]`: this node in a cluster (docs/CLUSTERING.md); absent = a single node.
    pub cluster: Option<crate::cluster::ClusterSettings>,
}

/// `[server]`: the native protocol listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on.
    pub bind: String,
    /// Largest frame accepted or sent, in bytes (and so the largest message).
    pub max_frame_size: u32,
    /// Heartbeat interval in seconds proposed to clients; 0 disables heartbeats.
    pub heartbeat_secs: u16,
    /// Connections accepted at once; more are refused with RESOURCE_ERROR.
    pub max_connections: usize,
    /// Connections open at once to one virtual host (either protocol); 0 = no limit.
    pub max_connections_per_vhost: usize,
    /// Connections open at once by one user (either protocol); 0 = no limit.
    pub max_connections_per_user: usize,
    /// Address of the native protocol's TLS listener (`[tls]` says with what
    /// certificate); empty = none. The conventional port is 5681.
    pub tls_bind: String,
    /// Bytes of replies and deliveries buffered for one connection before the broker
    /// stops reading its requests.
    pub max_write_buffer: usize,
    /// Longest a request may hold its connection's later frames, in milliseconds: past
    /// it the request fails with INTERNAL_ERROR and the connection goes on. At least 1.
    pub request_timeout_ms: u64,
    /// Longest a socket may take from accept to a successful login, in milliseconds
    /// (native `hello`, AMQP `connection.open`), both protocols: past it the socket is
    /// dropped and logged with the peer address (RabbitMQ's `handshake_timeout`). At
    /// least 1.
    pub handshake_timeout_ms: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            bind: "127.0.0.1:5680".to_string(),
            max_frame_size: 16 * 1024 * 1024,
            heartbeat_secs: 60,
            max_connections: 10_000,
            max_connections_per_vhost: 0,
            max_connections_per_user: 0,
            tls_bind: String::new(),
            max_write_buffer: 4 * 1024 * 1024,
            request_timeout_ms: 30_000,
            handshake_timeout_ms: 10_000,
        }
    }
}

/// `[amqp]`: the AMQP 0-9-1 listener (same users, vhosts, limits and alarms as the
/// native one; heartbeats and `max_connections` come from `[server]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpSettings {
    /// Addresses to listen on; empty = no AMQP listener. An IPv6 address the machine
    /// cannot bind (no `::1`) is logged and skipped.
    pub bind: Vec<String>,
    /// Addresses of the AMQPS (AMQP over TLS) listeners; empty = none. The
    /// conventional port is 5671.
    pub tls_bind: Vec<String>,
    /// Largest frame offered in `connection.tune`, in bytes (RabbitMQ's default).
    pub frame_max: u32,
    /// Most channels per connection offered in `connection.tune`.
    pub channel_max: u16,
    /// Largest message body accepted, in bytes; a larger one closes the channel with
    /// 406 PRECONDITION_FAILED, as RabbitMQ's `max_message_size` does. 128 MiB, or
    /// with `[cluster]` 16 MiB (`cluster::rpc::MAX_REPLICATED_MESSAGE`), which is
    /// also the most a cluster node takes.
    pub max_message_size: u64,
    /// `channel.flow active=false` pauses the channel's deliveries (the spec's
    /// reading) instead of closing the connection with 540 NOT_IMPLEMENTED as
    /// RabbitMQ 3.x does. Off by default: clients' own suites (amqp091-go) expect
    /// RabbitMQ's refusal.
    pub channel_flow_pause: bool,
}

impl Default for AmqpSettings {
    fn default() -> Self {
        AmqpSettings {
            bind: vec!["127.0.0.1:5672".to_string(), "[::1]:5672".to_string()],
            tls_bind: Vec::new(),
            frame_max: 131_072,
            channel_max: 2047,
            max_message_size: 128 * 1024 * 1024,
            channel_flow_pause: false,
        }
    }
}

/// `[http]`: the management HTTP API (RabbitMQ's paths) and `/metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Addresses to listen on; empty = no HTTP listener. Blank entries are ignored (so
    /// `ACTORMQ__HTTP__BIND=` turns it off).
    pub bind: Vec<String>,
    /// Addresses of the same API over TLS (HTTPS, RabbitMQ's port 15671), with the
    /// `[tls]` certificate; empty = none.
    pub tls_bind: Vec<String>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            bind: vec!["127.0.0.1:15672".to_string()],
            tls_bind: Vec::new(),
        }
    }
}

/// `[broker]`: the actor core.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSettings {
    /// Worker threads (actix arbiters); 0 = one per CPU core.
    pub workers: usize,
    /// Seconds a shutdown waits for clients to be told and for queues to write what they
    /// hold before it stops the broker regardless (and logs what it cut off).
    pub shutdown_timeout_secs: u64,
    /// Bytes of messages (bodies, properties and decoded headers) held in queues above
    /// which publishers are blocked; 0 = no limit.
    pub memory_high_watermark: u64,
    /// Virtual hosts created at start-up.
    pub vhosts: Vec<String>,
    /// Deliveries in transit to one consumer before its connection has written them.
    pub consumer_window: u32,
    /// Publish batches one connection or session may have in flight.
    pub publish_window: usize,
    /// Messages (ready + unacked) at which a queue that has consumers stops answering
    /// its publishers until it is down to half: they go at the consumers' pace, and
    /// not at all while the consumers take nothing (see Settings.toml); 0 = never.
    pub queue_flow_threshold: usize,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings {
            workers: 0,
            shutdown_timeout_secs: 10,
            memory_high_watermark: 1024 * 1024 * 1024,
            vhosts: vec!["/".to_string()],
            consumer_window: 1000,
            publish_window: 16,
            queue_flow_threshold: 20_000,
        }
    }
}

impl BrokerSettings {
    /// Worker count with 0 resolved to the number of cores.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// When the message log is fsynced (`storage.fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncSetting {
    /// Confirm a persistent message only after the fsync that covers it (group commit).
    Always,
    /// Fsync at most every `fsync_interval_ms`; confirms wait for the next fsync.
    IntervalMs,
}

/// `[storage]`: durable exchanges, queues and bindings, and persistent messages in
/// durable queues.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// Directory of the metadata snapshot and the message log (created if missing).
    pub data_dir: PathBuf,
    /// `always` (confirm after fsync) or `interval_ms` (fsync every `fsync_interval_ms`).
    pub fsync: FsyncSetting,
    /// Milliseconds between fsyncs with `fsync = "interval_ms"`.
    pub fsync_interval_ms: u64,
    /// Size of one message log segment file in bytes (the unit of disk reclamation).
    pub segment_size: u64,
    /// Free bytes the data directory's filesystem must keep; below it publishers are
    /// blocked, as by the memory watermark. 0 = no limit.
    pub disk_free_limit: u64,
    /// Ready messages a durable queue keeps in memory; the bodies of persistent
    /// messages beyond them stay on disk until consumers get near them. 0 = all in memory.
    pub queue_ram_messages: usize,
}

impl Default for StorageSettings {
    fn default() -> Self {
        let d = crate::storage::StorageOptions::default();
        StorageSettings {
            data_dir: d.data_dir,
            fsync: FsyncSetting::Always,
            fsync_interval_ms: 100,
            segment_size: d.segment_size,
            disk_free_limit: d.disk_free_limit,
            queue_ram_messages: d.queue_ram_messages,
        }
    }
}

impl StorageSettings {
    /// The storage layer's options for these settings.
    pub fn options(&self) -> crate::storage::StorageOptions {
        crate::storage::StorageOptions {
            data_dir: self.data_dir.clone(),
            fsync: match self.fsync {
                FsyncSetting::Always => crate::storage::FsyncPolicy::Always,
                FsyncSetting::IntervalMs => {
                    crate::storage::FsyncPolicy::IntervalMs(self.fsync_interval_ms)
                }
            },
            segment_size: self.segment_size,
            disk_free_limit: self.disk_free_limit,
            queue_ram_messages: self.queue_ram_messages,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `error`, `warn`, `info`, `debug` or `trace`, or a `tracing` filter directive;
    /// `RUST_LOG` wins when set.
    pub level: String,
    /// `text` (human-readable lines) or `json` (one JSON object per line).
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

/// How log lines are written (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One human-readable line per event, coloured only when standard error is a
    /// terminal.
    Text,
    /// One JSON object per line (timestamp, level, target, fields), for log shippers.
    Json,
}

/// One `[[users]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserSettings {
    /// The user name.
    pub name: String,
    /// A PHC string made by `actormq hash-password` (PBKDF2-SHA256, salted).
    pub password_hash: String,
    /// Virtual hosts the user may open.
    #[serde(default = "default_vhosts")]
    pub vhosts: Vec<String>,
    /// Refuse the user from anywhere but loopback (RabbitMQ's rule for `guest`).
    #[serde(default)]
    pub loopback_only: bool,
    /// RabbitMQ's user tags: `administrator`, `monitoring`, `management` decide what the
    /// user may see and do in the management HTTP API; none = no access to it.
    #[serde(default)]
    pub tags: Vec<String>,
}

fn default_vhosts() -> Vec<String> {
    vec!["/".to_string()]
}

/// A settings error: names the file or key concerned.
#[derive(Debug, thiserror::Error)]
#[error("settings: {0}")]
pub struct SettingsError(pub String);

impl Settings {
    /// Loads `path` (when given, it must exist; otherwise `./Settings.toml` when present),
    /// then the `ACTORMQ__...` environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Settings, SettingsError> {
        let file = match path {
            Some(p) => {
                if !p.exists() {
                    return Err(SettingsError(format!(
                        "config file {} not found",
                        p.display()
                    )));
                }
                Some(p.to_path_buf())
            }
            None => Some(PathBuf::from("Settings.toml")).filter(|p| p.exists()),
        };
        let source = match &file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| SettingsError(format!("{}: {e}", p.display())))?;
                Some((p.display().to_string(), text))
            }
            None => None,
        };
        let source = source.as_ref().map(|(o, t)| (o.as_str(), t.as_str()));
        let settings = load::parse(source, std::env::vars())?;
        settings.check()?;
        Ok(settings)
    }

    /// Parses settings from TOML text (no environment overrides).
    pub fn from_toml(text: &str) -> Result<Settings, SettingsError> {
        let settings = load::parse(Some(("", text)), std::iter::empty())?;
        settings.check()?;
        Ok(settings)
    }

    /// Parses settings from TOML text, then applies `env` as if it were the
    /// environment (`ACTORMQ__SECTION__KEY` pairs; others are ignored).
    pub fn from_toml_and_env(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, SettingsError> {
        let settings = load::parse(Some(("", text)), env)?;
        settings.check()?;
        Ok(settings)
    }

    /// True when a TLS listener is configured (`server.tls_bind`, `amqp.tls_bind` or
    /// `http.tls_bind`).
    pub fn tls_enabled(&self) -> bool {
        !self.server.tls_bind.trim().is_empty()
            || self.amqp.tls_bind.iter().any(|a| !a.trim().is_empty())
            || self.http.tls_bind.iter().any(|a| !a.trim().is_empty())
    }

    /// Checks values serde cannot.
    fn check(&self) -> Result<(), SettingsError> {
        if let Some(c) = &self.cluster {
            c.check().map_err(SettingsError)?;
            let t = &self.tls;
            if c.tls && (t.cert_file.is_none() || t.key_file.is_none() || t.ca_file.is_none()) {
                return Err(SettingsError(
                    "cluster.tls needs tls.cert_file, tls.key_file and tls.ca_file (nodes present their certificate and verify their peer's against the CA)".into(),
                ));
            }
            // A quorum queue's message travels to the other members in one append,
            // which must be answered within the heartbeat interval: a larger message
            // would be appended on the leader and reach no follower (see the constant).
            let cap = crate::cluster::rpc::MAX_REPLICATED_MESSAGE;
            for (key, size) in [
                ("amqp.max_message_size", self.amqp.max_message_size),
                (
                    "server.max_frame_size",
                    u64::from(self.server.max_frame_size),
                ),
            ] {
                if size > cap {
                    return Err(SettingsError(format!(
                        "{key} = {size} is above {cap} bytes, the largest message a cluster node accepts (a quorum queue's message must reach a follower in one append within the heartbeat interval)"
                    )));
                }
            }
        }
        if self.server.max_frame_size < 4096 {
            return Err(SettingsError(format!(
                "server.max_frame_size = {} is below the minimum of 4096 bytes",
                self.server.max_frame_size
            )));
        }
        if self.server.handshake_timeout_ms == 0 {
            return Err(SettingsError(
                "server.handshake_timeout_ms must be at least 1".into(),
            ));
        }
        if self.server.request_timeout_ms == 0 {
            return Err(SettingsError(
                "server.request_timeout_ms must be at least 1".into(),
            ));
        }
        if self.amqp.frame_max < 4096 {
            return Err(SettingsError(format!(
                "amqp.frame_max = {} is below AMQP's minimum of 4096 bytes",
                self.amqp.frame_max
            )));
        }
        if self.amqp.channel_max == 0 {
            return Err(SettingsError("amqp.channel_max must be at least 1".into()));
        }
        if self.broker.vhosts.is_empty() {
            return Err(SettingsError(
                "broker.vhosts must list at least one virtual host".into(),
            ));
        }
        if self.broker.consumer_window == 0 {
            return Err(SettingsError(
                "broker.consumer_window must be at least 1".into(),
            ));
        }
        if self.broker.publish_window == 0 {
            return Err(SettingsError(
                "broker.publish_window must be at least 1".into(),
            ));
        }
        let min_segment = crate::storage::options::MIN_SEGMENT_SIZE;
        if self.storage.segment_size < min_segment {
            return Err(SettingsError(format!(
                "storage.segment_size = {} is below the minimum of {min_segment} bytes",
                self.storage.segment_size
            )));
        }
        if self.storage.fsync == FsyncSetting::IntervalMs && self.storage.fsync_interval_ms == 0 {
            return Err(SettingsError(
                "storage.fsync_interval_ms must be at least 1 with fsync = \"interval_ms\"".into(),
            ));
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            return Err(SettingsError("storage.data_dir must not be empty".into()));
        }
        load::check_log_level(&self.log.level)?;
        self.tls.check(self.tls_enabled())?;
        self.limits.check()?;
        if self.server.bind.parse::<std::net::SocketAddr>().is_err() {
            return Err(SettingsError(format!(
                "server.bind = '{}' is not a socket address such as 127.0.0.1:5680",
                self.server.bind
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_refuses_a_message_size_it_could_not_replicate() {
        let cluster = "[cluster]\nnode_id = 1\nbind = \"127.0.0.1:25672\"\n";
        let big = format!("{cluster}[amqp]\nmax_message_size = 268435456\n");
        let e = Settings::from_toml(&big).unwrap_err().to_string();
        assert!(e.contains("amqp.max_message_size = 268435456"), "{e}");
        let over = format!("{cluster}[amqp]\nmax_message_size = 16777217\n");
        let e = Settings::from_toml(&over).unwrap_err().to_string();
        assert!(e.contains("above 16777216 bytes"), "{e}");
        let frame = format!("{cluster}[server]\nmax_frame_size = 16777217\n");
        let e = Settings::from_toml(&frame).unwrap_err().to_string();
        assert!(e.contains("server.max_frame_size = 16777217"), "{e}");
        let ok = format!("{cluster}[amqp]\nmax_message_size = 16777216\n");
        Settings::from_toml(&ok).unwrap();
        // Unset, a cluster node's limit is the cap; a single node's stays 128 MiB.
        let s = Settings::from_toml(cluster).unwrap();
        assert_eq!(s.amqp.max_message_size, 16 << 20);
        let env = [(
            "ACTORMQ__AMQP__MAX_MESSAGE_SIZE".to_string(),
            "1048576".to_string(),
        )];
        let s = Settings::from_toml_and_env(cluster, env).unwrap();
        assert_eq!(s.amqp.max_message_size, 1 << 20);
        assert_eq!(
            Settings::from_toml("").unwrap().amqp.max_message_size,
            128 << 20
        );
        // Without a cluster the size is the operator's to choose.
        Settings::from_toml("[amqp]\nmax_message_size = 268435456\n").unwrap();
    }

    #[test]
    fn empty_text_gives_the_defaults() {
        let s = Settings::from_toml("").unwrap();
        assert_eq!(s.server.bind, "127.0.0.1:5680");
        assert_eq!(s.broker.vhosts, vec!["/"]);
    }

    #[test]
    fn the_request_timeout_is_bounded_and_shipped_with_its_default() {
        let e = Settings::from_toml("[server]\nrequest_timeout_ms = 0\n").unwrap_err();
        assert!(e.to_string().contains("server.request_timeout_ms"), "{e}");
        let shipped = Settings::from_toml(include_str!("../../Settings.toml")).unwrap();
        assert_eq!(
            shipped.server.request_timeout_ms,
            ServerSettings::default().request_timeout_ms
        );
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it() {
        let e = Settings::from_toml("[server]\nbnd = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("bnd"), "{e}");
    }

    #[test]
    fn a_bad_value_is_an_error_naming_the_key() {
        let e = Settings::from_toml("[server]\nmax_frame_size = \"big\"\n").unwrap_err();
        assert!(e.to_string().contains("max_frame_size"), "{e}");
        let e = Settings::from_toml("[server]\nbind = \"nowhere\"\n").unwrap_err();
        assert!(e.to_string().contains("server.bind"), "{e}");
    }

    #[test]
    fn storage_settings_parse_and_are_checked() {
        let s = Settings::from_toml("").unwrap();
        assert_eq!(s.storage.data_dir, PathBuf::from("./data"));
        assert_eq!(
            s.storage.options().fsync,
            crate::storage::FsyncPolicy::Always
        );
        let s = Settings::from_toml(
            "[storage]\ndata_dir = \"/var/lib/actormq\"\nfsync = \"interval_ms\"\nfsync_interval_ms = 20\n",
        )
        .unwrap();
        assert_eq!(s.storage.data_dir, PathBuf::from("/var/lib/actormq"));
        assert_eq!(
            s.storage.options().fsync,
            crate::storage::FsyncPolicy::IntervalMs(20)
        );
        let e = Settings::from_toml("[storage]\nfsync = \"sometimes\"\n").unwrap_err();
        assert!(e.to_string().contains("sometimes"), "{e}");
        let e = Settings::from_toml("[storage]\nsegment_size = 10\n").unwrap_err();
        assert!(e.to_string().contains("storage.segment_size"), "{e}");
        let e = Settings::from_toml("[storage]\ndatadir = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("datadir"), "{e}");
    }

    #[test]
    fn the_shipped_settings_file_parses() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Settings.toml")).unwrap();
        Settings::from_toml(&text).unwrap();
    }
}
