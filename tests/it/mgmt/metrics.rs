//! `/metrics` in the Prometheus text format: every line parsed and checked, and a known
//! series read back.

use super::http::{server, Http};
use crate::support::{eventually, DEADLINE};
use actormq::client::{Client, ConnectOptions, QueueOptions};
use prometheus_parse::{Scrape, Value};
use std::collections::{HashMap, HashSet};

/// One sample: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Parses a text exposition strictly: `# HELP name text`, `# TYPE name kind` before
/// the family's samples, samples `name{k="v",...} value`, nothing else.
fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut typed: HashSet<String> = HashSet::new();
    let mut histograms: HashSet<String> = HashSet::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: &str| format!("line {}: {e}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _help) = rest
                .split_once(' ')
                .ok_or_else(|| at("HELP without text"))?;
            check_name(name).map_err(|e| at(&e))?;
            if !helped.insert(name.to_string()) {
                return Err(at("second HELP"));
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| at("TYPE without kind"))?;
            check_name(name).map_err(|e| at(&e))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at("unknown type"));
            }
            if !typed.insert(name.to_string()) {
                return Err(at("second TYPE"));
            }
            if kind == "histogram" {
                histograms.insert(name.to_string());
            }
        } else if line.starts_with('#') || line.is_empty() {
            return Err(at("unexpected comment or blank line"));
        } else {
            let (name, labels, value) = sample(line).map_err(|e| at(&e))?;
            // A histogram's samples are its name with _bucket, _sum or _count.
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| histograms.contains(*f)))
                .unwrap_or(&name);
            if !typed.contains(family) {
                return Err(at("sample before its TYPE"));
            }
            samples.push((name, labels, value));
        }
    }
    Ok(samples)
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("bad metric name {name:?}"))
    }
}

fn sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let consumed;
        loop {
            // label name
            let start = chars.peek().map(|(i, _)| *i).ok_or("unterminated labels")?;
            if inner[start..].starts_with('}') {
                consumed = start + 1;
                break;
            }
            let eq = inner[start..].find("=\"").ok_or("label without =\"")? + start;
            let key = &inner[start..eq];
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("bad label name {key:?}"));
            }
            while chars.peek().is_some_and(|(i, _)| *i <= eq + 1) {
                chars.next();
            }
            let mut value = String::new();
            loop {
                match chars.next().ok_or("unterminated label value")?.1 {
                    '\\' => match chars.next().ok_or("dangling escape")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        c => return Err(format!("bad escape \\{c}")),
                    },
                    '"' => break,
                    '\n' => return Err("raw newline in a label value".into()),
                    c => value.push(c),
                }
            }
            labels.push((key.to_string(), value));
            match chars.next().ok_or("unterminated labels")? {
                (_, ',') => continue,
                (i, '}') => {
                    consumed = i + 1;
                    break;
                }
                (_, c) => return Err(format!("unexpected {c:?} after a label")),
            }
        }
        rest = &inner[consumed..];
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    Ok((name.to_string(), labels, value))
}

fn find(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples.iter().find_map(|(n, l, v)| {
        let l: HashMap<&str, &str> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        (n == name && labels.iter().all(|(k, v)| l.get(k) == Some(v))).then_some(*v)
    })
}

#[test]
fn the_parser_refuses_what_prometheus_would() {
    assert!(parse("# TYPE a gauge\na 1\n").is_ok());
    assert!(parse("a 1\n").is_err(), "no TYPE");
    assert!(
        parse("# TYPE a gauge\na{q=\"x} 1\n").is_err(),
        "unterminated"
    );
    assert!(
        parse("# TYPE a gauge\na{q=\"x\"} one\n").is_err(),
        "bad value"
    );
    assert!(parse("# TYPE 1a gauge\n").is_err(), "bad name");
    let s = parse("# TYPE a gauge\na{q=\"x\\\"y\",v=\"/\"} 2\n").unwrap();
    assert_eq!(find(&s, "a", &[("q", "x\"y"), ("v", "/")]), Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_prometheus_text_with_per_queue_series() {
    let server = server();
    let client = Client::connect(ConnectOptions::new(server.addr.to_string()).confirms(true))
        .await
        .unwrap();
    client
        .declare_queue("jobs.eu/1", &QueueOptions::default())
        .await
        .unwrap();
    for _ in 0..2 {
        let c = client.publish("", "jobs.eu/1", "x").await.unwrap();
        tokio::time::timeout(DEADLINE, c).await.unwrap().unwrap();
    }
    // Unauthenticated, as RabbitMQ's Prometheus endpoint.
    let http = Http::new(&server);
    let r = http.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let samples = parse(&r.text()).unwrap_or_else(|e| panic!("{e}\n{}", r.text()));
    assert_eq!(
        find(
            &samples,
            "actormq_queue_messages_ready",
            &[("vhost", "/"), ("queue", "jobs.eu/1")]
        ),
        Some(2.0),
        "{}",
        r.text()
    );
    assert_eq!(find(&samples, "actormq_connections", &[]), Some(1.0));
    assert_eq!(
        find(&samples, "actormq_alarm", &[("resource", "memory")]),
        Some(0.0)
    );
    assert!(find(&samples, "actormq_memory_high_watermark_bytes", &[]).unwrap() > 0.0);
    eventually("the publishes are counted on the connection", || async {
        let r = http.get("/metrics").await;
        let s = parse(&r.text()).unwrap();
        find(
            &s,
            "actormq_connection_published_total",
            &[("user", "guest")],
        ) == Some(2.0)
    })
    .await;
}

/// The value of the sample of `name` whose labels include `labels`, as the
/// prometheus-parse crate read it.
fn scraped<'a>(scrape: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Option<&'a Value> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| &s.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_parser_reads_every_family() {
    let server = server();
    let http = Http::guest(&server);
    assert_eq!(http.put("/api/queues/%2F/stored", "{}").await.status, 201);
    // A persistent message in a durable queue: the message log fsyncs.
    let r = http
        .post(
            "/api/exchanges/%2F/amq.default/publish",
            r#"{"routing_key":"stored","payload":"x","payload_encoding":"string","properties":{"delivery_mode":2}}"#,
        )
        .await;
    assert_eq!(r.json()["routed"], true, "{}", r.text());
    let got = http
        .post(
            "/api/queues/%2F/stored/get",
            r#"{"count":1,"ackmode":"ack_requeue_true"}"#,
        )
        .await;
    assert_eq!(got.status, 200);
    let _client = Client::connect(ConnectOptions::new(server.addr.to_string()))
        .await
        .unwrap();

    let text = http.get("/metrics").await.text();
    // The strict reading first (every line well formed), then the crate's.
    parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parsed");
    // Nothing skipped: every sample line is in a sample (a histogram's buckets fold
    // into one).
    let lines = text.lines().filter(|l| !l.starts_with('#')).count();
    let buckets = text
        .lines()
        .filter(|l| l.starts_with("actormq_store_fsync_seconds_bucket"))
        .count();
    assert_eq!(scrape.samples.len(), lines - buckets + 1, "{text}");
    let families = text.lines().filter(|l| l.starts_with("# HELP")).count();
    assert_eq!(scrape.docs.len(), families);

    let q = [("vhost", "/"), ("queue", "stored")];
    assert_eq!(
        scraped(&scrape, "actormq_queue_messages_ready", &q),
        Some(&Value::Gauge(1.0))
    );
    assert_eq!(
        scraped(&scrape, "actormq_queue_published_total", &q),
        Some(&Value::Counter(1.0))
    );
    assert_eq!(
        scraped(&scrape, "actormq_queue_delivered_total", &q),
        Some(&Value::Counter(1.0))
    );
    assert_eq!(
        scraped(&scrape, "actormq_queue_redelivered_total", &q),
        Some(&Value::Counter(0.0))
    );
    assert_eq!(
        scraped(
            &scrape,
            "actormq_exchange_published_in_total",
            &[("vhost", "/"), ("exchange", "")]
        ),
        Some(&Value::Counter(1.0))
    );
    assert_eq!(
        scraped(
            &scrape,
            "actormq_connection_channels",
            &[("protocol", "native")]
        ),
        Some(&Value::Gauge(1.0))
    );
    match scraped(&scrape, "actormq_store_fsyncs_total", &[]) {
        Some(Value::Counter(n)) => assert!(*n >= 1.0, "{n} fsyncs"),
        other => panic!("actormq_store_fsyncs_total: {other:?}"),
    }
    match scraped(&scrape, "actormq_store_fsync_seconds", &[]) {
        Some(Value::Histogram(b)) => {
            assert_eq!(b.len(), 13, "12 bounds and +Inf: {b:?}");
            assert!(b
                .windows(2)
                .all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count));
            assert_eq!(b[12].less_than, f64::INFINITY);
            assert!(b[12].count >= 1.0);
        }
        other => panic!("actormq_store_fsync_seconds: {other:?}"),
    }
}
