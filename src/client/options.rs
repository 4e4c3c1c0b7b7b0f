//! Options of a connection and of a publish, with RabbitMQ's defaults. The options of
//! declarations and consumers are shared with the embedding API: [`crate::options`].

use crate::message::{FieldTable, FieldValue, Properties};
use std::time::Duration;

/// Where and how to connect: address, credentials, virtual host, and the limits that
/// bound what one connection buffers. Every field has a default ([`Default`], or
/// [`ConnectOptions::new`] with an address), so set only what differs.
///
/// ```
/// use actormq::client::ConnectOptions;
/// use std::time::Duration;
/// let opts = ConnectOptions {
///     heartbeat_secs: Some(10),
///     connect_timeout: Duration::from_secs(3),
///     ..ConnectOptions::new("127.0.0.1:5680").credentials("app", "s3cret").vhost("/prod")
/// };
/// assert_eq!(opts.user, "app");
/// ```
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `HOST:PORT` of the broker's native protocol listener (`server.bind` in the
    /// broker's `Settings.toml`). A host name is resolved; the first address that
    /// accepts is used. Default `127.0.0.1:5680`.
    pub addr: String,
    /// User name, checked against the broker's `[[users]]`. Default `guest`, which a
    /// broker with no users configured accepts from loopback only.
    pub user: String,
    /// Password, sent in the Hello frame: in clear unless [`tls`](Self::tls) is set.
    /// Default `guest`.
    pub password: String,
    /// Virtual host to open; NOT_FOUND at connect if the broker has no such vhost.
    /// Default `/`.
    pub vhost: String,
    /// Free-form name of this client, shown in the broker's logs next to the
    /// connection. Default `actormq-client/<version>`.
    pub client_name: String,
    /// Heartbeat interval to ask for, in seconds. `None` takes the broker's
    /// (`server.heartbeat_secs`, 60 by default), `Some(0)` turns heartbeats off, any
    /// other value is lowered to the broker's if that is smaller (PROTOCOL.md §8.8).
    /// The client sends a heartbeat after half the agreed interval of silence and
    /// gives up on a broker silent for twice the interval. Default `None`.
    pub heartbeat_secs: Option<u16>,
    /// Whether publishes ask for a broker confirm by default; [`PublishOptions::confirm`]
    /// chooses per publish. An unconfirmed publish that fails is reported later, by
    /// [`Client::take_errors`](super::Client::take_errors). Default `true`.
    pub confirms: bool,
    /// Confirm-tracked publishes outstanding at most (clamped to at least 1); a
    /// publish beyond waits for a confirm. This bounds the memory of a fast publisher
    /// and is the client's publish window. Default 4096.
    pub max_unconfirmed: usize,
    /// Bytes of encoded frames queued for the socket above which a publish waits for the
    /// writer to catch up (acks, requests and heartbeats never wait). Clamped to at
    /// least 1. Default 4 MiB.
    pub max_write_buffer: usize,
    /// How long the TCP connect plus the Hello / Welcome handshake may take before
    /// [`Client::connect`](super::Client::connect) fails with a timed-out I/O error.
    /// Default 10 s.
    pub connect_timeout: Duration,
    /// TLS to the broker's TLS listener (`server.tls_bind`, port 5681 by convention);
    /// `None` = plain TCP. Default `None`.
    pub tls: Option<super::TlsOptions>,
    /// Log in with the EXTERNAL mechanism: as the user the TLS client certificate
    /// ([`TlsOptions::cert_file`](super::TlsOptions::cert_file)) names, with no
    /// password; `user` and `password` are not sent. Needs TLS and a broker with
    /// `tls.verify = "peer"`. Default `false`.
    pub external: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            addr: "127.0.0.1:5680".to_string(),
            user: "guest".to_string(),
            password: "guest".to_string(),
            vhost: "/".to_string(),
            client_name: concat!("actormq-client/", env!("CARGO_PKG_VERSION")).to_string(),
            heartbeat_secs: None,
            confirms: true,
            max_unconfirmed: 4096,
            max_write_buffer: 4 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            tls: None,
            external: false,
        }
    }
}

impl ConnectOptions {
    /// Defaults (guest / guest, vhost `/`, confirms on) for the broker at `addr`.
    pub fn new(addr: impl Into<String>) -> Self {
        ConnectOptions {
            addr: addr.into(),
            ..Default::default()
        }
    }

    /// Options from an `actormq://` or `actormqs://` URL:
    /// `actormqs://user:password@host:port/vhost`, every part but the host optional
    /// (percent-escaped as in AMQP URIs: `%2f` is `/`). `actormqs` means TLS (port 5681
    /// by default), trusting `ca_file`; without it, use [`ConnectOptions::tls`] to name
    /// the CA.
    ///
    /// ```
    /// use actormq::client::ConnectOptions;
    /// let o = ConnectOptions::from_url("actormqs://app:s3cret@broker.example/%2fprod", Some("ca.pem".into())).unwrap();
    /// assert_eq!(o.addr, "broker.example:5681");
    /// assert_eq!((o.user.as_str(), o.vhost.as_str()), ("app", "/prod"));
    /// assert!(o.tls.is_some());
    /// ```
    pub fn from_url(url: &str, ca_file: Option<std::path::PathBuf>) -> Result<Self, String> {
        let parts = super::tls::parse_url(url)?;
        let mut o = ConnectOptions::new(parts.addr);
        if let Some((u, p)) = parts.credentials {
            o = o.credentials(u, p);
        }
        if let Some(v) = parts.vhost {
            o.vhost = v;
        }
        if parts.tls {
            o.tls = Some(super::TlsOptions {
                ca_file,
                ..Default::default()
            });
        }
        Ok(o)
    }

    /// The address with the default port of plain or TLS connections added when it
    /// names none.
    pub(crate) fn full_addr(&self) -> String {
        let port = match self.tls {
            Some(_) => super::DEFAULT_TLS_PORT,
            None => DEFAULT_PORT,
        };
        with_port(&self.addr, port)
    }

    /// Sets the user and password.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = user.into();
        self.password = password.into();
        self
    }

    /// Logs in with the TLS client certificate (EXTERNAL) instead of a password.
    pub fn external(mut self) -> Self {
        self.external = true;
        self
    }

    /// Sets the virtual host.
    pub fn vhost(mut self, vhost: impl Into<String>) -> Self {
        self.vhost = vhost.into();
        self
    }

    /// Turns default publish confirms on or off.
    pub fn confirms(mut self, on: bool) -> Self {
        self.confirms = on;
        self
    }
}

/// The port a broker listens on unless told otherwise (`server.bind`).
pub const DEFAULT_PORT: u16 = 5680;

/// `addr` with [`DEFAULT_PORT`] added when it names no port: `127.0.0.1` and
/// `localhost` become `...:5680`, `::1` and `[::1]` become `[::1]:5680`; an address
/// with a port is returned as it is.
///
/// ```
/// use actormq::client::with_default_port;
/// assert_eq!(with_default_port("127.0.0.1"), "127.0.0.1:5680");
/// assert_eq!(with_default_port("broker:7000"), "broker:7000");
/// ```
pub fn with_default_port(addr: &str) -> String {
    with_port(addr, DEFAULT_PORT)
}

/// `addr` with `port` added when it names none (see [`with_default_port`]).
pub(crate) fn with_port(addr: &str, port: u16) -> String {
    if let Some(rest) = addr.strip_prefix('[') {
        // A bracketed IPv6 literal: a port follows the `]` if there is one.
        return if rest.ends_with(']') {
            format!("{addr}:{port}")
        } else {
            addr.to_string()
        };
    }
    if addr.parse::<std::net::Ipv6Addr>().is_ok() {
        return format!("[{addr}]:{port}");
    }
    if addr.contains(':') {
        addr.to_string()
    } else {
        format!("{addr}:{port}")
    }
}

/// Options of one publish.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishOptions {
    /// Give the message back ([`Returned`](super::Returned)) if it reaches no queue.
    /// The return is reported through the publish's confirm, so it needs confirms on.
    pub mandatory: bool,
    /// Ask for a confirm: `None` follows [`ConnectOptions::confirms`].
    pub confirm: Option<bool>,
    /// The message's properties.
    pub properties: Properties,
}

impl PublishOptions {
    /// Marks the message persistent (`delivery_mode` 2).
    pub fn persistent(mut self) -> Self {
        self.properties.delivery_mode = Some(2);
        self
    }

    /// Sets `mandatory`.
    pub fn mandatory(mut self) -> Self {
        self.mandatory = true;
        self
    }

    /// Sets one header.
    pub fn header(mut self, key: &str, value: impl Into<FieldValue>) -> Self {
        self.properties
            .headers
            .get_or_insert_with(FieldTable::new)
            .insert(key.to_string(), value.into());
        self
    }

    /// Sets a per-message TTL in milliseconds (the `expiration` property): the message
    /// expires in any queue where it waits longer.
    pub fn expiration(mut self, ms: u64) -> Self {
        self.properties.expiration = Some(ms.to_string());
        self
    }

    /// Sets the `priority` (0-255), honoured by queues declared with `x-max-priority`.
    pub fn priority(mut self, priority: u8) -> Self {
        self.properties.priority = Some(priority);
        self
    }

    /// Sets the `message_id`: the key of the deduplication window of queues declared
    /// with `x-dedup-window`.
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.properties.message_id = Some(id.into());
        self
    }

    /// Delays the message: it becomes visible in each queue it reaches `ms`
    /// milliseconds after it arrives there (the `x-delay` header, on any exchange).
    pub fn delay(self, ms: u64) -> Self {
        self.header("x-delay", ms.min(i64::MAX as u64) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::with_default_port;

    #[test]
    fn an_address_without_a_port_gets_the_default_one() {
        assert_eq!(with_default_port("127.0.0.1"), "127.0.0.1:5680");
        assert_eq!(with_default_port("localhost"), "localhost:5680");
        assert_eq!(with_default_port("::1"), "[::1]:5680");
        assert_eq!(with_default_port("[::1]"), "[::1]:5680");
        assert_eq!(with_default_port("[::1]:7"), "[::1]:7");
        assert_eq!(with_default_port("h:1"), "h:1");
        assert_eq!(with_default_port("127.0.0.1:0"), "127.0.0.1:0");
    }
}
