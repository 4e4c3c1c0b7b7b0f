//! TLS for the native and AMQP listeners, with rustls: the server configuration built
//! from `[tls]`'s PEM files (TLS 1.2 and 1.3 only, client certificates as `verify` and
//! `fail_if_no_peer_cert` say), held so that SIGHUP can swap in a re-read certificate
//! and key for the connections accepted after it while the open ones keep theirs.
//!
//! The handshake itself runs in the accept path (`listener`), bounded by
//! `tls.handshake_timeout_secs`, before any protocol byte is read.

use crate::settings::{TlsSettings, TlsVerify};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::{Arc, RwLock};
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

/// The protocol versions every TLS endpoint (listeners and client) offers.
pub(crate) static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The crypto provider: ring (see Cargo.toml for why). rustls 0.23.48 deprecates it
/// because ring has no post-quantum key exchange (X25519MLKEM768); classical X25519 and
/// the NIST curves remain, as in RabbitMQ's default TLS (docs/SECURITY.md).
#[allow(deprecated)]
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file, naming the file in errors.
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

/// The first private key of a PEM file.
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A trust store of the CA certificates of a PEM file.
pub(crate) fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The server configuration `[tls]` describes.
pub(crate) fn server_config(tls: &TlsSettings) -> Result<ServerConfig, String> {
    let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) else {
        return Err("tls.cert_file and tls.key_file must be set".into());
    };
    let certs = load_certs(cert)?;
    let key = load_key(key)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| e.to_string())?;
    let builder = match (tls.verify, &tls.ca_file) {
        (TlsVerify::Peer, Some(ca)) => {
            let roots = Arc::new(load_roots(ca)?);
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = if tls.fail_if_no_peer_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| e.to_string())?)
        }
        (TlsVerify::Peer, None) => return Err("tls.verify = \"peer\" needs tls.ca_file".into()),
        (TlsVerify::None, _) => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key: {e}"))
}

/// The TLS configuration of a front end's listeners, replaceable at run time.
pub(crate) struct Tls {
    settings: TlsSettings,
    current: RwLock<Arc<ServerConfig>>,
    /// Set once a SIGHUP watcher runs (one per front end).
    watching: std::sync::atomic::AtomicBool,
}

impl Tls {
    /// Reads the files `[tls]` names.
    pub(crate) fn load(settings: &TlsSettings) -> Result<Tls, String> {
        let config = server_config(settings)?;
        Ok(Tls {
            settings: settings.clone(),
            current: RwLock::new(Arc::new(config)),
            watching: Default::default(),
        })
    }

    /// An acceptor with the configuration in force now.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        tokio_rustls::TlsAcceptor::from(config)
    }

    /// A server configuration for the HTTPS listeners: the client-certificate policy
    /// of now, and a certificate that follows every reload. actix-web takes one fixed
    /// `ServerConfig` per listener, so the certificate is looked up per handshake in
    /// the configuration in force ([`Following`]) instead.
    pub(crate) fn following(self: &Arc<Self>) -> ServerConfig {
        let mut config = (*self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone())
        .clone();
        config.cert_resolver = Arc::new(Following(self.clone()));
        config
    }

    /// How long a handshake may take.
    pub(crate) fn handshake_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.settings.handshake_timeout_secs)
    }

    /// Re-reads the certificate, key and CA files; on any error the configuration in
    /// force stays (a half-written file must not take TLS down).
    pub(crate) fn reload(&self) -> Result<(), String> {
        let config = server_config(&self.settings)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// Reloads on every SIGHUP until `shutdown` is set; started once per front end, on
    /// `arbiter`.
    pub(crate) fn watch_sighup(
        self: &Arc<Self>,
        arbiter: &actix::ArbiterHandle,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        if self
            .watching
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let tls = self.clone();
        arbiter.spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hup = match signal(SignalKind::hangup()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGHUP: TLS certificates will not be reloaded");
                    return;
                }
            };
            loop {
                tokio::select! {
                    got = hup.recv() => {
                        if got.is_none() {
                            return;
                        }
                        match tls.reload() {
                            Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded for new connections"),
                            Err(e) => tracing::error!(error = %e, "SIGHUP: TLS reload failed; the previous certificate stays in use"),
                        }
                    }
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        });
    }
}

/// Resolves a handshake's certificate with the configuration in force now (so that a
/// SIGHUP reload reaches listeners that hold a configuration of their own).
#[derive(Debug)]
struct Following(Arc<Tls>);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl rustls::server::ResolvesServerCert for Following {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let config = self
            .0
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        config.cert_resolver.resolve(hello)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_cert(dir: &Path, cn: &str) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    }

    fn settings(dir: &Path) -> TlsSettings {
        TlsSettings {
            cert_file: Some(dir.join("cert.pem")),
            key_file: Some(dir.join("key.pem")),
            ..Default::default()
        }
    }

    #[test]
    fn a_reload_swaps_the_certificate_and_a_broken_file_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        write_cert(dir.path(), "first");
        let tls = Tls::load(&settings(dir.path())).unwrap();
        let before = Arc::as_ptr(&tls.current.read().unwrap());
        write_cert(dir.path(), "second");
        tls.reload().unwrap();
        let after = Arc::as_ptr(&tls.current.read().unwrap());
        assert_ne!(before, after, "a new configuration for new connections");
        std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
        let e = tls.reload().unwrap_err();
        assert!(e.contains("key.pem"), "{e}");
        assert_eq!(Arc::as_ptr(&tls.current.read().unwrap()), after);
    }

    /// Runs a handshake in memory between `server` and a client trusting only
    /// `trusted` (a PEM certificate); true when it completes.
    fn handshake_trusting(server: ServerConfig, trusted: &Path) -> bool {
        let roots = load_roots(trusted).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut c = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        let mut s = rustls::ServerConnection::new(Arc::new(server)).unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            if s.read_tls(&mut &buf[..]).is_err() || s.process_new_packets().is_err() {
                return false;
            }
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            if c.read_tls(&mut &buf[..]).is_err() || c.process_new_packets().is_err() {
                return false;
            }
            if !c.is_handshaking() && !s.is_handshaking() {
                return true;
            }
        }
        false
    }

    #[test]
    fn a_following_configuration_presents_the_reloaded_certificate() {
        let dir = tempfile::tempdir().unwrap();
        write_cert(dir.path(), "first");
        let first = dir.path().join("first.pem");
        std::fs::copy(dir.path().join("cert.pem"), &first).unwrap();
        let tls = Arc::new(Tls::load(&settings(dir.path())).unwrap());
        let https = tls.following();
        assert!(handshake_trusting(https.clone(), &first));
        write_cert(dir.path(), "second");
        tls.reload().unwrap();
        // The listener's configuration was made before the reload, and yet:
        assert!(!handshake_trusting(https.clone(), &first));
        assert!(handshake_trusting(https, &dir.path().join("cert.pem")));
    }

    #[test]
    fn missing_or_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = server_config(&settings(dir.path())).unwrap_err();
        assert!(e.contains("cert.pem"), "{e}");
        std::fs::write(dir.path().join("cert.pem"), "").unwrap();
        let e = server_config(&settings(dir.path())).unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
    }
}
