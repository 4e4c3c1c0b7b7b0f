//! Declaring and deleting a super stream through a vhost's registry: the same steps for
//! the native protocol, the embedding API and the HTTP API.

use super::{binding_arguments, is_super_stream, SuperStreamSpec, PARTITION_ORDER};
use crate::broker::messages::{
    Bind, BindTarget, DeclareExchange, DeclareQueue, DeleteExchange, DeleteQueue, OwnerId,
};
use crate::broker::registry::{ListBindings, ListExchanges, ListQueues, Registry};
use crate::error::{BrokerError, ErrorCode};
use crate::message::FieldValue;
use actix::Addr;
use std::collections::HashSet;

/// Declares the super stream: its exchange, its partition streams and their bindings,
/// and answers the partitions' names in order. Declaring it again with the same layout
/// succeeds and changes nothing (as AMQP declares do). When a step fails, what this
/// call created is removed again and the step's error is answered.
pub async fn declare(
    registry: &Addr<Registry>,
    owner: OwnerId,
    spec: &SuperStreamSpec,
) -> Result<Vec<String>, BrokerError> {
    spec.validate()?;
    let layout = spec.layout();
    let queues_before: HashSet<String> = registry
        .send(ListQueues)
        .await?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let exchange_before = registry
        .send(ListExchanges)
        .await?
        .iter()
        .any(|e| e.name == spec.name);
    let mut created = Vec::new();
    let result = async {
        registry
            .send(DeclareExchange {
                spec: spec.exchange(),
                passive: false,
            })
            .await??;
        for p in &layout {
            registry
                .send(DeclareQueue {
                    spec: spec.queue(p),
                    passive: false,
                    owner,
                    placement: None,
                })
                .await??;
            if !queues_before.contains(&p.queue) {
                created.push(p.queue.clone());
            }
            registry
                .send(Bind {
                    exchange: spec.name.clone(),
                    target: BindTarget::Queue(p.queue.clone()),
                    routing_key: p.binding_key.clone(),
                    arguments: binding_arguments(p),
                    owner,
                })
                .await??;
        }
        Ok::<_, BrokerError>(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(super_stream = %spec.name, error = %e, "super stream declare failed: undoing it");
        for q in &created {
            let _ = registry.send(delete_queue(q, owner)).await;
        }
        if !exchange_before {
            let _ = registry
                .send(DeleteExchange {
                    name: spec.name.clone(),
                    if_unused: false,
                })
                .await;
        }
        return Err(e);
    }
    tracing::info!(super_stream = %spec.name, partitions = layout.len(), "super stream declared");
    Ok(layout.into_iter().map(|p| p.queue).collect())
}

fn delete_queue(name: &str, owner: OwnerId) -> DeleteQueue {
    DeleteQueue {
        name: name.to_string(),
        if_unused: false,
        if_empty: false,
        ready_only: false,
        owner,
    }
}

/// The partition streams of super stream `name`, in partition order: NOT_FOUND when
/// there is no such exchange, PRECONDITION_FAILED when the exchange is not a super
/// stream's.
pub async fn partitions(
    registry: &Addr<Registry>,
    vhost: &str,
    name: &str,
) -> Result<Vec<String>, BrokerError> {
    let exchanges = registry.send(ListExchanges).await?;
    let Some(x) = exchanges.iter().find(|e| e.name == name) else {
        return Err(BrokerError::new(
            ErrorCode::NotFound,
            format!("no super stream '{name}' in vhost '{vhost}'"),
        ));
    };
    if !is_super_stream(x) {
        return Err(BrokerError::precondition(format!(
            "exchange '{name}' in vhost '{vhost}' is not a super stream (no argument 'x-super-stream = true')"
        )));
    }
    let mut parts: Vec<(i64, String)> = registry
        .send(ListBindings)
        .await?
        .into_iter()
        .filter(|b| b.exchange == name)
        .filter_map(|b| match (b.target, b.arguments.get(PARTITION_ORDER)) {
            (BindTarget::Queue(q), Some(FieldValue::Int(o))) => Some((*o, q)),
            _ => None,
        })
        .collect();
    parts.sort();
    parts.dedup_by(|a, b| a.1 == b.1);
    Ok(parts.into_iter().map(|(_, q)| q).collect())
}

/// Deletes super stream `name`: its partition streams (with what they hold) and its
/// exchange; answers the partitions deleted. NOT_FOUND / PRECONDITION_FAILED as
/// [`partitions`].
pub async fn delete(
    registry: &Addr<Registry>,
    vhost: &str,
    owner: OwnerId,
    name: &str,
) -> Result<Vec<String>, BrokerError> {
    let parts = partitions(registry, vhost, name).await?;
    for q in &parts {
        match registry.send(delete_queue(q, owner)).await? {
            Ok(_) => {}
            // Already gone: deleting the rest is what was asked.
            Err(e) if e.code() == ErrorCode::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    registry
        .send(DeleteExchange {
            name: name.to_string(),
            if_unused: false,
        })
        .await??;
    tracing::info!(super_stream = %name, partitions = parts.len(), "super stream deleted");
    Ok(parts)
}
