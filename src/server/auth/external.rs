//! The EXTERNAL mechanism, as RabbitMQ's `rabbitmq_auth_mechanism_ssl`: a client whose
//! TLS certificate the listener verified (`tls.verify = "peer"`) logs in, without a
//! password, as the user the certificate names: its subject's common name, or one of
//! its subject alternative names (`tls.cert_login_from`).
//!
//! rustls only keeps a client's certificates when its verifier accepted them, so a
//! certificate here has chained to `tls.ca_file`; this module only reads its names
//! (with x509-parser: rustls exposes none).

use super::Users;
use crate::error::{clip, BrokerError};
use crate::settings::{CertLoginFrom, SanType, TlsSettings};
use std::net::IpAddr;
use x509_parser::extensions::GeneralName;

/// The mechanism's name, in AMQP's `connection.start` and the native `hello`.
pub const EXTERNAL: &str = "EXTERNAL";

/// The user name a verified client certificate (DER) gives, as `tls` says where to take
/// it from; the error says why there is none (logged, not sent to the client).
pub(crate) fn cert_user(der: &[u8], tls: &TlsSettings) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("cannot read the client certificate: {e}"))?;
    match tls.cert_login_from {
        CertLoginFrom::CommonName => {
            let cn = cert
                .subject()
                .iter_common_name()
                .next()
                .ok_or("the client certificate's subject has no common name (CN)")?;
            cn.as_str()
                .map(str::to_string)
                .map_err(|e| format!("the client certificate's common name is not text: {e}"))
        }
        CertLoginFrom::SubjectAlternativeName => {
            let san = cert
                .subject_alternative_name()
                .map_err(|e| format!("the client certificate's SAN extension: {e}"))?
                .ok_or("the client certificate has no subject alternative name")?;
            let of_type =
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match (n, tls.cert_login_san_type) {
                        (GeneralName::DNSName(s), SanType::Dns)
                        | (GeneralName::RFC822Name(s), SanType::Email)
                        | (GeneralName::URI(s), SanType::Uri) => Some(*s),
                        _ => None,
                    });
            of_type
                .clone()
                .nth(tls.cert_login_san_index)
                .map(str::to_string)
                .ok_or_else(|| {
                    format!(
                        "the client certificate has {} subject alternative name(s) of type {:?}; tls.cert_login_san_index is {}",
                        of_type.count(),
                        tls.cert_login_san_type,
                        tls.cert_login_san_index
                    )
                })
        }
    }
}

impl Users {
    /// Checks an EXTERNAL login: `cert` is what the connection's certificate gave
    /// ([`cert_user`]; `None` when there was no verified certificate). The user must
    /// exist, and loopback-only users come from loopback; no password is asked for.
    /// Every refusal is ACCESS_REFUSED; the reason goes to the log with the peer.
    pub(crate) fn login_external(
        &self,
        cert: Option<&Result<String, String>>,
        peer: IpAddr,
    ) -> Result<String, BrokerError> {
        let name = match cert {
            None => {
                tracing::warn!(%peer, "EXTERNAL login refused: no verified client certificate (TLS with tls.verify = \"peer\" is needed)");
                return Err(BrokerError::access_refused(
                    "EXTERNAL login refused: no verified client certificate",
                ));
            }
            Some(Err(why)) => {
                tracing::warn!(%peer, "EXTERNAL login refused: {why}");
                return Err(BrokerError::access_refused(
                    "EXTERNAL login refused: no user name in the client certificate",
                ));
            }
            Some(Ok(name)) => name,
        };
        let shown = clip(name);
        let refused =
            || BrokerError::access_refused(format!("EXTERNAL login refused for user '{shown}'"));
        let Some(u) = self.user(name) else {
            tracing::warn!(user = %shown, %peer, "EXTERNAL login refused: no such user");
            return Err(refused());
        };
        if u.loopback_only && !super::is_loopback(peer) {
            tracing::warn!(user = %shown, %peer, "EXTERNAL login refused: user may connect from loopback only");
            return Err(refused());
        }
        Ok(name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, sans: Vec<rcgen::SanType>) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.subject_alt_names = sans;
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_user_is_the_common_name_or_the_chosen_san() {
        let der = cert(
            "alice",
            vec![
                rcgen::SanType::DnsName("a.example".try_into().unwrap()),
                rcgen::SanType::Rfc822Name("bob@example.com".try_into().unwrap()),
                rcgen::SanType::DnsName("b.example".try_into().unwrap()),
            ],
        );
        let mut tls = TlsSettings::default();
        assert_eq!(cert_user(&der, &tls).unwrap(), "alice");
        tls.cert_login_from = CertLoginFrom::SubjectAlternativeName;
        assert_eq!(cert_user(&der, &tls).unwrap(), "a.example");
        tls.cert_login_san_index = 1;
        assert_eq!(cert_user(&der, &tls).unwrap(), "b.example");
        tls.cert_login_san_type = SanType::Email;
        let e = cert_user(&der, &tls).unwrap_err();
        assert!(e.contains("1 subject alternative name(s)"), "{e}");
        tls.cert_login_san_index = 0;
        assert_eq!(cert_user(&der, &tls).unwrap(), "bob@example.com");
        assert!(cert_user(b"not a certificate", &tls).is_err());
    }
}
