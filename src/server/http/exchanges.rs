//! `/api/exchanges[/{vhost}[/{name}]]` and `/api/bindings[...]`: exchanges and the
//! explicit bindings between exchanges and queues, in RabbitMQ's field names. The
//! default exchange is named `amq.default` in paths, `""` in listings, as RabbitMQ.

use super::access::Caller;
use super::defs::created_or_updated;
use super::error::{body, ApiError};
use super::list::{paged, ListQuery};
use super::Api;
use crate::broker::exchange::ExchangeSpec;
use crate::broker::messages::BindTarget;
use crate::broker::registry::BindingRecord;
use crate::message::FieldTable;
use crate::options::ExchangeOptions;
use crate::Session;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/exchanges", web::get().to(list_all))
        .route("/api/exchanges/{vhost}", web::get().to(list_vhost))
        .service(
            web::resource("/api/exchanges/{vhost}/{name}")
                .route(web::get().to(get_exchange))
                .route(web::put().to(put_exchange))
                .route(web::delete().to(delete_exchange)),
        )
        .route("/api/bindings", web::get().to(bindings_all))
        .route("/api/bindings/{vhost}", web::get().to(bindings_vhost))
        .service(
            web::resource("/api/bindings/{vhost}/e/{source}/{kind}/{destination}")
                .route(web::get().to(bindings_between))
                .route(web::post().to(bind)),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}",
            web::delete().to(unbind),
        );
}

/// The name in a path: `amq.default` is the default exchange `""`.
fn exchange_name(path_name: String) -> String {
    if path_name == "amq.default" {
        String::new()
    } else {
        path_name
    }
}

fn exchange_json(vhost: &str, x: &ExchangeSpec) -> Value {
    json!({
        "name": x.name,
        "vhost": vhost,
        "type": x.kind,
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": x.arguments,
    })
}

async fn exchanges_in(api: &Api, vhost: &str) -> Result<Vec<Value>, ApiError> {
    let mut xs = api
        .shared
        .broker
        .session_in(vhost)?
        .list_exchanges()
        .await?;
    xs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(xs.iter().map(|x| exchange_json(vhost, x)).collect())
}

async fn list_all(
    api: web::Data<Api>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let mut all = Vec::new();
    for v in api.shared.broker.vhosts() {
        if caller.may_see(&v) {
            all.extend(exchanges_in(&api, &v).await.unwrap_or_default());
        }
    }
    paged(all, &query)
}

async fn list_vhost(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let vhost = path.into_inner().0;
    caller.check_see(&vhost)?;
    paged(exchanges_in(&api, &vhost).await?, &query)
}

async fn get_exchange(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (vhost, name) = path.into_inner();
    let name = exchange_name(name);
    caller.check_see(&vhost)?;
    exchanges_in(&api, &vhost)
        .await?
        .into_iter()
        .find(|x| x["name"] == name.as_str())
        .map(|x| HttpResponse::Ok().json(x))
        .ok_or_else(|| ApiError::not_found(format!("no exchange '{name}' in vhost '{vhost}'")))
}

/// The body of `PUT /api/exchanges/{vhost}/{name}`.
#[derive(Deserialize)]
#[serde(default)]
struct ExchangeBody {
    #[serde(rename = "type")]
    kind: String,
    durable: bool,
    auto_delete: bool,
    internal: bool,
    arguments: FieldTable,
}

impl Default for ExchangeBody {
    fn default() -> Self {
        // RabbitMQ's API declares durable exchanges unless told otherwise; the type is
        // required and checked below.
        ExchangeBody {
            kind: String::new(),
            durable: true,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::new(),
        }
    }
}

async fn put_exchange(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (vhost, name) = path.into_inner();
    caller.check_change(&vhost)?;
    let b: ExchangeBody = body(&raw)?;
    if b.kind.is_empty() {
        return Err(ApiError::bad_request("the exchange's \"type\" is required"));
    }
    let session = api.shared.broker.session_in(&vhost)?;
    let existed = exists(&session, &name).await;
    let options = ExchangeOptions {
        durable: b.durable,
        auto_delete: b.auto_delete,
        internal: b.internal,
        arguments: b.arguments,
        ..ExchangeOptions::new()
    };
    session.declare_exchange(&name, &b.kind, &options).await?;
    Ok(created_or_updated(existed))
}

async fn exists(session: &Session, name: &str) -> bool {
    let passive = ExchangeOptions {
        passive: true,
        ..ExchangeOptions::new()
    };
    session.declare_exchange(name, "", &passive).await.is_ok()
}

/// `if-unused` of a DELETE.
#[derive(Deserialize, Default)]
struct DeleteQuery {
    #[serde(rename = "if-unused", default)]
    if_unused: bool,
}

async fn delete_exchange(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
    query: web::Query<DeleteQuery>,
) -> Result<HttpResponse, ApiError> {
    let (vhost, name) = path.into_inner();
    caller.check_change(&vhost)?;
    let session = api.shared.broker.session_in(&vhost)?;
    if !exists(&session, &name).await {
        return Err(ApiError::not_found(format!(
            "no exchange '{name}' in vhost '{vhost}'"
        )));
    }
    session.delete_exchange(&name, query.if_unused).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// RabbitMQ's `properties_key`: the routing key, `~` when empty (arguments are not
/// part of it here: a binding with arguments is deleted by its routing key).
fn props_key(b: &BindingRecord) -> String {
    if b.routing_key.is_empty() {
        "~".to_string()
    } else {
        b.routing_key.clone()
    }
}

fn binding_json(vhost: &str, b: &BindingRecord) -> Value {
    let (kind, destination) = match &b.target {
        BindTarget::Queue(q) => ("queue", q),
        BindTarget::Exchange(x) => ("exchange", x),
    };
    json!({
        "source": b.exchange,
        "vhost": vhost,
        "destination": destination,
        "destination_type": kind,
        "routing_key": b.routing_key,
        "arguments": b.arguments,
        "properties_key": props_key(b),
    })
}

async fn bindings_in(api: &Api, vhost: &str) -> Result<Vec<BindingRecord>, ApiError> {
    Ok(api.shared.broker.session_in(vhost)?.list_bindings().await?)
}

async fn bindings_all(api: web::Data<Api>, caller: Caller) -> HttpResponse {
    let mut all = Vec::new();
    for v in api.shared.broker.vhosts() {
        if caller.may_see(&v) {
            let bs = bindings_in(&api, &v).await.unwrap_or_default();
            all.extend(bs.iter().map(|b| binding_json(&v, b)));
        }
    }
    HttpResponse::Ok().json(all)
}

async fn bindings_vhost(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
) -> Result<HttpResponse, ApiError> {
    let vhost = path.into_inner().0;
    caller.check_see(&vhost)?;
    let bs = bindings_in(&api, &vhost).await?;
    let out: Vec<Value> = bs.iter().map(|b| binding_json(&vhost, b)).collect();
    Ok(HttpResponse::Ok().json(out))
}

/// `q` or `e` in a binding path: the destination.
fn target(kind: &str, destination: String) -> Result<BindTarget, ApiError> {
    match kind {
        "q" => Ok(BindTarget::Queue(destination)),
        "e" => Ok(BindTarget::Exchange(destination)),
        other => Err(ApiError::not_found(format!(
            "'{other}': a binding's destination kind is 'q' or 'e'"
        ))),
    }
}

async fn bindings_between(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (vhost, source, kind, destination) = path.into_inner();
    caller.check_see(&vhost)?;
    let t = target(&kind, destination)?;
    let source = exchange_name(source);
    let bs = bindings_in(&api, &vhost).await?;
    let out: Vec<Value> = bs
        .iter()
        .filter(|b| b.exchange == source && b.target == t)
        .map(|b| binding_json(&vhost, b))
        .collect();
    Ok(HttpResponse::Ok().json(out))
}

/// The body of `POST /api/bindings/{vhost}/e/{source}/q/{destination}`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct BindBody {
    routing_key: String,
    arguments: FieldTable,
}

async fn bind(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String, String, String)>,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (vhost, source, kind, destination) = path.into_inner();
    caller.check_change(&vhost)?;
    let b: BindBody = body(&raw)?;
    let session = api.shared.broker.session_in(&vhost)?;
    match target(&kind, destination)? {
        BindTarget::Queue(q) => {
            session
                .bind_queue(&q, &source, &b.routing_key, b.arguments)
                .await?
        }
        BindTarget::Exchange(x) => {
            session
                .bind_exchange(&x, &source, &b.routing_key, b.arguments)
                .await?
        }
    }
    Ok(created_or_updated(false))
}

async fn unbind(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String, String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (vhost, source, kind, destination, props) = path.into_inner();
    caller.check_change(&vhost)?;
    let t = target(&kind, destination)?;
    let found = bindings_in(&api, &vhost)
        .await?
        .into_iter()
        .find(|b| b.exchange == source && b.target == t && props_key(b) == props)
        .ok_or_else(|| ApiError::not_found(format!("no binding '{props}' from '{source}'")))?;
    let session = api.shared.broker.session_in(&vhost)?;
    match found.target {
        BindTarget::Queue(q) => {
            session
                .unbind_queue(&q, &source, &found.routing_key, found.arguments)
                .await?
        }
        BindTarget::Exchange(x) => {
            session
                .unbind_exchange(&x, &source, &found.routing_key, found.arguments)
                .await?
        }
    }
    Ok(HttpResponse::NoContent().finish())
}
