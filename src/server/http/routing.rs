//! The route table: every route is registered through [`Routes`], which also records
//! it, so the list of what is served ([`super::served_routes`]) is the router itself,
//! and the OpenAPI document (`docs/openapi.yaml`) is tested against it.
//!
//! Adding an endpoint: a module with `pub(crate) fn routes(r: &mut Routes)` calling
//! `r.get(path, handler)` (or `put`, `post`, `delete`), named in `super::register`, and
//! the path in `docs/openapi.yaml` and `docs/MANAGEMENT.md`.

use actix_web::{web, FromRequest, Handler, Responder, Route};

/// Registers routes on an actix `ServiceConfig` (or only records them) and keeps the
/// list of (method, path).
pub(crate) struct Routes<'a> {
    cfg: Option<&'a mut web::ServiceConfig>,
    seen: Vec<(&'static str, &'static str)>,
}

impl<'a> Routes<'a> {
    /// Routes registered on `cfg`.
    pub fn on(cfg: &'a mut web::ServiceConfig) -> Self {
        Routes {
            cfg: Some(cfg),
            seen: Vec::new(),
        }
    }

    /// Routes only recorded (to list them).
    pub fn recording() -> Routes<'static> {
        Routes {
            cfg: None,
            seen: Vec::new(),
        }
    }

    /// What was registered: (method, path), in order.
    pub fn into_list(self) -> Vec<(&'static str, &'static str)> {
        self.seen
    }

    fn add<F, Args>(&mut self, method: &'static str, route: Route, path: &'static str, h: F)
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.seen.push((method, path));
        if let Some(cfg) = self.cfg.as_deref_mut() {
            // One resource per (path, method): the method guard moves to the resource,
            // so the next resource with the same path is tried for other methods.
            cfg.route(path, route.to(h));
        }
    }

    /// A GET route.
    pub fn get<F, Args>(&mut self, path: &'static str, h: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.add("GET", web::get(), path, h);
        self
    }

    /// A PUT route.
    pub fn put<F, Args>(&mut self, path: &'static str, h: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.add("PUT", web::put(), path, h);
        self
    }

    /// A POST route.
    pub fn post<F, Args>(&mut self, path: &'static str, h: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.add("POST", web::post(), path, h);
        self
    }

    /// A DELETE route.
    pub fn delete<F, Args>(&mut self, path: &'static str, h: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.add("DELETE", web::delete(), path, h);
        self
    }
}
