//! Typed single-producer/single-consumer rings between lcores. A ring is split
//! into its two ends at creation, so the type system keeps it SPSC.

use std::ffi::{c_void, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{Burst, Mbuf};

/// What a ring can carry: anything that converts to and from one pointer.
pub trait RingItem: Send + Sized {
    /// Gives up ownership as a pointer.
    fn into_ptr(self) -> *mut c_void;
    /// Takes ownership back.
    ///
    /// # Safety
    /// `p` must come from `into_ptr` of the same type, used once.
    unsafe fn from_ptr(p: *mut c_void) -> Self;
}

impl RingItem for Mbuf {
    fn into_ptr(self) -> *mut c_void {
        self.into_raw() as *mut c_void
    }
    unsafe fn from_ptr(p: *mut c_void) -> Self {
        // SAFETY: forwarded contract: p came from into_ptr of an Mbuf.
        unsafe { Mbuf::from_raw(p as *mut dpdk_sys::rte_mbuf) }
    }
}

impl<T: Send> RingItem for Box<T> {
    fn into_ptr(self) -> *mut c_void {
        Box::into_raw(self) as *mut c_void
    }
    unsafe fn from_ptr(p: *mut c_void) -> Self {
        // SAFETY: forwarded contract: p came from Box::into_raw of a Box<T>.
        unsafe { Box::from_raw(p as *mut T) }
    }
}

/// Why a ring could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot create ring {name:?} ({size} slots): {reason}")]
pub struct RingError {
    name: String,
    size: u32,
    reason: String,
}

struct RingInner<T: RingItem> {
    ring: NonNull<dpdk_sys::rte_ring>,
    enqueue_failures: AtomicU64,
    _item: PhantomData<T>,
}

// SAFETY: the rte_ring is created SP/SC; the Producer and Consumer ends are
// each !Clone and used by one thread at a time, which is the SPSC contract.
unsafe impl<T: RingItem> Send for RingInner<T> {}
// SAFETY: shared access goes only through the atomic counter and ring_count.
unsafe impl<T: RingItem> Sync for RingInner<T> {}

impl<T: RingItem> Drop for RingInner<T> {
    fn drop(&mut self) {
        // Both ends are gone: drain what is left so owned items are freed.
        let mut buf = [std::ptr::null_mut::<c_void>(); 32];
        loop {
            // SAFETY: no end exists any more, so this is the only user of the ring.
            let n = unsafe {
                dpdk_sys::tg_ring_dequeue_burst(self.ring.as_ptr(), buf.as_mut_ptr(), 32, std::ptr::null_mut())
            } as usize;
            if n == 0 {
                break;
            }
            for p in &buf[..n] {
                // SAFETY: every pointer in the ring came from T::into_ptr.
                drop(unsafe { T::from_ptr(*p) });
            }
        }
        // SAFETY: the ring is empty and unused.
        unsafe { dpdk_sys::rte_ring_free(self.ring.as_ptr()) }
    }
}

/// The sending end.
pub struct RingProducer<T: RingItem> {
    inner: Arc<RingInner<T>>,
}

/// The receiving end.
pub struct RingConsumer<T: RingItem> {
    inner: Arc<RingInner<T>>,
}

/// Creates an SPSC ring of at least `size` slots (rounded up to a power of two).
pub fn ring_pair<T: RingItem>(name: &str, size: u32) -> Result<(RingProducer<T>, RingConsumer<T>), RingError> {
    let size = size.max(2).next_power_of_two();
    let err = |reason: String| RingError { name: name.to_owned(), size, reason };
    let cname = CString::new(name).map_err(|_| err("name contains NUL".into()))?;
    let flags = dpdk_sys::RING_F_SP_ENQ | dpdk_sys::RING_F_SC_DEQ | dpdk_sys::RING_F_EXACT_SZ;
    // SAFETY: valid C string; the EAL is initialised by whoever builds rings.
    let p = unsafe { dpdk_sys::rte_ring_create(cname.as_ptr(), size, dpdk_sys::SOCKET_ID_ANY, flags) };
    let ring = NonNull::new(p).ok_or_else(|| err(super::errno_text().1))?;
    let inner = Arc::new(RingInner { ring, enqueue_failures: AtomicU64::new(0), _item: PhantomData });
    Ok((RingProducer { inner: inner.clone() }, RingConsumer { inner }))
}

impl<T: RingItem> RingProducer<T> {
    /// Enqueues one item; gives it back if the ring is full.
    pub fn push(&mut self, item: T) -> Result<(), T> {
        let p = item.into_ptr();
        // SAFETY: single producer (this end is !Clone and &mut); p is owned.
        let n = unsafe { dpdk_sys::tg_ring_enqueue_burst(self.inner.ring.as_ptr(), &p, 1, std::ptr::null_mut()) };
        if n == 1 {
            Ok(())
        } else {
            self.inner.enqueue_failures.fetch_add(1, Ordering::Relaxed);
            // SAFETY: p was not taken by the ring; it is ours again.
            Err(unsafe { T::from_ptr(p) })
        }
    }

    /// Items refused because the ring was full, since creation.
    pub fn full_count(&self) -> u64 {
        self.inner.enqueue_failures.load(Ordering::Relaxed)
    }
}

impl RingProducer<Mbuf> {
    /// Enqueues from the front of `burst`; what did not fit stays in the burst.
    #[inline]
    pub fn send_burst(&mut self, burst: &mut Burst) -> usize {
        if burst.is_empty() {
            return 0;
        }
        // SAFETY: single producer; the first len slots are owned mbufs, which
        // the ring takes over for the first n (consume_front forgets them).
        unsafe {
            let n = dpdk_sys::tg_ring_enqueue_burst(
                self.inner.ring.as_ptr(),
                burst.raw_ptr() as *const *mut c_void,
                burst.len() as u32,
                std::ptr::null_mut(),
            ) as usize;
            burst.consume_front(n);
            n
        }
    }
}

impl<T: RingItem> RingConsumer<T> {
    /// Dequeues one item.
    pub fn pop(&mut self) -> Option<T> {
        let mut p = std::ptr::null_mut::<c_void>();
        // SAFETY: single consumer (this end is !Clone and &mut).
        let n = unsafe { dpdk_sys::tg_ring_dequeue_burst(self.inner.ring.as_ptr(), &mut p, 1, std::ptr::null_mut()) };
        // SAFETY: a dequeued pointer came from T::into_ptr.
        (n == 1).then(|| unsafe { T::from_ptr(p) })
    }

    /// Items waiting.
    pub fn len(&self) -> u32 {
        // SAFETY: reading the ring's counters is safe from any thread.
        unsafe { dpdk_sys::tg_ring_count(self.inner.ring.as_ptr()) }
    }

    /// Whether no items wait.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl RingConsumer<Mbuf> {
    /// Dequeues into the free room of `burst`; returns how many.
    #[inline]
    pub fn recv_burst(&mut self, burst: &mut Burst) -> usize {
        let room = burst.room();
        if room == 0 {
            return 0;
        }
        // SAFETY: single consumer; DPDK writes at most `room` owned mbufs into
        // the free slots, and grow records exactly that many.
        unsafe {
            let dst = burst.raw_ptr().add(burst.len()) as *mut *mut c_void;
            let n = dpdk_sys::tg_ring_dequeue_burst(self.inner.ring.as_ptr(), dst, room as u32, std::ptr::null_mut())
                as usize;
            burst.grow(n);
            n
        }
    }
}
