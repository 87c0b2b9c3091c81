//! tlsgate's traffic generation and perf harness.
//!
//! [`traffic`] builds real Ethernet/IPv4/TCP frames for load; [`handshake`]
//! records real rustls sessions as TCP conversations ([`pcap_out`]) for
//! captures (the `tlsgate-gen` binary); the
//! `tlsgate-perf` binary measures the tlsgate worker loop beside a bare
//! rx-burst/tx-burst loop on the same PMD and traffic, in the same invocation,
//! and reports the ratio.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod handshake;
pub mod passive;
pub mod pcap_out;
pub mod quic;
pub mod traffic;
