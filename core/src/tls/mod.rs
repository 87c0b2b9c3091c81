//! Passive TLS handshake observation for flows being inspected: TCP stream
//! reassembly, the sans-IO [`HandshakeObserver`], the cleartext
//! [`prelude`]s some protocols speak before TLS (STARTTLS, HTTP CONNECT), the
//! facts it draws from ClientHello, ServerHello and certificates, and
//! certificate status.
#![forbid(unsafe_code)]

pub mod certificate;
pub mod client_hello;
pub mod observer;
pub mod prelude;
pub mod reassembly;
pub mod status;
pub mod suites;

pub use certificate::{certificate_facts, CertificateError};
pub use client_hello::{client_hello_facts, ClientHelloError};
pub use observer::{Direction, HandshakeObserver, LargeMessages, ObserverEvent, ObserverLimits};
pub use prelude::{NoTls, PreludeLimits};
pub use reassembly::{ReassemblyError, StreamReassembler, DEFAULT_REASSEMBLY_CAP};
pub use status::CertVerifier;

#[cfg(test)]
pub(crate) mod test_support;
