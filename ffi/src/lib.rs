//! Raw FFI bindings to the system DPDK (22.11), generated at build time by
//! bindgen from DPDK's headers, plus `tg_*` shims for DPDK's `static inline`
//! fast-path functions (rx/tx burst, mbuf alloc/free, ring burst, lcore id, TSC).
//!
//! Nothing here is safe to call directly; `tlsgate-dataplane`'s `dpdk` module
//! is the safe layer over it.
#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]
#![allow(dead_code, improper_ctypes, clippy::all, rustdoc::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
