//! The cluster port's transport: a connection is TLS (mutual, when `cluster.tls` is
//! set) and then proves the shared cluster secret, both ways, before the first frame
//! of the node-to-node protocol is read. [`Transport::connect`] and
//! [`Transport::accept`] hand back a stream that has passed both; the framing (`rpc`)
//! and Raft code above never see a peer that has not.
//!
//! The proof is a challenge-response with HMAC-SHA256 keyed by `cluster.secret` (as
//! Erlang's cookie guards RabbitMQ's distribution port, but the secret never crosses
//! the wire):
//!
//! 1. the accepting node sends `MAGIC` and a random 32-byte challenge;
//! 2. the connecting node sends `MAGIC`, its own 32-byte challenge and
//!    `HMAC(secret, "client" | accepting challenge | connecting challenge)`;
//! 3. the accepting node checks it (in constant time) and answers
//!    `HMAC(secret, "server" | connecting challenge | accepting challenge)`, which the
//!    connecting node checks: neither side talks to a peer without the secret.
//!
//! Fresh challenges on both sides make a recorded exchange useless to replay. A peer
//! that fails (a wrong magic, such as a Raft frame sent without the handshake, a wrong
//! MAC, a TLS failure, or silence past `tls.handshake_timeout_secs`) is logged with
//! its address and disconnected.
//!
//! SIGHUP re-reads the `[tls]` certificate, key and CA files, as the other listeners
//! do ([`watch_sighup`]): connections opened or accepted afterwards use them, the open
//! ones keep theirs, and a file that does not load leaves the configuration in force.

use super::settings::ClusterSettings;
use crate::server::tls::{load_certs, load_key, load_roots, provider, VERSIONS};
use crate::settings::TlsSettings;
use hmac::{Hmac, Mac};
use rand_core::RngCore;
use sha2::Sha256;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, pki_types::ServerName};

/// The first bytes either side sends: the port and the handshake's version.
const MAGIC: &[u8; 8] = b"AMQCLU\x00\x01";
const NONCE: usize = 32;
const MAC: usize = 32;
/// How long opening a TCP connection to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A byte stream to a peer that has passed the handshake.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A connection on the cluster port.
pub type Conn = Box<dyn Io>;

/// TLS both ways: what a node presents and what it asks of its peer.
struct ClusterTls {
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
}

/// How this node opens and accepts cluster connections.
pub struct Transport {
    secret: Vec<u8>,
    /// With `cluster.tls`: the configuration in force (replaced by [`Self::reload`]).
    tls: Option<RwLock<Arc<ClusterTls>>>,
    /// The `[tls]` files, read again on reload.
    tls_settings: TlsSettings,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

fn denied(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, what)
}

impl Transport {
    /// The transport `[cluster]` and `[tls]` describe: TLS when `cluster.tls` is set
    /// (the `[tls]` certificate and key presented, the peer's verified against
    /// `tls.ca_file`), the secret's proof in every case.
    pub fn new(cluster: &ClusterSettings, tls: &TlsSettings) -> Result<Transport, String> {
        Ok(Transport {
            secret: cluster.secret.as_bytes().to_vec(),
            tls: if cluster.tls {
                Some(RwLock::new(Arc::new(tls_pair(tls)?)))
            } else {
                None
            },
            tls_settings: tls.clone(),
            handshake_timeout: Duration::from_secs(tls.handshake_timeout_secs.max(1)),
        })
    }

    /// The TLS configuration in force, when the port speaks TLS.
    fn current_tls(&self) -> Option<Arc<ClusterTls>> {
        let t = self.tls.as_ref()?;
        Some(t.read().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Re-reads the `[tls]` files for the connections made from now on: `Ok(false)`
    /// without `cluster.tls`; on an error the configuration in force stays (a
    /// half-written file must not cut the cluster apart).
    pub fn reload(&self) -> Result<bool, String> {
        let Some(t) = &self.tls else {
            return Ok(false);
        };
        let fresh = tls_pair(&self.tls_settings)?;
        *t.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        Ok(true)
    }

    /// A plain transport proving `secret` (the CLI without `--config`, and tests).
    pub fn plain(secret: &str) -> Transport {
        Transport {
            secret: secret.as_bytes().to_vec(),
            tls: None,
            tls_settings: TlsSettings::default(),
            handshake_timeout: Duration::from_secs(10),
        }
    }

    /// Opens a connection to `addr` and proves the secret (and checks the peer's).
    pub async fn connect(&self, addr: &str) -> io::Result<Conn> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        let _ = tcp.set_nodelay(true);
        let work = async {
            let mut conn: Conn = match self.current_tls() {
                None => Box::new(tcp),
                Some(t) => {
                    let name = server_name(addr)?;
                    Box::new(t.connector.connect(name, tcp).await?)
                }
            };
            self.prove(&mut conn, addr).await?;
            Ok(conn)
        };
        tokio::time::timeout(self.handshake_timeout, work)
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("cluster handshake with {addr} timed out"),
                )
            })?
    }

    /// Takes an accepted connection through TLS and the secret's proof; a peer that
    /// fails is logged (with `peer`) and dropped.
    pub async fn accept(&self, tcp: TcpStream, peer: SocketAddr) -> Option<Conn> {
        let _ = tcp.set_nodelay(true);
        let work = async {
            let mut conn: Conn = match self.current_tls() {
                None => Box::new(tcp),
                Some(t) => Box::new(t.acceptor.accept(tcp).await?),
            };
            self.challenge(&mut conn).await?;
            Ok::<_, io::Error>(conn)
        };
        match tokio::time::timeout(self.handshake_timeout, work).await {
            Ok(Ok(conn)) => Some(conn),
            Ok(Err(e)) => {
                tracing::warn!(%peer, error = %e, "cluster port: peer refused");
                None
            }
            Err(_) => {
                tracing::warn!(%peer, timeout = ?self.handshake_timeout, "cluster port: peer refused: no handshake in time");
                None
            }
        }
    }

    fn mac(&self, role: &[u8], first: &[u8], second: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(role);
        mac.update(first);
        mac.update(second);
        mac
    }

    /// The connecting side of the proof.
    async fn prove(&self, conn: &mut Conn, addr: &str) -> io::Result<()> {
        let mut hello = [0u8; MAGIC.len() + NONCE];
        conn.read_exact(&mut hello).await?;
        if &hello[..MAGIC.len()] != MAGIC {
            return Err(denied(format!(
                "{addr} is not an actormq cluster port (or speaks another version)"
            )));
        }
        let theirs = &hello[MAGIC.len()..];
        let ours = nonce();
        let proof = self.mac(b"client", theirs, &ours).finalize().into_bytes();
        let mut msg = Vec::with_capacity(MAGIC.len() + NONCE + MAC);
        msg.extend_from_slice(MAGIC);
        msg.extend_from_slice(&ours);
        msg.extend_from_slice(&proof);
        conn.write_all(&msg).await?;
        conn.flush().await?;
        let mut answer = [0u8; MAC];
        match conn.read_exact(&mut answer).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(denied(format!(
                    "{addr} refused this node: is cluster.secret the same on both nodes?"
                )))
            }
            Err(e) => return Err(e),
        }
        self.mac(b"server", &ours, theirs)
            .verify_slice(&answer)
            .map_err(|_| {
                denied(format!(
                    "{addr} did not prove the cluster secret: is cluster.secret the same on both nodes?"
                ))
            })
    }

    /// The accepting side of the proof.
    async fn challenge(&self, conn: &mut Conn) -> io::Result<()> {
        let ours = nonce();
        let mut hello = Vec::with_capacity(MAGIC.len() + NONCE);
        hello.extend_from_slice(MAGIC);
        hello.extend_from_slice(&ours);
        conn.write_all(&hello).await?;
        conn.flush().await?;
        let mut magic = [0u8; MAGIC.len()];
        conn.read_exact(&mut magic).await?;
        if &magic != MAGIC {
            return Err(denied(
                "no cluster handshake (a frame or another protocol was sent first)".into(),
            ));
        }
        let mut rest = [0u8; NONCE + MAC];
        conn.read_exact(&mut rest).await?;
        let (theirs, proof) = rest.split_at(NONCE);
        self.mac(b"client", &ours, theirs)
            .verify_slice(proof)
            .map_err(|_| denied("wrong cluster secret".into()))?;
        let answer = self.mac(b"server", theirs, &ours).finalize().into_bytes();
        conn.write_all(&answer).await?;
        conn.flush().await
    }
}

/// Reloads `transport`'s TLS files on every SIGHUP, for as long as the cluster's
/// runtime runs (nothing to do without `cluster.tls`).
pub(super) async fn watch_sighup(transport: Arc<Transport>) {
    use tokio::signal::unix::{signal, SignalKind};
    if transport.tls.is_none() {
        return;
    }
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP: the cluster port's TLS certificates will not be reloaded");
            return;
        }
    };
    while hup.recv().await.is_some() {
        match transport.reload() {
            Ok(_) => tracing::info!("SIGHUP: the cluster port's TLS certificate, key and CA reloaded for new connections"),
            Err(e) => tracing::error!(error = %e, "SIGHUP: the cluster port's TLS reload failed; the previous certificate stays in use"),
        }
    }
}

fn nonce() -> [u8; NONCE] {
    let mut n = [0u8; NONCE];
    rand_core::OsRng.fill_bytes(&mut n);
    n
}

/// The name a peer's certificate must carry: the host of its cluster address (an IP
/// address or a DNS name).
fn server_name(addr: &str) -> io::Result<ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cluster address {addr}: {e}"),
        )
    })
}

/// Mutual TLS from `[tls]`: every node presents its certificate, and verifies its
/// peer's (either direction) against `tls.ca_file`.
fn tls_pair(tls: &TlsSettings) -> Result<ClusterTls, String> {
    let (Some(cert), Some(key), Some(ca)) = (&tls.cert_file, &tls.key_file, &tls.ca_file) else {
        return Err(
            "cluster.tls needs tls.cert_file, tls.key_file and tls.ca_file (mutual TLS)".into(),
        );
    };
    let certs = load_certs(cert)?;
    let key = load_key(key)?;
    let roots = Arc::new(load_roots(ca)?);
    let provider = provider();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(|e| format!("certificate and key: {e}"))?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    Ok(ClusterTls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(server: &Transport, client: &Transport) -> (io::Result<Conn>, Option<Conn>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accept = async {
            let (tcp, peer) = listener.accept().await.unwrap();
            server.accept(tcp, peer).await
        };
        tokio::join!(client.connect(&addr), accept)
    }

    #[tokio::test]
    async fn the_same_secret_passes_and_frames_follow() {
        let (c, s) = pair(
            &Transport::plain("0123456789abcdef"),
            &Transport::plain("0123456789abcdef"),
        )
        .await;
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        c.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
    }

    #[tokio::test]
    async fn a_wrong_secret_is_refused_on_both_sides() {
        let (c, s) = pair(
            &Transport::plain("0123456789abcdef"),
            &Transport::plain("fedcba9876543210"),
        )
        .await;
        assert!(s.is_none());
        let e = c.err().expect("the client is refused");
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        assert!(e.to_string().contains("cluster.secret"), "{e}");
    }

    /// Writes `ca.pem` (a new CA named `ca_name`), and `cert.pem` / `key.pem` (its
    /// certificate for 127.0.0.1) into `dir`.
    fn write_pki(dir: &std::path::Path, ca_name: &str) {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, ca_name);
        let ca = params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    }

    /// A transport with `cluster.tls` on the files of `dir`.
    fn tls_transport(dir: &std::path::Path) -> Transport {
        let settings = TlsSettings {
            cert_file: Some(dir.join("cert.pem")),
            key_file: Some(dir.join("key.pem")),
            ca_file: Some(dir.join("ca.pem")),
            ..Default::default()
        };
        Transport {
            secret: b"0123456789abcdef".to_vec(),
            tls: Some(RwLock::new(Arc::new(tls_pair(&settings).unwrap()))),
            tls_settings: settings,
            handshake_timeout: Duration::from_secs(10),
        }
    }

    fn copy_pki(from: &std::path::Path, to: &std::path::Path) {
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
    }

    #[tokio::test]
    async fn a_reload_serves_new_connections_with_the_new_files_and_a_broken_file_keeps_the_old() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write_pki(a.path(), "first CA");
        copy_pki(a.path(), b.path());
        let (server, client) = (tls_transport(a.path()), tls_transport(b.path()));
        let joined = |r: (io::Result<Conn>, Option<Conn>)| r.0.is_ok() && r.1.is_some();
        assert!(joined(pair(&server, &client).await));

        std::fs::write(a.path().join("key.pem"), "not a key").unwrap();
        let e = server.reload().unwrap_err();
        assert!(e.contains("key.pem"), "{e}");
        assert!(
            joined(pair(&server, &client).await),
            "the old files stay in use"
        );

        // A new CA on one side only: the two no longer trust each other.
        write_pki(a.path(), "second CA");
        assert_eq!(server.reload(), Ok(true));
        assert!(
            !joined(pair(&server, &client).await),
            "the new files are used"
        );
        copy_pki(a.path(), b.path());
        assert_eq!(client.reload(), Ok(true));
        assert!(joined(pair(&server, &client).await));
        assert_eq!(Transport::plain("0123456789abcdef").reload(), Ok(false));
    }

    #[test]
    fn a_peer_name_is_the_host_of_its_address() {
        assert!(matches!(
            server_name("127.0.0.1:25672").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:25672").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("node1.example:25672").unwrap(),
            ServerName::DnsName(_)
        ));
    }
}
