//! The networked broker over real TCP: raw protocol bytes, connections, auth, limits.

mod listeners;
mod memory;
mod pipeline;
mod raw;
mod raw_peers;
