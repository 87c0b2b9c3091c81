//! tlsgate's interception path, on dedicated slow-path lcores: taking over
//! both TCP connections of a flow mid-stream, rustls facing the client (with
//! a re-signed or the imported certificate) and facing the server, the
//! forged-certificate cache, passive known-key decryption, and plaintext
//! export.
//!
//! Built so far, each sans-IO (data and a time in, data and decisions out):
//! [`tcp`], the endpoint that takes over one side of a TCP connection from the
//! state observed on the wire (RFC 6298 timer, fast retransmit, windows with
//! scaling and back-pressure, timestamps continuing the impersonated clock,
//! PAWS, RFC 5961 resets); [`forge`], re-signed certificates and their cache;
//! [`relay`], rustls facing both peers with the plaintext moved between them
//! (ALPN as the server chose it, key log, client-auth and pinning detection).
//! Not yet wired to the data plane: until it is, the fast path carries out
//! decrypt decisions as do-not-decrypt (or as their undecryptable action) and
//! says so in the event.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod export;
pub mod forge;
pub mod intercept;
pub mod lcore;
pub mod relay;
pub mod tcp;
pub mod wire;
