//! Topic routing cost per message with 10, 1,000 and 100,000 bindings: the
//! `TopicExchange` (a word trie behind the `ExchangeType` trait), without actors.
//!
//! ```text
//! cargo bench --bench routing
//! ```

use actormq::broker::exchange::topic::TopicExchange;
use actormq::broker::exchange::{Binding, DestinationId, ExchangeType};
use actormq::{FieldTable, Message};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;

/// Regions and services the patterns and keys are drawn from.
const REGIONS: usize = 100;

/// The binding pattern of binding `i`: mostly `region.service.*`, with some `#` and
/// leading-`*` patterns so that the walk has to explore wildcard branches too.
fn pattern(i: usize) -> String {
    let (region, service) = (i % REGIONS, i / REGIONS);
    match i % 10 {
        0 => format!("region{region}.#"),
        1 => format!("*.svc{service}.error"),
        _ => format!("region{region}.svc{service}.*"),
    }
}

/// An exchange with `n` bindings, one destination each.
fn exchange(n: usize) -> TopicExchange {
    let mut x = TopicExchange::default();
    for i in 0..n {
        x.bind(&Binding {
            destination: i as DestinationId,
            routing_key: pattern(i),
            arguments: FieldTable::new(),
        });
    }
    x
}

/// Routing keys, some matching several bindings, some none.
fn keys(n: usize) -> Vec<Message> {
    let services = n.div_ceil(REGIONS).max(1);
    (0..1024)
        .map(|i| {
            let level = ["info", "error", "debug"][i % 3];
            let key = if i % 7 == 0 {
                format!("nowhere.svc{}.{level}", i % services)
            } else {
                format!("region{}.svc{}.{level}", i % REGIONS, (i / 3) % services)
            };
            Message::new("topic", &key, "")
        })
        .collect()
}

fn topic_routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("topic_route");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    for n in [10, 1_000, 100_000] {
        let x = exchange(n);
        let messages = keys(n);
        let mut out: Vec<DestinationId> = Vec::with_capacity(64);
        let mut i = 0;
        group.bench_function(BenchmarkId::from_parameter(format!("{n}_bindings")), |b| {
            b.iter(|| {
                let m = &messages[i % messages.len()];
                i += 1;
                out.clear();
                x.route(black_box(m), &[], &mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, topic_routing);
criterion_main!(benches);
