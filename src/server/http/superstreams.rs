//! `/api/stream/super-streams/{vhost}/{name}`: declare (PUT), show (GET) and delete
//! (DELETE) a super stream in one request, as `rabbitmq-streams add_super_stream` /
//! `delete_super_stream` do (see docs/MANAGEMENT.md and docs/STREAMS.md).

use super::access::Caller;
use super::defs::created_or_updated;
use super::error::{body, ApiError};
use super::routing::Routes;
use super::Api;
use crate::broker::superstream::{Partitions, SuperStreamSpec};
use crate::message::FieldTable;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

pub(crate) fn routes(r: &mut Routes) {
    r.get("/api/stream/super-streams/{vhost}/{name}", get_super_stream)
        .put("/api/stream/super-streams/{vhost}/{name}", put_super_stream)
        .delete(
            "/api/stream/super-streams/{vhost}/{name}",
            delete_super_stream,
        );
}

/// Binding keys as a list or as `rabbitmq-streams`' comma-separated string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Keys {
    List(Vec<String>),
    Csv(String),
}

/// The body of a PUT: `partitions` or `binding-keys` (one of them), and the arguments
/// of every partition stream.
#[derive(Deserialize, Default)]
#[serde(default)]
struct SuperStreamBody {
    partitions: Option<u32>,
    #[serde(rename = "binding-keys")]
    binding_keys: Option<Keys>,
    arguments: FieldTable,
}

async fn put_super_stream(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (vhost, name) = path.into_inner();
    caller.check_change(&vhost)?;
    let b: SuperStreamBody = body(&raw)?;
    let partitions =
        match (b.partitions, b.binding_keys) {
            (Some(n), None) => Partitions::Count(n),
            (None, Some(Keys::List(keys))) => Partitions::Keys(keys),
            (None, Some(Keys::Csv(s))) => {
                Partitions::Keys(s.split(',').map(|k| k.trim().to_string()).collect())
            }
            _ => return Err(ApiError::bad_request(
                "a super stream needs either 'partitions' (a count) or 'binding-keys', not both",
            )),
        };
    let session = caller.session(&api, &vhost)?;
    let existed = session.super_stream_partitions(&name).await.is_ok();
    let spec = SuperStreamSpec {
        name,
        partitions,
        arguments: b.arguments,
    };
    session.declare_super_stream(&spec).await?;
    Ok(created_or_updated(existed))
}

async fn get_super_stream(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (vhost, name) = path.into_inner();
    caller.check_see(&vhost)?;
    let session = api.shared.broker.session_in(&vhost)?;
    let partitions = session.super_stream_partitions(&name).await?;
    Ok(HttpResponse::Ok().json(json!({
        "name": name,
        "vhost": vhost,
        "partitions": partitions,
    })))
}

async fn delete_super_stream(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (vhost, name) = path.into_inner();
    caller.check_change(&vhost)?;
    let session = caller.session(&api, &vhost)?;
    session.delete_super_stream(&name).await?;
    Ok(HttpResponse::NoContent().finish())
}
