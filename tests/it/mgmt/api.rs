//! Authentication, tags, the overview, health checks and connections.

use super::http::{enc, http_addr, server, Http};
use crate::support::eventually;
use actormq::client::{Client, ConnectOptions};
use actormq::ErrorCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_and_whoami_answer_the_guest_administrator() {
    let server = server();
    let http = Http::guest(&server);
    let r = http.get("/api/overview").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let o = r.json();
    assert_eq!(o["product_name"], "actormq");
    assert!(o["object_totals"]["queues"].is_u64(), "{o}");
    assert!(o["queue_totals"]["messages"].is_u64(), "{o}");
    let protocols: Vec<&str> = o["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["protocol"].as_str().unwrap())
        .collect();
    assert!(
        protocols.contains(&"native") && protocols.contains(&"http"),
        "{o}"
    );
    let me = http.get("/api/whoami").await.json();
    assert_eq!(me["name"], "guest");
    assert_eq!(me["tags"][0], "administrator");
    let health = http.get("/api/health/checks/alarms").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    let alive = http.get("/api/aliveness-test/%2F").await;
    assert_eq!(alive.status, 200, "{}", alive.text());
    assert_eq!(alive.json()["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_tags_decide_access() {
    let server = server();
    let anonymous = Http::new(&server);
    let r = anonymous.get("/api/overview").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "not_authorised");
    assert!(r
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Basic")));
    let r = Http::new(&server)
        .user("guest", "wrong")
        .get("/api/overview")
        .await;
    assert_eq!(r.status, 401);
    // A script page (the web UI) is refused without a challenge: a browser would
    // otherwise open its own credentials dialog over the page's login form.
    let r = Http::new(&server)
        .user("guest", "wrong")
        .send(
            "GET",
            "/api/whoami",
            &[("X-Requested-With", "XMLHttpRequest")],
            None,
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), None);

    let admin = Http::guest(&server);
    let created = admin
        .put("/api/users/plain", r#"{"password":"pw","tags":""}"#)
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let r = Http::new(&server)
        .user("plain", "pw")
        .get("/api/overview")
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.json()["reason"].as_str().unwrap().contains("management"));

    let r = admin
        .put(
            "/api/users/watcher",
            r#"{"password":"pw","tags":["monitoring"]}"#,
        )
        .await;
    assert_eq!(r.status, 201);
    let watcher = Http::new(&server).user("watcher", "pw");
    assert_eq!(watcher.get("/api/queues").await.status, 200);
    let r = watcher.put("/api/queues/%2F/nope", "{}").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(watcher.get("/api/users").await.status, 403);

    let r = admin.get("/api/no/such/thing").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_connection_over_http_tells_its_client_why() {
    let server = server();
    let client = Client::connect(ConnectOptions::new(server.addr.to_string()))
        .await
        .unwrap();
    let http = Http::guest(&server);
    let guest_connection = || async {
        let list = http.get("/api/connections").await.json();
        list.as_array()
            .unwrap()
            .iter()
            .find(|c| c["user"] == "guest")
            .map(|c| c["name"].as_str().unwrap().to_string())
    };
    eventually("the connection is listed with its user", || async {
        guest_connection().await.is_some()
    })
    .await;
    let name = guest_connection().await.unwrap();
    let one = http.get(&format!("/api/connections/{}", enc(&name))).await;
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.json()["protocol"], "native");
    let r = http
        .send(
            "DELETE",
            &format!("/api/connections/{}", enc(&name)),
            &[("X-Reason", "maintenance window")],
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    eventually("the client sees why it was closed", || async {
        client.closed_reason().is_some()
    })
    .await;
    let reason = client.closed_reason().unwrap();
    assert_eq!(reason.code(), Some(ErrorCode::ConnectionForced));
    assert!(
        reason.to_string().contains("maintenance window"),
        "{reason}"
    );
    let gone = http.delete("/api/connections/no%20such").await;
    assert_eq!(gone.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_front_end_stops_the_api() {
    let server = server();
    let addr = http_addr(&server);
    assert_eq!(Http::guest(&server).get("/api/whoami").await.status, 200);
    server.handle().stop().await;
    eventually("the API no longer accepts connections", || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
}
