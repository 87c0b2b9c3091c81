//! tlsgate's packet level: the safe DPDK layer ([`dpdk`], the only `unsafe`
//! outside `dpdk-sys`), packet codecs ([`packet`]), and the run-to-completion
//! [`worker`] loop that bridges port pairs on each worker lcore.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod dpdk;
