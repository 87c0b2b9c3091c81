//! Owned packet buffers and fixed-size bursts of them.

use std::mem::MaybeUninit;
use std::ptr::NonNull;

use super::Mempool;

/// Packets moved per rx/tx burst.
pub const BURST: usize = 32;

/// One packet buffer, owned: dropping it returns it (and its chained segments)
/// to its pool. Same layout as `*mut rte_mbuf`, so bursts cost no conversion.
#[repr(transparent)]
pub struct Mbuf(NonNull<dpdk_sys::rte_mbuf>);

// SAFETY: an mbuf has a single owner at a time; handing it to another lcore
// (through a ring) is how DPDK applications are meant to use it.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Allocates an empty mbuf from `pool`; `None` when the pool is empty.
    pub fn alloc(pool: &Mempool) -> Option<Mbuf> {
        // SAFETY: the pool is valid for the process's lifetime.
        NonNull::new(unsafe { dpdk_sys::tg_pktmbuf_alloc(pool.as_ptr()) }).map(Mbuf)
    }

    /// Allocates an mbuf holding a copy of `bytes`; `None` if the pool is empty
    /// or `bytes` does not fit one segment.
    pub fn from_bytes(pool: &Mempool, bytes: &[u8]) -> Option<Mbuf> {
        let mut m = Mbuf::alloc(pool)?;
        m.append(bytes).then_some(m)
    }

    /// A new single-segment packet holding `parts` one after another; `None`
    /// when the pool is empty or they do not fit.
    pub fn from_parts(pool: &Mempool, parts: &[&[u8]]) -> Option<Mbuf> {
        let mut m = Mbuf::alloc(pool)?;
        parts.iter().all(|p| p.is_empty() || m.append(p)).then_some(m)
    }

    /// Appends `bytes` to the packet's last segment; false if there is no room.
    pub fn append(&mut self, bytes: &[u8]) -> bool {
        let Ok(len) = u16::try_from(bytes.len()) else {
            return false;
        };
        // SAFETY: self owns a valid mbuf; rte_pktmbuf_append returns NULL or a
        // pointer to `len` writable bytes inside the last segment.
        let dst = unsafe { dpdk_sys::tg_pktmbuf_append(self.0.as_ptr(), len) };
        if dst.is_null() {
            return false;
        }
        // SAFETY: dst points to len writable bytes (see above), disjoint from bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst as *mut u8, bytes.len()) };
        true
    }

    #[inline]
    fn raw(&self) -> &dpdk_sys::rte_mbuf {
        // SAFETY: self owns a valid mbuf for its whole lifetime.
        unsafe { self.0.as_ref() }
    }

    /// The first segment's bytes (the whole packet when `is_contiguous`).
    #[inline]
    pub fn data(&self) -> &[u8] {
        let m = self.raw();
        // SAFETY: buf_addr + data_off .. + data_len lies inside the segment's
        // buffer by the mbuf invariants DPDK maintains; the slice borrows self.
        unsafe { std::slice::from_raw_parts((m.buf_addr as *const u8).add(m.data_off as usize), m.data_len as usize) }
    }

    /// The first segment's bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in data(); &mut self gives exclusive access.
        unsafe {
            let m = self.0.as_mut();
            std::slice::from_raw_parts_mut((m.buf_addr as *mut u8).add(m.data_off as usize), m.data_len as usize)
        }
    }

    /// Total packet length over all segments.
    #[inline]
    pub fn pkt_len(&self) -> u32 {
        self.raw().pkt_len
    }

    /// Whether the packet is in one segment.
    #[inline]
    pub fn is_contiguous(&self) -> bool {
        self.raw().nb_segs == 1
    }

    /// The packet's bytes, segment by segment.
    pub fn segments(&self) -> impl Iterator<Item = &[u8]> {
        let mut cur: *const dpdk_sys::rte_mbuf = self.0.as_ptr();
        std::iter::from_fn(move || {
            if cur.is_null() {
                return None;
            }
            // SAFETY: cur is self's head or a `next` link of the chain self
            // owns; each segment obeys the same invariants as in data().
            unsafe {
                let m = &*cur;
                cur = m.next;
                Some(std::slice::from_raw_parts(
                    (m.buf_addr as *const u8).add(m.data_off as usize),
                    m.data_len as usize,
                ))
            }
        })
    }

    /// The whole packet copied out (all segments).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.pkt_len() as usize);
        for s in self.segments() {
            v.extend_from_slice(s);
        }
        v
    }

    /// The NIC's RSS hash, when the NIC computed one.
    #[inline]
    pub fn rss_hash(&self) -> Option<u32> {
        let m = self.raw();
        if m.ol_flags & dpdk_sys::RTE_MBUF_F_RX_RSS_HASH as u64 != 0 {
            // SAFETY: with RX_RSS_HASH set, the hash union holds the rss variant.
            Some(unsafe { m.__bindgen_anon_2.hash.rss })
        } else {
            None
        }
    }

    /// The mbuf's port field (set by the PMD on receive, or by [`Mbuf::set_port`]).
    #[inline]
    pub fn port(&self) -> u16 {
        self.raw().port
    }

    /// Sets the mbuf's port field; tlsgate uses it to carry the ingress port
    /// index of a packet handed between lcores.
    #[inline]
    pub fn set_port(&mut self, port: u16) {
        // SAFETY: exclusive access through &mut self.
        unsafe { self.0.as_mut().port = port }
    }

    /// Prefetches the packet's first cache line.
    #[inline]
    pub fn prefetch(&self) {
        let m = self.raw();
        // SAFETY: a prefetch of any address is harmless; this one is in the buffer.
        unsafe { dpdk_sys::tg_prefetch0((m.buf_addr as *const u8).add(m.data_off as usize) as *const _) }
    }

    pub(crate) fn into_raw(self) -> *mut dpdk_sys::rte_mbuf {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }

    /// # Safety
    /// `p` must be a valid mbuf that the caller owns and hands over.
    pub(crate) unsafe fn from_raw(p: *mut dpdk_sys::rte_mbuf) -> Mbuf {
        // SAFETY: the caller guarantees p is a valid, owned, non-null mbuf.
        Mbuf(unsafe { NonNull::new_unchecked(p) })
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: self owns the mbuf; it is not used after this.
        unsafe { dpdk_sys::tg_pktmbuf_free(self.0.as_ptr()) }
    }
}

/// Up to [`BURST`] mbufs, in order. Bursts are what rx and tx move; mbufs left
/// in a burst when it drops are freed in bulk.
pub struct Burst {
    pkts: [MaybeUninit<Mbuf>; BURST],
    len: usize,
}

impl Default for Burst {
    fn default() -> Self {
        Self::new()
    }
}

impl Burst {
    /// An empty burst.
    pub fn new() -> Burst {
        Burst { pkts: [const { MaybeUninit::uninit() }; BURST], len: 0 }
    }

    /// Mbufs held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether it is full.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == BURST
    }

    /// Room left.
    #[inline]
    pub fn room(&self) -> usize {
        BURST - self.len
    }

    /// Adds `m`; gives it back if the burst is full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == BURST {
            return Err(m);
        }
        self.pkts[self.len].write(m);
        self.len += 1;
        Ok(())
    }

    /// The mbufs held.
    #[inline]
    pub fn as_slice(&self) -> &[Mbuf] {
        // SAFETY: the first len entries are initialised; MaybeUninit<Mbuf> has
        // Mbuf's layout.
        unsafe { std::slice::from_raw_parts(self.pkts.as_ptr() as *const Mbuf, self.len) }
    }

    /// Takes every mbuf out, in order.
    #[inline]
    pub fn drain(&mut self) -> impl Iterator<Item = Mbuf> + '_ {
        let n = std::mem::replace(&mut self.len, 0);
        // SAFETY: entries 0..n are initialised and, with len reset to 0, each is
        // read out exactly once by the iterator (unread ones leak, never double-free).
        self.pkts[..n].iter().map(|p| unsafe { p.assume_init_read() })
    }

    /// The mbufs from index `from` on.
    #[inline]
    pub fn tail(&self, from: usize) -> &[Mbuf] {
        &self.as_slice()[from.min(self.len)..]
    }

    /// The packet lengths of the mbufs from index `from` on, summed.
    ///
    /// On a path that forwards without looking into packets this is the only
    /// per-packet work, so it is kept to two instructions a packet (load the
    /// mbuf pointer, add its length), four packets a step. The sum is taken
    /// in 32 bits: a burst holds at most 32 packets, and no packet a port
    /// receives comes near 128 MiB (an IP packet is at most 64 KiB, and so is
    /// what LRO merges), so it cannot wrap (were one to, the count would be
    /// off, nothing else: the adds wrap rather than panic).
    #[inline]
    pub fn bytes_from(&self, from: usize) -> u64 {
        let len = |m: &Mbuf| m.pkt_len();
        let (quads, rest) = self.tail(from).as_chunks::<4>();
        let mut sum = 0u32;
        for [a, b, c, d] in quads {
            sum = sum.wrapping_add(len(a).wrapping_add(len(b))).wrapping_add(len(c).wrapping_add(len(d)));
        }
        // At most three left: no loop for them.
        let rest = match rest {
            [a] => len(a),
            [a, b] => len(a).wrapping_add(len(b)),
            [a, b, c] => len(a).wrapping_add(len(b)).wrapping_add(len(c)),
            _ => 0,
        };
        sum.wrapping_add(rest) as u64
    }

    /// Walks the mbufs from index `from` on, in order: each one for which
    /// `keep` returns true stays (compacted, order kept); every other one is
    /// handed to `take`.
    #[inline]
    pub fn retain_from(&mut self, from: usize, mut keep: impl FnMut(&mut Mbuf) -> bool, mut take: impl FnMut(Mbuf)) {
        let end = self.len;
        let first = from.min(end);
        let mut w = first;
        // While the walk runs, len covers only the kept prefix: if `keep` or
        // `take` panicked, the slots past it would leak, never be freed twice.
        self.len = w;
        for r in first..end {
            // SAFETY: slot r (< end) holds an owned mbuf not yet read out;
            // it is moved out exactly once here.
            let mut m = unsafe { self.pkts[r].assume_init_read() };
            if keep(&mut m) {
                self.pkts[w].write(m);
                w += 1;
                self.len = w;
            } else {
                take(m);
            }
        }
    }

    /// Frees every mbuf held.
    pub fn clear(&mut self) {
        if self.len > 0 {
            // SAFETY: the first len entries are owned mbufs, laid out as *mut rte_mbuf.
            unsafe { dpdk_sys::rte_pktmbuf_free_bulk(self.raw_ptr(), self.len as u32) };
            self.len = 0;
        }
    }

    /// Pointer to the slots, for rx/tx/ring calls.
    pub(crate) fn raw_ptr(&mut self) -> *mut *mut dpdk_sys::rte_mbuf {
        self.pkts.as_mut_ptr() as *mut *mut dpdk_sys::rte_mbuf
    }

    /// Records that `n` more slots after `len` were filled by DPDK.
    ///
    /// # Safety
    /// Slots len..len+n must now hold owned, valid mbufs.
    pub(crate) unsafe fn grow(&mut self, n: usize) {
        debug_assert!(self.len + n <= BURST);
        self.len += n;
    }

    /// Removes the first `n` (handed to DPDK), moving the rest to the front.
    ///
    /// # Safety
    /// The first n mbufs must have been taken over by DPDK.
    pub(crate) unsafe fn consume_front(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        let rest = self.len - n;
        if rest > 0 && n > 0 {
            // SAFETY: both ranges are inside the array; copy handles overlap.
            unsafe { std::ptr::copy(self.pkts.as_ptr().add(n), self.pkts.as_mut_ptr(), rest) };
        }
        self.len = rest;
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.clear();
    }
}
