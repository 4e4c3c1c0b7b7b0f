//! Health checks as RabbitMQ's: 200 `{"status": "ok"}` when healthy, 503 with
//! `{"status": "failed", "reason": ...}` otherwise, for load balancers and probes.

use super::access::Caller;
use super::error::ApiError;
use super::overview::node_name;
use super::routing::Routes;
use super::Api;
use crate::message::Message;
use crate::options::QueueOptions;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

pub(crate) fn routes(r: &mut Routes) {
    r.get("/api/health/checks/alarms", alarms)
        .get("/api/health/checks/local-alarms", local_alarms)
        .get("/api/health/checks/port-listener/{port}", port_listener)
        .get(
            "/api/health/checks/protocol-listener/{protocol}",
            protocol_listener,
        )
        .get(
            "/api/health/checks/node-is-quorum-critical",
            quorum_critical,
        )
        .get("/api/aliveness-test/{vhost}", aliveness)
        .get("/api/healthchecks/node", node_check)
        .get("/api/healthchecks/node/", node_check)
        .get("/api/healthchecks/node/{node}", named_node_check);
}

/// This node's resource alarms in effect: memory and disk.
pub(crate) fn alarms_in_effect(api: &Api) -> Vec<Value> {
    let memory = api.shared.broker.memory();
    let mut alarms = Vec::new();
    if let Some(reason) = memory.disk_reason() {
        alarms.push(json!({"resource": "disk", "node": node_name(), "reason": reason}));
    }
    if memory.memory_alarm() {
        alarms.push(json!({
            "resource": "memory",
            "node": node_name(),
            "reason": crate::broker::memory::MEMORY_REASON,
        }));
    }
    alarms
}

/// The alarms in effect in the cluster: this node's, then the other nodes' as the
/// cluster last heard them (named as `/api/nodes` names them).
pub(crate) fn cluster_alarms_in_effect(api: &Api) -> Vec<Value> {
    let mut alarms = alarms_in_effect(api);
    for n in api.shared.broker.memory().remote_alarms() {
        for (on, resource, reason) in [
            (n.alarms.disk, "disk", "low on disk"),
            (n.alarms.memory, "memory", "low on memory"),
        ] {
            if on {
                alarms.push(json!({"resource": resource, "node": n.name, "reason": reason}));
            }
        }
    }
    alarms
}

fn failed(body: Value) -> HttpResponse {
    HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE).json(body)
}

fn alarm_answer(alarms: Vec<Value>, reason: &str) -> HttpResponse {
    if alarms.is_empty() {
        HttpResponse::Ok().json(json!({"status": "ok"}))
    } else {
        failed(json!({"status": "failed", "reason": reason, "alarms": alarms}))
    }
}

/// 200 when no resource alarm is in effect on any node of the cluster, 503 naming
/// them otherwise.
async fn alarms(api: web::Data<Api>, _caller: Caller) -> HttpResponse {
    alarm_answer(
        cluster_alarms_in_effect(&api),
        "There are alarms in effect in the cluster",
    )
}

/// The same for this node only (a single node: the same answer, RabbitMQ's words).
async fn local_alarms(api: web::Data<Api>, _caller: Caller) -> HttpResponse {
    alarm_answer(
        alarms_in_effect(&api),
        "There are alarms in effect on the node",
    )
}

/// RabbitMQ's older node check (deprecated there in favour of the checks above, still
/// called by clients and probes): `{"status": "ok"}` when no resource alarm is in
/// effect, `{"status": "failed", "reason": ...}` otherwise, with status 200 either way,
/// as RabbitMQ answers it.
async fn node_check(api: web::Data<Api>, _caller: Caller) -> HttpResponse {
    let alarms = alarms_in_effect(&api);
    match alarms.first() {
        None => HttpResponse::Ok().json(json!({"status": "ok"})),
        Some(a) => HttpResponse::Ok().json(json!({
            "status": "failed",
            "reason": format!("resource alarm in effect: {}", a["resource"].as_str().unwrap_or("?")),
        })),
    }
}

/// The same, for a node named: this node only (another node's name is 404).
async fn named_node_check(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
) -> Result<HttpResponse, ApiError> {
    let node = path.into_inner().0;
    if node != node_name() {
        return Err(ApiError::not_found(format!(
            "node '{}' is not this node ('{}')",
            crate::error::clip(&node),
            node_name()
        )));
    }
    Ok(node_check(api, caller).await)
}

/// 200 when a listener of any protocol is on `port`, 503 listing the ports otherwise.
async fn port_listener(
    api: web::Data<Api>,
    _caller: Caller,
    path: web::Path<(String,)>,
) -> Result<HttpResponse, ApiError> {
    let raw = path.into_inner().0;
    let port: u16 = raw
        .parse()
        .map_err(|_| ApiError::bad_request(format!("'{raw}' is not a port number")))?;
    let ports: Vec<u16> = api
        .shared
        .listeners
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(_, a)| a.port())
        .collect();
    if ports.contains(&port) {
        Ok(HttpResponse::Ok().json(json!({"status": "ok", "port": port})))
    } else {
        Ok(failed(json!({
            "status": "failed",
            "reason": "No active listener",
            "missing": port,
            "ports": ports,
        })))
    }
}

/// 200 when a listener of `protocol` (RabbitMQ's names: `amqp`, `amqp/ssl`, `http`,
/// `https`; and `native`, `native/ssl`) is up, 503 listing the protocols otherwise.
async fn protocol_listener(
    api: web::Data<Api>,
    _caller: Caller,
    path: web::Path<(String,)>,
) -> HttpResponse {
    let asked = path.into_inner().0;
    let mut protocols: Vec<String> = api
        .shared
        .listeners
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(p, _)| p.to_string())
        .collect();
    protocols.sort();
    protocols.dedup();
    // RabbitMQ's spelling is case-insensitive here (`AMQP` is `amqp`).
    let wanted = asked.to_ascii_lowercase();
    if protocols.contains(&wanted) {
        HttpResponse::Ok().json(json!({"status": "ok", "protocol": wanted}))
    } else {
        failed(json!({
            "status": "failed",
            "reason": "No active listener",
            "missing": asked,
            "protocols": protocols,
        }))
    }
}

/// Whether stopping this node would leave a Raft group without a majority: never for a
/// single node (there is no quorum to lose: stopping it stops everything anyway, which
/// RabbitMQ's check also answers 200 for); in a cluster, when this node is a voter
/// and the voters without it are no majority of the voters. Every member is taken to
/// be up (the membership says who votes, not who answers).
async fn quorum_critical(api: web::Data<Api>, _caller: Caller) -> HttpResponse {
    let Some(cluster) = api.shared.broker.context().cluster.clone() else {
        return HttpResponse::Ok().json(json!({"status": "ok"}));
    };
    let nodes = cluster.nodes_json();
    let voters = nodes.iter().filter(|n| n["membership"] == "voter").count();
    let me_voter = nodes
        .iter()
        .any(|n| n["this_node"] == true && n["membership"] == "voter");
    if me_voter && voters - 1 < voters / 2 + 1 {
        failed(json!({
            "status": "failed",
            "reason": format!(
                "this node is one of {voters} voters of the cluster's Raft group: without it the others are no majority"
            ),
        }))
    } else {
        HttpResponse::Ok().json(json!({"status": "ok"}))
    }
}

/// Declares `aliveness-test` in the vhost, publishes a message to it and gets it back.
async fn aliveness(
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
        _ => Ok(failed(
            json!({"status": "failed", "reason": "the test message did not come back"}),
        )),
    }
}
