//! TLS for the client: the options ([`TlsOptions`]), `actormq://` / `actormqs://` URLs
//! ([`ConnectOptions::from_url`](super::ConnectOptions::from_url)), and the handshake
//! run on the TCP socket before the protocol's Hello.

use super::error::ClientError;
use crate::server::stream::Stream;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::rustls::{pki_types::ServerName, ClientConfig};

/// What a client connection is: TCP, or TLS over TCP.
pub(crate) type ClientStream = Stream<tokio_rustls::client::TlsStream<TcpStream>>;

/// The port of a broker's native TLS listener unless told otherwise (`server.tls_bind`).
pub const DEFAULT_TLS_PORT: u16 = 5681;

/// TLS settings of a connection: the CA the broker's certificate must chain to, and a
/// client certificate for brokers that ask for one (`tls.verify = "peer"`).
///
/// ```
/// use actormq::client::{ConnectOptions, TlsOptions};
/// let opts = ConnectOptions {
///     tls: Some(TlsOptions::with_ca("ca.pem").client_cert("client.pem", "client.key")),
///     ..ConnectOptions::new("broker.example:5681")
/// };
/// assert!(opts.tls.is_some());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// CA certificates (PEM) that the broker's certificate must chain to. Required: the
    /// client reads no system trust store.
    pub ca_file: Option<PathBuf>,
    /// This client's certificate chain (PEM), sent when the broker asks for one.
    pub cert_file: Option<PathBuf>,
    /// The private key (PEM) of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// The name the broker's certificate must carry; default the host of the address.
    pub server_name: Option<String>,
}

impl TlsOptions {
    /// TLS trusting the CA certificates of `ca_file`.
    pub fn with_ca(ca_file: impl Into<PathBuf>) -> Self {
        TlsOptions {
            ca_file: Some(ca_file.into()),
            ..Default::default()
        }
    }

    /// Adds a client certificate and its key.
    pub fn client_cert(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.cert_file = Some(cert_file.into());
        self.key_file = Some(key_file.into());
        self
    }

    fn config(&self) -> Result<ClientConfig, String> {
        use crate::server::tls::{load_certs, load_key, load_roots, provider, VERSIONS};
        let ca = self
            .ca_file
            .as_ref()
            .ok_or("TLS needs a CA file (--ca-file, TlsOptions::ca_file)")?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| e.to_string())?
            .with_root_certificates(load_roots(ca)?);
        match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => builder
                .with_client_auth_cert(load_certs(c)?, load_key(k)?)
                .map_err(|e| format!("client certificate and key: {e}")),
            (None, None) => Ok(builder.with_no_client_auth()),
            _ => Err("a client certificate needs both a certificate and a key file".into()),
        }
    }
}

/// The host part of `HOST:PORT` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> &str {
    let host = match addr.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        _ => addr,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Runs the TLS handshake over `tcp` (connected to `addr`) as `tls` says.
pub(crate) async fn connect(
    tcp: TcpStream,
    addr: &str,
    tls: &TlsOptions,
) -> Result<ClientStream, ClientError> {
    let ctx = || format!("TLS with {addr}");
    let invalid =
        |m: String| ClientError::io(ctx(), io::Error::new(io::ErrorKind::InvalidInput, m));
    let config = tls.config().map_err(invalid)?;
    let name = tls.server_name.as_deref().unwrap_or_else(|| host_of(addr));
    let name = ServerName::try_from(name.to_string())
        .map_err(|e| invalid(format!("server name '{name}': {e}")))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| ClientError::io(ctx(), e))?;
    Ok(Stream::Tls(Box::new(stream)))
}

/// Percent-decodes a URL part (`%2f` is `/`).
fn decode(part: &str) -> Result<String, String> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = part
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in '{part}'"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("'{part}' is not UTF-8 once decoded"))
}

/// The parts of `actormq[s]://[user[:password]@]host[:port][/vhost]`.
pub(crate) struct UrlParts {
    pub tls: bool,
    pub addr: String,
    pub credentials: Option<(String, String)>,
    pub vhost: Option<String>,
}

/// Parses an `actormq://` or `actormqs://` URL.
pub(crate) fn parse_url(url: &str) -> Result<UrlParts, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("actormqs://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("actormq://") {
        (false, r)
    } else {
        return Err(format!("'{url}' is not an actormq:// or actormqs:// URL"));
    };
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (rest, None),
    };
    let (credentials, host) = match authority.rsplit_once('@') {
        Some((c, h)) => {
            let (u, p) = c.split_once(':').unwrap_or((c, ""));
            (Some((decode(u)?, decode(p)?)), h)
        }
        None => (None, authority),
    };
    if host.is_empty() {
        return Err(format!("'{url}' names no host"));
    }
    let port = if tls {
        DEFAULT_TLS_PORT
    } else {
        super::DEFAULT_PORT
    };
    let has_port = match host.strip_prefix('[') {
        Some(v6) => !v6.ends_with(']'),
        None => host.contains(':'),
    };
    let addr = if has_port {
        host.to_string()
    } else {
        format!("{host}:{port}")
    };
    let vhost = match path {
        Some("") | None => None,
        Some(p) => Some(decode(p)?),
    };
    Ok(UrlParts {
        tls,
        addr,
        credentials,
        vhost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_tls_address_credentials_and_vhost() {
        let u = parse_url("actormqs://app:p%40ss@broker.example/%2fprod").unwrap();
        assert!(u.tls);
        assert_eq!(u.addr, "broker.example:5681");
        assert_eq!(u.credentials, Some(("app".into(), "p@ss".into())));
        assert_eq!(u.vhost.as_deref(), Some("/prod"));
        let u = parse_url("actormq://[::1]:7000").unwrap();
        assert!(!u.tls);
        assert_eq!(u.addr, "[::1]:7000");
        assert!(u.vhost.is_none() && u.credentials.is_none());
        assert!(parse_url("amqp://h").is_err());
        assert!(parse_url("actormqs://").is_err());
        assert!(parse_url("actormqs://h/%zz").is_err());
    }

    #[test]
    fn the_host_is_the_certificate_name() {
        assert_eq!(host_of("broker.example:5681"), "broker.example");
        assert_eq!(host_of("[::1]:5681"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }
}
