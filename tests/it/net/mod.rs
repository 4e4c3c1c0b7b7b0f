//! The networked broker over real TCP: raw protocol bytes, connections, auth, limits.

mod listeners;
mod pipeline;
mod raw;
