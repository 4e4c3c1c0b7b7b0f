//! `/api/vhost-limits[/{vhost}[/{name}]]`: RabbitMQ's virtual host limits
//! (`max-connections`, `max-queues`), read by anyone who may see the vhost, set and
//! cleared by administrators, as in RabbitMQ. They apply to the next connection and the
//! next queue declared (see `crate::definitions::limits`).

use super::access::Caller;
use super::error::{body, ApiError};
use super::routing::Routes;
use super::Api;
use crate::definitions::VhostLimits;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

pub(crate) fn routes(r: &mut Routes) {
    r.get("/api/vhost-limits", list_all)
        .get("/api/vhost-limits/{vhost}", list_vhost)
        .put("/api/vhost-limits/{vhost}/{name}", put_limit)
        .delete("/api/vhost-limits/{vhost}/{name}", delete_limit);
}

fn limits_json(vhost: &str, limits: &VhostLimits) -> Value {
    json!({"vhost": vhost, "value": limits.to_json()})
}

fn no_vhost(api: &Api, vhost: &str) -> Option<ApiError> {
    let exists = api.shared.broker.vhosts().iter().any(|v| v == vhost);
    (!exists).then(|| ApiError::not_found(format!("no vhost '{vhost}'")))
}

async fn list_all(api: web::Data<Api>, caller: Caller) -> HttpResponse {
    let out: Vec<Value> = api
        .shared
        .broker
        .all_vhost_limits()
        .iter()
        .filter(|(v, _)| caller.may_see(v))
        .map(|(v, l)| limits_json(v, l))
        .collect();
    HttpResponse::Ok().json(out)
}

async fn list_vhost(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
) -> Result<HttpResponse, ApiError> {
    let vhost = path.into_inner().0;
    if let Some(e) = no_vhost(&api, &vhost) {
        return Err(e);
    }
    caller.check_see(&vhost)?;
    let limits = api.shared.broker.vhost_limits(&vhost);
    let out: Vec<Value> = if limits.is_empty() {
        Vec::new()
    } else {
        vec![limits_json(&vhost, &limits)]
    };
    Ok(HttpResponse::Ok().json(out))
}

/// The body of a PUT: `{"value": 100}` (a negative value clears the limit, as in
/// RabbitMQ).
#[derive(Deserialize, Default)]
struct LimitBody {
    value: Option<Value>,
}

async fn put_limit(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let (vhost, name) = path.into_inner();
    if let Some(e) = no_vhost(&api, &vhost) {
        return Err(e);
    }
    let b: LimitBody = body(&raw)?;
    let value = b
        .value
        .ok_or_else(|| ApiError::bad_request(format!("{name}: \"value\" is required")))?;
    let mut limits = api.shared.broker.vhost_limits(&vhost);
    limits.set(&name, &value).map_err(ApiError::bad_request)?;
    api.shared.broker.set_vhost_limits(&vhost, limits).await?;
    tracing::info!(user = %caller.user.name, %vhost, limit = %name, %value, "vhost limit set");
    Ok(HttpResponse::NoContent().finish())
}

async fn delete_limit(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let (vhost, name) = path.into_inner();
    if let Some(e) = no_vhost(&api, &vhost) {
        return Err(e);
    }
    let mut limits = api.shared.broker.vhost_limits(&vhost);
    if !limits.clear(&name) {
        return Err(ApiError::bad_request(format!(
            "unknown vhost limit '{name}': the limits are {}",
            crate::definitions::limits::NAMES.join(", ")
        )));
    }
    api.shared.broker.set_vhost_limits(&vhost, limits).await?;
    tracing::info!(user = %caller.user.name, %vhost, limit = %name, "vhost limit cleared");
    Ok(HttpResponse::NoContent().finish())
}
