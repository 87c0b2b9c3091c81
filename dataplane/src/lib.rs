//! tlsgate's DPDK runtime: the safe DPDK layer ([`dpdk`], the only `unsafe`
//! outside `dpdk-sys`), the run-to-completion [`worker`] loop that bridges
//! port pairs on each worker lcore around the protocol core's inspector, the
//! [`slow_lcore`] loop around the slow path, their [`stats`], and the
//! [`runtime`] wiring from settings to running lcores.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod dpdk;
pub mod metrics;
pub mod runtime;
pub mod slow_lcore;
pub mod stats;
pub mod worker;
