//! Safe wrappers over DPDK: the only module outside `dpdk-sys` with `unsafe`.
//!
//! Ownership is carried by types: an [`Mbuf`] frees itself, a queue handle
//! ([`RxQueue`], [`TxQueue`]) exists once and is owned by one lcore, a ring is
//! split into one [`RingProducer`] and one [`RingConsumer`]. Pools and ports live
//! as long as the EAL (they are released by `rte_eal_cleanup`).

mod eal;
mod lcore;
mod mbuf;
mod mempool;
mod port;
mod ring;
pub mod telemetry;

pub use eal::{preflight, runtime_dir, Eal, EalError};
pub use lcore::{lcore_id, pause, precise_sleeps, tsc, tsc_hz, Clock, LaunchError, LcoreHandle};
pub use mbuf::{Burst, Mbuf, BURST};
pub use mempool::{Mempool, MempoolError};
pub use port::{Port, PortError, PortInfo, PortSetup, PortStats, RxQueue, TxQueue};
pub use ring::{ring_pair, RingConsumer, RingError, RingItem, RingProducer};

use std::ffi::CStr;

/// The text of DPDK's `rte_errno` after a failed call.
pub(crate) fn errno_text() -> (i32, String) {
    // SAFETY: reading the calling thread's rte_errno has no preconditions.
    let code = unsafe { dpdk_sys::tg_errno() };
    (code, strerror(code))
}

/// The text for a (positive or negative) DPDK error code.
pub(crate) fn strerror(code: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local string
    // that stays valid until the next call on this thread; it is copied at once.
    let p = unsafe { dpdk_sys::rte_strerror(code.abs()) };
    if p.is_null() {
        return format!("error {code}");
    }
    // SAFETY: p is non-null and points to a NUL-terminated C string (see above).
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}
