//! `/api/definitions[/{vhost}]`: export (GET) and import (POST) of the definitions in
//! RabbitMQ's format (administrators only, as in RabbitMQ). An import is planned first
//! ([`crate::definitions::transfer::plan`]: every item checked against a copy of the
//! definitions, so a bad item is a 400 naming it and nothing is applied), then applied
//! through the same paths as the API's own PUTs and POSTs.

use super::access::Caller;
use super::error::ApiError;
use super::routing::Routes;
use super::Api;
use crate::broker::messages::BindTarget;
use crate::definitions::format::DefinitionsFile;
use crate::definitions::transfer::{export_broker, export_vhost, plan, RABBIT_FORMAT_VERSION};
use crate::definitions::{BrokerCommand, Command, VhostDefinitions};
use crate::error::BrokerError;
use crate::options::{ExchangeOptions, QueueOptions};
use actix_web::{web, HttpResponse};
use std::collections::HashMap;

pub(crate) fn routes(r: &mut Routes) {
    r.get("/api/definitions", export_all)
        .post("/api/definitions", import_all)
        .get("/api/definitions/{vhost}", export_one)
        .post("/api/definitions/{vhost}", import_one);
}

fn header(file: &mut DefinitionsFile) {
    file.rabbit_version = Some(RABBIT_FORMAT_VERSION.to_string());
    file.rabbitmq_version = Some(RABBIT_FORMAT_VERSION.to_string());
    file.product_name = Some("actormq".to_string());
    file.product_version = Some(env!("CARGO_PKG_VERSION").to_string());
}

async fn export_all(api: web::Data<Api>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let broker = &api.shared.broker;
    let mut file = DefinitionsFile::default();
    header(&mut file);
    {
        let defs = broker.definitions();
        let defs = defs.read().unwrap_or_else(|p| p.into_inner());
        export_broker(&mut file, &defs);
    }
    for v in broker.vhosts() {
        // A vhost deleted meanwhile has nothing to export.
        if let Ok(d) = broker.vhost_definitions(&v).await {
            export_vhost(&mut file, &d, true);
        }
    }
    Ok(HttpResponse::Ok().json(file))
}

async fn export_one(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let vhost = path.into_inner().0;
    let defs = api.shared.broker.vhost_definitions(&vhost).await?;
    let mut file = DefinitionsFile::default();
    header(&mut file);
    export_vhost(&mut file, &defs, false);
    Ok(HttpResponse::Ok().json(file))
}

fn parse(raw: &[u8]) -> Result<DefinitionsFile, ApiError> {
    serde_json::from_slice(raw)
        .map_err(|e| ApiError::bad_request(format!("bad definitions JSON: {e}")))
}

async fn import_all(
    api: web::Data<Api>,
    caller: Caller,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    import(&api, parse(&raw)?, None).await
}

async fn import_one(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.check_admin()?;
    let vhost = path.into_inner().0;
    let file = parse(&raw)?;
    import(&api, file, Some(&vhost)).await
}

/// Plans `file` (400 naming the first bad item, nothing applied), then applies it.
async fn import(
    api: &Api,
    file: DefinitionsFile,
    into: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let broker = &api.shared.broker;
    if let Some(v) = into {
        if !broker.vhosts().iter().any(|x| x == v) {
            return Err(ApiError::not_found(format!("no vhost '{v}'")));
        }
    }
    let mut current: HashMap<String, VhostDefinitions> = HashMap::new();
    for v in broker.vhosts() {
        if let Ok(d) = broker.vhost_definitions(&v).await {
            current.insert(v, d);
        }
    }
    let ctx = broker.context().clone();
    let planned = {
        let defs = broker.definitions();
        let defs = defs.read().unwrap_or_else(|p| p.into_inner()).clone();
        plan(file, into, &defs, &current, |k| ctx.knows_exchange_type(k))
    };
    let planned = planned.map_err(|e| {
        tracing::warn!(error = %e, "definitions import refused");
        ApiError::bad_request(format!(
            "definitions refused, nothing imported: {}",
            e.message()
        ))
    })?;
    let (broker_cmds, vhost_cmds) = (planned.broker.len(), planned.vhosts.len());
    for cmd in planned.broker {
        apply_broker(api, cmd).await.map_err(applying)?;
    }
    for (vhost, cmds) in planned.vhosts {
        let session = broker.session_in(&vhost)?;
        for cmd in cmds {
            apply_vhost(api, &session, &vhost, cmd)
                .await
                .map_err(applying)?;
        }
    }
    tracing::info!(broker_cmds, vhosts = vhost_cmds, "definitions imported");
    Ok(HttpResponse::NoContent().finish())
}

/// An error while applying a checked plan (a failed save, a vhost deleted meanwhile):
/// what was applied before it stays.
fn applying(e: BrokerError) -> ApiError {
    tracing::error!(error = %e, "definitions import failed part way");
    ApiError::from(e)
}

async fn apply_broker(api: &Api, cmd: BrokerCommand) -> Result<(), BrokerError> {
    let broker = &api.shared.broker;
    match cmd {
        BrokerCommand::AddVhost(v) => broker.add_vhost(&v).await,
        BrokerCommand::PutUser(u) => broker.put_user(u).await,
        BrokerCommand::SetPermissions {
            user,
            vhost,
            permission,
        } => broker.set_user_permissions(&user, &vhost, permission).await,
        BrokerCommand::SetTopicPermissions {
            user,
            vhost,
            exchange,
            permission,
        } => {
            broker
                .set_topic_permissions(&user, &vhost, &exchange, permission)
                .await
        }
        BrokerCommand::SetVhostLimits { vhost, limits } => {
            broker.set_vhost_limits(&vhost, limits).await
        }
        other => unreachable!("an import plans no {other:?}"),
    }
}

async fn apply_vhost(
    api: &Api,
    session: &crate::Session,
    vhost: &str,
    cmd: Command,
) -> Result<(), BrokerError> {
    match cmd {
        Command::SetPolicy(p) => api.shared.broker.put_policy(vhost, p).await.map(drop),
        Command::DeclareExchange(spec) => {
            if crate::definitions::predeclared(&spec.name) {
                return Ok(());
            }
            let options = ExchangeOptions {
                durable: spec.durable,
                auto_delete: spec.auto_delete,
                internal: spec.internal,
                arguments: spec.arguments,
                ..ExchangeOptions::new()
            };
            session
                .declare_exchange(&spec.name, &spec.kind, &options)
                .await
        }
        Command::DeclareQueue { spec, .. } => {
            let options = QueueOptions {
                durable: spec.durable,
                auto_delete: spec.auto_delete,
                arguments: spec.arguments,
                ..QueueOptions::new()
            };
            session.declare_queue(&spec.name, &options).await.map(drop)
        }
        Command::Bind(b) => match b.target {
            BindTarget::Queue(q) => {
                session
                    .bind_queue(&q, &b.exchange, &b.routing_key, b.arguments)
                    .await
            }
            BindTarget::Exchange(x) => {
                session
                    .bind_exchange(&x, &b.exchange, &b.routing_key, b.arguments)
                    .await
            }
        },
        other => unreachable!("an import plans no {other:?}"),
    }
}
