//! One integration-test binary (fast to build on 2 cores), a module per area.

mod support;

mod amqp;
mod cli;
mod client;
mod cluster;
mod net;
mod quorum;
mod security;

mod core;
mod durability;
mod mgmt;
mod streams;
