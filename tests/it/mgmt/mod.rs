//! The management HTTP API and `/metrics`, over real HTTP/1.1 against a real server
//! with its HTTP listener on 127.0.0.1:0.

mod api;
mod definitions;
pub(crate) mod http;
mod http_client;
mod inspect;
mod metrics;
mod objects;
mod openapi;
mod policies;
mod rabbit_compat;
mod rates;
