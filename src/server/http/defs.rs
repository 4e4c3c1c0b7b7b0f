//! Broker-wide definitions over HTTP: `/api/vhosts`, `/api/users` (permissions are in
//! `permissions`).
//! Reading needs a management tag (each sees the vhosts it may open; `monitoring` sees
//! all); changing them needs `administrator`, as in RabbitMQ.

use super::access::Caller;
use super::error::{body, ApiError};
use super::list::{paged, ListQuery};
use super::routing::Routes;
use super::stats::vhost_summary;
use super::Api;
use crate::definitions::UserDefinition;
use crate::server::auth::hash_password;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use pbkdf2::password_hash::PasswordHash;
use serde::Deserialize;
use serde_json::{json, Value};

pub(crate) fn routes(r: &mut Routes) {
    r.get("/api/vhosts", list_vhosts)
        .get("/api/vhosts/{vhost}", get_vhost)
        .put("/api/vhosts/{vhost}", put_vhost)
        .delete("/api/vhosts/{vhost}", delete_vhost)
        .get("/api/users", list_users)
        .post("/api/users/bulk-delete", bulk_delete_users)
        // Before `{name}`, which would take it for a user's name.
        .get("/api/users/without-permissions", users_without_permissions)
        .get("/api/users/{name}", get_user)
        .put("/api/users/{name}", put_user)
        .delete("/api/users/{name}", delete_user);
}

async fn vhost_json(api: &Api, name: &str) -> Value {
    let s = vhost_summary(api, name).await.unwrap_or_default();
    let t = s.totals;
    json!({
        "name": name,
        "description": "",
        "tags": [],
        "tracing": false,
        "messages": t.messages(),
        "messages_ready": t.ready,
        "messages_unacknowledged": t.unacked,
        "message_stats": s.message_stats(),
    })
}

async fn list_vhosts(
    api: web::Data<Api>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let mut out = Vec::new();
    for v in api.shared.broker.vhosts() {
        if caller.may_see(&v) {
            out.push(vhost_json(&api, &v).await);
        }
    }
    paged(out, &query)
}

fn vhost_exists(api: &Api, name: &str) -> bool {
    api.shared.broker.vhosts().iter().any(|v| v == name)
}

async fn get_vhost(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner().0;
    caller.check_see(&name)?;
    if !vhost_exists(&api, &name) {
        return Err(ApiError::not_found(format!("no vhost '{name}'")));
    }
    Ok(HttpResponse::Ok().json(vhost_json(&api, &name).await))
}

async fn put_vhost(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let name = path.into_inner().0;
    let existed = vhost_exists(&api, &name);
    api.shared.broker.add_vhost(&name).await?;
    if !existed && !caller.user.vhosts.contains(&name) {
        // RabbitMQ's management plugin grants the creator full permissions on a new
        // vhost, so that it can go on to declare things in it.
        api.shared
            .broker
            .set_permissions(&caller.user.name, &name)
            .await?;
    }
    Ok(created_or_updated(existed))
}

async fn delete_vhost(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let name = path.into_inner().0;
    if !vhost_exists(&api, &name) {
        return Err(ApiError::not_found(format!("no vhost '{name}'")));
    }
    api.shared.broker.delete_vhost(&name).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// 201 for a new object, 204 for one replaced, as RabbitMQ answers a PUT.
pub(crate) fn created_or_updated(existed: bool) -> HttpResponse {
    if existed {
        HttpResponse::NoContent().finish()
    } else {
        HttpResponse::build(StatusCode::CREATED).finish()
    }
}

fn user_json(u: &UserDefinition) -> Value {
    // In the form the definitions export writes (a RabbitMQ hash as RabbitMQ shows it).
    let (hash, algorithm) = crate::definitions::format::export_hash(&u.password_hash);
    json!({
        "name": u.name,
        "password_hash": hash,
        "hashing_algorithm": algorithm,
        "tags": u.tags,
        "limits": {},
    })
}

pub(crate) fn find_user(api: &Api, name: &str) -> Option<UserDefinition> {
    api.shared
        .broker
        .users()
        .into_iter()
        .find(|u| u.name == name)
}

async fn list_users(
    api: web::Data<Api>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let users: Vec<Value> = api.shared.broker.users().iter().map(user_json).collect();
    paged(users, &query)
}

/// The users with no permission in any virtual host (RabbitMQ's list of accounts that
/// can authenticate but open nothing: candidates for clean-up).
async fn users_without_permissions(
    api: web::Data<Api>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let users: Vec<Value> = api
        .shared
        .broker
        .users()
        .iter()
        .filter(|u| u.vhosts.is_empty())
        .map(user_json)
        .collect();
    paged(users, &query)
}

async fn get_user(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let name = path.into_inner().0;
    let u =
        find_user(&api, &name).ok_or_else(|| ApiError::not_found(format!("no user '{name}'")))?;
    Ok(HttpResponse::Ok().json(user_json(&u)))
}

/// Tags as RabbitMQ accepts them: `"a,b"` or `["a", "b"]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Tags {
    Text(String),
    List(Vec<String>),
}

impl Tags {
    fn into_vec(self) -> Vec<String> {
        let v = match self {
            Tags::Text(s) => s.split(',').map(str::to_string).collect(),
            Tags::List(v) => v,
        };
        v.into_iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect()
    }
}

/// The body of `PUT /api/users/{name}`.
#[derive(Deserialize, Default)]
struct UserBody {
    /// A clear-text password (hashed here, never kept).
    password: Option<String>,
    /// A PHC string made by `actormq hash-password`, or a RabbitMQ hash (base64 of
    /// salt and SHA-256) with `hashing_algorithm`.
    password_hash: Option<String>,
    /// `rabbit_password_hashing_sha256` (RabbitMQ's default, also taken when a
    /// non-PHC hash comes without it) or `pbkdf2_sha256_phc`.
    hashing_algorithm: Option<String>,
    /// The user's tags.
    tags: Option<Tags>,
}

async fn put_user(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let name = path.into_inner().0;
    let b: UserBody = body(&raw)?;
    let existing = find_user(&api, &name);
    let password_hash = match (b.password, b.password_hash) {
        (Some(p), None) => hash_password(&p),
        (None, Some(h)) => {
            // As RabbitMQ: a hash without an algorithm is in the broker's default
            // one, RabbitMQ's salted SHA-256 (ours when it is a PHC string).
            let algorithm = b.hashing_algorithm.as_deref().or_else(|| {
                PasswordHash::new(&h)
                    .is_err()
                    .then_some(crate::definitions::format::RABBIT_SHA256)
            });
            crate::definitions::format::import_hash(&h, algorithm).map_err(ApiError::bad_request)?
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give either password or password_hash, not both",
            ))
        }
        (None, None) => match &existing {
            Some(u) => u.password_hash.clone(),
            None => {
                return Err(ApiError::bad_request(
                    "a new user needs password or password_hash",
                ))
            }
        },
    };
    let tags = b.tags.map(Tags::into_vec).unwrap_or_default();
    // An existing user keeps its permissions and origin rule.
    let user = match existing.clone() {
        Some(u) => UserDefinition {
            password_hash,
            tags,
            ..u
        },
        None => UserDefinition::new(&name, &password_hash, [], false, tags),
    };
    api.shared.broker.put_user(user).await?;
    Ok(created_or_updated(existing.is_some()))
}

async fn delete_user(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let name = path.into_inner().0;
    api.shared.broker.delete_user(&name).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The body of `POST /api/users/bulk-delete`.
#[derive(Deserialize, Default)]
struct BulkDelete {
    users: Vec<String>,
}

/// Deletes every user named (RabbitMQ's bulk delete); a name that is not a user is
/// passed over, so a retried request answers the same.
async fn bulk_delete_users(
    api: web::Data<Api>,
    caller: Caller,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let b: BulkDelete = body(&raw)?;
    for name in &b.users {
        if find_user(&api, name).is_some() {
            api.shared.broker.delete_user(name).await?;
        }
    }
    Ok(HttpResponse::NoContent().finish())
}
