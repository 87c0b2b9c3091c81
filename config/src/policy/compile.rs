//! Compiling a checked policy's rules: for each kind of condition, an index
//! from a fact's value to the bitset of rules whose condition that value
//! satisfies, plus the bitset of rules that do not constrain that kind.
//! Evaluating a session is then a few look-ups and bitset ANDs, whatever the
//! number of rules.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

use ipnet::IpNet;

use super::action::{Action, RuleInfo};
use super::file::{DnPattern, NamePattern, RuleSpec, DN_ATTRS};
use super::objects::{CertificateObject, KnownKey};
use crate::facts::{cipher_suite_name, CertStatus, CertStatusSet, TlsVersion};

/// What compiling a policy's rules gives: the rules as listed, their
/// conditions in words, and the indexes that evaluation walks.
pub(super) struct Compiled {
    /// The rules in order, disabled ones included.
    pub rules: Vec<RuleInfo>,
    /// Each rule's conditions in words, for summaries.
    pub conditions: Vec<String>,
    /// (rule, SHA-256 of its known key's certificate) for every decrypt-known-key rule: such a
    /// rule applies only while the server presents exactly that certificate.
    pub known_key_rules: Vec<(usize, [u8; 32])>,
    /// Some enabled rule decrypts.
    pub may_decrypt: bool,
    /// Per condition type, the rules each value satisfies.
    pub index: RuleIndex,
}

/// Compiles checked rules into their indexes. `certificates` and `known_keys`
/// are the objects the rules' indexes point into.
pub(super) fn compile(rules: Vec<RuleSpec>, certificates: &[CertificateObject], known_keys: &[KnownKey]) -> Compiled {
    let mut index = RuleIndex::new(rules.len());
    for (i, r) in rules.iter().enumerate() {
        index.add(i, r, certificates);
    }
    index.finish();
    let conditions = rules.iter().map(|r| describe(r, certificates)).collect();
    let rules = rules
        .into_iter()
        .map(|r| RuleInfo { name: r.name, action: r.action.unwrap_or(Action::Monitor), enabled: r.enabled })
        .collect::<Vec<RuleInfo>>();
    let known_key_rules = rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r.action {
            Action::DecryptKnownKey { known_key, .. } => known_keys.get(known_key).map(|k| (i, k.cert_sha256)),
            _ => None,
        })
        .collect();
    let may_decrypt = rules.iter().any(|r| r.enabled && r.action.is_decrypt());
    Compiled { rules, conditions, known_key_rules, may_decrypt, index }
}

// ---------------------------------------------------------------------------
// Bitsets.

/// A set of rules, bit i = rule i.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Bits(Box<[u64]>);

impl Bits {
    pub fn zeros(words: usize) -> Bits {
        Bits(vec![0; words].into_boxed_slice())
    }

    pub fn ones(n: usize) -> Bits {
        let mut b = Bits::zeros(n.div_ceil(64));
        for i in 0..n {
            b.set(i);
        }
        b
    }

    pub fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    pub fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    pub fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub fn words(&self) -> &[u64] {
        &self.0
    }

    pub fn copy_from(&mut self, other: &Bits) {
        self.0.copy_from_slice(&other.0);
    }

    pub fn or_assign(&mut self, other: &Bits) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a |= b;
        }
    }

    pub fn and_assign(&mut self, other: &Bits) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a &= b;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }
}

// ---------------------------------------------------------------------------
// Indexes, one kind per condition type.

/// A condition type: which rules it leaves free, and whether any rule uses it at all.
#[derive(Debug)]
pub(super) struct Free {
    /// Rules without this condition.
    pub bits: Bits,
    /// Some rule has this condition (else the type is skipped at evaluation).
    pub used: bool,
}

impl Free {
    fn new(n: usize) -> Free {
        Free { bits: Bits::ones(n), used: false }
    }

    fn constrain(&mut self, rule: usize) {
        self.bits.clear(rule);
        self.used = true;
    }
}

/// Exact values: VLAN, ingress port, cipher suite, version, certificate fingerprint.
#[derive(Debug)]
pub(super) struct ExactIndex<K: Hash + Eq> {
    pub free: Free,
    pub map: HashMap<K, Bits>,
    words: usize,
}

impl<K: Hash + Eq> ExactIndex<K> {
    fn new(n: usize) -> Self {
        ExactIndex { free: Free::new(n), map: HashMap::new(), words: n.div_ceil(64) }
    }

    fn add(&mut self, rule: usize, keys: impl IntoIterator<Item = K>) {
        self.free.constrain(rule);
        for k in keys {
            let words = self.words;
            self.map.entry(k).or_insert_with(|| Bits::zeros(words)).set(rule);
        }
    }

    /// ORs into `out` the rules `key` satisfies.
    pub fn matches<Q>(&self, key: &Q, out: &mut Bits)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(b) = self.map.get(key) {
            out.or_assign(b);
        }
    }
}

/// Host-name patterns (SNI, and one DN attribute): exact names, and `*.` wildcards
/// keyed by what follows the first label.
#[derive(Debug)]
pub(super) struct NameIndex {
    exact: HashMap<String, Bits>,
    wildcard: HashMap<String, Bits>,
    words: usize,
}

impl NameIndex {
    fn new(words: usize) -> NameIndex {
        NameIndex { exact: HashMap::new(), wildcard: HashMap::new(), words }
    }

    fn add(&mut self, rule: usize, p: &NamePattern) {
        let (map, key) = match p {
            NamePattern::Exact(s) => (&mut self.exact, s),
            NamePattern::Wildcard(s) => (&mut self.wildcard, s),
        };
        let words = self.words;
        map.entry(key.clone()).or_insert_with(|| Bits::zeros(words)).set(rule);
    }

    /// ORs into `out` the rules `name` (lower case) satisfies.
    pub fn matches(&self, name: &str, out: &mut Bits) {
        if let Some(b) = self.exact.get(name) {
            out.or_assign(b);
        }
        if self.wildcard.is_empty() {
            return;
        }
        // `*.example.com` takes exactly one more, non-empty, label.
        if let Some((first, rest)) = name.split_once('.') {
            if !first.is_empty() && !rest.is_empty() {
                if let Some(b) = self.wildcard.get(rest) {
                    out.or_assign(b);
                }
            }
        }
    }
}

/// `subject` or `issuer`: a name index per DN attribute type.
#[derive(Debug)]
pub(super) struct DnIndex {
    pub free: Free,
    pub attrs: Vec<NameIndex>,
}

impl DnIndex {
    fn new(n: usize) -> DnIndex {
        DnIndex { free: Free::new(n), attrs: (0..DN_ATTRS.len()).map(|_| NameIndex::new(n.div_ceil(64))).collect() }
    }

    fn add(&mut self, rule: usize, patterns: &[DnPattern]) {
        self.free.constrain(rule);
        for p in patterns {
            self.attrs[p.attr].add(rule, &p.value);
        }
    }
}

/// `sni`.
#[derive(Debug)]
pub(super) struct SniIndex {
    pub free: Free,
    pub names: NameIndex,
}

/// Networks: per prefix length, a map from the masked address to rules.
#[derive(Debug)]
pub(super) struct NetIndex {
    pub free: Free,
    pub v4: Vec<(u8, HashMap<u32, Bits>)>,
    pub v6: Vec<(u8, HashMap<u128, Bits>)>,
    words: usize,
}

impl NetIndex {
    fn new(n: usize) -> NetIndex {
        NetIndex { free: Free::new(n), v4: Vec::new(), v6: Vec::new(), words: n.div_ceil(64) }
    }

    fn add(&mut self, rule: usize, nets: &[IpNet]) {
        self.free.constrain(rule);
        let words = self.words;
        for net in nets {
            match net {
                IpNet::V4(n) => {
                    let len = n.prefix_len();
                    let key = u32::from(n.network());
                    let slot = match self.v4.iter().position(|(l, _)| *l == len) {
                        Some(p) => p,
                        None => {
                            self.v4.push((len, HashMap::new()));
                            self.v4.len() - 1
                        }
                    };
                    self.v4[slot].1.entry(key).or_insert_with(|| Bits::zeros(words)).set(rule);
                }
                IpNet::V6(n) => {
                    let len = n.prefix_len();
                    let key = u128::from(n.network());
                    let slot = match self.v6.iter().position(|(l, _)| *l == len) {
                        Some(p) => p,
                        None => {
                            self.v6.push((len, HashMap::new()));
                            self.v6.len() - 1
                        }
                    };
                    self.v6[slot].1.entry(key).or_insert_with(|| Bits::zeros(words)).set(rule);
                }
            }
        }
    }

    /// ORs into `out` the rules whose networks hold `addr`.
    pub fn matches(&self, addr: IpAddr, out: &mut Bits) {
        match addr.to_canonical() {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                for (len, map) in &self.v4 {
                    let mask = if *len == 0 { 0 } else { u32::MAX << (32 - u32::from(*len)) };
                    if let Some(b) = map.get(&(a & mask)) {
                        out.or_assign(b);
                    }
                }
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                for (len, map) in &self.v6 {
                    let mask = if *len == 0 { 0 } else { u128::MAX << (128 - u32::from(*len)) };
                    if let Some(b) = map.get(&(a & mask)) {
                        out.or_assign(b);
                    }
                }
            }
        }
    }
}

/// Ports: the port space cut into elementary intervals, each with the rules
/// whose ranges cover it; found by binary search.
#[derive(Debug)]
pub(super) struct PortIndex {
    pub free: Free,
    ranges: Vec<(usize, u16, u16)>,
    /// First port of each interval, ascending, starting at 0.
    starts: Vec<u32>,
    sets: Vec<Bits>,
}

impl PortIndex {
    fn new(n: usize) -> PortIndex {
        PortIndex { free: Free::new(n), ranges: Vec::new(), starts: vec![0], sets: Vec::new() }
    }

    fn add(&mut self, rule: usize, ranges: &[(u16, u16)]) {
        self.free.constrain(rule);
        self.ranges.extend(ranges.iter().map(|&(lo, hi)| (rule, lo, hi)));
    }

    fn finish(&mut self, words: usize) {
        let mut starts: Vec<u32> = vec![0];
        for &(_, lo, hi) in &self.ranges {
            starts.push(u32::from(lo));
            starts.push(u32::from(hi) + 1);
        }
        starts.retain(|&s| s <= 65535);
        starts.sort_unstable();
        starts.dedup();
        let mut sets = vec![Bits::zeros(words); starts.len()];
        for &(rule, lo, hi) in &self.ranges {
            let first = starts.partition_point(|&s| s < u32::from(lo));
            for (start, set) in starts[first..].iter().zip(&mut sets[first..]) {
                if *start > u32::from(hi) {
                    break;
                }
                set.set(rule);
            }
        }
        self.starts = starts;
        self.sets = sets;
        self.ranges = Vec::new();
    }

    /// ORs into `out` the rules whose ranges hold `port`.
    pub fn matches(&self, port: u16, out: &mut Bits) {
        // `starts[0]` is 0, so the point is at least 1.
        let i = self.starts.partition_point(|&s| s <= u32::from(port)).saturating_sub(1);
        if let Some(b) = self.sets.get(i) {
            out.or_assign(b);
        }
    }
}

/// `cert_status`: for each of the 2^11 status sets, the rules it satisfies.
#[derive(Debug)]
pub(super) struct StatusIndex {
    pub free: Free,
    tests: Vec<(usize, Vec<(CertStatus, bool)>)>,
    table: Vec<Bits>,
}

impl StatusIndex {
    fn finish(&mut self, words: usize) {
        if !self.free.used {
            return;
        }
        let size = 1usize << CertStatus::ALL.len();
        self.table = (0..size)
            .map(|set| {
                let set = CertStatusSet(set as u16);
                let mut b = Bits::zeros(words);
                for (rule, tests) in &self.tests {
                    if tests.iter().any(|&(s, want)| set.contains(s) == want) {
                        b.set(*rule);
                    }
                }
                b
            })
            .collect();
        self.tests = Vec::new();
    }

    /// ORs into `out` the rules `set` satisfies.
    pub fn matches(&self, set: CertStatusSet, out: &mut Bits) {
        if let Some(b) = self.table.get(usize::from(set.0) & (self.table.len().saturating_sub(1))) {
            out.or_assign(b);
        }
    }
}

/// The fact groups that can be missing, and the names evaluation reports them by.
pub(super) const GROUPS: [&str; 4] = ["sni", "server_hello", "certificate", "cert_status"];
pub(super) const SNI: usize = 0;
pub(super) const SERVER_HELLO: usize = 1;
pub(super) const CERTIFICATE: usize = 2;
pub(super) const CERT_STATUS: usize = 3;

/// Every index of a policy.
#[derive(Debug)]
pub(super) struct RuleIndex {
    pub words: usize,
    /// Enabled rules.
    pub enabled: Bits,
    /// Monitor rules.
    pub monitor: Bits,
    pub source_networks: NetIndex,
    pub dest_networks: NetIndex,
    pub source_ports: PortIndex,
    pub dest_ports: PortIndex,
    pub vlan: ExactIndex<u16>,
    pub ingress: ExactIndex<String>,
    pub transport: ExactIndex<String>,
    pub ech: ExactIndex<bool>,
    pub sni: SniIndex,
    pub cipher_suites: ExactIndex<u16>,
    pub versions: ExactIndex<TlsVersion>,
    pub subject: DnIndex,
    pub issuer: DnIndex,
    pub certificate: ExactIndex<[u8; 32]>,
    pub cert_status: StatusIndex,
    /// Per fact group ([`GROUPS`]): the rules with a condition on it.
    pub needs: [Bits; 4],
    /// Per fact group: some rule has a condition on it.
    pub needs_any: [bool; 4],
}

impl RuleIndex {
    fn new(n: usize) -> RuleIndex {
        let words = n.div_ceil(64);
        RuleIndex {
            words,
            enabled: Bits::zeros(words),
            monitor: Bits::zeros(words),
            source_networks: NetIndex::new(n),
            dest_networks: NetIndex::new(n),
            source_ports: PortIndex::new(n),
            dest_ports: PortIndex::new(n),
            vlan: ExactIndex::new(n),
            ingress: ExactIndex::new(n),
            transport: ExactIndex::new(n),
            ech: ExactIndex::new(n),
            sni: SniIndex { free: Free::new(n), names: NameIndex::new(words) },
            cipher_suites: ExactIndex::new(n),
            versions: ExactIndex::new(n),
            subject: DnIndex::new(n),
            issuer: DnIndex::new(n),
            certificate: ExactIndex::new(n),
            cert_status: StatusIndex { free: Free::new(n), tests: Vec::new(), table: Vec::new() },
            needs: std::array::from_fn(|_| Bits::zeros(words)),
            needs_any: [false; 4],
        }
    }

    fn add(&mut self, i: usize, r: &RuleSpec, certificates: &[CertificateObject]) {
        if r.enabled {
            self.enabled.set(i);
        }
        if r.action == Some(Action::Monitor) {
            self.monitor.set(i);
        }
        if let Some(v) = &r.source_networks {
            self.source_networks.add(i, v);
        }
        if let Some(v) = &r.dest_networks {
            self.dest_networks.add(i, v);
        }
        if let Some(v) = &r.source_ports {
            self.source_ports.add(i, v);
        }
        if let Some(v) = &r.dest_ports {
            self.dest_ports.add(i, v);
        }
        if let Some(v) = &r.vlan {
            self.vlan.add(i, v.iter().copied());
        }
        if let Some(v) = &r.ingress {
            self.ingress.add(i, v.iter().cloned());
        }
        if let Some(v) = &r.transport {
            self.transport.add(i, v.iter().cloned());
        }
        if let Some(v) = r.ech {
            self.ech.add(i, [v]);
            self.needs[SNI].set(i);
        }
        if let Some(v) = &r.sni {
            self.sni.free.constrain(i);
            for p in v {
                self.sni.names.add(i, p);
            }
            self.needs[SNI].set(i);
        }
        if let Some(v) = &r.cipher_suites {
            self.cipher_suites.add(i, v.iter().copied());
            self.needs[SERVER_HELLO].set(i);
        }
        if let Some(v) = &r.versions {
            self.versions.add(i, v.iter().copied());
            self.needs[SERVER_HELLO].set(i);
        }
        if let Some(v) = &r.subject {
            self.subject.add(i, v);
            self.needs[CERTIFICATE].set(i);
        }
        if let Some(v) = &r.issuer {
            self.issuer.add(i, v);
            self.needs[CERTIFICATE].set(i);
        }
        if let Some(v) = &r.certificate {
            self.certificate.add(i, v.iter().filter_map(|&c| certificates.get(c).map(|c| c.sha256)));
            self.needs[CERTIFICATE].set(i);
        }
        if let Some(v) = &r.cert_status {
            self.cert_status.free.constrain(i);
            self.cert_status.tests.push((i, v.clone()));
            self.needs[CERT_STATUS].set(i);
        }
    }

    fn finish(&mut self) {
        self.needs_any = std::array::from_fn(|g| !self.needs[g].is_empty());
        self.source_ports.finish(self.words);
        self.dest_ports.finish(self.words);
        self.cert_status.finish(self.words);
    }
}

// ---------------------------------------------------------------------------
// Conditions in words.

fn describe(r: &RuleSpec, certificates: &[CertificateObject]) -> String {
    fn any<T>(v: &[T], f: impl Fn(&T) -> String) -> String {
        v.iter().map(f).collect::<Vec<_>>().join(" or ")
    }
    let ports = |p: &(u16, u16)| if p.0 == p.1 { p.0.to_string() } else { format!("{}-{}", p.0, p.1) };
    let mut parts = Vec::new();
    if let Some(v) = &r.source_networks {
        parts.push(format!("source in {}", any(v, ToString::to_string)));
    }
    if let Some(v) = &r.source_ports {
        parts.push(format!("source port {}", any(v, ports)));
    }
    if let Some(v) = &r.dest_networks {
        parts.push(format!("destination in {}", any(v, ToString::to_string)));
    }
    if let Some(v) = &r.dest_ports {
        parts.push(format!("destination port {}", any(v, ports)));
    }
    if let Some(v) = &r.vlan {
        parts.push(format!("VLAN {}", any(v, |&n| if n == 0 { "untagged".into() } else { n.to_string() })));
    }
    if let Some(v) = &r.ingress {
        parts.push(format!("entering by {}", any(v, |s| format!("{s:?}"))));
    }
    if let Some(v) = &r.transport {
        parts.push(format!("over {}", any(v, |s| s.to_uppercase())));
    }
    if let Some(v) = r.ech {
        parts.push(if v { "offering ECH (or GREASE ECH)".into() } else { "not offering ECH".into() });
    }
    if let Some(v) = &r.sni {
        parts.push(format!("SNI {}", any(v, ToString::to_string)));
    }
    if let Some(v) = &r.subject {
        parts.push(format!("subject has {}", any(v, ToString::to_string)));
    }
    if let Some(v) = &r.issuer {
        parts.push(format!("issuer has {}", any(v, ToString::to_string)));
    }
    if let Some(v) = &r.certificate {
        parts.push(format!(
            "certificate is {}",
            any(v, |&i| certificates.get(i).map_or_else(String::new, |c| format!("{:?}", c.name)))
        ));
    }
    if let Some(v) = &r.cert_status {
        let t = any(v, |&(s, want)| if want { s.name().to_owned() } else { format!("not {}", s.name()) });
        parts.push(format!("certificate status {t}"));
    }
    if let Some(v) = &r.cipher_suites {
        parts.push(format!(
            "negotiated cipher {}",
            any(v, |&c| cipher_suite_name(c).map_or_else(|| format!("0x{c:04x}"), str::to_owned))
        ));
    }
    if let Some(v) = &r.versions {
        parts.push(format!("negotiated version {}", any(v, |v| v.config_name().to_owned())));
    }
    if parts.is_empty() {
        "always".to_owned()
    } else {
        format!("when {}", parts.join(", and "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> RuleSpec {
        RuleSpec { name: name.into(), action: Some(Action::Block), enabled: true, ..Default::default() }
    }

    #[test]
    fn port_intervals() {
        let mut p = PortIndex::new(3);
        p.add(0, &[(443, 443), (8000, 8080)]);
        p.add(1, &[(1024, 65535)]);
        p.add(2, &[(0, 0)]);
        p.finish(1);
        let at = |port| {
            let mut b = Bits::zeros(1);
            p.matches(port, &mut b);
            b.words()[0]
        };
        assert_eq!(at(0), 0b100);
        assert_eq!(at(1), 0);
        assert_eq!(at(443), 0b001);
        assert_eq!(at(444), 0);
        assert_eq!(at(1023), 0);
        assert_eq!(at(1024), 0b010);
        assert_eq!(at(7999), 0b010);
        assert_eq!(at(8000), 0b011);
        assert_eq!(at(8080), 0b011);
        assert_eq!(at(8081), 0b010);
        assert_eq!(at(65535), 0b010);
    }

    #[test]
    fn network_prefixes() {
        let mut n = NetIndex::new(4);
        let nets = |v: &[&str]| v.iter().map(|s| s.parse::<IpNet>().unwrap()).collect::<Vec<_>>();
        n.add(0, &nets(&["10.0.0.0/8"]));
        n.add(1, &nets(&["10.1.2.0/24", "2001:db8::/32"]));
        n.add(2, &nets(&["0.0.0.0/0"]));
        n.add(3, &nets(&["::/0"]));
        let at = |a: &str| {
            let mut b = Bits::zeros(1);
            n.matches(a.parse().unwrap(), &mut b);
            b.words()[0]
        };
        assert_eq!(at("10.1.2.3"), 0b0111);
        assert_eq!(at("10.9.2.3"), 0b0101);
        assert_eq!(at("11.0.0.1"), 0b0100);
        assert_eq!(at("::ffff:10.1.2.3"), 0b0111, "v4-mapped v6 is taken as v4");
        assert_eq!(at("2001:db8:1::1"), 0b1010);
        assert_eq!(at("2001:db9::1"), 0b1000);
    }

    #[test]
    fn status_table_any_test() {
        let mut s = StatusIndex { free: Free::new(2), tests: Vec::new(), table: Vec::new() };
        s.free.constrain(0);
        s.tests.push((0, vec![(CertStatus::Expired, true), (CertStatus::Valid, false)]));
        s.free.constrain(1);
        s.tests.push((1, vec![(CertStatus::Valid, true)]));
        s.finish(1);
        let at = |v: &[CertStatus]| {
            let mut set = CertStatusSet::default();
            for &x in v {
                set.insert(x);
            }
            let mut b = Bits::zeros(1);
            s.matches(set, &mut b);
            b.words()[0]
        };
        assert_eq!(at(&[CertStatus::Valid]), 0b10);
        assert_eq!(at(&[CertStatus::Valid, CertStatus::Expired]), 0b11);
        assert_eq!(at(&[CertStatus::SelfSigned]), 0b01);
        assert_eq!(at(&[]), 0b01);
    }

    #[test]
    fn descriptions() {
        let mut r = spec("x");
        assert_eq!(describe(&r, &[]), "always");
        r.dest_ports = Some(vec![(443, 443), (8000, 8080)]);
        r.cert_status = Some(vec![(CertStatus::Expired, true), (CertStatus::Valid, false)]);
        r.vlan = Some(vec![0, 10]);
        assert_eq!(
            describe(&r, &[]),
            "when destination port 443 or 8000-8080, and VLAN untagged or 10, and certificate status expired or not valid"
        );
    }

    #[test]
    fn bits() {
        let mut b = Bits::ones(70);
        assert_eq!(b.words(), &[u64::MAX, 0b11_1111]);
        assert!(b.get(69) && !b.get(70) && !b.get(1000));
        b.clear(69);
        assert!(!b.get(69));
        let mut z = Bits::zeros(2);
        assert!(z.is_empty());
        z.set(3);
        b.and_assign(&z);
        assert_eq!(b.words(), &[0b1000, 0]);
    }
}
