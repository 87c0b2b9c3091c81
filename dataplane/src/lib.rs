//! tlsgate's packet level: the safe DPDK layer ([`dpdk`], the only `unsafe`
//! outside `dpdk-sys`), packet codecs ([`packet`]), the run-to-completion
//! [`worker`] loop that bridges port pairs on each worker lcore, its
//! [`stats`], the hand-over to the slow path ([`escalate`]), and the
//! [`runtime`] wiring from settings to running workers and slow-path lcores.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod dpdk;
pub mod escalate;
pub mod event;
pub mod flow;
pub mod identity;
pub mod inspect;
pub mod packet;
pub mod runtime;
pub mod stats;
pub mod tls;
pub mod worker;
