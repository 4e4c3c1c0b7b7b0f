//! `/api/queues[/{vhost}[/{name}]]` and `/api/queues/{vhost}/{name}/contents`: queues
//! with their counts (read from each queue actor when asked), declared, deleted and
//! purged as RabbitMQ's management API does.

use super::access::Caller;
use super::defs::created_or_updated;
use super::error::{body, ApiError};
use super::list::{paged, ListQuery};
use super::overview::node_name;
use super::policies::queue_values;
use super::rates::{self, Kind};
use super::routing::Routes;
use super::stats::{queue_in, queues_in_with, queues_of_with, Homes, QueueRow};
use super::Api;
use crate::message::FieldTable;
use crate::options::QueueOptions;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

pub(crate) fn routes(r: &mut Routes) {
    r.get("/api/queues", list_all)
        .get("/api/queues/{vhost}", list_vhost)
        .get("/api/queues/{vhost}/{name}", get_queue)
        .put("/api/queues/{vhost}/{name}", put_queue)
        .delete("/api/queues/{vhost}/{name}", delete_queue)
        .delete("/api/queues/{vhost}/{name}/contents", purge_queue);
}

/// The queue's type as RabbitMQ's API names it.
fn queue_type(spec: &crate::broker::queue::QueueSpec) -> &'static str {
    if crate::broker::queue_args::is_stream(spec) {
        "stream"
    } else if crate::broker::queue::quorum::is_quorum(spec) {
        "quorum"
    } else {
        "classic"
    }
}

/// The fields a queue's counts fill: left out when its home did not answer.
const COUNT_FIELDS: &[&str] = &[
    "messages",
    "messages_ready",
    "messages_unacknowledged",
    "messages_delayed",
    "message_bytes",
    "consumers",
    "memory",
    "message_stats",
];

/// One queue in RabbitMQ's field names.
fn queue_json(q: &QueueRow) -> Value {
    let s = q.stats.unwrap_or_default();
    let stream = crate::broker::queue_args::is_stream(&q.spec);
    // A stream's `ready` is its log's length; its unacked deliveries are not extra
    // messages (docs/STREAMS.md).
    let messages = if stream { s.ready } else { s.ready + s.unacked };
    // Its home is another node, which did not answer: RabbitMQ shows a queue whose
    // node is down so, with no counts.
    let home_down = q.home.is_some() && q.stats.is_none();
    let mut row = json!({
        "name": q.spec.name,
        "vhost": q.vhost,
        "durable": q.spec.durable,
        "auto_delete": q.spec.auto_delete,
        "exclusive": q.spec.exclusive,
        "arguments": q.spec.arguments,
        "type": queue_type(&q.spec),
        "state": if q.stats.is_some() { "running" } else { "down" },
        "node": q.home.clone().unwrap_or_else(node_name),
        "messages": messages,
        "messages_ready": s.ready,
        "messages_unacknowledged": s.unacked,
        "messages_delayed": s.delayed,
        "message_bytes": s.bytes,
        "consumers": s.consumers,
        "memory": s.bytes,
        "message_stats": rates::message_stats(Kind::Queue.fields(), &q.counts, &q.rates),
    });
    if home_down {
        if let Some(fields) = row.as_object_mut() {
            for f in COUNT_FIELDS {
                fields.remove(*f);
            }
        }
    }
    if crate::broker::queue::quorum::is_quorum(&q.spec) {
        // RabbitMQ's fields for a quorum queue; on a single broker its only member is
        // this node (in a cluster, `with_group` puts its group's).
        row["leader"] = json!(node_name());
        row["members"] = json!([node_name()]);
        row["online"] = json!([node_name()]);
        // Dead messages kept until their at-least-once dead-lettering is confirmed:
        // not in `messages` (neither ready nor delivered), as RabbitMQ lists them.
        row["messages_dlx"] = json!(s.dead_lettering);
        row["message_bytes_dlx"] = json!(s.dead_lettering_bytes);
    }
    row
}

/// In a cluster, a quorum queue's `leader`, `members` and `online` are its Raft
/// group's (node names as `/api/nodes` gives them; the leader as this node's member
/// knows it, null during an election or on a node that is no member), its counts
/// and `group_limits` are the group's queue as applied here, `group_term` its term.
fn with_group(api: &Api, mut rows: Vec<Value>) -> Vec<Value> {
    let Some(cluster) = api.shared.broker.context().cluster.clone() else {
        return rows;
    };
    for row in &mut rows {
        let (Some(vhost), Some(name)) = (row["vhost"].as_str(), row["name"].as_str()) else {
            continue;
        };
        let Some(g) = cluster.quorum_group(vhost, name) else {
            continue;
        };
        let members: Vec<String> = g.member_ids().into_iter().map(|m| g.node_name(m)).collect();
        let leader = g.leader().map(|l| g.node_name(l));
        row["node"] = json!(leader);
        row["leader"] = json!(leader);
        row["online"] = json!(members);
        row["members"] = json!(members);
        row["group"] = json!(g.id());
        // The group's Raft term as this node's member knows it (0 on a node that is no
        // member): a change is an election.
        row["group_term"] = json!(g.term());
        // What this node's member enforces (null on a node that is no member): the
        // declare's limits, or those a policy change gave the group since, with the
        // index of that change's definitions entry (0: the declare).
        let applied = g.applied_limits();
        row["group_limits"] = json!(applied.as_ref().map(|(_, l)| l));
        row["group_limits_at"] = json!(applied.map(|(at, _)| at));
    }
    rows
}

async fn list_all(
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
    let rows = queues_of_with(&api, &vhosts, Homes::Ask).await;
    paged(
        with_group(&api, queue_values(&api, &rows, queue_json).await),
        &query,
    )
}

async fn list_vhost(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let vhost = path.into_inner().0;
    caller.check_see(&vhost)?;
    let rows = queues_in_with(&api, &vhost, Homes::Ask).await?;
    paged(
        with_group(&api, queue_values(&api, &rows, queue_json).await),
        &query,
    )
}

async fn get_queue(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (vhost, name) = path.into_inner();
    caller.check_see(&vhost)?;
    let q = queue_in(&api, &vhost, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no queue '{name}' in vhost '{vhost}'")))?;
    let mut q = with_group(
        &api,
        queue_values(&api, std::slice::from_ref(&q), queue_json).await,
    );
    // As RabbitMQ, one queue's page lists its consumers (nameko's suite counts them).
    q[0]["consumer_details"] =
        Value::Array(super::channels::consumers(&api, &caller, &[vhost], Some(&name)).await);
    Ok(HttpResponse::Ok().json(&q[0]))
}

/// The body of `PUT /api/queues/{vhost}/{name}`.
#[derive(Deserialize)]
#[serde(default)]
struct QueueBody {
    durable: bool,
    auto_delete: bool,
    exclusive: bool,
    arguments: FieldTable,
}

impl Default for QueueBody {
    fn default() -> Self {
        // RabbitMQ's API declares durable queues unless told otherwise.
        QueueBody {
            durable: true,
            auto_delete: false,
            exclusive: false,
            arguments: FieldTable::new(),
        }
    }
}

async fn put_queue(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (vhost, name) = path.into_inner();
    caller.check_change(&vhost)?;
    let b: QueueBody = body(&raw)?;
    if b.exclusive {
        return Err(ApiError::bad_request(
            "an exclusive queue belongs to a connection; it cannot be declared over HTTP",
        ));
    }
    if name.is_empty() {
        return Err(ApiError::bad_request(
            "a queue declared over HTTP needs a name",
        ));
    }
    let session = caller.session(&api, &vhost)?;
    let existed = session
        .declare_queue(
            &name,
            &QueueOptions {
                passive: true,
                ..QueueOptions::new()
            },
        )
        .await
        .is_ok();
    let options = QueueOptions {
        durable: b.durable,
        auto_delete: b.auto_delete,
        arguments: b.arguments,
        ..QueueOptions::new()
    };
    session.declare_queue(&name, &options).await?;
    Ok(created_or_updated(existed))
}

/// `if-empty` / `if-unused` of a DELETE.
#[derive(Deserialize, Default)]
struct DeleteQuery {
    #[serde(rename = "if-empty", default)]
    if_empty: bool,
    #[serde(rename = "if-unused", default)]
    if_unused: bool,
}

async fn delete_queue(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
    query: web::Query<DeleteQuery>,
) -> Result<HttpResponse, ApiError> {
    let (vhost, name) = path.into_inner();
    caller.check_change(&vhost)?;
    let session = caller.session(&api, &vhost)?;
    // RabbitMQ answers 404 for a queue that is not there (AMQP's delete would not).
    session
        .declare_queue(
            &name,
            &QueueOptions {
                passive: true,
                ..QueueOptions::new()
            },
        )
        .await?;
    session
        .delete_queue(&name, query.if_unused, query.if_empty)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn purge_queue(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (vhost, name) = path.into_inner();
    caller.check_change(&vhost)?;
    let session = caller.session(&api, &vhost)?;
    session.purge(&name).await?;
    Ok(HttpResponse::NoContent().finish())
}
