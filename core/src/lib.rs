//! tlsgate's protocol core: everything that touches no mbuf, queue or lcore,
//! so that it builds and is tested without DPDK. Packet views ([`packet`]),
//! IP [`fragment`] reassembly, [`quic`] Initial packets,
//! the per-worker [`flow`] table, TLS handshake observation ([`tls`]), the
//! [`inspect`]or that turns segments into verdicts and sessions into
//! [`outcome`]s, the server identity and exclusion caches ([`identity`]), the
//! hand-over types between workers and the slow path ([`escalate`]), session
//! [`event`]s, and [`counters`] declared once.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod counters;
pub mod dns;
pub mod escalate;
pub mod event;
pub mod flow;
pub mod fragment;
pub mod identity;
pub mod inspect;
pub mod outcome;
pub mod packet;
pub mod quic;
pub mod tls;
