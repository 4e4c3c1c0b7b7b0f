//! `/api/overview` and `/api/whoami`: what a dashboard asks first. The overview's
//! totals are summed over every virtual host the caller may see; with
//! `msg_rates_age` / `lengths_age` (seconds) it carries RabbitMQ's `samples` (newest
//! first) from the history of totals (see `rates`), which the UI plots.

use super::access::Caller;
use super::error::{body, ApiError};
use super::rates::{self, HistoryPoint};
use super::routing::Routes;
use super::stats::{vhost_summary, Summary};
use super::Api;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

pub(crate) fn routes(r: &mut Routes) {
    r.get("/api/overview", overview)
        .get("/api/whoami", whoami)
        .get("/api/cluster-name", cluster_name)
        .put("/api/cluster-name", put_cluster_name);
}

/// The query of `/api/overview`: how far back the samples go, in seconds.
#[derive(Deserialize, Default)]
struct OverviewQuery {
    msg_rates_age: Option<u64>,
    lengths_age: Option<u64>,
}

/// RabbitMQ's overview: product, totals of objects and messages, rates, listeners.
async fn overview(
    api: web::Data<Api>,
    caller: Caller,
    query: web::Query<OverviewQuery>,
) -> HttpResponse {
    let broker = &api.shared.broker;
    // Every vhost is read (the history covers them all); the caller sees its own.
    let all = broker.vhosts();
    let mut summaries = Vec::with_capacity(all.len());
    for v in &all {
        summaries.push((v.clone(), vhost_summary(&api, v).await.unwrap_or_default()));
    }
    let depths: Vec<(String, u64, u64)> = summaries
        .iter()
        .map(|(v, s)| (v.clone(), s.totals.ready, s.totals.unacked))
        .collect();
    api.rates.record(&depths);
    let mut total = Summary::default();
    for (_, s) in summaries.iter().filter(|(v, _)| caller.may_see(v)) {
        total.add(s);
    }
    let totals = total.totals;
    let connections: Vec<_> = api
        .shared
        .registry
        .list()
        .into_iter()
        .filter(|c| caller.sees_all() || c.user == caller.user.name)
        .collect();
    // A reading of each connection too, so that their rates are ready when listed.
    for c in &connections {
        super::connections::connection_json(&api, c);
    }
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
    // The management listeners, as RabbitMQ's `contexts` (its web contexts) list them.
    let contexts: Vec<Value> = listeners
        .iter()
        .filter(|l| matches!(l["protocol"].as_str(), Some("http" | "https")))
        .map(|l| {
            json!({
                "node": node_name(),
                "description": "actormq management",
                "path": "/",
                "port": l["port"].to_string(),
                "ssl": l["protocol"] == "https",
            })
        })
        .collect();
    let mut message_stats = total.message_stats();
    let mut queue_totals = json!({
        "messages": totals.messages(),
        "messages_ready": totals.ready,
        "messages_unacknowledged": totals.unacked,
    });
    let history = |age: u64| {
        api.rates
            .history(Duration::from_secs(age), |v| caller.may_see(v))
    };
    if let Some(age) = query.msg_rates_age {
        add_rate_samples(&mut message_stats, &history(age));
    }
    if let Some(age) = query.lengths_age {
        add_length_samples(&mut queue_totals, &history(age));
    }
    HttpResponse::Ok().json(json!({
        "management_version": env!("CARGO_PKG_VERSION"),
        "product_name": "actormq",
        "product_version": env!("CARGO_PKG_VERSION"),
        "rabbitmq_version": env!("CARGO_PKG_VERSION"),
        "rates_mode": "basic",
        "node": node_name(),
        "cluster_name": api.shared.broker.cluster_name().unwrap_or_else(node_name),
        "object_totals": {
            "connections": connections.len(),
            "channels": connections.iter().map(|c| u64::from(c.channels)).sum::<u64>(),
            "exchanges": total.exchanges,
            "queues": total.queues,
            "consumers": totals.consumers,
        },
        "queue_totals": queue_totals,
        "message_stats": message_stats,
        "listeners": listeners,
        "contexts": contexts,
    }))
}

/// `samples` of each rate: the accumulated totals, newest first (RabbitMQ's shape;
/// a plot takes differences of neighbours over their time apart).
fn add_rate_samples(stats: &mut Value, points: &[HistoryPoint]) {
    for f in rates::TOTAL_FIELDS {
        let samples: Vec<Value> = points
            .iter()
            .map(|p| json!({"timestamp": p.at_ms, "sample": p.totals[f].round() as u64}))
            .collect();
        stats[format!("{}_details", rates::FIELDS[f])]["samples"] = Value::Array(samples);
    }
}

/// `samples` of the depths, newest first.
fn add_length_samples(totals: &mut Value, points: &[HistoryPoint]) {
    type Of = fn(&HistoryPoint) -> u64;
    let series: [(&str, Of); 3] = [
        ("messages", |p| p.ready + p.unacked),
        ("messages_ready", |p| p.ready),
        ("messages_unacknowledged", |p| p.unacked),
    ];
    for (name, of) in series {
        let samples: Vec<Value> = points
            .iter()
            .map(|p| json!({"timestamp": p.at_ms, "sample": of(p)}))
            .collect();
        totals[format!("{name}_details")] = json!({ "samples": samples });
    }
}

/// The node's name, as RabbitMQ shows `rabbit@host`.
pub(crate) fn node_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_string());
    format!("actormq@{host}")
}

/// The cluster's name, RabbitMQ's `GET /api/cluster-name`: the one given by a PUT,
/// else the node's name (as the overview's `cluster_name`).
async fn cluster_name(api: web::Data<Api>, _caller: Caller) -> HttpResponse {
    let name = api.shared.broker.cluster_name().unwrap_or_else(node_name);
    HttpResponse::Ok().json(json!({ "name": name }))
}

/// The body of `PUT /api/cluster-name`.
#[derive(Deserialize, Default)]
struct ClusterNameBody {
    name: String,
}

/// Names the cluster (administrators only): replicated to every node in a cluster,
/// saved on a single broker.
async fn put_cluster_name(
    api: web::Data<Api>,
    caller: Caller,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let b: ClusterNameBody = body(&raw)?;
    api.shared.broker.set_cluster_name(&b.name).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Who the credentials belong to, and their tags.
async fn whoami(caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "name": caller.user.name,
        "tags": caller.user.tags,
    }))
}
