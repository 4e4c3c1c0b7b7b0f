//! `/api/exchanges[/{vhost}[/{name}]]` and `/api/bindings[...]`: exchanges and the
//! explicit bindings between exchanges and queues, in RabbitMQ's field names. The
//! default exchange is named `amq.default` in paths, `""` in listings, as RabbitMQ.

use super::access::Caller;
use super::defs::created_or_updated;
use super::error::{body, ApiError};
use super::list::{paged, ListQuery};
use super::rates::{self, Kind};
use super::routing::Routes;
use super::stats::{exchanges_in, ExchangeRow};
use super::Api;
use crate::broker::messages::BindTarget;
use crate::broker::registry::BindingRecord;
use crate::message::FieldTable;
use crate::options::ExchangeOptions;
use crate::Session;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

pub(crate) fn routes(r: &mut Routes) {
    r.get("/api/exchanges", list_all)
        .get("/api/exchanges/{vhost}", list_vhost)
        .get("/api/exchanges/{vhost}/{name}", get_exchange)
        .put("/api/exchanges/{vhost}/{name}", put_exchange)
        .delete("/api/exchanges/{vhost}/{name}", delete_exchange)
        .get(
            "/api/exchanges/{vhost}/{name}/bindings/source",
            bindings_from,
        )
        .get(
            "/api/exchanges/{vhost}/{name}/bindings/destination",
            bindings_to,
        )
        .get("/api/queues/{vhost}/{name}/bindings", queue_bindings)
        .get("/api/bindings", bindings_all)
        .get("/api/bindings/{vhost}", bindings_vhost)
        .get(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            bindings_between,
        )
        .post(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            bind,
        )
        .get(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}",
            binding_by_props,
        )
        .delete(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}",
            unbind,
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

fn exchange_json(x: &ExchangeRow) -> Value {
    let spec = &x.spec;
    json!({
        "name": spec.name,
        "vhost": x.vhost,
        "type": spec.kind,
        "durable": spec.durable,
        "auto_delete": spec.auto_delete,
        "internal": spec.internal,
        "arguments": spec.arguments,
        "message_stats": rates::message_stats(Kind::Exchange.fields(), &x.counts, &x.rates),
    })
}

async fn exchanges_json(api: &Api, vhost: &str) -> Result<Vec<Value>, ApiError> {
    Ok(exchanges_in(api, vhost)
        .await?
        .iter()
        .map(exchange_json)
        .collect())
}

async fn list_all(
    api: web::Data<Api>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let mut all = Vec::new();
    for v in api.shared.broker.vhosts() {
        if caller.may_see(&v) {
            all.extend(exchanges_json(&api, &v).await.unwrap_or_default());
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
    paged(exchanges_json(&api, &vhost).await?, &query)
}

async fn get_exchange(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (vhost, name) = path.into_inner();
    let name = exchange_name(name);
    caller.check_see(&vhost)?;
    exchanges_json(&api, &vhost)
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
    let session = caller.session(&api, &vhost)?;
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
    let session = caller.session(&api, &vhost)?;
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

async fn bindings_all(
    api: web::Data<Api>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let mut all = Vec::new();
    for v in api.shared.broker.vhosts() {
        if caller.may_see(&v) {
            let bs = bindings_in(&api, &v).await.unwrap_or_default();
            all.extend(bs.iter().map(|b| binding_json(&v, b)));
        }
    }
    paged(all, &query)
}

/// The bindings of `vhost` that `keep` accepts, as a (paged) list.
async fn bindings_where(
    api: &Api,
    caller: &Caller,
    vhost: &str,
    query: &ListQuery,
    keep: impl Fn(&BindingRecord) -> bool,
) -> Result<HttpResponse, ApiError> {
    caller.check_see(vhost)?;
    let bs = bindings_in(api, vhost).await?;
    let out: Vec<Value> = bs
        .iter()
        .filter(|b| keep(b))
        .map(|b| binding_json(vhost, b))
        .collect();
    paged(out, query)
}

async fn bindings_vhost(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let vhost = path.into_inner().0;
    bindings_where(&api, &caller, &vhost, &query, |_| true).await
}

async fn bindings_from(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let (vhost, name) = path.into_inner();
    let name = exchange_name(name);
    bindings_where(&api, &caller, &vhost, &query, |b| b.exchange == name).await
}

async fn bindings_to(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let (vhost, name) = path.into_inner();
    let t = BindTarget::Exchange(name);
    bindings_where(&api, &caller, &vhost, &query, |b| b.target == t).await
}

/// A queue's bindings: the default exchange's implicit one first, as RabbitMQ lists it.
async fn queue_bindings(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (vhost, name) = path.into_inner();
    caller.check_see(&vhost)?;
    let mut out = vec![json!({
        "source": "",
        "vhost": vhost,
        "destination": name,
        "destination_type": "queue",
        "routing_key": name,
        "arguments": {},
        "properties_key": name,
    })];
    let t = BindTarget::Queue(name);
    out.extend(
        bindings_in(&api, &vhost)
            .await?
            .iter()
            .filter(|b| b.target == t)
            .map(|b| binding_json(&vhost, b)),
    );
    Ok(HttpResponse::Ok().json(out))
}

async fn binding_by_props(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String, String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (vhost, source, kind, destination, props) = path.into_inner();
    caller.check_see(&vhost)?;
    let t = target(&kind, destination)?;
    let source = exchange_name(source);
    bindings_in(&api, &vhost)
        .await?
        .iter()
        .find(|b| b.exchange == source && b.target == t && props_key(b) == props)
        .map(|b| HttpResponse::Ok().json(binding_json(&vhost, b)))
        .ok_or_else(|| ApiError::not_found(format!("no binding '{props}' from '{source}'")))
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
    let session = caller.session(&api, &vhost)?;
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
    let session = caller.session(&api, &vhost)?;
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
