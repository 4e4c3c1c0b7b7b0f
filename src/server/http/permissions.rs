//! Permissions over HTTP, as RabbitMQ's management API has them: `/api/permissions`
//! (configure, write and read patterns per user and vhost) and `/api/topic-permissions`
//! (write and read patterns on routing keys per user, vhost and exchange), with the
//! per-vhost and per-user listings. Administrator only. A change applies to the
//! connections already open at their next operation.

use super::access::Caller;
use super::defs::{created_or_updated, find_user};
use super::error::{body, ApiError};
use super::list::{paged, ListQuery};
use super::routing::Routes;
use super::Api;
use crate::definitions::{Permission, TopicPermission, UserDefinition};
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

pub(crate) fn routes(r: &mut Routes) {
    r.get("/api/vhosts/{vhost}/permissions", vhost_permissions)
        .get("/api/users/{name}/permissions", user_permissions)
        .get("/api/permissions", list_permissions)
        .get("/api/permissions/{vhost}/{user}", get_permission)
        .put("/api/permissions/{vhost}/{user}", put_permission)
        .delete("/api/permissions/{vhost}/{user}", delete_permission)
        .get("/api/vhosts/{vhost}/topic-permissions", vhost_topic)
        .get("/api/users/{name}/topic-permissions", user_topic)
        .get("/api/topic-permissions", list_topic)
        .get("/api/topic-permissions/{vhost}/{user}", get_topic)
        .put("/api/topic-permissions/{vhost}/{user}", put_topic)
        .delete("/api/topic-permissions/{vhost}/{user}", delete_topic);
}

/// Every permission (user, vhost) that `keep` keeps, as RabbitMQ shows them.
fn permissions(api: &Api, keep: impl Fn(&str, &str) -> bool) -> Vec<Value> {
    let mut out = Vec::new();
    for u in api.shared.broker.users() {
        for v in u.vhosts.iter().filter(|v| keep(&u.name, v)) {
            let p = u.permission(v).expect("a vhost of the user");
            out.push(json!({
                "user": u.name,
                "vhost": v,
                "configure": p.configure.as_str(),
                "write": p.write.as_str(),
                "read": p.read.as_str(),
            }));
        }
    }
    out
}

/// Every topic permission (user, vhost) that `keep` keeps.
fn topic_permissions(api: &Api, keep: impl Fn(&str, &str) -> bool) -> Vec<Value> {
    let mut out = Vec::new();
    for u in api.shared.broker.users() {
        for ((v, x), t) in u
            .topic_permissions
            .iter()
            .filter(|((v, _), _)| keep(&u.name, v))
        {
            out.push(json!({
                "user": u.name,
                "vhost": v,
                "exchange": x,
                "write": t.write,
                "read": t.read,
            }));
        }
    }
    out
}

async fn list_permissions(
    api: web::Data<Api>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    paged(permissions(&api, |_, _| true), &query)
}

async fn vhost_permissions(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let vhost = path.into_inner().0;
    Ok(HttpResponse::Ok().json(permissions(&api, |_, v| v == vhost)))
}

async fn user_permissions(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let user = path.into_inner().0;
    Ok(HttpResponse::Ok().json(permissions(&api, |u, _| u == user)))
}

async fn get_permission(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let (vhost, user) = path.into_inner();
    let found = permissions(&api, |u, v| u == user && v == vhost);
    match found.into_iter().next() {
        Some(p) => Ok(HttpResponse::Ok().json(p)),
        None => Err(ApiError::not_found(format!(
            "no permission for user '{user}' in vhost '{vhost}'"
        ))),
    }
}

/// The body of `PUT /api/permissions/{vhost}/{user}`: the three patterns, each `.*`
/// when left out (what RabbitMQ's management UI fills in).
#[derive(Deserialize, Default)]
struct PermissionBody {
    configure: Option<String>,
    write: Option<String>,
    read: Option<String>,
}

/// `field` of a body, or 400 naming it.
fn required(field: Option<String>, name: &str) -> Result<String, ApiError> {
    field.ok_or_else(|| ApiError::bad_request(format!("\"{name}\" is required")))
}

fn user_or_404(api: &Api, user: &str) -> Result<UserDefinition, ApiError> {
    find_user(api, user).ok_or_else(|| ApiError::not_found(format!("no user '{user}'")))
}

async fn put_permission(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let (vhost, user) = path.into_inner();
    let b: PermissionBody = body(&raw)?;
    let all = || ".*".to_string();
    let permission = Permission::new(
        &b.configure.unwrap_or_else(all),
        &b.write.unwrap_or_else(all),
        &b.read.unwrap_or_else(all),
    )
    .map_err(|e| ApiError::bad_request(e.message().to_string()))?;
    let existed = user_or_404(&api, &user)?.vhosts.contains(&vhost);
    api.shared
        .broker
        .set_user_permissions(&user, &vhost, permission)
        .await?;
    tracing::info!(%user, %vhost, by = %caller.user.name, "permissions set");
    Ok(created_or_updated(existed))
}

async fn delete_permission(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let (vhost, user) = path.into_inner();
    // RabbitMQ answers 404 for permissions that are not there (its clients' idempotent
    // deletes rely on that to tell "cleared" from "was never set").
    if permissions(&api, |u, v| u == user && v == vhost).is_empty() {
        return Err(ApiError::not_found(format!(
            "no permission for user '{user}' in vhost '{vhost}'"
        )));
    }
    api.shared.broker.clear_permissions(&user, &vhost).await?;
    tracing::info!(%user, %vhost, by = %caller.user.name, "permissions cleared");
    Ok(HttpResponse::NoContent().finish())
}

async fn list_topic(
    api: web::Data<Api>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    paged(topic_permissions(&api, |_, _| true), &query)
}

async fn vhost_topic(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let vhost = path.into_inner().0;
    Ok(HttpResponse::Ok().json(topic_permissions(&api, |_, v| v == vhost)))
}

async fn user_topic(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let user = path.into_inner().0;
    Ok(HttpResponse::Ok().json(topic_permissions(&api, |u, _| u == user)))
}

/// RabbitMQ answers the list of the user's topic permissions in the vhost (one per
/// exchange), 404 when there is none.
async fn get_topic(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let (vhost, user) = path.into_inner();
    let found = topic_permissions(&api, |u, v| u == user && v == vhost);
    if found.is_empty() {
        return Err(ApiError::not_found(format!(
            "no topic permission for user '{user}' in vhost '{vhost}'"
        )));
    }
    Ok(HttpResponse::Ok().json(found))
}

/// The body of `PUT /api/topic-permissions/{vhost}/{user}`.
#[derive(Deserialize, Default)]
struct TopicBody {
    exchange: Option<String>,
    write: Option<String>,
    read: Option<String>,
}

async fn put_topic(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let (vhost, user) = path.into_inner();
    let b: TopicBody = body(&raw)?;
    let exchange = required(b.exchange, "exchange")?;
    let permission = TopicPermission::new(&required(b.write, "write")?, &required(b.read, "read")?)
        .map_err(|e| ApiError::bad_request(e.message().to_string()))?;
    let existed = user_or_404(&api, &user)?
        .topic_permissions
        .contains_key(&(vhost.clone(), exchange.clone()));
    api.shared
        .broker
        .set_topic_permissions(&user, &vhost, &exchange, permission)
        .await?;
    tracing::info!(%user, %vhost, %exchange, by = %caller.user.name, "topic permissions set");
    Ok(created_or_updated(existed))
}

/// Clears every topic permission of the user in the vhost (RabbitMQ's DELETE), or
/// the one of `?exchange=`.
async fn delete_topic(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
    query: web::Query<ExchangeQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let (vhost, user) = path.into_inner();
    let exchange = query.exchange.as_deref();
    let any = topic_permissions(&api, |u, v| u == user && v == vhost)
        .iter()
        .any(|t| exchange.is_none_or(|x| t["exchange"] == x));
    if !any {
        return Err(ApiError::not_found(format!(
            "no topic permission for user '{user}' in vhost '{vhost}'"
        )));
    }
    api.shared
        .broker
        .clear_topic_permissions(&user, &vhost, query.exchange.as_deref())
        .await?;
    tracing::info!(%user, %vhost, by = %caller.user.name, "topic permissions cleared");
    Ok(HttpResponse::NoContent().finish())
}

/// `?exchange=` of a topic permission DELETE.
#[derive(Deserialize)]
struct ExchangeQuery {
    exchange: Option<String>,
}
