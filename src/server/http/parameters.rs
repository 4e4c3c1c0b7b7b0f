//! `/api/parameters[/{component}[/{vhost}[/{name}]]]`: RabbitMQ's runtime parameters,
//! of the one component this broker has: `vhost-limits`. In RabbitMQ a virtual host's
//! limits are the runtime parameter `limits` of that component, so tools that manage
//! them as parameters (`rabbitmqadmin`, definitions scripts) see the same limits as
//! `/api/vhost-limits` here. Other components (federation, shovels) belong to plugins
//! this broker does not have: they are a 404 naming the component.

use super::access::Caller;
use super::error::{body, ApiError};
use super::routing::Routes;
use super::Api;
use crate::definitions::VhostLimits;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

/// The component whose parameters are the vhost limits.
const VHOST_LIMITS: &str = "vhost-limits";
/// The name of the vhost limits parameter (one per vhost), as RabbitMQ names it.
const LIMITS: &str = "limits";

pub(crate) fn routes(r: &mut Routes) {
    r.get("/api/parameters", list_all)
        .get("/api/parameters/{component}", list_component)
        .get("/api/parameters/{component}/{vhost}", list_vhost)
        .get("/api/parameters/{component}/{vhost}/{name}", get_one)
        .put("/api/parameters/{component}/{vhost}/{name}", put_one)
        .delete("/api/parameters/{component}/{vhost}/{name}", delete_one);
}

fn parameter_json(vhost: &str, limits: &VhostLimits) -> Value {
    json!({
        "vhost": vhost,
        "component": VHOST_LIMITS,
        "name": LIMITS,
        "value": limits.to_json(),
    })
}

fn check_component(component: &str) -> Result<(), ApiError> {
    if component == VHOST_LIMITS {
        return Ok(());
    }
    Err(ApiError::not_found(format!(
        "no runtime parameter component '{component}' (the only one here is '{VHOST_LIMITS}'; federation and shovels are not built)"
    )))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name == LIMITS {
        return Ok(());
    }
    Err(ApiError::not_found(format!(
        "no '{VHOST_LIMITS}' parameter '{name}': a vhost's limits are the parameter '{LIMITS}'"
    )))
}

fn check_vhost(api: &Api, vhost: &str) -> Result<(), ApiError> {
    if api.shared.broker.vhosts().iter().any(|v| v == vhost) {
        return Ok(());
    }
    Err(ApiError::not_found(format!("no vhost '{vhost}'")))
}

/// The parameters of every vhost the caller sees (vhosts without limits have none).
fn visible(api: &Api, caller: &Caller) -> Vec<Value> {
    api.shared
        .broker
        .all_vhost_limits()
        .iter()
        .filter(|(v, l)| caller.may_see(v) && !l.is_empty())
        .map(|(v, l)| parameter_json(v, l))
        .collect()
}

async fn list_all(api: web::Data<Api>, caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(visible(&api, &caller))
}

async fn list_component(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
) -> Result<HttpResponse, ApiError> {
    check_component(&path.into_inner().0)?;
    Ok(HttpResponse::Ok().json(visible(&api, &caller)))
}

async fn list_vhost(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (component, vhost) = path.into_inner();
    check_component(&component)?;
    check_vhost(&api, &vhost)?;
    caller.check_see(&vhost)?;
    let limits = api.shared.broker.vhost_limits(&vhost);
    let out: Vec<Value> = if limits.is_empty() {
        Vec::new()
    } else {
        vec![parameter_json(&vhost, &limits)]
    };
    Ok(HttpResponse::Ok().json(out))
}

async fn get_one(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (component, vhost, name) = path.into_inner();
    check_component(&component)?;
    check_name(&name)?;
    check_vhost(&api, &vhost)?;
    caller.check_see(&vhost)?;
    let limits = api.shared.broker.vhost_limits(&vhost);
    if limits.is_empty() {
        return Err(ApiError::not_found(format!(
            "no vhost limits set in vhost '{vhost}'"
        )));
    }
    Ok(HttpResponse::Ok().json(parameter_json(&vhost, &limits)))
}

/// The body of a PUT: RabbitMQ's `{"value": {...}}` (its other fields repeat the path).
#[derive(Deserialize, Default)]
struct ParameterBody {
    value: Option<Value>,
}

/// Replaces the vhost's limits with `value` (every key checked, as
/// `PUT /api/vhost-limits` does one by one).
async fn put_one(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String, String)>,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let (component, vhost, name) = path.into_inner();
    check_component(&component)?;
    check_name(&name)?;
    check_vhost(&api, &vhost)?;
    let b: ParameterBody = body(&raw)?;
    let value = b
        .value
        .ok_or_else(|| ApiError::bad_request("\"value\" is required"))?;
    let limits = VhostLimits::from_json(&value)
        .map_err(|e| ApiError::bad_request(format!("Validation failed: {e}")))?;
    let existed = !api.shared.broker.vhost_limits(&vhost).is_empty();
    api.shared.broker.set_vhost_limits(&vhost, limits).await?;
    tracing::info!(user = %caller.user.name, %vhost, %value, "vhost limits set (runtime parameter)");
    Ok(super::defs::created_or_updated(existed))
}

/// Clears every limit of the vhost; 404 when none is set.
async fn delete_one(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let (component, vhost, name) = path.into_inner();
    check_component(&component)?;
    check_name(&name)?;
    check_vhost(&api, &vhost)?;
    if api.shared.broker.vhost_limits(&vhost).is_empty() {
        return Err(ApiError::not_found(format!(
            "no vhost limits set in vhost '{vhost}'"
        )));
    }
    api.shared
        .broker
        .set_vhost_limits(&vhost, VhostLimits::default())
        .await?;
    tracing::info!(user = %caller.user.name, %vhost, "vhost limits cleared (runtime parameter)");
    Ok(HttpResponse::NoContent().finish())
}
