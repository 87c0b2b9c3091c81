//! Packet buffer pools.

use std::ffi::CString;
use std::ptr::NonNull;

/// Why a pool could not be made.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot create mbuf pool {name:?} of {count} mbufs: {reason}; lower [mempool] mbufs or give the EAL more memory"
)]
pub struct MempoolError {
    name: String,
    count: u32,
    reason: String,
}

/// A pool of packet buffers. It lives as long as the EAL: mbufs anywhere in the
/// process (rings, NIC descriptors) may point into it, so it is never freed
/// before `rte_eal_cleanup`. The handle is `Copy`.
#[derive(Clone, Copy)]
pub struct Mempool(NonNull<dpdk_sys::rte_mempool>);

// SAFETY: a DPDK mempool is multi-producer/multi-consumer safe by construction
// (per-lcore caches plus a lock-free ring); the handle is a plain pointer.
unsafe impl Send for Mempool {}
// SAFETY: as above.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a packet pool of `count` mbufs with `data_room` bytes each
    /// (headroom included) and a per-lcore cache of `cache` mbufs, on DPDK's
    /// default handler (a ring).
    pub fn new(name: &str, count: u32, cache: u32, data_room: u16) -> Result<Mempool, MempoolError> {
        Mempool::with_handler(name, count, cache, data_room, "ring_mp_mc")
    }

    /// As [`Mempool::new`], on the mempool handler named `handler` (the
    /// store behind the per-lcore caches: `ring_mp_mc`, `stack`, `lf_stack`...).
    pub fn with_handler(
        name: &str,
        count: u32,
        cache: u32,
        data_room: u16,
        handler: &str,
    ) -> Result<Mempool, MempoolError> {
        let err = |reason: String| MempoolError { name: name.to_owned(), count, reason };
        let cname = CString::new(name).map_err(|_| err("name contains NUL".into()))?;
        let chandler = CString::new(handler).map_err(|_| err("handler name contains NUL".into()))?;
        // SAFETY: both are valid C strings; the EAL is initialised (a pool can
        // only be asked for by code holding configuration after Eal::init).
        let p = unsafe {
            dpdk_sys::rte_pktmbuf_pool_create_by_ops(
                cname.as_ptr(),
                count,
                cache,
                0,
                data_room,
                dpdk_sys::SOCKET_ID_ANY,
                chandler.as_ptr(),
            )
        };
        NonNull::new(p).map(Mempool).ok_or_else(|| err(format!("handler {handler:?}: {}", super::errno_text().1)))
    }

    pub(crate) fn as_ptr(&self) -> *mut dpdk_sys::rte_mempool {
        self.0.as_ptr()
    }

    /// Mbufs currently in the pool (not in use).
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is valid for the process's lifetime.
        unsafe { dpdk_sys::rte_mempool_avail_count(self.0.as_ptr()) }
    }
}
