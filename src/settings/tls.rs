//! `[tls]`: the certificate, key and client-certificate policy shared by every TLS
//! listener (`server.tls_bind`, `amqp.tls_bind`, `http.tls_bind`), as RabbitMQ's `ssl_options` are shared
//! by its listeners. Read from PEM files at start-up and again on SIGHUP.

use super::SettingsError;
use serde::Deserialize;
use std::path::PathBuf;

/// `[tls]`: what the TLS listeners present and what they ask of clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// The server's certificate chain (PEM, leaf first).
    pub cert_file: Option<PathBuf>,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to; needed with
    /// `verify = "peer"`.
    pub ca_file: Option<PathBuf>,
    /// Whether clients are asked for a certificate.
    pub verify: TlsVerify,
    /// With `verify = "peer"`: refuse a client that sends no certificate (otherwise it
    /// may log in with a password, as RabbitMQ's `fail_if_no_peer_cert = false`).
    pub fail_if_no_peer_cert: bool,
    /// Seconds a client has to finish the TLS handshake before the socket is dropped.
    pub handshake_timeout_secs: u64,
    /// Which name of a verified client certificate the EXTERNAL mechanism logs in as
    /// (RabbitMQ's `ssl_cert_login_from`).
    pub cert_login_from: CertLoginFrom,
    /// With `cert_login_from = "subject_alternative_name"`: the kind of SAN (RabbitMQ's
    /// `ssl_cert_login_san_type`).
    pub cert_login_san_type: SanType,
    /// With `cert_login_from = "subject_alternative_name"`: which SAN of that kind,
    /// from 0 (RabbitMQ's `ssl_cert_login_san_index`).
    pub cert_login_san_index: usize,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            cert_file: None,
            key_file: None,
            ca_file: None,
            verify: TlsVerify::None,
            fail_if_no_peer_cert: false,
            handshake_timeout_secs: 10,
            cert_login_from: CertLoginFrom::CommonName,
            cert_login_san_type: SanType::Dns,
            cert_login_san_index: 0,
        }
    }
}

/// `tls.cert_login_from`: the certificate name a user is taken from.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CertLoginFrom {
    /// The subject's common name (CN).
    CommonName,
    /// A subject alternative name (see `cert_login_san_type`).
    SubjectAlternativeName,
}

/// `tls.cert_login_san_type`: the kind of subject alternative name.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SanType {
    /// A DNS name.
    Dns,
    /// An e-mail address (rfc822Name).
    Email,
    /// A URI.
    Uri,
}

/// `tls.verify`: RabbitMQ's `verify_none` / `verify_peer`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TlsVerify {
    /// No client certificate is asked for.
    None,
    /// A client certificate is asked for and, when sent, must chain to `ca_file`.
    Peer,
}

impl TlsSettings {
    /// Checks the section when a TLS listener is configured (`enabled`).
    pub(super) fn check(&self, enabled: bool) -> Result<(), SettingsError> {
        if self.handshake_timeout_secs == 0 {
            return Err(SettingsError(
                "tls.handshake_timeout_secs must be at least 1".into(),
            ));
        }
        if !enabled {
            return Ok(());
        }
        if self.cert_file.is_none() || self.key_file.is_none() {
            return Err(SettingsError(
                "tls.cert_file and tls.key_file are needed when server.tls_bind, amqp.tls_bind or http.tls_bind is set".into(),
            ));
        }
        if self.verify == TlsVerify::Peer && self.ca_file.is_none() {
            return Err(SettingsError(
                "tls.ca_file is needed with tls.verify = \"peer\" (the CA client certificates must chain to)".into(),
            ));
        }
        if self.fail_if_no_peer_cert && self.verify != TlsVerify::Peer {
            return Err(SettingsError(
                "tls.fail_if_no_peer_cert needs tls.verify = \"peer\"".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::Settings;

    #[test]
    fn a_tls_listener_needs_a_certificate_and_peer_verification_a_ca() {
        let e = Settings::from_toml("[server]\ntls_bind = \"127.0.0.1:5681\"").unwrap_err();
        assert!(e.to_string().contains("tls.cert_file"), "{e}");
        let peer = "[amqp]\ntls_bind = [\"127.0.0.1:5671\"]\n[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nverify = \"peer\"";
        let e = Settings::from_toml(peer).unwrap_err();
        assert!(e.to_string().contains("tls.ca_file"), "{e}");
        let e = Settings::from_toml("[tls]\nverify = \"sometimes\"").unwrap_err();
        assert!(e.to_string().contains("tls.verify"), "{e}");
        let s = Settings::from_toml("[tls]\ncert_file = \"c\"").unwrap();
        assert!(!s.tls_enabled(), "no listener, no check");
    }
}
