//! What earlier handshakes showed about servers, consulted at the ClientHello:
//! the server identity cache (Firepower's "session data cache") and the
//! exclusion cache of servers that recently could not be decrypted.
//!
//! Both are plain bounded data structures: the caller passes `now_ns` in, and
//! nothing here reads a clock. When full, each evicts the entry learned
//! longest ago, in O(1) amortised: a map from key to (value, generation) plus
//! a FIFO of (key, generation) in learning order; a FIFO slot whose generation
//! no longer matches the map (the key was relearned or removed) is stale and
//! skipped (lazy deletion), and the FIFO is compacted when stale slots
//! outnumber live ones.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;

use ahash::RandomState;
use tlsgate_config::facts::{CertStatusSet, CertificateFacts, TlsVersion};
use tlsgate_config::policy::{FinalAction, Undecryptable};

/// A server as sessions reach it: address, port and the SNI the client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey {
    /// The server's address.
    pub ip: IpAddr,
    /// The server's port.
    pub port: u16,
    /// The SNI, lower-case (`None`: the ClientHello had none). A server can
    /// present different certificates for different names, so each SNI (and
    /// its absence) is its own key.
    pub sni: Option<String>,
}

impl ServerKey {
    /// A key with the SNI lower-cased.
    pub fn new(ip: IpAddr, port: u16, sni: Option<&str>) -> ServerKey {
        ServerKey { ip, port, sni: sni.map(str::to_ascii_lowercase) }
    }
}

/// What one handshake showed about a server.
#[derive(Debug, Clone)]
pub struct ServerIdentity {
    /// Facts about the server's leaf certificate (`None`: not seen, e.g. TLS 1.3 observed passively).
    pub certificate: Option<Arc<CertificateFacts>>,
    /// The chain as sent, DER, leaf first; empty if unknown. Shared: each
    /// session to the server is judged on it.
    pub chain: Arc<[Vec<u8>]>,
    /// The leaf's status against the trust store, if it was checked.
    pub cert_status: Option<CertStatusSet>,
    /// The negotiated version.
    pub version: Option<TlsVersion>,
    /// The negotiated cipher suite.
    pub cipher_suite: Option<u16>,
    /// The server asked for a client certificate.
    pub client_cert_requested: bool,
    /// When this was learned (ns, the caller's clock).
    pub learned_at_ns: u64,
}

impl ServerIdentity {
    /// Whether `other` shows a different leaf certificate than `self`. Unknown
    /// on either side (no chain and no certificate facts) is no change.
    fn leaf_differs(&self, other: &ServerIdentity) -> bool {
        if let (Some(a), Some(b)) = (self.chain.first(), other.chain.first()) {
            return a != b;
        }
        match (&self.certificate, &other.certificate) {
            (Some(a), Some(b)) => a.sha256 != b.sha256,
            _ => false,
        }
    }
}

/// Counters of a [`ServerIdentityCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdentityCacheStats {
    /// Lookups that found a live entry.
    pub hits: u64,
    /// Lookups that found nothing usable (absent or expired).
    pub misses: u64,
    /// Of the misses, those that found an expired entry (and removed it).
    pub expired: u64,
    /// Entries evicted to make room.
    pub evicted: u64,
    /// Learns that replaced an entry whose leaf certificate differed.
    pub certificate_changes: u64,
}

/// Firepower's "session data cache": what earlier handshakes showed about a
/// server, consulted at the ClientHello.
pub struct ServerIdentityCache {
    entries: BoundedFifoMap<ServerKey, ServerIdentity>,
    ttl_ns: u64,
    stats: IdentityCacheStats,
}

impl ServerIdentityCache {
    /// A cache of at most `capacity` servers (at least 1), whose entries live `ttl_ns`.
    pub fn new(capacity: usize, ttl_ns: u64) -> Self {
        ServerIdentityCache { entries: BoundedFifoMap::new(capacity), ttl_ns, stats: IdentityCacheStats::default() }
    }

    /// Records what a handshake showed about `key`, replacing what was known.
    /// A different leaf than the one recorded counts as a certificate change.
    /// When full, the entry learned longest ago is evicted.
    pub fn learn(&mut self, key: ServerKey, identity: ServerIdentity) {
        if let Some(old) = self.entries.get(&key) {
            if old.leaf_differs(&identity) {
                self.stats.certificate_changes += 1;
            }
        }
        self.stats.evicted += self.entries.insert(key, identity);
    }

    /// What is known about `key`: `None` when absent, or when learned more
    /// than the TTL before `now_ns` (the entry is then removed).
    pub fn get(&mut self, key: &ServerKey, now_ns: u64) -> Option<&ServerIdentity> {
        let learned_at = match self.entries.get(key) {
            None => {
                self.stats.misses += 1;
                return None;
            }
            Some(identity) => identity.learned_at_ns,
        };
        if now_ns.saturating_sub(learned_at) > self.ttl_ns {
            self.entries.remove(key);
            self.stats.misses += 1;
            self.stats.expired += 1;
            return None;
        }
        self.stats.hits += 1;
        self.entries.get(key)
    }

    /// Forgets `key` (e.g. after its certificate changed); returns what was known.
    pub fn remove(&mut self, key: &ServerKey) -> Option<ServerIdentity> {
        self.entries.remove(key)
    }

    /// Number of entries (expired ones included until looked up or evicted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }

    /// The counters so far.
    pub fn stats(&self) -> IdentityCacheStats {
        self.stats
    }
}

/// What an exclusion applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ExclusionKey {
    /// Every session to this server address and port.
    Server {
        /// The server's address.
        ip: IpAddr,
        /// The server's port.
        port: u16,
    },
    /// Every session whose SNI is this name (lower-case).
    Sni(String),
}

/// An exclusion: how sessions it applies to are handled, why, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclusion {
    /// The action sessions get at the ClientHello.
    pub action: FinalAction,
    /// Why the server is excluded.
    pub reason: ExclusionReason,
    /// The exclusion lapses at this time (ns, the caller's clock).
    pub until_ns: u64,
}

/// Why a server is excluded from decryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExclusionReason {
    /// A session to it was undecryptable for this reason.
    Undecryptable(Undecryptable),
    /// The client rejected the forged certificate (certificate pinning).
    ClientRejectedCertificate,
    /// The server no longer presents the certificate of its known key.
    CertificateChanged,
}

/// Counters of an [`ExclusionCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExclusionCacheStats {
    /// Lookups that found an exclusion in force.
    pub hits: u64,
    /// Lookups that found none.
    pub misses: u64,
    /// Exclusions found lapsed (and removed) during lookups.
    pub expired: u64,
    /// Exclusions evicted to make room.
    pub evicted: u64,
}

/// Servers (and SNIs) that could not be decrypted recently: later sessions to
/// them are handled at the ClientHello by the recorded action.
pub struct ExclusionCache {
    by_sni: BoundedFifoMap<String, Exclusion>,
    by_server: BoundedFifoMap<(IpAddr, u16), Exclusion>,
    capacity: usize,
    ttl_ns: u64,
    stats: ExclusionCacheStats,
}

impl ExclusionCache {
    /// A cache of at most `capacity` exclusions (at least 1; SNIs and servers
    /// together), each in force for `ttl_ns` after it is made.
    pub fn new(capacity: usize, ttl_ns: u64) -> Self {
        let capacity = capacity.max(1);
        ExclusionCache {
            // Each map may hold everything; the shared bound is enforced in `exclude`.
            by_sni: BoundedFifoMap::new(capacity),
            by_server: BoundedFifoMap::new(capacity),
            capacity,
            ttl_ns,
            stats: ExclusionCacheStats::default(),
        }
    }

    /// Excludes `key` until `now_ns` + TTL, replacing an earlier exclusion of
    /// it. An SNI is lower-cased. When full, the oldest exclusion is evicted
    /// (of the two kinds, the one made longest ago).
    pub fn exclude(&mut self, key: ExclusionKey, action: FinalAction, reason: ExclusionReason, now_ns: u64) {
        let exclusion = Exclusion { action, reason, until_ns: now_ns.saturating_add(self.ttl_ns) };
        let present = match &key {
            ExclusionKey::Sni(name) => self.by_sni.get(&name.to_ascii_lowercase()).is_some(),
            ExclusionKey::Server { ip, port } => self.by_server.get(&(*ip, *port)).is_some(),
        };
        if !present && self.len() >= self.capacity {
            // Evict the older of the two maps' oldest entries (generations are
            // comparable: both maps draw them from the same counter).
            let sni_gen = self.by_sni.oldest_generation();
            let server_gen = self.by_server.oldest_generation();
            let evicted = match (sni_gen, server_gen) {
                (Some(a), Some(b)) if a < b => self.by_sni.evict_oldest(),
                (Some(_), None) => self.by_sni.evict_oldest(),
                _ => self.by_server.evict_oldest(),
            };
            self.stats.evicted += u64::from(evicted);
        }
        // Share one generation counter between both maps so that their ages compare.
        let generation = self.by_sni.next_generation.max(self.by_server.next_generation);
        self.by_sni.next_generation = generation;
        self.by_server.next_generation = generation;
        let evicted = match key {
            ExclusionKey::Sni(name) => self.by_sni.insert(name.to_ascii_lowercase(), exclusion),
            ExclusionKey::Server { ip, port } => self.by_server.insert((ip, port), exclusion),
        };
        self.stats.evicted += evicted;
    }

    /// The exclusion that applies to a session: its SNI (expected lower-case,
    /// as the ClientHello facts give it) first, then its server address and
    /// port. Lapsed exclusions found on the way are removed.
    pub fn lookup(&mut self, ip: IpAddr, port: u16, sni: Option<&str>, now_ns: u64) -> Option<&Exclusion> {
        let sni_live = match sni {
            Some(name) => live(&mut self.by_sni, name, now_ns, &mut self.stats),
            None => false,
        };
        let server_live = !sni_live && live(&mut self.by_server, &(ip, port), now_ns, &mut self.stats);
        if sni_live {
            self.stats.hits += 1;
            return sni.and_then(|name| self.by_sni.get(name));
        }
        if server_live {
            self.stats.hits += 1;
            return self.by_server.get(&(ip, port));
        }
        self.stats.misses += 1;
        None
    }

    /// Lifts the exclusion of `key`, if any.
    pub fn remove(&mut self, key: &ExclusionKey) -> Option<Exclusion> {
        match key {
            ExclusionKey::Sni(name) => self.by_sni.remove(&name.to_ascii_lowercase()),
            ExclusionKey::Server { ip, port } => self.by_server.remove(&(*ip, *port)),
        }
    }

    /// Number of exclusions (lapsed ones included until looked up or evicted).
    pub fn len(&self) -> usize {
        self.by_sni.len() + self.by_server.len()
    }

    /// Whether there is no exclusion.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The counters so far.
    pub fn stats(&self) -> ExclusionCacheStats {
        self.stats
    }
}

/// Whether `map` holds an exclusion for `key` in force at `now_ns`; a lapsed one is removed.
fn live<K, Q>(map: &mut BoundedFifoMap<K, Exclusion>, key: &Q, now_ns: u64, stats: &mut ExclusionCacheStats) -> bool
where
    K: Hash + Eq + Clone + std::borrow::Borrow<Q>,
    Q: Hash + Eq + ?Sized,
{
    match map.get(key) {
        None => false,
        Some(exclusion) if now_ns < exclusion.until_ns => true,
        Some(_) => {
            map.remove(key);
            stats.expired += 1;
            false
        }
    }
}

/// A map bounded to `capacity` entries that evicts the entry inserted longest
/// ago: generations in a FIFO with lazy deletion (see the module comment).
struct BoundedFifoMap<K, V> {
    map: HashMap<K, (V, u64), RandomState>,
    order: VecDeque<(K, u64)>,
    capacity: usize,
    next_generation: u64,
}

impl<K: Hash + Eq + Clone, V> BoundedFifoMap<K, V> {
    fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        BoundedFifoMap {
            map: HashMap::with_capacity_and_hasher(capacity.min(1 << 16), RandomState::new()),
            order: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity,
            next_generation: 0,
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key).map(|(v, _)| v)
    }

    fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // Its FIFO slot goes stale and is skipped later.
        self.map.remove(key).map(|(v, _)| v)
    }

    /// Inserts or replaces; returns how many entries were evicted (0 or 1).
    fn insert(&mut self, key: K, value: V) -> u64 {
        let generation = self.next_generation;
        self.next_generation += 1;
        let mut evicted = 0;
        if !self.map.contains_key(&key) && self.map.len() >= self.capacity && self.evict_oldest() {
            evicted = 1;
        }
        self.order.push_back((key.clone(), generation));
        self.map.insert(key, (value, generation));
        self.compact_if_stale();
        evicted
    }

    /// The generation of the live entry inserted longest ago.
    fn oldest_generation(&mut self) -> Option<u64> {
        self.drop_stale_front();
        self.order.front().map(|(_, g)| *g)
    }

    /// Removes the live entry inserted longest ago; false if empty.
    fn evict_oldest(&mut self) -> bool {
        self.drop_stale_front();
        match self.order.pop_front() {
            Some((key, _)) => self.map.remove(&key).is_some(),
            None => false,
        }
    }

    fn drop_stale_front(&mut self) {
        while let Some((key, generation)) = self.order.front() {
            if self.map.get(key).is_some_and(|(_, g)| g == generation) {
                return;
            }
            self.order.pop_front();
        }
    }

    /// Keeps the FIFO within twice the live entries (plus slack), so that
    /// relearning the same keys does not grow it without bound.
    fn compact_if_stale(&mut self) {
        if self.order.len() > 2 * self.map.len() + 16 {
            let map = &self.map;
            self.order.retain(|(key, generation)| map.get(key).is_some_and(|(_, g)| g == generation));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const SEC: u64 = 1_000_000_000;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn key(last: u8, sni: Option<&str>) -> ServerKey {
        ServerKey::new(ip(last), 443, sni)
    }

    fn identity(leaf: &[u8], at: u64) -> ServerIdentity {
        ServerIdentity {
            certificate: None,
            chain: vec![leaf.to_vec()].into(),
            cert_status: None,
            version: Some(TlsVersion::Tls12),
            cipher_suite: Some(0xc02f),
            client_cert_requested: false,
            learned_at_ns: at,
        }
    }

    #[test]
    fn learn_then_get() {
        let mut cache = ServerIdentityCache::new(8, 60 * SEC);
        assert!(cache.is_empty());
        cache.learn(key(1, Some("a.example")), identity(b"leaf-a", 0));
        let got = cache.get(&key(1, Some("a.example")), SEC).expect("learned");
        assert_eq!(got.chain[0], b"leaf-a");
        assert_eq!(got.cipher_suite, Some(0xc02f));
        assert!(cache.get(&key(2, Some("a.example")), SEC).is_none());
        assert_eq!(cache.len(), 1);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.expired), (1, 1, 0));
    }

    #[test]
    fn server_key_lower_cases_the_sni() {
        assert_eq!(ServerKey::new(ip(1), 443, Some("WWW.Example.COM")).sni.as_deref(), Some("www.example.com"));
    }

    #[test]
    fn sni_none_and_some_are_different_servers() {
        let mut cache = ServerIdentityCache::new(8, 60 * SEC);
        cache.learn(key(1, None), identity(b"default", 0));
        cache.learn(key(1, Some("a.example")), identity(b"named", 0));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&key(1, None), 0).unwrap().chain[0], b"default");
        assert_eq!(cache.get(&key(1, Some("a.example")), 0).unwrap().chain[0], b"named");
        assert!(cache.get(&key(1, Some("b.example")), 0).is_none());
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let mut cache = ServerIdentityCache::new(8, 10 * SEC);
        cache.learn(key(1, None), identity(b"x", 5 * SEC));
        assert!(cache.get(&key(1, None), 15 * SEC).is_some(), "age == ttl is still fresh");
        assert!(cache.get(&key(1, None), 15 * SEC + 1).is_none());
        assert!(cache.is_empty(), "expired entry removed");
        assert!(cache.get(&key(1, None), 0).is_none());
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.expired), (1, 2, 1));
    }

    #[test]
    fn capacity_holds_and_the_oldest_learned_goes_first() {
        let mut cache = ServerIdentityCache::new(3, u64::MAX);
        for i in 1..=3 {
            cache.learn(key(i, None), identity(&[i], u64::from(i)));
        }
        // Relearning 1 makes it the newest: 2 is now the oldest.
        cache.learn(key(1, None), identity(&[1], 10));
        cache.learn(key(4, None), identity(&[4], 11));
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&key(2, None), 12).is_none(), "oldest evicted");
        for i in [1, 3, 4] {
            assert!(cache.get(&key(i, None), 12).is_some(), "{i} kept");
        }
        cache.learn(key(5, None), identity(&[5], 13));
        assert!(cache.get(&key(3, None), 14).is_none(), "next oldest evicted");
        assert_eq!(cache.stats().evicted, 2);
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn relearning_many_times_keeps_the_fifo_bounded() {
        let mut cache = ServerIdentityCache::new(4, u64::MAX);
        for round in 0..10_000u64 {
            cache.learn(key((round % 4) as u8, None), identity(b"x", round));
        }
        assert_eq!(cache.len(), 4);
        assert!(cache.entries.order.len() <= 2 * 4 + 17);
        assert_eq!(cache.stats().evicted, 0);
    }

    #[test]
    fn a_different_leaf_counts_as_a_certificate_change() {
        let mut cache = ServerIdentityCache::new(8, 60 * SEC);
        cache.learn(key(1, None), identity(b"one", 0));
        cache.learn(key(1, None), identity(b"one", 1));
        assert_eq!(cache.stats().certificate_changes, 0);
        cache.learn(key(1, None), identity(b"two", 2));
        assert_eq!(cache.stats().certificate_changes, 1);
        assert_eq!(cache.get(&key(1, None), 3).unwrap().chain[0], b"two");
        // Unknown leaf (e.g. TLS 1.3 seen passively) is not a change.
        let mut unknown = identity(b"", 4);
        unknown.chain = Vec::new().into();
        cache.learn(key(1, None), unknown);
        assert_eq!(cache.stats().certificate_changes, 1);
        // By certificate facts when no chain is known.
        let facts = |b: u8| Arc::new(CertificateFacts { sha256: [b; 32], ..CertificateFacts::default() });
        let mut a = identity(b"", 5);
        a.chain = Vec::new().into();
        a.certificate = Some(facts(1));
        let mut b = a.clone();
        b.certificate = Some(facts(2));
        cache.learn(key(2, None), a);
        cache.learn(key(2, None), b);
        assert_eq!(cache.stats().certificate_changes, 2);
        assert_eq!(cache.len(), 2);
    }

    fn undecryptable() -> ExclusionReason {
        ExclusionReason::Undecryptable(Undecryptable::ClientAuth)
    }

    #[test]
    fn exclusion_by_sni() {
        let mut cache = ExclusionCache::new(8, 10 * SEC);
        cache.exclude(ExclusionKey::Sni("Pinned.Example".into()), FinalAction::DoNotDecrypt, undecryptable(), 0);
        let ex = cache.lookup(ip(9), 443, Some("pinned.example"), SEC).expect("excluded by SNI");
        assert_eq!(ex.action, FinalAction::DoNotDecrypt);
        assert_eq!(ex.reason, undecryptable());
        assert_eq!(ex.until_ns, 10 * SEC);
        assert!(cache.lookup(ip(9), 443, Some("other.example"), SEC).is_none());
        assert!(cache.lookup(ip(9), 443, None, SEC).is_none());
    }

    #[test]
    fn exclusion_by_server() {
        let mut cache = ExclusionCache::new(8, 10 * SEC);
        let server = ExclusionKey::Server { ip: ip(1), port: 443 };
        cache.exclude(server, FinalAction::Block, ExclusionReason::CertificateChanged, 0);
        assert_eq!(cache.lookup(ip(1), 443, None, 1).unwrap().action, FinalAction::Block);
        assert_eq!(cache.lookup(ip(1), 443, Some("any.example"), 1).unwrap().action, FinalAction::Block);
        assert!(cache.lookup(ip(1), 8443, None, 1).is_none(), "port matters");
        assert!(cache.lookup(ip(2), 443, None, 1).is_none());
    }

    #[test]
    fn exclusions_lapse() {
        let mut cache = ExclusionCache::new(8, 10 * SEC);
        cache.exclude(ExclusionKey::Server { ip: ip(1), port: 443 }, FinalAction::Block, undecryptable(), SEC);
        assert!(cache.lookup(ip(1), 443, None, 11 * SEC - 1).is_some());
        assert!(cache.lookup(ip(1), 443, None, 11 * SEC).is_none());
        assert!(cache.is_empty(), "lapsed exclusion removed");
        assert_eq!(cache.stats().expired, 1);
        // Excluding again renews it.
        cache.exclude(ExclusionKey::Server { ip: ip(1), port: 443 }, FinalAction::Block, undecryptable(), 20 * SEC);
        assert!(cache.lookup(ip(1), 443, None, 25 * SEC).is_some());
    }

    #[test]
    fn sni_takes_precedence_over_the_server() {
        let mut cache = ExclusionCache::new(8, 10 * SEC);
        cache.exclude(ExclusionKey::Server { ip: ip(1), port: 443 }, FinalAction::Block, undecryptable(), 0);
        cache.exclude(
            ExclusionKey::Sni("app.example".into()),
            FinalAction::DoNotDecrypt,
            ExclusionReason::ClientRejectedCertificate,
            5 * SEC,
        );
        let ex = cache.lookup(ip(1), 443, Some("app.example"), 6 * SEC).unwrap();
        assert_eq!(ex.reason, ExclusionReason::ClientRejectedCertificate);
        assert_eq!(cache.lookup(ip(1), 443, Some("web.example"), 6 * SEC).unwrap().action, FinalAction::Block);
        // When the server's exclusion lapses the SNI's still applies, and vice versa.
        assert_eq!(cache.lookup(ip(1), 443, Some("app.example"), 12 * SEC).unwrap().action, FinalAction::DoNotDecrypt);
        assert!(cache.lookup(ip(1), 443, None, 12 * SEC).is_none());
        assert!(cache.lookup(ip(1), 443, Some("app.example"), 15 * SEC).is_none());
    }

    #[test]
    fn exclusion_capacity_is_shared_and_evicts_the_oldest() {
        let mut cache = ExclusionCache::new(3, u64::MAX);
        cache.exclude(ExclusionKey::Sni("a.example".into()), FinalAction::Block, undecryptable(), 0);
        cache.exclude(ExclusionKey::Server { ip: ip(1), port: 443 }, FinalAction::Block, undecryptable(), 1);
        cache.exclude(ExclusionKey::Sni("b.example".into()), FinalAction::Block, undecryptable(), 2);
        cache.exclude(ExclusionKey::Server { ip: ip(2), port: 443 }, FinalAction::Block, undecryptable(), 3);
        assert_eq!(cache.len(), 3);
        assert!(cache.lookup(ip(9), 443, Some("a.example"), 4).is_none(), "oldest (an SNI) evicted");
        cache.exclude(ExclusionKey::Sni("c.example".into()), FinalAction::Block, undecryptable(), 5);
        assert!(cache.lookup(ip(1), 443, None, 6).is_none(), "then the oldest server");
        assert!(cache.lookup(ip(9), 443, Some("b.example"), 6).is_some());
        assert!(cache.lookup(ip(2), 443, None, 6).is_some());
        assert!(cache.lookup(ip(9), 443, Some("c.example"), 6).is_some());
        assert_eq!(cache.stats().evicted, 2);
        assert_eq!(cache.len(), 3);
    }
}
