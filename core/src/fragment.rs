//! IP fragment reassembly, before inspection: a TCP segment sent in IPv4 or
//! IPv6 fragments is judged whole, and its fragments go on as they came once
//! it is. Sans-IO: fragments and a time in; held, reassembled, or refused out.
//!
//! Overlaps follow RFC 5722 (and Linux, for IPv4 too): a fragment that
//! overlaps another with different bytes, or partly, discards the whole
//! datagram, and the fragments of it still to come; an exact duplicate is
//! dropped alone. So no receiver can assemble other bytes than those judged.
//!
//! Bounded per worker: at most `capacity` datagrams and `max_bytes` bytes held,
//! `max_fragments` per datagram, each given `timeout` to complete. A full table
//! forgets its oldest datagram first (an incomplete datagram costs its sender
//! a retransmission, nothing more), so a flood of fragments that never complete
//! cannot keep real ones out; only a datagram that could never fit is refused.

use std::collections::{HashMap, VecDeque};

use crate::packet::{FragmentKey, IpFragment};

/// The limits of one worker's fragment table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentLimits {
    /// Datagrams being reassembled at once.
    pub capacity: usize,
    /// Bytes of fragments held at once.
    pub max_bytes: usize,
    /// Fragments one datagram may take.
    pub max_fragments: usize,
    /// How long a datagram has to complete, ns.
    pub timeout_ns: u64,
}

/// What became of one fragment.
#[derive(Debug, PartialEq, Eq)]
pub enum Defrag {
    /// Kept until its datagram is complete.
    Held,
    /// It completed its datagram.
    Complete(Reassembled),
    /// Refused, for this reason (its datagram's other fragments may be gone too).
    Refused(Refusal),
}

/// A datagram put back together.
#[derive(Debug, PartialEq, Eq)]
pub struct Reassembled {
    /// The whole datagram as one frame (link layer and headers of its first fragment).
    pub frame: Vec<u8>,
    /// The fragments that came before the one that completed it, as they came.
    pub earlier: Vec<Vec<u8>>,
}

crate::labels! {
    /// Why a fragment was not kept.
    pub enum Refusal {
    /// It overlaps another fragment of its datagram: the datagram is discarded (RFC 5722).
    Overlap => overlap,
    /// Its datagram was discarded before (an overlap): the rest of it is too.
    Discarded => discarded,
    /// An exact copy of a fragment already held.
    Duplicate => duplicate,
    /// The datagram would exceed 65,535 bytes, or ends before data it holds.
    Malformed => malformed,
    /// The datagram would take more than `max_fragments` fragments.
    TooManyFragments => too_many_fragments,
    /// The datagram could never fit in `max_bytes`.
    Full => full,
    }
}

/// The largest datagram IP can carry, fragmentable part included.
const MAX_DATAGRAM: u32 = 65_535;

/// One datagram being reassembled.
#[derive(Debug)]
struct Datagram {
    /// Its place in the arrival order (to tell a reused slot from this one).
    stamp: u64,
    started_ns: u64,
    /// Copies of its fragments as they came.
    frames: Vec<Vec<u8>>,
    /// (offset, length, frame index) of each fragment's data, by offset.
    pieces: Vec<(u32, u32, usize)>,
    /// Length of the fragmentable part, once the last fragment is seen.
    total: Option<u32>,
    /// Index in `frames` of the fragment at offset 0.
    first: Option<usize>,
    /// Bytes held.
    bytes: usize,
    /// Discarded by an overlap: later fragments are dropped until it times out.
    discarded: bool,
}

crate::counters! {
    /// The fragment table's counters.
    pub struct FragmentCounters {
        /// Fragments received (of datagrams that may carry TCP).
        fragments,
        /// Datagrams reassembled and judged whole.
        reassembled,
        /// Datagrams discarded for overlapping fragments.
        overlaps,
        /// Fragments dropped as exact duplicates.
        duplicates,
        /// Fragments of malformed datagrams (too long, inconsistent ends).
        malformed,
        /// Datagrams with too many fragments.
        too_many_fragments,
        /// Incomplete datagrams timed out (their fragments dropped).
        timed_out,
        /// Incomplete datagrams forgotten to make room (oldest first).
        evicted,
        /// Fragments of datagrams that could never fit (`when_full` applied).
        full,
    }
}

/// One worker's fragment table.
pub struct Defragmenter {
    limits: FragmentLimits,
    datagrams: HashMap<FragmentKey, Datagram, ahash::RandomState>,
    /// Datagrams in arrival order (key, stamp); stale entries skipped.
    order: VecDeque<(FragmentKey, u64)>,
    next_stamp: u64,
    bytes: usize,
    counters: FragmentCounters,
}

impl Defragmenter {
    /// An empty table.
    pub fn new(limits: FragmentLimits) -> Defragmenter {
        Defragmenter {
            limits,
            datagrams: HashMap::default(),
            order: VecDeque::new(),
            next_stamp: 0,
            bytes: 0,
            counters: FragmentCounters::default(),
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> &FragmentCounters {
        &self.counters
    }

    /// Datagrams being reassembled now, and bytes held.
    pub fn held(&self) -> (usize, usize) {
        (self.datagrams.len(), self.bytes)
    }

    /// Takes one fragment that arrived at `now`.
    pub fn push(&mut self, f: &IpFragment, now: u64) -> Defrag {
        self.counters.fragments += 1;
        self.expire(now);
        let data = f.data();
        let (offset, len) = (f.offset, data.len() as u32);
        let size = f.frame().len();
        if offset + len > MAX_DATAGRAM || (f.more && len % 8 != 0) || (f.more && len == 0) {
            return self.refuse_datagram(f.key, Refusal::Malformed);
        }
        if size > self.limits.max_bytes {
            self.counters.full += 1;
            return Defrag::Refused(Refusal::Full);
        }
        if !self.datagrams.contains_key(&f.key) {
            while self.datagrams.len() >= self.limits.capacity.max(1) {
                if !self.evict_oldest() {
                    break;
                }
            }
            let stamp = self.next_stamp;
            self.next_stamp += 1;
            self.order.push_back((f.key, stamp));
            let d = Datagram {
                stamp,
                started_ns: now,
                frames: Vec::new(),
                pieces: Vec::new(),
                total: None,
                first: None,
                bytes: 0,
                discarded: false,
            };
            self.datagrams.insert(f.key, d);
        }
        let Some(d) = self.datagrams.get_mut(&f.key) else { return Defrag::Refused(Refusal::Full) };
        if d.discarded {
            return Defrag::Refused(Refusal::Discarded);
        }
        // Where it goes among the pieces, and whether it overlaps one.
        let at = d.pieces.partition_point(|&(o, _, _)| o < offset);
        let end = offset + len;
        let before = at.checked_sub(1).map(|i| d.pieces[i]);
        let after = d.pieces.get(at).copied();
        for (o, l, i) in [before, after].into_iter().flatten() {
            if o < end && offset < o + l || (l == 0 && len == 0 && o == offset) {
                let same = o == offset && l == len && piece_bytes(&d.frames[i], l) == Some(data);
                if same {
                    self.counters.duplicates += 1;
                    return Defrag::Refused(Refusal::Duplicate);
                }
                return self.refuse_datagram(f.key, Refusal::Overlap);
            }
        }
        // The last fragment fixes the length; nothing may lie past it.
        let last_end = d.pieces.last().map_or(0, |&(o, l, _)| o + l);
        if !f.more {
            if d.total.is_some_and(|t| t != end) || last_end > end {
                return self.refuse_datagram(f.key, Refusal::Malformed);
            }
            d.total = Some(end);
        } else if d.total.is_some_and(|t| end > t) {
            return self.refuse_datagram(f.key, Refusal::Malformed);
        }
        if d.frames.len() >= self.limits.max_fragments {
            return self.refuse_datagram(f.key, Refusal::TooManyFragments);
        }
        if d.bytes + size > self.limits.max_bytes {
            return self.refuse_datagram(f.key, Refusal::Full);
        }
        let index = d.frames.len();
        d.frames.push(f.frame().to_vec());
        d.pieces.insert(at, (offset, len, index));
        d.bytes += size;
        self.bytes += size;
        if offset == 0 {
            d.first = Some(index);
        }
        while self.bytes > self.limits.max_bytes {
            if !self.evict_oldest_except(f.key) {
                break;
            }
        }
        self.try_complete(f.key)
    }

    /// Drops datagrams that have had their time (their fragments are lost,
    /// as a receiver's would be). Returns how many expired.
    pub fn expire(&mut self, now: u64) -> usize {
        let mut n = 0;
        while let Some(&(key, stamp)) = self.order.front() {
            match self.datagrams.get(&key) {
                Some(d) if d.stamp == stamp => {
                    if now.saturating_sub(d.started_ns) < self.limits.timeout_ns {
                        break;
                    }
                    if !d.discarded {
                        self.counters.timed_out += 1;
                        n += 1;
                    }
                    self.remove(&key);
                }
                _ => {}
            }
            self.order.pop_front();
        }
        n
    }

    fn try_complete(&mut self, key: FragmentKey) -> Defrag {
        let Some(d) = self.datagrams.get(&key) else { return Defrag::Held };
        let (Some(total), Some(first)) = (d.total, d.first) else { return Defrag::Held };
        let mut next = 0;
        for &(o, l, _) in &d.pieces {
            if o != next {
                return Defrag::Held;
            }
            next = o + l;
        }
        if next != total {
            return Defrag::Held;
        }
        let Some(d) = self.remove(&key) else { return Defrag::Held };
        let mut data = Vec::with_capacity(total as usize);
        for &(_, l, i) in &d.pieces {
            data.extend_from_slice(piece_bytes(&d.frames[i], l).unwrap_or_default());
        }
        let frame = crate::packet::classify(&d.frames[first]);
        let whole = match frame {
            crate::packet::Layer::Fragment(head) => head.reassemble(&data),
            _ => None,
        };
        let Some(frame) = whole else {
            self.counters.malformed += 1;
            return Defrag::Refused(Refusal::Malformed);
        };
        self.counters.reassembled += 1;
        let mut earlier = d.frames;
        earlier.pop(); // the fragment just pushed goes on as itself
        Defrag::Complete(Reassembled { frame, earlier })
    }

    /// Discards a datagram (it stays known as discarded until it times out, so
    /// that the rest of its fragments are dropped too).
    fn refuse_datagram(&mut self, key: FragmentKey, why: Refusal) -> Defrag {
        match why {
            Refusal::Overlap => self.counters.overlaps += 1,
            Refusal::Malformed => self.counters.malformed += 1,
            Refusal::TooManyFragments => self.counters.too_many_fragments += 1,
            Refusal::Full => self.counters.full += 1,
            Refusal::Discarded | Refusal::Duplicate => {}
        }
        if let Some(d) = self.datagrams.get_mut(&key) {
            self.bytes -= d.bytes;
            d.bytes = 0;
            d.frames = Vec::new();
            d.pieces = Vec::new();
            d.discarded = true;
        }
        Defrag::Refused(why)
    }

    fn evict_oldest(&mut self) -> bool {
        self.evict_oldest_but(None)
    }

    fn evict_oldest_except(&mut self, keep: FragmentKey) -> bool {
        self.evict_oldest_but(Some(keep))
    }

    /// Forgets the oldest datagram other than `keep`.
    fn evict_oldest_but(&mut self, keep: Option<FragmentKey>) -> bool {
        let mut i = 0;
        while i < self.order.len() {
            let (key, stamp) = self.order[i];
            let live = self.datagrams.get(&key).is_some_and(|d| d.stamp == stamp);
            if !live {
                self.order.remove(i);
                continue;
            }
            if Some(key) == keep {
                i += 1;
                continue;
            }
            self.order.remove(i);
            if self.remove(&key).is_some_and(|d| !d.discarded) {
                self.counters.evicted += 1;
            }
            return true;
        }
        false
    }

    fn remove(&mut self, key: &FragmentKey) -> Option<Datagram> {
        let d = self.datagrams.remove(key)?;
        self.bytes -= d.bytes;
        Some(d)
    }
}

/// The data of a held fragment (its frame parsed again: it was checked on the way in).
fn piece_bytes(frame: &[u8], len: u32) -> Option<&[u8]> {
    match crate::packet::classify(frame) {
        crate::packet::Layer::Fragment(f) => f.data().get(..len as usize),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{classify, Layer, TcpFrame};

    const LIMITS: FragmentLimits =
        FragmentLimits { capacity: 8, max_bytes: 1 << 20, max_fragments: 64, timeout_ns: 1_000 };

    /// A TCP segment over IPv4 or IPv6, whole.
    fn segment(v6: bool, payload: &[u8]) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([1; 6], [2; 6]);
        let b = if v6 { b.ipv6([1; 16], [2; 16], 64) } else { b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64) };
        let mut out = Vec::new();
        b.tcp(40000, 443, 1000, 64000).ack(1).psh().write(&mut out, payload).unwrap();
        out
    }

    /// `whole` cut into fragments of `step` bytes of its IP payload (a multiple of 8).
    fn fragments(whole: &[u8], step: usize, id: u32) -> Vec<Vec<u8>> {
        let v6 = whole[12] == 0x86;
        let (hlen, l3) = (if v6 { 40 } else { 20 }, 14);
        let body = &whole[l3 + hlen..];
        let mut out = Vec::new();
        for (i, chunk) in body.chunks(step).enumerate() {
            let offset = i * step;
            let more = offset + chunk.len() < body.len();
            out.push(fragment(&whole[..l3 + hlen], offset, more, chunk, id));
        }
        out
    }

    fn fragment(head: &[u8], offset: usize, more: bool, chunk: &[u8], id: u32) -> Vec<u8> {
        let v6 = head[12] == 0x86;
        let mut f = head.to_vec();
        if v6 {
            f[14 + 6] = 44;
            let plen = (8 + chunk.len()) as u16;
            f[18..20].copy_from_slice(&plen.to_be_bytes());
            f.push(6);
            f.push(0);
            f.extend_from_slice(&(((offset / 8) as u16) << 3 | more as u16).to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
        } else {
            let total = (20 + chunk.len()) as u16;
            f[16..18].copy_from_slice(&total.to_be_bytes());
            f[18..20].copy_from_slice(&(id as u16).to_be_bytes());
            let fo = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
            f[20..22].copy_from_slice(&fo.to_be_bytes());
            f[24] = 0;
            f[25] = 0;
            let c = crate::packet::internet_checksum(&[&f[14..34]]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
        }
        f.extend_from_slice(chunk);
        f
    }

    fn push(d: &mut Defragmenter, frame: &[u8], now: u64) -> Defrag {
        match classify(frame) {
            Layer::Fragment(f) => d.push(&f, now),
            other => panic!("not a fragment: {other:?}"),
        }
    }

    #[test]
    fn fragments_in_any_order_give_back_the_segment() {
        for v6 in [false, true] {
            let whole = segment(v6, &[7u8; 300]);
            let mut frags = fragments(&whole, 64, 9);
            frags.reverse();
            let mut d = Defragmenter::new(LIMITS);
            let n = frags.len();
            for (i, f) in frags.iter().enumerate() {
                let r = push(&mut d, f, 0);
                if i + 1 < n {
                    assert_eq!(r, Defrag::Held);
                } else {
                    let Defrag::Complete(r) = r else { panic!("{r:?}") };
                    let t = TcpFrame::parse(&r.frame).expect("a whole segment");
                    assert_eq!(t.payload(), &[7u8; 300][..]);
                    assert!(t.checksums_ok(), "v6 {v6}");
                    assert_eq!(r.earlier.len(), n - 1);
                }
            }
            assert_eq!(d.held(), (0, 0));
            assert!(frags.iter().all(|f| TcpFrame::parse(f).is_none()));
        }
    }

    #[test]
    fn an_overlap_discards_the_datagram_and_its_later_fragments() {
        let whole = segment(false, &[1u8; 200]);
        let frags = fragments(&whole, 64, 3);
        let mut d = Defragmenter::new(LIMITS);
        assert_eq!(push(&mut d, &frags[0], 0), Defrag::Held);
        // Same place, other bytes: the classic overwrite.
        let evil = fragment(&whole[..34], 0, true, &[9u8; 64], 3);
        assert_eq!(push(&mut d, &evil, 0), Defrag::Refused(Refusal::Overlap));
        for f in &frags[1..] {
            assert_eq!(push(&mut d, f, 0), Defrag::Refused(Refusal::Discarded));
        }
        assert_eq!(d.counters().overlaps, 1);
        assert_eq!(d.held().1, 0);
        // Once the discarded datagram times out, the identification is free again.
        let mut done = None;
        for f in &frags {
            done = Some(push(&mut d, f, 5_000));
        }
        assert!(matches!(done, Some(Defrag::Complete(_))));
    }

    #[test]
    fn a_partial_overlap_is_an_overlap_and_an_exact_copy_a_duplicate() {
        let whole = segment(true, &[1u8; 200]);
        let frags = fragments(&whole, 64, 3);
        let mut d = Defragmenter::new(LIMITS);
        push(&mut d, &frags[0], 0);
        assert_eq!(push(&mut d, &frags[0], 0), Defrag::Refused(Refusal::Duplicate));
        let body = &whole[54..];
        let shifted = fragment(&whole[..54], 8, true, &body[8..72], 3);
        assert_eq!(push(&mut d, &shifted, 0), Defrag::Refused(Refusal::Overlap));
    }

    #[test]
    fn a_flood_of_incomplete_datagrams_cannot_keep_a_real_one_out() {
        let mut d = Defragmenter::new(LIMITS);
        let whole = segment(false, &[5u8; 100]);
        for id in 0..1000 {
            let frags = fragments(&whole, 64, id);
            assert_eq!(push(&mut d, &frags[0], 0), Defrag::Held);
        }
        assert_eq!(d.held().0, LIMITS.capacity);
        let frags = fragments(&whole, 64, 5000);
        assert_eq!(push(&mut d, &frags[0], 1), Defrag::Held);
        assert!(matches!(push(&mut d, &frags[1], 1), Defrag::Complete(_)));
        assert!(d.counters().evicted >= 992);
    }

    #[test]
    fn limits_hold() {
        let limits = FragmentLimits { max_fragments: 4, max_bytes: 4096, ..LIMITS };
        let mut d = Defragmenter::new(limits);
        let whole = segment(false, &[5u8; 800]);
        let frags = fragments(&whole, 64, 1);
        let refused: Vec<_> = frags.iter().map(|f| push(&mut d, f, 0)).collect();
        assert_eq!(refused[4], Defrag::Refused(Refusal::TooManyFragments));
        // Past 65,535 bytes.
        let far = fragment(&whole[..34], 65_528, false, &[0u8; 16], 2);
        assert_eq!(push(&mut d, &far, 0), Defrag::Refused(Refusal::Malformed));
        // Timeouts free everything.
        let frags = fragments(&whole, 64, 7);
        push(&mut d, &frags[0], 10);
        d.expire(10 + LIMITS.timeout_ns);
        assert_eq!(d.held(), (0, 0));
        assert!(d.counters().timed_out >= 1);
    }
}
