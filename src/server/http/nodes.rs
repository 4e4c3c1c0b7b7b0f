//! `/api/nodes[/{name}]`: this node (in a cluster, every member: see `list`), as
//! RabbitMQ describes a node: uptime, memory
//! against its watermark, disk free against its limit, file descriptors and sockets.
//! Every figure is read when asked (a `statvfs`, a count of `/proc/self/fd`).

use super::access::Caller;
use super::error::ApiError;
use super::health::alarms_in_effect;
use super::overview::node_name;
use super::routing::Routes;
use super::Api;
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

pub(crate) fn routes(r: &mut Routes) {
    r.get("/api/nodes", list).get("/api/nodes/{name}", get);
}

fn node_json(api: &Api) -> Value {
    let shared = &api.shared;
    let memory = shared.broker.memory();
    let storage = &shared.settings.storage;
    let disk_free = crate::storage::fsutil::disk_free(&storage.data_dir).ok();
    let alarms = alarms_in_effect(api);
    let alarm = |r: &str| alarms.iter().any(|a| a["resource"] == r);
    let (fd_used, fd_total) = file_descriptors();
    json!({
        "name": node_name(),
        "type": "disc",
        "running": true,
        "being_drained": false,
        "uptime": api.started.elapsed().as_millis() as u64,
        "os_pid": std::process::id().to_string(),
        "processors": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "rates_mode": "basic",
        // What the memory high watermark counts: bytes of messages held in queues.
        "mem_used": memory.used(),
        "mem_limit": memory.watermark(),
        "mem_alarm": alarm("memory"),
        "mem_rss": resident_bytes(),
        "disk_free": disk_free,
        "disk_free_limit": storage.disk_free_limit,
        "disk_free_alarm": alarm("disk"),
        "fd_used": fd_used,
        "fd_total": fd_total,
        "sockets_used": shared.registry.len(),
        "sockets_total": shared.settings.server.max_connections,
        "partitions": [],
        "applications": [{
            "name": "actormq",
            "description": env!("CARGO_PKG_DESCRIPTION"),
            "version": env!("CARGO_PKG_VERSION"),
        }],
    })
}

/// Open file descriptors and the limit (`null` where the platform does not say).
fn file_descriptors() -> (Option<usize>, Option<u64>) {
    let used = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count());
    #[cfg(unix)]
    let total = {
        // SAFETY: getrlimit writes into the struct we own.
        let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        #[allow(clippy::unnecessary_cast)] // rlim_t differs between platforms
        (rc == 0).then_some(lim.rlim_cur as u64)
    };
    #[cfg(not(unix))]
    let total = None;
    (used, total)
}

/// The process's resident memory (Linux: `/proc/self/statm`), `null` elsewhere.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    #[cfg(unix)]
    // SAFETY: sysconf only reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    #[cfg(not(unix))]
    let page = 4096;
    Some(pages * page)
}

/// The node list: this node; in a cluster, every member, this node's entry with its
/// figures and the others' with what the membership says of them (id, cluster
/// address, voter or learner, leader) and their alarms as this node last heard them
/// (a node it cannot reach is not in alarm: see `cluster::alarms`).
async fn list(api: web::Data<Api>, _caller: Caller) -> HttpResponse {
    let me = node_json(&api);
    let Some(cluster) = api.shared.broker.context().cluster.clone() else {
        return HttpResponse::Ok().json(vec![me]);
    };
    let remote = api.shared.broker.memory().remote_alarms();
    let nodes: Vec<Value> = cluster
        .nodes_json()
        .into_iter()
        .map(|mut n| {
            if n["this_node"] == true {
                let mut full = me.clone();
                for key in ["id", "cluster_address", "membership", "leader"] {
                    full[key] = n[key].take();
                }
                full
            } else {
                n.as_object_mut().map(|o| o.remove("this_node"));
                n["type"] = json!("disc");
                let alarms = remote
                    .iter()
                    .find(|r| n["id"] == r.id)
                    .map(|r| r.alarms)
                    .unwrap_or_default();
                n["mem_alarm"] = json!(alarms.memory);
                n["disk_free_alarm"] = json!(alarms.disk);
                n
            }
        })
        .collect();
    HttpResponse::Ok().json(nodes)
}

async fn get(
    api: web::Data<Api>,
    _caller: Caller,
    path: web::Path<(String,)>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner().0;
    if name != node_name() {
        return Err(ApiError::not_found(format!("no node '{name}'")));
    }
    Ok(HttpResponse::Ok().json(node_json(&api)))
}
