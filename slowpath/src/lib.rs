//! tlsgate's decrypting path, on dedicated slow-path lcores: [`lcore`] takes
//! the flows workers escalate at their ClientHello, [`intercept`] takes both
//! TCP connections of each over mid-stream ([`tcp`]: endpoints continuing the
//! state observed on the wire) with rustls facing the client and the server
//! between them ([`relay`]), [`forge`] makes and caches the re-signed
//! certificates (with keys [`keys`] makes ahead of need), [`wire`] turns segments into frames and back, [`export`]
//! writes decrypted streams as synthetic TCP, and one upstream certificate
//! verifier serves the relay and the probe.
//!
//! All of it is sans-IO (data and a time in, data and decisions out) and
//! builds and is tested without DPDK; the data plane's slow-path lcore moves
//! mbufs between the rings, its tx queues and a [`lcore::SlowLcore`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod export;
pub mod forge;
pub mod intercept;
pub mod keys;
pub mod lcore;
pub mod passive;
pub mod probe;
pub mod relay;
pub mod tcp;
mod verify;
pub use verify::ServerTrust;
pub mod wire;
