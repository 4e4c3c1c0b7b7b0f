//! A throwaway PKI for the TLS tests: a CA, a server certificate for `localhost` and
//! `127.0.0.1`, a client certificate, and a second CA that signed none of them.

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair};
use std::path::PathBuf;

pub struct Pki {
    pub dir: tempfile::TempDir,
}

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("a CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("a self-signed CA");
    Ca { cert, key }
}

fn leaf(ca: &Ca, cn: &str, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().expect("a key");
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    let cert = params
        .signed_by(&key, &ca.cert, &ca.key)
        .expect("a certificate signed by the CA");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    /// Makes the files: ca.pem, server.pem/.key, client.pem/.key (CN "app"),
    /// ghost.pem/.key (CN "ghost"), other-ca.pem, stranger.pem/.key (a client
    /// certificate of the other CA).
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        let ours = ca("actormq test CA");
        let other = ca("someone else's CA");
        write("ca.pem", &ours.cert.pem());
        write("other-ca.pem", &other.cert.pem());
        let (c, k) = leaf(&ours, "localhost", &["localhost", "127.0.0.1"]);
        write("server.pem", &c);
        write("server.key", &k);
        let (c, k) = leaf(&ours, "app", &["app"]);
        write("client.pem", &c);
        write("client.key", &k);
        // A certificate of our CA for a user the broker does not have (EXTERNAL).
        let (c, k) = leaf(&ours, "ghost", &["ghost"]);
        write("ghost.pem", &c);
        write("ghost.key", &k);
        let (c, k) = leaf(&other, "stranger", &["stranger"]);
        write("stranger.pem", &c);
        write("stranger.key", &k);
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Settings for TLS listeners on ephemeral ports with this PKI's server certificate.
    pub fn server_settings(&self, s: &mut actormq::Settings) {
        s.server.tls_bind = "127.0.0.1:0".into();
        s.amqp.tls_bind = vec!["127.0.0.1:0".into()];
        s.tls.cert_file = Some(self.path("server.pem"));
        s.tls.key_file = Some(self.path("server.key"));
    }
}

/// A tokio-rustls client trusting this PKI's CA, with the client certificate `name`
/// (`name.pem` / `name.key`) when given: for protocols the crate's client does not
/// speak (AMQP, HTTPS).
pub fn connector(pki: &Pki, name: Option<&str>) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    #[allow(deprecated)] // ring: the provider the broker uses
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match name {
        None => builder.with_no_client_auth(),
        Some(n) => {
            let certs = CertificateDer::pem_file_iter(pki.path(&format!("{n}.pem")))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(pki.path(&format!("{n}.key"))).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    };
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// The name the server certificate is for.
pub fn localhost() -> rustls_pki_types::ServerName<'static> {
    rustls_pki_types::ServerName::try_from("localhost").unwrap()
}
