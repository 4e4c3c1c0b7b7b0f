//! The registry of live client connections, across every listener and protocol: what
//! an operator lists (who is connected, from where, to which vhost, doing how much) and
//! the one place a connection can be closed from outside (management API, CLI).
//!
//! Connections register themselves when they start and leave when they stop. Counters
//! live in each connection's [`ConnectionStats`] (relaxed atomics, bumped once per batch,
//! never per message on another thread) and are read only when someone lists.

use actix::Recipient;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Asks a connection to close: the client is told `reason` with CONNECTION_FORCED
/// (320 over AMQP), as RabbitMQ does when an operator closes a connection.
#[derive(actix::Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct CloseConnection {
    /// Why, as the client and the log will see it.
    pub reason: String,
}

/// Counters of one connection, shared between the connection and the registry.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Messages the client published.
    pub published: AtomicU64,
    /// Messages delivered to the client (consumers and gets).
    pub delivered: AtomicU64,
    /// Channels open (1 for a native connection once open).
    pub channels: AtomicU32,
}

impl ConnectionStats {
    /// Adds `n` published messages.
    pub fn add_published(&self, n: u64) {
        self.published.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n` deliveries.
    pub fn add_delivered(&self, n: u64) {
        self.delivered.fetch_add(n, Ordering::Relaxed);
    }
}

/// One channel of a connection, as `/api/channels` shows it: read from the
/// connection actor when asked ([`ListChannels`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// The channel number.
    pub number: u16,
    /// The owner of its consumers and deliveries at the queues.
    pub owner: crate::broker::messages::OwnerId,
    /// Consumers on it.
    pub consumers: u32,
    /// Deliveries not yet acked.
    pub unacked: u64,
    /// The prefetch given to its new consumers (`basic.qos`).
    pub prefetch: u32,
    /// Publisher confirms are on.
    pub confirm: bool,
    /// Publishes awaiting their confirm.
    pub unconfirmed: u64,
    /// In a transaction.
    pub transactional: bool,
}

/// Asks a connection for its channels (a read-only query; connections without channels
/// of their own, like the native one, do not register for it).
#[derive(actix::Message, Debug, Clone, Copy)]
#[rtype(result = "Vec<ChannelInfo>")]
pub struct ListChannels;

/// What a listing shows of one connection.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionInfo {
    /// The connection's id (its owner id: unique for the broker's life).
    pub id: u64,
    /// A name an operator can type: `peer -> local`, as RabbitMQ names connections.
    pub name: String,
    /// `native` or `amqp`.
    pub protocol: &'static str,
    /// The client's address.
    pub peer: SocketAddr,
    /// The authenticated user; empty until the handshake is done.
    pub user: String,
    /// The virtual host; empty until the handshake is done.
    pub vhost: String,
    /// When the socket was accepted.
    pub connected_at: SystemTime,
    /// Channels open now.
    pub channels: u32,
    /// Messages published so far.
    pub published: u64,
    /// Messages delivered so far.
    pub delivered: u64,
    /// What the client said about itself (AMQP `client_properties`; for the native
    /// protocol its client name as `connection_name`), bounded
    /// ([`client_properties::bounded`](super::client_properties::bounded)).
    pub client_properties: crate::message::FieldTable,
}

/// One live connection.
struct Entry {
    name: String,
    protocol: &'static str,
    peer: SocketAddr,
    user: String,
    vhost: String,
    connected_at: SystemTime,
    stats: Arc<ConnectionStats>,
    close: Recipient<CloseConnection>,
    /// Where to ask for its channels, when it has several.
    channels: Option<Recipient<ListChannels>>,
    client_properties: crate::message::FieldTable,
}

/// The live connections of a broker's front ends.
#[derive(Default)]
pub struct Connections {
    by_id: Mutex<BTreeMap<u64, Entry>>,
}

impl Connections {
    /// Registers a connection that has just been accepted.
    pub(crate) fn register(
        &self,
        id: u64,
        protocol: &'static str,
        peer: SocketAddr,
        local: Option<SocketAddr>,
        stats: Arc<ConnectionStats>,
        close: Recipient<CloseConnection>,
    ) {
        let name = match local {
            Some(l) => format!("{peer} -> {l}"),
            None => peer.to_string(),
        };
        let entry = Entry {
            name,
            protocol,
            peer,
            user: String::new(),
            vhost: String::new(),
            connected_at: SystemTime::now(),
            stats,
            close,
            channels: None,
            client_properties: Default::default(),
        };
        self.lock().insert(id, entry);
    }

    /// Records what client `id` said about itself (bounded here).
    pub(crate) fn set_client_properties(&self, id: u64, table: &crate::message::FieldTable) {
        let kept = super::client_properties::bounded(table);
        if let Some(e) = self.lock().get_mut(&id) {
            e.client_properties = kept;
        }
    }

    /// Lets the management API ask connection `id` for its channels.
    pub(crate) fn set_channel_source(&self, id: u64, source: Recipient<ListChannels>) {
        if let Some(e) = self.lock().get_mut(&id) {
            e.channels = Some(source);
        }
    }

    /// The connections that answer [`ListChannels`], by id.
    pub fn channel_sources(&self) -> Vec<(u64, Recipient<ListChannels>)> {
        self.lock()
            .iter()
            .filter_map(|(id, e)| Some((*id, e.channels.clone()?)))
            .collect()
    }

    /// Records who the connection authenticated as, and where, unless that would pass
    /// `limits` (connections per vhost, per user; 0 = none): then the refusal, in
    /// RabbitMQ's words, for the client (NOT_ALLOWED, 530 over AMQP), and the
    /// connection stays unopened. Checked and recorded under one lock, so connections
    /// opening at once cannot both take the last place.
    pub(crate) fn opened(
        &self,
        id: u64,
        user: &str,
        vhost: &str,
        limits: &crate::settings::ServerSettings,
        vhost_limit: Option<u32>,
    ) -> Result<(), String> {
        let mut by_id = self.lock();
        let (per_vhost, per_user) = (
            limits.max_connections_per_vhost,
            limits.max_connections_per_user,
        );
        // The vhost's own `max-connections` (0 included: no connection) overrides the
        // broker-wide default, where 0 means no limit.
        let per_vhost = match vhost_limit {
            Some(n) => Some(n as usize),
            None => (per_vhost > 0).then_some(per_vhost),
        };
        if let Some(per_vhost) = per_vhost {
            let n = by_id.values().filter(|e| e.vhost == vhost).count();
            if n >= per_vhost {
                return Err(format!(
                    "access to vhost '{}' refused for user '{}': connection limit ({per_vhost}) is reached",
                    crate::error::clip(vhost),
                    crate::error::clip(user)
                ));
            }
        }
        if per_user > 0 {
            let n = by_id.values().filter(|e| e.user == user).count();
            if n >= per_user {
                return Err(format!(
                    "Connection refused for user '{}'. User connection limit ({per_user}) is reached",
                    crate::error::clip(user)
                ));
            }
        }
        if let Some(e) = by_id.get_mut(&id) {
            e.user = user.to_string();
            e.vhost = vhost.to_string();
        }
        Ok(())
    }

    /// Forgets a connection that stopped.
    pub(crate) fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every live connection, by id.
    pub fn list(&self) -> Vec<ConnectionInfo> {
        self.lock()
            .iter()
            .map(|(id, e)| ConnectionInfo {
                id: *id,
                name: e.name.clone(),
                protocol: e.protocol,
                peer: e.peer,
                user: e.user.clone(),
                vhost: e.vhost.clone(),
                connected_at: e.connected_at,
                channels: e.stats.channels.load(Ordering::Relaxed),
                published: e.stats.published.load(Ordering::Relaxed),
                delivered: e.stats.delivered.load(Ordering::Relaxed),
                client_properties: e.client_properties.clone(),
            })
            .collect()
    }

    /// Closes the connection with this id or name, telling its client `reason`; false
    /// when there is no such connection.
    pub fn close(&self, id_or_name: &str, reason: &str) -> bool {
        let target = {
            let by_id = self.lock();
            let id = id_or_name.parse::<u64>().ok();
            by_id
                .iter()
                .find(|(k, e)| Some(**k) == id || e.name == id_or_name)
                .map(|(_, e)| e.close.clone())
        };
        match target {
            Some(close) => {
                tracing::info!(connection = %id_or_name, %reason, "closing a connection on request");
                close.do_send(CloseConnection {
                    reason: reason.to_string(),
                });
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        // The map is only ever left consistent (plain inserts and removes).
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }
}
