//! The management web UI: one HTML page, a stylesheet and a script, compiled into the
//! binary (no build step, no CDN: the operator's machine may be offline). The page
//! logs in with a form and calls the JSON API with HTTP basic auth; it holds no state
//! on the server.

use super::error::ApiError;
use super::routing::Routes;
use actix_web::http::header;
use actix_web::{web, HttpResponse};

pub(crate) fn routes(r: &mut Routes) {
    r.get("/", index).get("/ui/{file}", asset);
}

/// The assets: name, content type, content.
const ASSETS: [(&str, &str, &str); 2] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
];

async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(include_str!("assets/index.html"))
}

async fn asset(path: web::Path<(String,)>) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner().0;
    let (_, kind, body) = ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| ApiError::not_found(format!("no UI file '{name}'")))?;
    Ok(HttpResponse::Ok()
        .content_type(*kind)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(*body))
}
