//! `/api/overview`, `/api/whoami`, and the health checks: what a dashboard or a load
//! balancer asks first.

use super::access::Caller;
use super::error::ApiError;
use super::stats::{queues_of, Totals};
use super::Api;
use crate::message::Message;
use crate::options::QueueOptions;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

/// RabbitMQ's overview: product, totals of objects and messages, listeners.
pub(crate) async fn overview(api: web::Data<Api>, caller: Caller) -> HttpResponse {
    let broker = &api.shared.broker;
    let vhosts: Vec<String> = broker
        .vhosts()
        .into_iter()
        .filter(|v| caller.may_see(v))
        .collect();
    let queues = queues_of(broker, &vhosts).await;
    let totals = Totals::of(&queues);
    let mut exchanges = 0usize;
    for v in &vhosts {
        if let Ok(s) = broker.session_in(v) {
            exchanges += s.list_exchanges().await.map_or(0, |x| x.len());
        }
    }
    let connections: Vec<_> = api
        .shared
        .registry
        .list()
        .into_iter()
        .filter(|c| caller.sees_all() || c.user == caller.user.name)
        .collect();
    let published: u64 = connections.iter().map(|c| c.published).sum();
    let delivered: u64 = connections.iter().map(|c| c.delivered).sum();
    let listeners: Vec<Value> = api
        .shared
        .listeners
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(protocol, addr)| {
            json!({
                "node": node_name(),
                "protocol": protocol,
                "ip_address": addr.ip().to_string(),
                "port": addr.port(),
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "management_version": env!("CARGO_PKG_VERSION"),
        "product_name": "actormq",
        "product_version": env!("CARGO_PKG_VERSION"),
        "rabbitmq_version": env!("CARGO_PKG_VERSION"),
        "node": node_name(),
        "cluster_name": node_name(),
        "object_totals": {
            "connections": connections.len(),
            "channels": connections.iter().map(|c| u64::from(c.channels)).sum::<u64>(),
            "exchanges": exchanges,
            "queues": queues.len(),
            "consumers": totals.consumers,
        },
        "queue_totals": {
            "messages": totals.messages(),
            "messages_ready": totals.ready,
            "messages_unacknowledged": totals.unacked,
        },
        // Totals of the connections open now (a closed connection's counts go with it).
        "message_stats": {
            "publish": published,
            "deliver_get": delivered,
        },
        "listeners": listeners,
    }))
}

/// The node's name, as RabbitMQ shows `rabbit@host`.
pub(crate) fn node_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_string());
    format!("actormq@{host}")
}

/// Who the credentials belong to, and their tags.
pub(crate) async fn whoami(caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "name": caller.user.name,
        "tags": caller.user.tags,
    }))
}

/// 200 when no resource alarm is in effect, 503 naming them otherwise.
pub(crate) async fn alarms(api: web::Data<Api>, _caller: Caller) -> HttpResponse {
    let memory = api.shared.broker.memory();
    let mut alarms = Vec::new();
    if memory.disk_alarm() {
        alarms.push(
            json!({"resource": "disk", "node": node_name(), "reason": memory.blocked_reason()}),
        );
    } else if memory.is_blocked() {
        alarms.push(
            json!({"resource": "memory", "node": node_name(), "reason": memory.blocked_reason()}),
        );
    }
    if alarms.is_empty() {
        HttpResponse::Ok().json(json!({"status": "ok"}))
    } else {
        HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE).json(json!({
            "status": "failed",
            "reason": "resource alarm(s) in effect",
            "alarms": alarms,
        }))
    }
}

/// Declares `aliveness-test` in the vhost, publishes a message to it and gets it back.
pub(crate) async fn aliveness(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
) -> Result<HttpResponse, ApiError> {
    let vhost = path.into_inner().0;
    caller.check_change(&vhost)?;
    let session = api.shared.broker.session_in(&vhost)?;
    const QUEUE: &str = "aliveness-test";
    session.declare_queue(QUEUE, &QueueOptions::new()).await?;
    session
        .publish(Message::new("", QUEUE, "test_message"))
        .await?
        .await?;
    match session.get(QUEUE, true).await? {
        Some(m) if &m.message.body[..] == b"test_message" => {
            Ok(HttpResponse::Ok().json(json!({"status": "ok"})))
        }
        _ => Ok(HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE)
            .json(json!({"status": "failed", "reason": "the test message did not come back"}))),
    }
}
