//! `GET /metrics`: the broker in the Prometheus text format. Unauthenticated, as
//! RabbitMQ's Prometheus endpoint is (bind it where only the scraper reaches it).
//! Every value is read when scraped: one `GetStats` per queue, the connections' atomics,
//! the memory gauge; nothing is recorded per message for it.

use super::prometheus::{Exposition, Kind, CONTENT_TYPE};
use super::stats::{queues_of, QueueRow};
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
        "1 while a resource alarm blocks publishers.",
    )
    .sample(
        "actormq_alarm",
        &[("resource", "memory")],
        u64::from(memory.is_blocked() && !disk),
    )
    .sample("actormq_alarm", &[("resource", "disk")], u64::from(disk));
    queue_series(&mut e, &queues);
    connection_series(&mut e, &connections);
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
}

/// Per-connection counters, labelled by connection name, protocol, user and vhost.
fn connection_series(e: &mut Exposition, connections: &[ConnectionInfo]) {
    type Get = fn(&ConnectionInfo) -> u64;
    let series: [(&str, &str, Get); 2] = [
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
    for (name, help, get) in series {
        e.family(name, Kind::Counter, help);
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
