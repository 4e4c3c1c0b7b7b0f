//! `/api/channels` and `/api/consumers`: an AMQP connection's channels are read from
//! the connection actor when asked (a read-only [`ListChannels`] query); a native
//! connection is one channel, number 1, described from its registry entry. Consumers
//! are read from each queue ([`ListConsumers`]) and matched to their channel by owner.

use super::access::Caller;
use super::error::ApiError;
use super::list::{paged, ListQuery};
use super::overview::node_name;
use super::routing::Routes;
use super::Api;
use crate::broker::messages::{ListConsumers, OwnerId};
use crate::server::connections::{ChannelInfo, ListChannels};
use crate::server::ConnectionInfo;
use actix_web::{web, HttpResponse};
use futures_util::future::join_all;
use serde_json::{json, Value};
use std::collections::HashMap;

pub(crate) fn routes(r: &mut Routes) {
    r.get("/api/channels", list)
        .get("/api/channels/{channel}", get)
        .get("/api/vhosts/{vhost}/channels", list_vhost)
        .get("/api/connections/{name}/channels", list_connection)
        .get("/api/consumers", consumers_all)
        .get("/api/consumers/{vhost}", consumers_vhost);
}

/// One channel with its connection.
struct Row {
    conn: ConnectionInfo,
    channel: ChannelInfo,
}

impl Row {
    fn name(&self) -> String {
        format!("{} ({})", self.conn.name, self.channel.number)
    }

    /// RabbitMQ's `channel_details` / `connection_details` of what belongs to it.
    fn details(&self) -> Value {
        json!({
            "name": self.name(),
            "number": self.channel.number,
            "connection_name": self.conn.name,
            "peer_host": self.conn.peer.ip().to_string(),
            "peer_port": self.conn.peer.port(),
            "user": self.conn.user,
            "node": node_name(),
        })
    }

    fn json(&self) -> Value {
        let c = &self.channel;
        json!({
            "name": self.name(),
            "number": c.number,
            "node": node_name(),
            "user": self.conn.user,
            "vhost": self.conn.vhost,
            "state": "running",
            "consumer_count": c.consumers,
            "messages_unacknowledged": c.unacked,
            "messages_unconfirmed": c.unconfirmed,
            "prefetch_count": c.prefetch,
            "confirm": c.confirm,
            "transactional": c.transactional,
            "connection_details": {
                "name": self.conn.name,
                "peer_host": self.conn.peer.ip().to_string(),
                "peer_port": self.conn.peer.port(),
            },
        })
    }
}

/// The channels of the connections `caller` may see, by connection then number.
async fn channels(api: &Api, caller: &Caller) -> Vec<Row> {
    let conns = super::connections::visible(api, caller);
    let sources: HashMap<u64, _> = api.shared.registry.channel_sources().into_iter().collect();
    let asked = join_all(conns.iter().map(|c| {
        let source = sources.get(&c.id).cloned();
        async move {
            match source {
                Some(s) => s.send(ListChannels).await.unwrap_or_default(),
                // A connection without channels of its own (native): one channel, its
                // owner the connection's, while it is open.
                None if c.channels > 0 => vec![ChannelInfo {
                    number: 1,
                    owner: OwnerId(c.id),
                    consumers: 0,
                    unacked: 0,
                    prefetch: 0,
                    confirm: false,
                    unconfirmed: 0,
                    transactional: false,
                }],
                None => Vec::new(),
            }
        }
    }))
    .await;
    conns
        .into_iter()
        .zip(asked)
        .flat_map(|(conn, chs)| {
            chs.into_iter().map(move |channel| Row {
                conn: conn.clone(),
                channel,
            })
        })
        .collect()
}

async fn list(
    api: web::Data<Api>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let rows = channels(&api, &caller).await;
    paged(rows.iter().map(Row::json).collect(), &query)
}

async fn list_vhost(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let vhost = path.into_inner().0;
    caller.check_see(&vhost)?;
    let rows = channels(&api, &caller).await;
    let items = rows
        .iter()
        .filter(|r| r.conn.vhost == vhost)
        .map(Row::json)
        .collect();
    paged(items, &query)
}

async fn list_connection(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner().0;
    let rows = channels(&api, &caller).await;
    if !super::connections::visible(&api, &caller)
        .iter()
        .any(|c| c.name == name || c.id.to_string() == name)
    {
        return Err(ApiError::not_found(format!("no connection '{name}'")));
    }
    let items = rows
        .iter()
        .filter(|r| r.conn.name == name || r.conn.id.to_string() == name)
        .map(Row::json)
        .collect();
    paged(items, &query)
}

async fn get(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner().0;
    channels(&api, &caller)
        .await
        .iter()
        .find(|r| r.name() == name)
        .map(|r| HttpResponse::Ok().json(r.json()))
        .ok_or_else(|| ApiError::not_found(format!("no channel '{name}'")))
}

/// Every consumer of the queues of `vhosts` (of queue `only` alone when given), with
/// its channel when the caller sees it.
pub(super) async fn consumers(
    api: &Api,
    caller: &Caller,
    vhosts: &[String],
    only: Option<&str>,
) -> Vec<Value> {
    let rows = channels(api, caller).await;
    let by_owner: HashMap<OwnerId, &Row> = rows.iter().map(|r| (r.channel.owner, r)).collect();
    let mut out = Vec::new();
    for vhost in vhosts {
        let Ok(registry) = api.shared.broker.registry(vhost) else {
            continue;
        };
        let Ok(handles) = registry
            .send(crate::broker::registry::ListQueueHandles)
            .await
        else {
            continue;
        };
        let handles: Vec<_> = handles
            .into_iter()
            .filter(|(spec, _)| only.is_none_or(|name| spec.name == name))
            .collect();
        let lists = join_all(handles.iter().map(|(_, q)| q.addr().send(ListConsumers))).await;
        for ((spec, _), list) in handles.iter().zip(lists) {
            for c in list.unwrap_or_default() {
                let channel = by_owner.get(&c.owner);
                // A management user sees the consumers of its own connections only.
                if channel.is_none() && !caller.sees_all() {
                    continue;
                }
                out.push(json!({
                    "consumer_tag": c.tag,
                    "queue": {"name": spec.name, "vhost": vhost},
                    "channel_details": channel.map_or(Value::Null, |r| r.details()),
                    "ack_required": c.ack_required,
                    "prefetch_count": c.prefetch,
                    "exclusive": false,
                    "active": c.active,
                    "activity_status": if c.active { "up" } else { "waiting" },
                    "arguments": if c.priority != 0 { json!({"x-priority": c.priority}) } else { json!({}) },
                }));
            }
        }
    }
    out
}

async fn consumers_all(
    api: web::Data<Api>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let vhosts: Vec<String> = api
        .shared
        .broker
        .vhosts()
        .into_iter()
        .filter(|v| caller.may_see(v))
        .collect();
    paged(consumers(&api, &caller, &vhosts, None).await, &query)
}

async fn consumers_vhost(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let vhost = path.into_inner().0;
    caller.check_see(&vhost)?;
    if !api.shared.broker.vhosts().contains(&vhost) {
        return Err(ApiError::not_found(format!("no vhost '{vhost}'")));
    }
    paged(consumers(&api, &caller, &[vhost], None).await, &query)
}
