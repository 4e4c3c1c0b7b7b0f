//! Opening the TLS listeners: the native protocol over TLS (`server.tls_bind`,
//! conventionally port 5681), AMQPS (`amqp.tls_bind`, port 5671) and the management
//! API over HTTPS (`http.tls_bind`, port 15671; see `http`), on a front end
//! whose `[tls]` section names a certificate and key.

use super::{bind, bind_amqp, listener, prepare, FrontEnd, ServerError, ServerHandle};
use crate::settings::Settings;
use std::net::SocketAddr;
use std::sync::Arc;

/// The TLS addresses of the settings, kept aside while the settings move into the
/// front end.
pub(super) struct TlsBinds {
    native: Option<String>,
    amqp: Vec<String>,
    http: Vec<String>,
}

/// The non-blank addresses of a list setting.
fn addresses(list: &[String]) -> Vec<String> {
    list.iter()
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect()
}

impl TlsBinds {
    pub(super) fn of(settings: &Settings) -> TlsBinds {
        let native = Some(settings.server.tls_bind.trim().to_string()).filter(|a| !a.is_empty());
        TlsBinds {
            native,
            amqp: addresses(&settings.amqp.tls_bind),
            http: addresses(&settings.http.tls_bind),
        }
    }
}

impl FrontEnd {
    /// The TLS configuration, or the error saying none is configured.
    pub(super) fn tls(&self) -> Result<Arc<super::tls::Tls>, ServerError> {
        let tls = self.shared.tls.clone().ok_or_else(|| {
            ServerError::Tls("a TLS listener needs tls.cert_file and tls.key_file".into())
        })?;
        let arbiter = self.shared.broker.context().next_arbiter();
        tls.watch_sighup(&arbiter, self.shared.shutdown.subscribe());
        Ok(tls)
    }

    /// Serves the native protocol over TLS on `listener` (already bound), with the
    /// certificate of the settings' `[tls]` section, reloaded on SIGHUP; returns the
    /// address it listens on. A TLS error if `[tls]` names no certificate.
    pub fn listen_native_tls(
        &self,
        listener: std::net::TcpListener,
    ) -> Result<SocketAddr, ServerError> {
        let tls = self.tls()?;
        let addr = prepare(&listener)?;
        let start: listener::StartConnection = Arc::new(|socket, peer, shared| {
            super::connection::Connection::start(socket, peer, shared);
        });
        let refuse = listener::refuse_silently;
        listener::spawn(
            listener,
            self.shared.clone(),
            "native/ssl",
            start,
            refuse,
            Some(tls),
        );
        self.shared.record_listener("native/ssl", addr);
        tracing::info!(%addr, "native protocol over TLS listening");
        Ok(addr)
    }

    /// Serves AMQP 0-9-1 over TLS (AMQPS) on `listener`, as
    /// [`listen_native_tls`](Self::listen_native_tls) does the native protocol.
    pub fn listen_amqp_tls(
        &self,
        listener: std::net::TcpListener,
    ) -> Result<SocketAddr, ServerError> {
        let tls = self.tls()?;
        let addr = prepare(&listener)?;
        let start: listener::StartConnection = Arc::new(|socket, peer, shared| {
            crate::amqp::AmqpConnection::start(socket, peer, shared);
        });
        let refuse = listener::refuse_silently;
        listener::spawn(
            listener,
            self.shared.clone(),
            "amqp/ssl",
            start,
            refuse,
            Some(tls),
        );
        self.shared.record_listener("amqp/ssl", addr);
        tracing::info!(%addr, "AMQP 0-9-1 over TLS listening");
        Ok(addr)
    }
}

impl ServerHandle {
    /// Binds and opens the TLS listeners the settings name.
    pub(super) fn open_tls(&mut self, binds: TlsBinds) -> Result<(), ServerError> {
        if let Some(addr) = binds.native {
            let l = bind(&addr)?;
            self.native_tls_addr = Some(self.front.listen_native_tls(l)?);
        }
        for l in bind_amqp(&binds.amqp)? {
            let addr = self.front.listen_amqp_tls(l)?;
            self.amqps_addrs.push(addr);
        }
        for addr in &binds.http {
            let addr = self.front.listen_https(bind(addr)?)?;
            self.https_addrs.push(addr);
        }
        Ok(())
    }

    /// The native TLS listener's address (`server.tls_bind`; `None` when off).
    pub fn native_tls_addr(&self) -> Option<SocketAddr> {
        self.native_tls_addr
    }

    /// The HTTPS management listeners' addresses (`http.tls_bind`; empty when off).
    pub fn https_addrs(&self) -> &[SocketAddr] {
        &self.https_addrs
    }

    /// The AMQPS listeners' addresses (`amqp.tls_bind`; empty when off).
    pub fn amqps_addrs(&self) -> &[SocketAddr] {
        &self.amqps_addrs
    }
}
