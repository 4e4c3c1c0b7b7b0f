//! `list` and `status`: what to ask the API for, which fields to show by default
//! (`rabbitmqctl list_*`'s, with RabbitMQ's field names), and the table / JSON output.

use super::http::{enc, Api};
use super::{ListKind, TableFormat};
use crate::cli::Error;
use serde_json::{json, Map, Value};
use std::io::Write;

/// The API path that lists `kind` (in `vhost`, or everywhere).
fn path(kind: ListKind, vhost: Option<&str>) -> String {
    let v = vhost.map(enc);
    match (kind, v) {
        (ListKind::Queues, Some(v)) => format!("/api/queues/{v}"),
        (ListKind::Queues, None) => "/api/queues".into(),
        (ListKind::Exchanges, Some(v)) => format!("/api/exchanges/{v}"),
        (ListKind::Exchanges, None) => "/api/exchanges".into(),
        (ListKind::Bindings, Some(v)) => format!("/api/bindings/{v}"),
        (ListKind::Bindings, None) => "/api/bindings".into(),
        (ListKind::Connections, Some(v)) => format!("/api/vhosts/{v}/connections"),
        (ListKind::Connections, None) => "/api/connections".into(),
        (ListKind::Channels, Some(v)) => format!("/api/vhosts/{v}/channels"),
        (ListKind::Channels, None) => "/api/channels".into(),
        (ListKind::Consumers, Some(v)) => format!("/api/consumers/{v}"),
        (ListKind::Consumers, None) => "/api/consumers".into(),
        (ListKind::Users, _) => "/api/users".into(),
        (ListKind::Vhosts, _) => "/api/vhosts".into(),
        (ListKind::Policies, Some(v)) => format!("/api/policies/{v}"),
        (ListKind::Policies, None) => "/api/policies".into(),
        (ListKind::OperatorPolicies, Some(v)) => format!("/api/operator-policies/{v}"),
        (ListKind::OperatorPolicies, None) => "/api/operator-policies".into(),
        (ListKind::Permissions, Some(v)) => format!("/api/vhosts/{v}/permissions"),
        (ListKind::Permissions, None) => "/api/permissions".into(),
        (ListKind::TopicPermissions, Some(v)) => format!("/api/vhosts/{v}/topic-permissions"),
        (ListKind::TopicPermissions, None) => "/api/topic-permissions".into(),
    }
}

/// The fields shown when --columns is not given.
fn default_columns(kind: ListKind) -> &'static [&'static str] {
    match kind {
        ListKind::Queues => &[
            "vhost",
            "name",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
            "policy",
        ],
        ListKind::Exchanges => &["vhost", "name", "type", "durable", "auto_delete"],
        ListKind::Bindings => &[
            "vhost",
            "source",
            "destination",
            "destination_type",
            "routing_key",
        ],
        ListKind::Connections => &["name", "user", "vhost", "protocol", "channels"],
        ListKind::Channels => &[
            "name",
            "user",
            "vhost",
            "consumer_count",
            "messages_unacknowledged",
            "prefetch_count",
        ],
        ListKind::Consumers => &[
            "queue.vhost",
            "queue.name",
            "consumer_tag",
            "channel_details.name",
            "ack_required",
            "prefetch_count",
        ],
        ListKind::Users => &["name", "tags"],
        ListKind::Permissions => &["user", "vhost", "configure", "write", "read"],
        ListKind::TopicPermissions => &["user", "vhost", "exchange", "write", "read"],
        ListKind::Vhosts => &["name", "messages"],
        ListKind::Policies | ListKind::OperatorPolicies => &[
            "vhost",
            "name",
            "pattern",
            "apply-to",
            "definition",
            "priority",
        ],
    }
}

/// The field `path` (dotted for nested objects) of `v`.
fn field<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .fold(v, |v, k| v.get(k).unwrap_or(&Value::Null))
}

/// How a value reads in a table: strings bare, lists comma-joined, null as empty.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// Prints `rows` as an aligned table of `columns` with a header line.
fn print_table(out: &mut impl Write, columns: &[String], rows: &[Value]) -> std::io::Result<()> {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| cell(field(r, c))).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| cells.iter().map(|r| r[i].len()).fold(c.len(), usize::max))
        .collect();
    let line = |out: &mut dyn Write, items: &[String]| -> std::io::Result<()> {
        let mut text = String::new();
        for (i, item) in items.iter().enumerate() {
            if i + 1 == items.len() {
                text.push_str(item);
            } else {
                text.push_str(&format!("{item:<w$}  ", w = widths[i]));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(out, columns)?;
    for r in &cells {
        line(out, r)?;
    }
    Ok(())
}

/// `list`.
pub async fn list(
    api: &Api,
    kind: ListKind,
    vhost: Option<&str>,
    columns: Vec<String>,
    format: TableFormat,
) -> Result<(), Error> {
    let answer = api.get(&path(kind, vhost)).await?;
    let mut rows = match answer {
        Value::Array(rows) => rows,
        other => return Err(format!("expected a list from the API, got {other}").into()),
    };
    if let (ListKind::Vhosts, Some(v)) = (kind, vhost) {
        // The API lists every vhost the user may see: keep the one asked for.
        rows.retain(|r| r["name"] == v);
    }
    let mut out = std::io::stdout().lock();
    match format {
        TableFormat::Json if columns.is_empty() => {
            writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?
        }
        TableFormat::Json => {
            let picked: Vec<Value> = rows
                .iter()
                .map(|r| {
                    let m: Map<String, Value> = columns
                        .iter()
                        .map(|c| (c.clone(), field(r, c).clone()))
                        .collect();
                    Value::Object(m)
                })
                .collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&picked)?)?
        }
        TableFormat::Table => {
            let columns = if columns.is_empty() {
                default_columns(kind)
                    .iter()
                    .map(|c| c.to_string())
                    .collect()
            } else {
                columns
            };
            print_table(&mut out, &columns, &rows)?
        }
    }
    Ok(())
}

/// The broker's memory from `/metrics` (unauthenticated): (used, high watermark).
async fn memory_from_metrics(api: &Api) -> Option<(u64, u64)> {
    let answer = api.send("GET", "/metrics", &[], None).await.ok()?;
    let text = String::from_utf8(answer.body).ok()?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    };
    Some((
        value("actormq_memory_used_bytes")?,
        value("actormq_memory_high_watermark_bytes")?,
    ))
}

/// `status`: `/api/overview`, `/api/nodes` (for uptime and memory, when served; else
/// memory from `/metrics`) and the alarms health check.
pub async fn status(api: &Api, format: TableFormat) -> Result<(), Error> {
    let overview = api.get("/api/overview").await?;
    let node = match api.send("GET", "/api/nodes", &[], None).await {
        Ok(a) if a.status == 200 => a.json()?.get(0).cloned().unwrap_or(Value::Null),
        _ => Value::Null,
    };
    let alarms = api
        .send("GET", "/api/health/checks/alarms", &[], None)
        .await?;
    let alarms = match alarms.status {
        200 => Vec::new(),
        _ => alarms.json()?["alarms"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|a| cell(&a["resource"]))
            .collect(),
    };
    let (mem_used, mem_limit) = match (node["mem_used"].as_u64(), node["mem_limit"].as_u64()) {
        (Some(u), Some(l)) => (Some(u), Some(l)),
        _ => match memory_from_metrics(api).await {
            Some((u, l)) => (Some(u), Some(l)),
            None => (None, None),
        },
    };
    let listeners: Vec<String> = overview["listeners"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|l| {
            format!(
                "{} {}:{}",
                cell(&l["protocol"]),
                cell(&l["ip_address"]),
                l["port"]
            )
        })
        .collect();
    let status = json!({
        "product_name": overview["product_name"],
        "version": overview["product_version"],
        "node": overview["node"],
        "uptime_ms": node["uptime"],
        "listeners": listeners,
        "memory_used_bytes": mem_used,
        "memory_limit_bytes": mem_limit,
        "alarms": alarms,
        "object_totals": overview["object_totals"],
        "queue_totals": overview["queue_totals"],
    });
    let mut out = std::io::stdout().lock();
    if format == TableFormat::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(&status)?)?;
        return Ok(());
    }
    let or_unknown = |v: &Value| match v {
        Value::Null => "unknown".to_string(),
        v => cell(v),
    };
    writeln!(
        out,
        "product: {} {}",
        cell(&status["product_name"]),
        cell(&status["version"])
    )?;
    writeln!(out, "node: {}", cell(&status["node"]))?;
    let uptime = match node["uptime"].as_u64() {
        Some(ms) => format!("{}s", ms / 1000),
        None => "unknown".to_string(),
    };
    writeln!(out, "uptime: {uptime}")?;
    for l in &listeners {
        writeln!(out, "listener: {l}")?;
    }
    writeln!(
        out,
        "memory: {} of {} bytes",
        or_unknown(&status["memory_used_bytes"]),
        or_unknown(&status["memory_limit_bytes"])
    )?;
    let alarms = if alarms.is_empty() {
        "none".to_string()
    } else {
        alarms.join(", ")
    };
    writeln!(out, "alarms: {alarms}")?;
    if let Some(totals) = overview["object_totals"].as_object() {
        for (k, v) in totals {
            writeln!(out, "{k}: {v}")?;
        }
    }
    if let Some(totals) = overview["queue_totals"].as_object() {
        for (k, v) in totals {
            writeln!(out, "{k}: {v}")?;
        }
    }
    Ok(())
}
