//! The per-worker flow table: canonical 5-tuple (+ VLAN) keys, a slab of
//! entries with an index, idle expiry by a clock hand that looks at a few
//! entries per poll (bounded work, no timer thread), and a hard capacity.
//!
//! The index is tlsgate's own, not a general hash map: an open-addressing
//! table of 8-byte entries (a 32-bit hash tag and the slot), linear probing,
//! at most half full. The key itself lives only in the slot, which a lookup
//! reads anyway. At tens of thousands of flows a hash map's 48-byte buckets
//! (key and value) left the caches and each packet's lookup missed in them;
//! these entries take a sixth of the room, and an entry's place is known from
//! the key's hash alone, so a burst's lookups can be prefetched.
//!
//! It knows nothing of TLS: the entry type is the caller's.

use crate::packet::{Addr, TcpFrame};

/// A flow's identity, the same for both directions: the (address, port) pair
/// that sorts lower is `lo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    /// Lower endpoint address.
    pub lo_addr: Addr,
    /// Higher endpoint address.
    pub hi_addr: Addr,
    /// Lower endpoint port.
    pub lo_port: u16,
    /// Higher endpoint port.
    pub hi_port: u16,
    /// Outer VLAN id (0 = untagged).
    pub vlan: u16,
}

impl FlowKey {
    /// The key of a datagram between `(src, sp)` and `(dst, dp)`, and whether it goes from `lo` to `hi`.
    pub fn of_ports(src: Addr, dst: Addr, sp: u16, dp: u16, vlan: Option<u16>) -> (FlowKey, bool) {
        let vlan = vlan.unwrap_or(0);
        if (src, sp) <= (dst, dp) {
            (FlowKey { lo_addr: src, hi_addr: dst, lo_port: sp, hi_port: dp, vlan }, true)
        } else {
            (FlowKey { lo_addr: dst, hi_addr: src, lo_port: dp, hi_port: sp, vlan }, false)
        }
    }

    /// The key of a segment, and whether the segment goes from `lo` to `hi`.
    pub fn of(t: &TcpFrame) -> (FlowKey, bool) {
        let vlan = t.vlan.unwrap_or(0);
        if (t.src, t.src_port) <= (t.dst, t.dst_port) {
            (FlowKey { lo_addr: t.src, hi_addr: t.dst, lo_port: t.src_port, hi_port: t.dst_port, vlan }, true)
        } else {
            (FlowKey { lo_addr: t.dst, hi_addr: t.src, lo_port: t.dst_port, hi_port: t.src_port, vlan }, false)
        }
    }
}

/// Three words to the hasher (a derived `Hash` makes seven calls, two of
/// them for the addresses' lengths): a lookup a packet hashes one of these.
impl std::hash::Hash for FlowKey {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.lo_addr));
        state.write_u128(u128::from_ne_bytes(self.hi_addr));
        state.write_u64(u64::from(self.lo_port) | u64::from(self.hi_port) << 16 | u64::from(self.vlan) << 32);
    }
}

/// A slot index in the table.
pub type FlowId = u32;

struct Slot<T> {
    key: FlowKey,
    last_seen: u64,
    timeout: u64,
    value: T,
}

/// Bytes one flow takes in the slab (its key, timers and value `T`).
pub fn slot_size<T>() -> usize {
    std::mem::size_of::<Option<Slot<T>>>()
}

/// A bounded flow table.
pub struct FlowTable<T> {
    index: Index,
    slots: Vec<Option<Slot<T>>>,
    free: Vec<FlowId>,
    capacity: usize,
    hand: usize,
    /// Slots in the order their flows came (oldest first), with a 32-bit
    /// tag of the key each held then (8 bytes an entry): where a full table
    /// looks for a flow to forget.
    arrivals: std::collections::VecDeque<(FlowId, u32)>,
}

/// Flows a full table looks at, at most, for one it may forget.
const EVICTION_SCAN: usize = 64;

/// Why an insert failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// The table holds `capacity` flows.
    Full,
}

impl<T> FlowTable<T> {
    /// A table for at most `capacity` flows.
    pub fn new(capacity: usize) -> FlowTable<T> {
        FlowTable {
            index: Index::new(),
            slots: Vec::new(),
            free: Vec::new(),
            capacity,
            hand: 0,
            arrivals: std::collections::VecDeque::new(),
        }
    }

    /// Flows held.
    pub fn len(&self) -> usize {
        self.index.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.index.len == 0
    }

    /// The slot of `key`, if present.
    #[inline]
    pub fn find(&self, key: &FlowKey) -> Option<FlowId> {
        let slots = &self.slots;
        self.index.find(self.index.tag(key), |id| matches!(&slots[id as usize], Some(s) if s.key == *key))
    }

    /// Inserts a new flow seen at `now` that expires `timeout` after its last packet.
    pub fn insert(&mut self, key: FlowKey, value: T, now: u64, timeout: u64) -> Result<FlowId, InsertError> {
        if self.index.len >= self.capacity {
            return Err(InsertError::Full);
        }
        let slot = Slot { key, last_seen: now, timeout, value };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(slot);
                id
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as FlowId
            }
        };
        let tag = self.tag(&key);
        self.index.insert(tag, id);
        self.arrivals.push_back((id, tag));
        if self.arrivals.len() > 2 * self.capacity.max(16) {
            // Forget the arrivals of flows gone since.
            let (slots, index) = (&self.slots, &self.index);
            self.arrivals.retain(|(id, tag)| matches!(&slots[*id as usize], Some(s) if index.tag(&s.key) == *tag));
        }
        Ok(id)
    }

    /// As [`insert`](Self::insert), but a full table first forgets the
    /// oldest flow that `evictable` says costs nothing to forget (embryonic,
    /// closed), looking at [`EVICTION_SCAN`] flows at most; that flow comes
    /// back with the new one's id.
    pub fn insert_evicting(
        &mut self,
        key: FlowKey,
        value: T,
        now: u64,
        timeout: u64,
        evictable: impl Fn(&T) -> bool,
    ) -> Result<(FlowId, Option<(FlowKey, T)>), InsertError> {
        let mut evicted = None;
        if self.index.len >= self.capacity {
            for _ in 0..EVICTION_SCAN {
                let Some((id, tag)) = self.arrivals.pop_front() else { break };
                let Some(Some(slot)) = self.slots.get(id as usize) else { continue };
                if self.tag(&slot.key) != tag {
                    continue; // that flow is gone; the slot holds another
                }
                if evictable(&slot.value) {
                    evicted = self.remove(id);
                    break;
                }
                // Worth keeping: it goes to the back of the line.
                self.arrivals.push_back((id, tag));
            }
        }
        let id = self.insert(key, value, now, timeout)?;
        Ok((id, evicted))
    }

    /// The tag of a key, in the index and in [`arrivals`](Self::arrivals).
    fn tag(&self, key: &FlowKey) -> u32 {
        self.index.tag(key)
    }

    /// The value of a slot.
    #[inline]
    pub fn get_mut(&mut self, id: FlowId) -> Option<&mut T> {
        self.slots.get_mut(id as usize).and_then(|s| s.as_mut()).map(|s| &mut s.value)
    }

    /// Marks a packet at `now`, with the idle timeout the flow's state now has.
    #[inline]
    pub fn touch(&mut self, id: FlowId, now: u64, timeout: u64) {
        if let Some(Some(s)) = self.slots.get_mut(id as usize) {
            s.last_seen = now;
            s.timeout = timeout;
        }
    }

    /// Removes a flow, giving back its key and value.
    pub fn remove(&mut self, id: FlowId) -> Option<(FlowKey, T)> {
        let s = self.slots.get_mut(id as usize)?.take()?;
        self.index.remove(self.index.tag(&s.key), id);
        self.free.push(id);
        Some((s.key, s.value))
    }

    /// Looks at up to `budget` slots from the clock hand and removes those idle
    /// past their timeout at `now`, handing each to `expired`.
    pub fn expire(&mut self, now: u64, budget: usize, mut expired: impl FnMut(FlowKey, T)) {
        let n = self.slots.len();
        if n == 0 {
            return;
        }
        for _ in 0..budget.min(n) {
            self.hand = (self.hand + 1) % n;
            let due = matches!(&self.slots[self.hand], Some(s) if now.saturating_sub(s.last_seen) > s.timeout);
            if due {
                if let Some((k, v)) = self.remove(self.hand as FlowId) {
                    expired(k, v);
                }
            }
        }
    }

    /// Removes every flow (at shutdown), handing each to `f`.
    pub fn drain(&mut self, mut f: impl FnMut(FlowKey, T)) {
        for id in 0..self.slots.len() {
            if let Some((k, v)) = self.remove(id as FlowId) {
                f(k, v);
            }
        }
    }
}

/// The index: `entries[i]` is 0 (empty) or a key's tag in the high 32 bits
/// and its slot + 1 in the low 32. An entry's home is its tag's low bits;
/// it sits there or after it, with no empty entry between (linear probing),
/// and removal shifts later entries back so that this stays true (no
/// tombstones: a table that sees millions of flows come and go never slows).
struct Index {
    entries: Vec<u64>,
    len: usize,
    // aHash with per-process random keys: fast, and keys chosen by whoever
    // sends the packets cannot be made to collide on purpose.
    hasher: ahash::RandomState,
}

impl Index {
    /// Entries to begin with (grows with use: an index sized for the maximum
    /// up front spreads a few flows over megabytes, and every lookup misses).
    const FIRST: usize = 1024;

    fn new() -> Index {
        Index { entries: vec![0; Self::FIRST], len: 0, hasher: ahash::RandomState::new() }
    }

    #[inline]
    fn tag(&self, key: &FlowKey) -> u32 {
        self.hasher.hash_one(key) as u32
    }

    #[inline]
    fn mask(&self) -> usize {
        self.entries.len() - 1
    }

    #[inline]
    fn home(&self, tag: u32) -> usize {
        tag as usize & self.mask()
    }

    /// The slot among those tagged `tag` that `is` says holds the key.
    #[inline]
    fn find(&self, tag: u32, is: impl Fn(FlowId) -> bool) -> Option<FlowId> {
        let mask = self.mask();
        let mut i = self.home(tag);
        loop {
            let e = self.entries[i];
            if e == 0 {
                return None;
            }
            if (e >> 32) as u32 == tag && is((e as u32) - 1) {
                return Some((e as u32) - 1);
            }
            i = (i + 1) & mask;
        }
    }

    fn insert(&mut self, tag: u32, id: FlowId) {
        if 2 * (self.len + 1) > self.entries.len() {
            self.grow();
        }
        self.place(u64::from(tag) << 32 | u64::from(id + 1));
        self.len += 1;
    }

    fn place(&mut self, e: u64) {
        let mask = self.mask();
        let mut i = self.home((e >> 32) as u32);
        while self.entries[i] != 0 {
            i = (i + 1) & mask;
        }
        self.entries[i] = e;
    }

    fn grow(&mut self) {
        let bigger = vec![0; 2 * self.entries.len()];
        let old = std::mem::replace(&mut self.entries, bigger);
        for e in old.into_iter().filter(|&e| e != 0) {
            self.place(e);
        }
    }

    /// Removes slot `id`'s entry (tagged `tag`).
    fn remove(&mut self, tag: u32, id: FlowId) {
        let mask = self.mask();
        let want = u64::from(tag) << 32 | u64::from(id + 1);
        let mut i = self.home(tag);
        loop {
            match self.entries[i] {
                0 => return, // not there (cannot happen: every slot has its entry)
                e if e == want => break,
                _ => i = (i + 1) & mask,
            }
        }
        // Shift back each later entry of the run whose home is not in (i, j].
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let e = self.entries[j];
            if e == 0 {
                break;
            }
            let home = self.home((e >> 32) as u32);
            let stays = if i <= j { i < home && home <= j } else { i < home || home <= j };
            if !stays {
                self.entries[i] = e;
                i = j;
            }
        }
        self.entries[i] = 0;
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: u16) -> FlowKey {
        FlowKey { lo_addr: [1; 16], hi_addr: [2; 16], lo_port: p, hi_port: 443, vlan: 0 }
    }

    #[test]
    fn both_directions_share_a_key() {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 9], [10, 0, 0, 2], 64)
            .tcp(5555, 443, 1, 1)
            .write(&mut v, &[])
            .unwrap();
        let mut a = crate::packet::TcpFrame::parse(&v).unwrap();
        let (k1, fwd1) = FlowKey::of(&a);
        std::mem::swap(&mut a.src, &mut a.dst);
        std::mem::swap(&mut a.src_port, &mut a.dst_port);
        let (k2, fwd2) = FlowKey::of(&a);
        assert_eq!(k1, k2);
        assert_ne!(fwd1, fwd2);
    }

    #[test]
    fn capacity_is_a_hard_bound_and_slots_are_reused() {
        let mut t = FlowTable::new(2);
        let a = t.insert(key(1), "a", 0, 10).unwrap();
        t.insert(key(2), "b", 0, 10).unwrap();
        assert_eq!(t.insert(key(3), "c", 0, 10), Err(InsertError::Full));
        assert_eq!(t.remove(a), Some((key(1), "a")));
        let c = t.insert(key(3), "c", 0, 10).unwrap();
        assert_eq!(c, a, "freed slot reused");
        assert_eq!(t.find(&key(3)), Some(c));
        assert_eq!(t.find(&key(1)), None);
    }

    #[test]
    fn a_full_table_forgets_the_oldest_flow_that_costs_nothing() {
        // Values: (port, worth keeping).
        let mut t = FlowTable::new(3);
        t.insert(key(1), (1, true), 0, 10).unwrap();
        t.insert(key(2), (2, false), 0, 10).unwrap();
        t.insert(key(3), (3, false), 0, 10).unwrap();
        let keep = |v: &(u16, bool)| !v.1;
        let (_, gone) = t.insert_evicting(key(4), (4, true), 1, 10, keep).unwrap();
        assert_eq!(gone, Some((key(2), (2, false))), "the oldest embryonic one, not the kept one");
        let (_, gone) = t.insert_evicting(key(5), (5, true), 1, 10, keep).unwrap();
        assert_eq!(gone, Some((key(3), (3, false))));
        // Nothing left to forget: the table is full.
        assert_eq!(t.insert_evicting(key(6), (6, false), 1, 10, keep).map(|_| ()), Err(InsertError::Full));
        assert!(t.find(&key(1)).is_some() && t.find(&key(4)).is_some() && t.find(&key(5)).is_some());
        // The arrival queue stays bounded however many flows come and go.
        let mut t = FlowTable::new(16);
        for p in 0..10_000u16 {
            let (id, _) = t.insert_evicting(key(p), (p, false), 0, 10, keep).unwrap();
            if p % 2 == 0 {
                t.remove(id);
            }
        }
        assert!(t.arrivals.len() <= 33, "{}", t.arrivals.len());
    }

    #[test]
    fn idle_flows_expire_by_their_own_timeout() {
        let mut t = FlowTable::new(10);
        let short = t.insert(key(1), 1, 0, 5).unwrap();
        t.insert(key(2), 2, 0, 100).unwrap();
        t.touch(short, 3, 5);
        let mut gone = Vec::new();
        t.expire(7, 10, |_, v| gone.push(v));
        assert!(gone.is_empty(), "3 + 5 > 7");
        t.expire(9, 10, |_, v| gone.push(v));
        assert_eq!(gone, vec![1]);
        t.expire(200, 10, |_, v| gone.push(v));
        assert_eq!(gone, vec![1, 2]);
        assert!(t.is_empty());
    }

    fn xorshift(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    #[test]
    fn the_index_agrees_with_a_model_through_collisions_wraparound_growth_and_removals() {
        let mut rng = xorshift(0x9e37_79b9_7f4a_7c15);
        let mut ix = Index::new();
        // (id, tag) of the entries that should be there.
        let mut live: Vec<(FlowId, u32)> = Vec::new();
        let mut next: FlowId = 0;
        for step in 0..300_000u32 {
            // Few distinct homes: long runs that wrap around the end and
            // collide; the population swings past the point where it grows.
            let target = if (step / 20_000) % 2 == 0 { 700 } else { 200 };
            let r = rng();
            if live.is_empty() || (live.len() < target && !r.is_multiple_of(4)) || r.is_multiple_of(7) {
                // Homes at the end and at the start of the table, whatever its size.
                let k = (rng() % 24) as u32;
                let tag = if rng().is_multiple_of(2) { u32::MAX - k } else { k };
                ix.insert(tag, next);
                live.push((next, tag));
                next += 1;
            } else {
                let (id, tag) = live.swap_remove((rng() % live.len() as u64) as usize);
                ix.remove(tag, id);
                assert_eq!(ix.find(tag, |x| x == id), None, "step {step}: removed {id} still found");
            }
            assert_eq!(ix.len, live.len());
            if step.is_multiple_of(997) {
                for &(id, tag) in &live {
                    assert_eq!(ix.find(tag, |x| x == id), Some(id), "step {step}: {id} lost");
                }
                assert_eq!(ix.entries.iter().filter(|&&e| e != 0).count(), live.len());
            }
        }
        assert!(ix.entries.len() >= 2 * 700, "it grew: {}", ix.entries.len());
    }

    #[test]
    fn the_table_finds_what_a_hash_map_finds() {
        let mut rng = xorshift(0x2545_f491_4f6c_dd1d);
        let mut t = FlowTable::new(5_000);
        let mut model: std::collections::HashMap<FlowKey, (FlowId, u64)> = std::collections::HashMap::new();
        for step in 0..100_000u64 {
            let k = key((rng() % 8_000) as u16);
            match (model.get(&k).copied(), rng() % 3) {
                (Some((id, v)), 0) => {
                    assert_eq!(t.remove(id), Some((k, v)), "step {step}");
                    model.remove(&k);
                }
                (Some((id, _)), _) => assert_eq!(t.find(&k), Some(id), "step {step}"),
                (None, _) => {
                    assert_eq!(t.find(&k), None, "step {step}");
                    if let Ok(id) = t.insert(k, step, 0, 10) {
                        model.insert(k, (id, step));
                    } else {
                        assert_eq!(model.len(), 5_000);
                    }
                }
            }
            assert_eq!(t.len(), model.len());
        }
        for (k, (id, v)) in model {
            assert_eq!(t.find(&k), Some(id));
            assert_eq!(t.get_mut(id), Some(&mut v.clone()));
        }
    }
}
