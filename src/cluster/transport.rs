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
//! 1. the accepting node sends `MAGIC`, its cluster protocol version (`u32`) and id
//!    (`u64`, big-endian) and a random 32-byte challenge (its *announcement*);
//! 2. the connecting node sends the same four (its own version, id and challenge) and
//!    `HMAC(secret, "client" | accepting announcement | connecting announcement)`;
//! 3. the accepting node checks it (in constant time) and answers a byte (zero: taken,
//!    one: refused for its version) and
//!    `HMAC(secret, "server" | connecting announcement | accepting announcement)`,
//!    which the connecting node checks: neither side talks to a peer without the
//!    secret.
//!
//! The MACs cover the versions and ids, and each side checks the proof before it acts
//! on what the other announced: a peer without the secret is refused as such (a
//! warning), whatever version or id it claims, and cannot make a node log a claim of
//! its choosing. A peer that proves the secret but announces another
//! [`CLUSTER_PROTOCOL`] is refused by both sides, each logging a [`Mismatch`] naming
//! the two versions at ERROR (at most once a minute per peer, see
//! [`super::version::report`]; a peer in the membership is retried at heartbeat
//! rate).
//!
//! Older builds speak older handshakes (`OLD_MAGICS`, whose announcements no MAC
//! covered). One that accepts says so in its magic: the connecting node refuses it
//! as an older actormq. One that connects reads this magic, does not know it, and
//! closes without a word: the accepting node sees only a connection closed early
//! (a warning), so upgrade every node of a cluster together.
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
use super::version::{Mismatch, Speaker, CLUSTER_PROTOCOL};
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
const MAGIC: &[u8; 8] = b"AMQCLU\x00\x03";
/// The magics of older builds' handshakes: before the version gate (no version, no
/// id), and with a version and id no MAC covered.
const OLD_MAGICS: [&[u8; 8]; 2] = [b"AMQCLU\x00\x01", b"AMQCLU\x00\x02"];
/// The version and id after the magic.
const ANNOUNCE: usize = 4 + 8;
/// The accepting side's answer to a hello it takes, and to one it refuses.
const ACCEPTED: u8 = 0;
const REFUSED: u8 = 1;
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
    /// Who this side announces itself as.
    me: Speaker,
    /// The version it announces: [`CLUSTER_PROTOCOL`] (another only in tests).
    protocol: u32,
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
            me: Speaker::Node(cluster.node_id),
            protocol: CLUSTER_PROTOCOL,
        })
    }

    /// The same transport announcing the CLI, which is no node (`actormq cluster`
    /// with `--config` reads a node's settings but must not pass for that node).
    pub fn as_cli(mut self) -> Transport {
        self.me = Speaker::Cli;
        self
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

    /// A plain transport proving `secret`, announcing the CLI (the CLI without
    /// `--config`, and tests).
    pub fn plain(secret: &str) -> Transport {
        Transport {
            secret: secret.as_bytes().to_vec(),
            tls: None,
            tls_settings: TlsSettings::default(),
            handshake_timeout: Duration::from_secs(10),
            me: Speaker::Cli,
            protocol: CLUSTER_PROTOCOL,
        }
    }

    /// The first bytes this side sends: magic, version, id, `nonce`.
    fn hello(&self, nonce: &[u8; NONCE]) -> Vec<u8> {
        let mut hello = Vec::with_capacity(MAGIC.len() + ANNOUNCE + NONCE + MAC);
        hello.extend_from_slice(MAGIC);
        hello.extend_from_slice(&self.protocol.to_be_bytes());
        hello.extend_from_slice(&self.me.wire().to_be_bytes());
        hello.extend_from_slice(nonce);
        hello
    }

    /// The refusal of a peer at `addr` that announced `theirs` (`peer` `None`: a build
    /// before the gate, which announces nothing).
    fn mismatch(&self, peer: Option<Speaker>, addr: String, theirs: u32) -> Mismatch {
        Mismatch {
            peer,
            addr,
            theirs,
            me: self.me,
            ours: self.protocol,
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
            self.challenge(&mut conn, peer).await?;
            Ok::<_, io::Error>(conn)
        };
        match tokio::time::timeout(self.handshake_timeout, work).await {
            Ok(Ok(conn)) => Some(conn),
            Ok(Err(e)) if Mismatch::of(&e).is_some() => {
                // Proven (the proof is checked before the version), so a fact. Once
                // a minute per peer host, node and version (not per connection).
                let key = Mismatch::of(&e).map(|m| (m.peer, m.theirs));
                let key = format!("accepted {} {key:?}", peer.ip());
                if super::version::report(&key) {
                    tracing::error!(%peer, "cluster port: peer refused: {e}");
                } else {
                    tracing::debug!(%peer, "cluster port: peer refused: {e}");
                }
                None
            }
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

    /// `first` and `second`: the two announcements (version, id, challenge).
    fn mac(&self, role: &[u8], first: &[u8], second: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(role);
        mac.update(first);
        mac.update(second);
        mac
    }

    /// The connecting side of the proof.
    async fn prove(&self, conn: &mut Conn, addr: &str) -> io::Result<()> {
        let mut magic = [0u8; MAGIC.len()];
        conn.read_exact(&mut magic).await?;
        if OLD_MAGICS.contains(&&magic) {
            return Err(self.mismatch(None, addr.to_string(), 0).into_io());
        }
        if &magic != MAGIC {
            return Err(denied(format!(
                "{addr} is not an actormq cluster port (or speaks another version)"
            )));
        }
        let mut theirs = [0u8; ANNOUNCE + NONCE];
        conn.read_exact(&mut theirs).await?;
        let mine = self.hello(&nonce());
        let proof = self
            .mac(b"client", &theirs, &mine[MAGIC.len()..])
            .finalize()
            .into_bytes();
        let mut msg = mine.clone();
        msg.extend_from_slice(&proof);
        conn.write_all(&msg).await?;
        conn.flush().await?;
        let mut answer = [0u8; 1 + MAC];
        match conn.read_exact(&mut answer).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(denied(format!(
                    "{addr} refused this node: is cluster.secret the same on both nodes?"
                )))
            }
            Err(e) => return Err(e),
        }
        // The proof first: only then is what the peer announced its own.
        self.mac(b"server", &mine[MAGIC.len()..], &theirs)
            .verify_slice(&answer[1..])
            .map_err(|_| {
                denied(format!(
                    "{addr} did not prove the cluster secret: is cluster.secret the same on both nodes?"
                ))
            })?;
        let (version, id) = announced(&theirs);
        if version != self.protocol || answer[0] == REFUSED {
            let peer = Some(Speaker::from_wire(id));
            return Err(self.mismatch(peer, addr.to_string(), version).into_io());
        }
        Ok(())
    }

    /// The accepting side of the proof; `peer` is where the connection comes from.
    async fn challenge(&self, conn: &mut Conn, peer: SocketAddr) -> io::Result<()> {
        let mine = self.hello(&nonce());
        conn.write_all(&mine).await?;
        conn.flush().await?;
        let mut magic = [0u8; MAGIC.len()];
        conn.read_exact(&mut magic).await?;
        if OLD_MAGICS.contains(&&magic) {
            // Nothing it says is proven: not reported as a version mismatch.
            return Err(denied(
                "an older handshake (an actormq of an older version?): refused".into(),
            ));
        }
        if &magic != MAGIC {
            return Err(denied(
                "no cluster handshake (a frame or another protocol was sent first)".into(),
            ));
        }
        let mut rest = [0u8; ANNOUNCE + NONCE + MAC];
        conn.read_exact(&mut rest).await?;
        let (theirs, proof) = rest.split_at(ANNOUNCE + NONCE);
        // The proof first: a peer without the secret is refused as such, whatever it
        // announced.
        self.mac(b"client", &mine[MAGIC.len()..], theirs)
            .verify_slice(proof)
            .map_err(|_| denied("wrong cluster secret".into()))?;
        let (version, id) = announced(theirs);
        let verdict = if version == self.protocol {
            ACCEPTED
        } else {
            REFUSED
        };
        let mut answer = vec![verdict];
        answer.extend_from_slice(
            &self
                .mac(b"server", theirs, &mine[MAGIC.len()..])
                .finalize()
                .into_bytes(),
        );
        if verdict == REFUSED {
            // Best effort: the refusal is logged here whether the peer reads it or not.
            let _ = conn.write_all(&answer).await;
            let _ = conn.flush().await;
            let peer_speaker = Some(Speaker::from_wire(id));
            return Err(self
                .mismatch(peer_speaker, peer.to_string(), version)
                .into_io());
        }
        conn.write_all(&answer).await?;
        conn.flush().await
    }
}

/// The version and id a hello announces (the bytes after its magic).
fn announced(rest: &[u8]) -> (u32, u64) {
    let version = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes"));
    let id = u64::from_be_bytes(rest[4..ANNOUNCE].try_into().expect("8 bytes"));
    (version, id)
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
#[path = "transport_tests.rs"]
mod tests;
