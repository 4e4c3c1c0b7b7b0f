//! `/api/connections[/{name}]`: the live connections of every listener, and closing
//! one (its client is told CONNECTION_FORCED with the `X-Reason` header as reason);
//! `/api/connections/username/{user}` lists or closes every connection of one user.
//! `administrator` and `monitoring` see them all; other management users their own.

use super::access::Caller;
use super::error::ApiError;
use super::list::{paged, ListQuery};
use super::overview::node_name;
use super::rates::{self, field, Counts, Kind};
use super::routing::Routes;
use super::Api;
use crate::server::ConnectionInfo;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use std::time::UNIX_EPOCH;

pub(crate) fn routes(r: &mut Routes) {
    r.get("/api/connections", list)
        .get("/api/connections/username/{user}", list_user)
        .delete("/api/connections/username/{user}", close_user)
        .get("/api/vhosts/{vhost}/connections", list_vhost)
        .get("/api/connections/{name}", get)
        .delete("/api/connections/{name}", close);
}

/// A connection's totals by [`rates::FIELDS`].
fn connection_counts(c: &ConnectionInfo) -> Counts {
    let mut counts = [0; rates::FIELDS.len()];
    counts[field::PUBLISH] = c.published;
    counts[field::DELIVER_GET] = c.delivered;
    counts
}

pub(crate) fn connection_json(api: &Api, c: &ConnectionInfo) -> Value {
    let counts = connection_counts(c);
    let rates = api
        .rates
        .observe(Kind::Connection, &c.vhost, &c.id.to_string(), counts);
    let connected_at = c
        .connected_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    json!({
        "name": c.name,
        "id": c.id,
        "node": node_name(),
        "type": "network",
        "state": "running",
        "protocol": match c.protocol {
            "amqp" => "AMQP 0-9-1",
            other => other,
        },
        "user": c.user,
        "vhost": c.vhost,
        "peer_host": c.peer.ip().to_string(),
        "peer_port": c.peer.port(),
        "connected_at": connected_at,
        "client_properties": crate::server::client_properties::to_json(&c.client_properties),
        "channels": c.channels,
        "messages_published": c.published,
        "messages_delivered": c.delivered,
        "message_stats": rates::message_stats(Kind::Connection.fields(), &counts, &rates),
    })
}

pub(crate) fn visible(api: &Api, caller: &Caller) -> Vec<ConnectionInfo> {
    api.shared
        .registry
        .list()
        .into_iter()
        .filter(|c| caller.sees_all() || c.user == caller.user.name)
        .collect()
}

async fn list(
    api: web::Data<Api>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    paged(
        visible(&api, &caller)
            .iter()
            .map(|c| connection_json(&api, c))
            .collect(),
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
    let items = visible(&api, &caller)
        .iter()
        .filter(|c| c.vhost == vhost)
        .map(|c| connection_json(&api, c))
        .collect();
    paged(items, &query)
}

fn find(api: &Api, caller: &Caller, name: &str) -> Result<ConnectionInfo, ApiError> {
    visible(api, caller)
        .into_iter()
        .find(|c| c.name == name || c.id.to_string() == name)
        .ok_or_else(|| ApiError::not_found(format!("no connection '{name}'")))
}

async fn get(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
) -> Result<HttpResponse, ApiError> {
    let c = find(&api, &caller, &path.into_inner().0)?;
    Ok(HttpResponse::Ok().json(connection_json(&api, &c)))
}

/// The connections of one user (RabbitMQ 3.11+'s `connections/username`).
async fn list_user(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let user = path.into_inner().0;
    let items = visible(&api, &caller)
        .iter()
        .filter(|c| c.user == user)
        .map(|c| connection_json(&api, c))
        .collect();
    paged(items, &query)
}

/// Closes every connection of one user: administrators any user's, others their own;
/// 204 also when the user has none open (RabbitMQ's answer), 404 for no such user.
async fn close_user(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let user = path.into_inner().0;
    if !(caller.is_admin() || user == caller.user.name) {
        return Err(ApiError::forbidden(format!(
            "closing the connections of user '{user}' refused for user '{}'",
            caller.user.name
        )));
    }
    if super::defs::find_user(&api, &user).is_none() {
        return Err(ApiError::not_found(format!("no user '{user}'")));
    }
    let reason = close_reason(&req);
    let mut closed = 0;
    for c in api.shared.registry.list().iter().filter(|c| c.user == user) {
        // One that went away meanwhile needs no closing.
        if api.shared.registry.close(&c.id.to_string(), &reason) {
            closed += 1;
        }
    }
    tracing::info!(%user, closed, by = %caller.user.name, "closed the connections of a user");
    Ok(HttpResponse::NoContent().finish())
}

/// The reason a closed client is told: the `X-Reason` header, else RabbitMQ's words.
fn close_reason(req: &HttpRequest) -> String {
    req.headers()
        .get("X-Reason")
        .and_then(|v| v.to_str().ok())
        .map(|r| r.chars().take(255).collect::<String>())
        .unwrap_or_else(|| "Closed via management plugin".to_string())
}

async fn close(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner().0;
    let c = find(&api, &caller, &name)?;
    if !(caller.is_admin() || c.user == caller.user.name) {
        return Err(ApiError::forbidden(format!(
            "closing connection '{name}' refused for user '{}'",
            caller.user.name
        )));
    }
    let reason = close_reason(&req);
    if !api.shared.registry.close(&c.id.to_string(), &reason) {
        return Err(ApiError::not_found(format!("no connection '{name}'")));
    }
    Ok(HttpResponse::NoContent().finish())
}
