//! `docs/openapi.json` describes exactly what the server serves: every route the router
//! registers is in the document and every operation of the document is registered,
//! and each one answers over HTTP (no "no endpoint" 404, no 405).

use super::http::{server, Http};
use std::collections::BTreeSet;

const METHODS: [&str; 4] = ["get", "put", "post", "delete"];

fn documented() -> BTreeSet<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
    let text = std::fs::read_to_string(path).expect("docs/openapi.json");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "an OpenAPI 3 document"
    );
    let mut out = BTreeSet::new();
    for (p, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            if METHODS.contains(&method.as_str()) {
                assert!(
                    op["responses"].is_object(),
                    "{method} {p}: an operation needs responses"
                );
                out.insert((method.to_uppercase(), p.clone()));
            }
        }
    }
    out
}

fn served() -> BTreeSet<(String, String)> {
    actormq::server::http::served_routes()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect()
}

#[test]
fn every_route_served_is_documented_and_every_documented_one_served() {
    let doc = documented();
    let served = served();
    let undocumented: Vec<_> = served.difference(&doc).collect();
    let unserved: Vec<_> = doc.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in docs/openapi.json: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "in docs/openapi.json but not served: {unserved:?}"
    );
}

/// A concrete path for a template: every `{param}` replaced by a plausible value.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|seg| match seg {
            "{port}" => "1",
            "{kind}" => "q",
            "{file}" => "app.js",
            s if s.starts_with('{') => "probe",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_reaches_a_handler() {
    let server = server();
    let http = Http::guest(&server);
    for (method, template) in documented() {
        let path = concrete(&template);
        let r = http.send(&method, &path, &[], None).await;
        let unrouted = (r.status == 404 && r.text().contains("no endpoint")) || r.status == 405;
        assert!(
            !unrouted,
            "{method} {template} ({path}) is not routed: {} {}",
            r.status,
            r.text()
        );
    }
    // And a route nobody serves is told so.
    let r = http.get("/api/no-such-thing").await;
    assert_eq!(r.status, 404);
    assert!(r.text().contains("no endpoint"), "{}", r.text());
}
