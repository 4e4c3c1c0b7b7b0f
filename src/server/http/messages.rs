//! Getting and publishing messages over HTTP, as RabbitMQ's management API does it:
//! `POST /api/queues/{vhost}/{name}/get` and `POST /api/exchanges/{vhost}/{name}/publish`.
//! Meant for inspecting and testing, not for moving messages at any rate: each call is a
//! short-lived in-process session.

use super::access::Caller;
use super::error::{body, ApiError};
use super::routing::Routes;
use super::Api;
use crate::message::{Message, Properties};
use actix_web::{web, HttpResponse};
use base64ct::{Base64, Encoding};
use serde::Deserialize;
use serde_json::{json, Value};

pub(crate) fn routes(r: &mut Routes) {
    r.post("/api/queues/{vhost}/{name}/get", get)
        .post("/api/exchanges/{vhost}/{name}/publish", publish)
        // The default exchange by its own name, empty (RabbitMQ's HTTP client sends this).
        .post("/api/exchanges/{vhost}//publish", publish_default);
}

/// What happens to the messages got.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum AckMode {
    /// Back to the queue (redelivered): a peek.
    AckRequeueTrue,
    /// Gone from the queue.
    AckRequeueFalse,
    /// Back to the queue, as a reject with requeue.
    RejectRequeueTrue,
    /// Rejected without requeue: dead-lettered where the queue says so.
    RejectRequeueFalse,
}

/// How payloads are written in the answer.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
enum GetEncoding {
    /// Text when it is UTF-8, base64 otherwise.
    #[default]
    Auto,
    /// Always base64.
    Base64,
}

/// The body of a get.
#[derive(Deserialize)]
struct GetBody {
    count: u32,
    ackmode: AckMode,
    #[serde(default)]
    encoding: GetEncoding,
    /// Bytes of each payload shown at most.
    truncate: Option<usize>,
}

impl Default for GetBody {
    fn default() -> Self {
        GetBody {
            count: 1,
            ackmode: AckMode::AckRequeueTrue,
            encoding: GetEncoding::Auto,
            truncate: None,
        }
    }
}

/// Most messages one get returns.
const MAX_GET: u32 = 1000;

/// The properties set, in RabbitMQ's names (unset ones left out).
fn properties_json(p: &Properties) -> Value {
    let mut v = serde_json::to_value(p).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut v {
        m.retain(|_, x| !x.is_null());
    }
    v
}

async fn get(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (vhost, name) = path.into_inner();
    caller.check_change(&vhost)?;
    let b: GetBody = body(&raw)?;
    if b.count == 0 || b.count > MAX_GET {
        return Err(ApiError::bad_request(format!(
            "count must be between 1 and {MAX_GET}"
        )));
    }
    let session = caller.session(&api, &vhost)?;
    let auto_ack = b.ackmode == AckMode::AckRequeueFalse;
    let mut got = Vec::new();
    // All are held until the end, so that a requeued message is not got twice.
    while got.len() < b.count as usize {
        match session.get(&name, auto_ack).await? {
            Some(m) => got.push(m),
            None => break,
        }
    }
    let left = session.queue_stats(&name).await.map_or(0, |s| s.ready);
    let n = got.len();
    let mut out = Vec::with_capacity(n);
    for (i, m) in got.into_iter().enumerate() {
        let full = &m.message.body[..];
        let shown = &full[..b.truncate.unwrap_or(usize::MAX).min(full.len())];
        let text = match b.encoding {
            GetEncoding::Auto => std::str::from_utf8(shown).ok(),
            GetEncoding::Base64 => None,
        };
        let (payload, encoding) = match text {
            Some(t) => (t.to_string(), "string"),
            None => (Base64::encode_string(shown), "base64"),
        };
        out.push(json!({
            "payload_bytes": full.len(),
            "redelivered": m.redelivered,
            "exchange": &*m.message.exchange,
            "routing_key": m.message.routing_key,
            "message_count": left + (n - i - 1) as u64,
            "properties": properties_json(&m.message.properties),
            "payload": payload,
            "payload_encoding": encoding,
        }));
        match b.ackmode {
            AckMode::AckRequeueFalse => {}
            AckMode::AckRequeueTrue | AckMode::RejectRequeueTrue => m.nack(true),
            AckMode::RejectRequeueFalse => m.nack(false),
        }
    }
    Ok(HttpResponse::Ok().json(out))
}

/// The body of a publish.
#[derive(Deserialize, Default)]
struct PublishBody {
    #[serde(default)]
    properties: Properties,
    #[serde(default)]
    routing_key: String,
    payload: String,
    /// `string` (default) or `base64`.
    #[serde(default)]
    payload_encoding: Option<String>,
}

async fn publish(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String, String)>,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (vhost, name) = path.into_inner();
    publish_to(&api, &caller, vhost, name, &raw).await
}

async fn publish_default(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    publish_to(&api, &caller, path.into_inner().0, String::new(), &raw).await
}

async fn publish_to(
    api: &Api,
    caller: &Caller,
    vhost: String,
    name: String,
    raw: &[u8],
) -> Result<HttpResponse, ApiError> {
    caller.check_change(&vhost)?;
    let b: PublishBody = serde_json::from_slice(raw)
        .map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))?;
    let payload = match b.payload_encoding.as_deref().unwrap_or("string") {
        "string" => b.payload.into_bytes(),
        "base64" => Base64::decode_vec(b.payload.trim())
            .map_err(|_| ApiError::bad_request("payload is not valid base64"))?,
        other => {
            return Err(ApiError::bad_request(format!(
                "payload_encoding '{other}': it is 'string' or 'base64'"
            )))
        }
    };
    // As over AMQP: a message may not claim to come from another user.
    if let Some(uid) = b.properties.user_id.as_deref() {
        if uid != caller.user.name {
            return Err(ApiError::bad_request(format!(
                "user_id property set to '{uid}' but authenticated user was '{}'",
                caller.user.name
            )));
        }
    }
    let exchange = if name == "amq.default" { "" } else { &name };
    let message = Message::new(exchange, &b.routing_key, payload).with_properties(b.properties);
    let session = caller.session(api, &vhost)?;
    let confirmation = session.publish(message).await?.await?;
    Ok(HttpResponse::Ok().json(json!({ "routed": confirmation.queues > 0 })))
}
