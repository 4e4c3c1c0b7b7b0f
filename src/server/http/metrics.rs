//! `GET /metrics`: the broker in the Prometheus text format. Unauthenticated, as
//! RabbitMQ's Prometheus endpoint is (bind it where only the scraper reaches it).
//! Every value is read when scraped: one `GetStats` per queue, the exchanges' and
//! connections' atomics, the memory gauge, the store's fsync counters; nothing is
//! recorded per message for it.

use super::prometheus::{Exposition, Kind, CONTENT_TYPE};
use super::rates::field;
use super::stats::{exchanges_in, queues_of, ExchangeRow, QueueRow};
use super::Api;
use crate::server::ConnectionInfo;
use actix_web::{web, HttpResponse};

pub(crate) async fn metrics(api: web::Data<Api>) -> HttpResponse {
    let broker = &api.shared.broker;
    let vhosts = broker.vhosts();
    let queues = queues_of(&api, &vhosts).await;
    let connections = api.shared.registry.list();
    let memory = broker.memory();
    let mut e = Exposition::new();
    e.family(
        "actormq_build_info",
        Kind::Gauge,
        "The broker's version (always 1).",
    )
    .sample(
        "actormq_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    e.single(
        "actormq_vhosts",
        Kind::Gauge,
        "Virtual hosts.",
        vhosts.len() as u64,
    );
    e.single(
        "actormq_queues",
        Kind::Gauge,
        "Queues, in every virtual host.",
        queues.len() as u64,
    );
    e.single(
        "actormq_connections",
        Kind::Gauge,
        "Client connections open, every protocol.",
        connections.len() as u64,
    );
    e.single(
        "actormq_channels",
        Kind::Gauge,
        "Channels open, every connection.",
        connections.iter().map(|c| u64::from(c.channels)).sum(),
    );
    e.single(
        "actormq_memory_used_bytes",
        Kind::Gauge,
        "Bytes of message bodies held in queues (what the high watermark limits).",
        memory.used() as u64,
    );
    e.single(
        "actormq_memory_high_watermark_bytes",
        Kind::Gauge,
        "The memory high watermark (broker.memory_high_watermark); 0 = no limit.",
        memory.watermark() as u64,
    );
    let disk = memory.disk_alarm();
    e.family(
        "actormq_alarm",
        Kind::Gauge,
        "1 while a resource alarm of this node blocks publishers.",
    )
    .sample(
        "actormq_alarm",
        &[("resource", "memory")],
        u64::from(memory.memory_alarm()),
    )
    .sample("actormq_alarm", &[("resource", "disk")], u64::from(disk));
    queue_series(&mut e, &queues);
    let mut exchanges = Vec::new();
    for v in &vhosts {
        exchanges.extend(exchanges_in(&api, v).await.unwrap_or_default());
    }
    exchange_series(&mut e, &exchanges);
    connection_series(&mut e, &connections);
    if let Some(s) = broker
        .context()
        .durability
        .store()
        .and_then(|s| s.sync_stats())
    {
        e.single(
            "actormq_store_fsyncs_total",
            Kind::Counter,
            "fdatasync calls on the message log (group commits and segment rolls).",
            s.syncs,
        );
        e.histogram(
            "actormq_store_fsync_seconds",
            "How long the message log's fdatasync calls took.",
            &s.buckets,
            s.count,
            s.sum_seconds,
        );
    }
    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .body(e.finish())
}

/// Per-queue gauges, labelled `vhost` and `queue`.
fn queue_series(e: &mut Exposition, queues: &[QueueRow]) {
    type Get = fn(&crate::broker::messages::QueueStats) -> u64;
    let series: [(&str, &str, Get); 4] = [
        (
            "actormq_queue_messages_ready",
            "Messages ready for delivery.",
            |s| s.ready,
        ),
        (
            "actormq_queue_messages_unacked",
            "Messages delivered and not yet acknowledged.",
            |s| s.unacked,
        ),
        ("actormq_queue_consumers", "Consumers attached.", |s| {
            u64::from(s.consumers)
        }),
        (
            "actormq_queue_message_bytes",
            "Bytes of message bodies held (ready, unacknowledged, delayed).",
            |s| s.bytes,
        ),
    ];
    for (name, help, get) in series {
        e.family(name, Kind::Gauge, help);
        for q in queues {
            if let Some(s) = &q.stats {
                e.sample(
                    name,
                    &[("vhost", &q.vhost), ("queue", &q.spec.name)],
                    get(s),
                );
            }
        }
    }
    let totals: [(&str, &str, usize); 4] = [
        (
            "actormq_queue_published_total",
            "Messages enqueued since the queue started.",
            field::PUBLISH,
        ),
        (
            "actormq_queue_delivered_total",
            "Deliveries and gets since the queue started.",
            field::DELIVER_GET,
        ),
        (
            "actormq_queue_acked_total",
            "Deliveries acknowledged since the queue started.",
            field::ACK,
        ),
        (
            "actormq_queue_redelivered_total",
            "Deliveries of messages delivered before.",
            field::REDELIVER,
        ),
    ];
    for (name, help, f) in totals {
        e.family(name, Kind::Counter, help);
        for q in queues.iter().filter(|q| q.stats.is_some()) {
            e.sample(
                name,
                &[("vhost", &q.vhost), ("queue", &q.spec.name)],
                q.counts[f],
            );
        }
    }
}

/// Per-exchange counters, labelled `vhost` and `exchange`.
fn exchange_series(e: &mut Exposition, exchanges: &[ExchangeRow]) {
    let series: [(&str, &str, usize); 2] = [
        (
            "actormq_exchange_published_in_total",
            "Messages published to the exchange.",
            field::PUBLISH_IN,
        ),
        (
            "actormq_exchange_published_out_total",
            "Messages the exchange routed to a queue or exchange.",
            field::PUBLISH_OUT,
        ),
    ];
    for (name, help, f) in series {
        e.family(name, Kind::Counter, help);
        for x in exchanges {
            e.sample(
                name,
                &[("vhost", &x.vhost), ("exchange", &x.spec.name)],
                x.counts[f],
            );
        }
    }
}

/// Per-connection counters, labelled by connection name, protocol, user and vhost.
fn connection_series(e: &mut Exposition, connections: &[ConnectionInfo]) {
    type Get = fn(&ConnectionInfo) -> u64;
    // The first is a gauge, the others counters.
    let series: [(&str, &str, Get); 3] = [
        (
            "actormq_connection_channels",
            "Channels open on the connection.",
            |c| u64::from(c.channels),
        ),
        (
            "actormq_connection_published_total",
            "Messages the connection published.",
            |c| c.published,
        ),
        (
            "actormq_connection_delivered_total",
            "Messages delivered to the connection.",
            |c| c.delivered,
        ),
    ];
    for (i, (name, help, get)) in series.into_iter().enumerate() {
        let kind = if i == 0 { Kind::Gauge } else { Kind::Counter };
        e.family(name, kind, help);
        for c in connections {
            e.sample(
                name,
                &[
                    ("connection", &c.name),
                    ("protocol", c.protocol),
                    ("user", &c.user),
                    ("vhost", &c.vhost),
                ],
                get(c),
            );
        }
    }
}
