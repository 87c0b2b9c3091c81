//! The appliance settings file: what DPDK is started with, which ports are
//! bridged, on which lcores the workers run, and pool and queue sizes.
//!
//! ```toml
//! [eal]
//! args = ["--no-huge", "--in-memory", "--no-pci", "--vdev=net_null0", "--vdev=net_null1"]
//!
//! [[pair]]
//! a = "net_null0"
//! b = "net_null1"
//!
//! [workers]
//! lcores = [1, 2]
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::ConfigError;

/// Everything `tlsgate run` needs to start the data plane.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// DPDK EAL arguments.
    pub eal: EalSettings,
    /// Port pairs bridged to each other (`[[pair]]`).
    #[serde(rename = "pair")]
    pub pairs: Vec<PortPair>,
    /// Worker lcores.
    pub workers: WorkerSettings,
    /// Packet buffer pool.
    #[serde(default)]
    pub mempool: MempoolSettings,
    /// Queue sizes.
    #[serde(default)]
    pub queues: QueueSettings,
    /// Flow tracking.
    #[serde(default)]
    pub flows: FlowSettings,
    /// The decrypting slow path.
    #[serde(default)]
    pub slowpath: SlowPathSettings,
    /// Plain DNS answers crossing the wire.
    #[serde(default)]
    pub dns: DnsSettings,
    /// Prometheus metrics.
    #[serde(default)]
    pub metrics: MetricsSettings,
    /// Decrypted sessions sent live out of a port of their own.
    #[serde(default)]
    pub mirror: MirrorSettings,
    /// The decryption policy file (relative to this file's folder). Without
    /// one, tlsgate is a plain bridge.
    pub policy: Option<Spanned<PathBuf>>,
    /// The event log: `events = "path"` (JSON lines, appended; relative to
    /// this file's folder), or an `[events]` table with `path` and `handshake`.
    #[serde(default)]
    pub events: EventSettings,
    /// The file the settings came from (set by `load`).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[metrics]`: Prometheus metrics over HTTP, off the packet path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// `address:port` to serve `/metrics` on (`127.0.0.1:9477`); none: no metrics.
    pub listen: Option<Spanned<String>>,
}

impl MetricsSettings {
    /// The address to listen on, if metrics are on (checked by validation).
    pub fn address(&self) -> Option<std::net::SocketAddr> {
        self.listen.as_ref().and_then(|l| l.get_ref().parse().ok())
    }
}

/// `[dns]`: plain DNS answers (UDP, source port 53) crossing the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSettings {
    /// Remove the `ech` parameter from the HTTPS and SVCB records of every
    /// answer (lengths and the UDP checksum fixed), so that clients never
    /// start Encrypted Client Hello and their real server name stays in clear.
    #[serde(default)]
    pub strip_ech: bool,
}

/// `[mirror]`: each decrypted session, as the synthetic TCP stream the
/// decrypted pcap holds, sent live out of a DPDK port in no pair (a NIC, or
/// af_packet/tap toward a local IDS), from the slow-path lcore that owns it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorSettings {
    /// The port (as the EAL names it).
    pub port: Option<Spanned<String>>,
    /// Destination MAC of the mirrored frames (`aa:bb:cc:dd:ee:ff`); without
    /// it, the flow's own.
    pub mac: Option<Spanned<String>>,
}

impl MirrorSettings {
    /// The destination MAC, parsed (validation has checked it).
    pub fn mac(&self) -> Option<[u8; 6]> {
        self.mac.as_ref().and_then(|m| parse_mac(m.get_ref()))
    }
}

/// `aa:bb:cc:dd:ee:ff` (or with `-`).
fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.trim().split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *m = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

/// The event log: where, and how much of each handshake its events carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventSettings {
    /// The file (JSON lines, appended); none: events are counted, not written.
    pub path: Option<PathBuf>,
    /// How much of the handshake a session's event waits for.
    pub handshake: HandshakeEvents,
    /// Also send each event to syslog at this socket (`syslog = true`: `/dev/log`).
    pub syslog: Option<PathBuf>,
}

/// How much of the handshake a session's event carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandshakeEvents {
    /// The session's own facts, whatever the decision's timing: a flow decided
    /// at its ClientHello (or on the server identity cache) and forwarded is
    /// read on until the server's first flight (ServerHello; Certificate,
    /// status and CertificateRequest in TLS <= 1.2), then bypassed, and its
    /// event comes then. The decision never waits for these facts.
    #[default]
    Full,
    /// The facts the decision was taken on, and the event at the decision.
    Decision,
}

impl<'de> Deserialize<'de> for EventSettings {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            path: Option<PathBuf>,
            #[serde(default)]
            handshake: HandshakeEvents,
            syslog: Option<SyslogSetting>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum SyslogSetting {
            On(bool),
            Socket(PathBuf),
        }
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = EventSettings;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a path, or a table with `path` and `handshake`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EventSettings, E> {
                Ok(EventSettings { path: Some(PathBuf::from(v)), handshake: HandshakeEvents::default(), syslog: None })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<EventSettings, A::Error> {
                let t = Table::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                let syslog = match t.syslog {
                    Some(SyslogSetting::On(true)) => Some(PathBuf::from("/dev/log")),
                    Some(SyslogSetting::Socket(p)) => Some(p),
                    _ => None,
                };
                Ok(EventSettings { path: t.path, handshake: t.handshake, syslog })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `[eal]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EalSettings {
    /// Arguments as on a DPDK command line (`--vdev=...`, `-a 0000:01:00.0`, `--no-huge`).
    pub args: Vec<String>,
}

/// `[[pair]]`: two ports that are the two sides of one wire.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortPair {
    /// One side (DPDK port name: vdev name or PCI address).
    pub a: Spanned<String>,
    /// The other side.
    pub b: Spanned<String>,
}

/// `[workers]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Lcore ids of the workers; each owns one rx and one tx queue on every port.
    pub lcores: Spanned<Vec<u32>>,
    /// Slots in each worker-to-worker dispatch ring (software dispatch only).
    #[serde(default = "default_dispatch_ring")]
    pub dispatch_ring: u32,
    /// How idle workers and slow-path lcores wait for traffic.
    #[serde(default)]
    pub idle: IdleMode,
}

/// `[workers] idle`: what an lcore does when a poll finds nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdleMode {
    /// Spin 50 us, poll between yields of the CPU up to 2 ms, then sleep 10 us
    /// at a time (up to 500 us after a second of silence): lcores can share
    /// CPUs with other work, at a wake-up latency.
    #[default]
    Backoff,
    /// Never sleep: each lcore keeps its CPU busy, for dedicated (isolated) cores.
    Poll,
}

/// `[mempool]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MempoolSettings {
    /// Mbufs in the pool (best as 2^n - 1).
    #[serde(default = "default_mbufs")]
    pub mbufs: u32,
    /// Per-lcore cache.
    #[serde(default = "default_cache")]
    pub cache: u32,
    /// Bytes per mbuf including the 128-byte headroom.
    #[serde(default = "default_data_room")]
    pub data_room: u16,
    /// The DPDK mempool handler behind the per-lcore caches (`ring_mp_mc`,
    /// `stack`, `lf_stack`, ...). Unset: `lf_stack`, else `ring_mp_mc` where
    /// this DPDK has no lock-free stack.
    #[serde(default)]
    pub handler: Option<String>,
}

/// `[queues]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// Rx descriptors per queue.
    #[serde(default = "default_desc")]
    pub rx_descriptors: u16,
    /// Tx descriptors per queue.
    #[serde(default = "default_desc")]
    pub tx_descriptors: u16,
}

/// `[flows]`: the per-worker flow table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSettings {
    /// Flows each worker tracks at most.
    #[serde(default = "default_flow_capacity")]
    pub capacity: u32,
    /// What a new flow gets when the table is full: `bypass` (forwarded,
    /// uninspected) or `drop`. Counted either way.
    #[serde(default = "default_when_full")]
    pub when_full: WhenFull,
    /// What a flow first seen mid-stream (no SYN) gets: `bypass`, `block`, or
    /// `inspect` (watch for a handshake anyway).
    #[serde(default = "default_midstream")]
    pub midstream: Midstream,
    /// Handshake bytes buffered per direction while inspecting.
    #[serde(default = "default_handshake_buffer")]
    pub handshake_buffer: u32,
    /// The largest server handshake message read whole (a certificate chain
    /// past `handshake_buffer`), drawing on `large_message_budget`.
    #[serde(default = "default_server_message_limit")]
    pub server_message_limit: u32,
    /// Bytes per worker for the server messages being read that are larger
    /// than `handshake_buffer`, all together; 0: none is read.
    #[serde(default = "default_large_message_budget")]
    pub large_message_budget: u32,
    /// Idle timeout of a flow whose handshake is being watched, seconds.
    #[serde(default = "default_inspect_timeout")]
    pub inspecting_timeout: u32,
    /// Idle timeout of a decided flow (bypassed or blocked), seconds.
    #[serde(default = "default_decided_timeout")]
    pub decided_timeout: u32,
    /// How long a flow is kept after FIN from both sides or RST, seconds.
    #[serde(default = "default_closed_timeout")]
    pub closed_timeout: u32,
    /// Servers remembered per worker by the server identity cache (what a
    /// server's certificate was, so that the next session to it can be
    /// judged on it at the ClientHello); 0 turns the cache off.
    #[serde(default = "default_server_cache")]
    pub server_cache: u32,
    /// How long the server identity cache trusts what it learned, seconds.
    #[serde(default = "default_server_cache_ttl")]
    pub server_cache_ttl: u32,
    /// TLS that starts after a cleartext prelude (`[flows.prelude]`).
    #[serde(default)]
    pub prelude: PreludeSettings,
    /// What a flow gets whose ClientHello exceeds `handshake_buffer` (so that
    /// no rule could read it): `block` (the default), `block-with-reset` or
    /// `do-not-decrypt`. Never the default action by accident; counted as `overflow`.
    #[serde(default = "default_oversized_client_hello")]
    pub oversized_client_hello: PinnedAction,
    /// How segments of flows being inspected are checked against what the
    /// receiving stack would accept (`[flows.normalize]`).
    #[serde(default)]
    pub normalize: NormalizeSettings,
    /// IP fragment reassembly before inspection (`[flows.fragments]`).
    #[serde(default)]
    pub fragments: FragmentSettings,
}

/// `[flows.normalize]`: the inline normaliser. A segment of a flow being
/// inspected that its receiver would drop (a bad checksum, data without ACK,
/// an ACK of data never sent, outside the receive window, a PAWS-old
/// timestamp, an unkeyed TCP-MD5 option, a RST not exactly in window) is never
/// judged; a segment that resends judged bytes with other bytes is a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizeSettings {
    /// What a segment the receiver would drop gets: `drop` (the default:
    /// nothing the observer did not judge reaches the server) or `forward`.
    #[serde(default = "default_unjudged")]
    pub unjudged: Unjudged,
    /// `verify` (the default) or `ignore` checksums (for captures taken where
    /// the NIC computes them: replay ignores them unless told otherwise).
    #[serde(default = "default_checksums")]
    pub checksums: Checksums,
    /// A segment whose bytes differ from bytes already judged at the same
    /// place: `drop` it (the default; the server sees the judged bytes) or
    /// `block` the flow.
    #[serde(default = "default_conflicts")]
    pub conflicts: Conflicts,
}

impl Default for NormalizeSettings {
    fn default() -> Self {
        NormalizeSettings {
            unjudged: default_unjudged(),
            checksums: default_checksums(),
            conflicts: default_conflicts(),
        }
    }
}

/// What a segment the receiver would drop gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unjudged {
    /// Dropped (counted).
    Drop,
    /// Forwarded unjudged (counted).
    Forward,
}

/// Whether checksums of segments being inspected are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Checksums {
    /// A segment with a bad IPv4 or TCP checksum is not judged.
    Verify,
    /// Checksums are not looked at.
    Ignore,
}

/// What a conflicting retransmission brings about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Conflicts {
    /// The conflicting segment is dropped, the flow goes on.
    Drop,
    /// The flow is blocked.
    Block,
}

fn default_unjudged() -> Unjudged {
    Unjudged::Drop
}
fn default_checksums() -> Checksums {
    Checksums::Verify
}
fn default_conflicts() -> Conflicts {
    Conflicts::Drop
}

/// `[flows.fragments]`: IP fragments of TCP are held until their datagram is
/// complete, judged whole, then forwarded as they came (RFC 5722 overlaps
/// discard the datagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FragmentSettings {
    /// Datagrams being reassembled at once, per worker (the oldest is
    /// forgotten first when a new one needs room).
    #[serde(default = "default_fragment_capacity")]
    pub capacity: u32,
    /// Bytes of fragments held at once, per worker.
    #[serde(default = "default_fragment_bytes")]
    pub max_bytes: u32,
    /// Fragments one datagram may take.
    #[serde(default = "default_fragments_per_datagram")]
    pub max_fragments: u32,
    /// Seconds a datagram has to complete (Linux: 30).
    #[serde(default = "default_fragment_timeout")]
    pub timeout: u32,
    /// What fragments get that cannot be held (a datagram larger than
    /// `max_bytes`): `drop` (the default) or `forward` (uninspected). Counted.
    #[serde(default = "default_fragment_when_full")]
    pub when_full: FragmentsWhenFull,
}

impl Default for FragmentSettings {
    fn default() -> Self {
        FragmentSettings {
            capacity: default_fragment_capacity(),
            max_bytes: default_fragment_bytes(),
            max_fragments: default_fragments_per_datagram(),
            timeout: default_fragment_timeout(),
            when_full: default_fragment_when_full(),
        }
    }
}

/// What fragments that cannot be held get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FragmentsWhenFull {
    /// Dropped.
    Drop,
    /// Forwarded uninspected.
    Forward,
}

fn default_fragment_capacity() -> u32 {
    1024
}
fn default_fragment_bytes() -> u32 {
    4 << 20
}
fn default_fragments_per_datagram() -> u32 {
    64
}
fn default_fragment_timeout() -> u32 {
    30
}
fn default_fragment_when_full() -> FragmentsWhenFull {
    FragmentsWhenFull::Drop
}

/// `[flows.prelude]`: the protocols whose TLS starts after a cleartext
/// exchange (STARTTLS and its kin), by server port, and HTTP CONNECT tunnels
/// (on any port); and how long a prelude may go on before the flow is judged
/// as not TLS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreludeSettings {
    /// SMTP STARTTLS (RFC 3207).
    #[serde(default = "ports_smtp")]
    pub smtp: Vec<u16>,
    /// IMAP STARTTLS (RFC 3501).
    #[serde(default = "ports_imap")]
    pub imap: Vec<u16>,
    /// POP3 STLS (RFC 2595).
    #[serde(default = "ports_pop3")]
    pub pop3: Vec<u16>,
    /// FTP AUTH TLS (RFC 4217).
    #[serde(default = "ports_ftp")]
    pub ftp: Vec<u16>,
    /// XMPP starttls (RFC 6120), client and server ports.
    #[serde(default = "ports_xmpp")]
    pub xmpp: Vec<u16>,
    /// LDAP StartTLS extended operation (RFC 4511).
    #[serde(default = "ports_ldap")]
    pub ldap: Vec<u16>,
    /// PostgreSQL SSLRequest.
    #[serde(default = "ports_postgres")]
    pub postgres: Vec<u16>,
    /// IRC STARTTLS (IRCv3).
    #[serde(default = "ports_irc")]
    pub irc: Vec<u16>,
    /// HTTP CONNECT tunnels (explicit-proxy traffic), recognised on any port.
    #[serde(default = "yes")]
    pub connect: bool,
    /// Cleartext bytes a prelude may take per direction.
    #[serde(default = "default_prelude_bytes")]
    pub max_bytes: u32,
    /// Client commands (or requests) a prelude may take.
    #[serde(default = "default_prelude_exchanges")]
    pub max_exchanges: u32,
    /// Seconds a prelude may take from the flow's first payload.
    #[serde(default = "default_prelude_timeout")]
    pub timeout: u32,
}

/// A protocol whose TLS session follows a cleartext prelude.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PreludeProtocol {
    /// SMTP STARTTLS.
    Smtp,
    /// IMAP STARTTLS.
    Imap,
    /// POP3 STLS.
    Pop3,
    /// FTP AUTH TLS.
    Ftp,
    /// XMPP starttls.
    Xmpp,
    /// LDAP StartTLS.
    Ldap,
    /// PostgreSQL SSLRequest.
    Postgres,
    /// IRC STARTTLS.
    Irc,
    /// An HTTP CONNECT tunnel.
    HttpConnect,
}

impl PreludeProtocol {
    /// The name in events (`tls.starttls`) and in `[flows.prelude]`.
    pub fn name(self) -> &'static str {
        match self {
            PreludeProtocol::Smtp => "smtp",
            PreludeProtocol::Imap => "imap",
            PreludeProtocol::Pop3 => "pop3",
            PreludeProtocol::Ftp => "ftp",
            PreludeProtocol::Xmpp => "xmpp",
            PreludeProtocol::Ldap => "ldap",
            PreludeProtocol::Postgres => "postgres",
            PreludeProtocol::Irc => "irc",
            PreludeProtocol::HttpConnect => "http-connect",
        }
    }
}

impl PreludeSettings {
    /// The prelude a flow to server port `port` begins with, if any
    /// (HTTP CONNECT is recognised by its first bytes, on any port).
    pub fn for_port(&self, port: u16) -> Option<PreludeProtocol> {
        use PreludeProtocol as P;
        [
            (&self.smtp, P::Smtp),
            (&self.imap, P::Imap),
            (&self.pop3, P::Pop3),
            (&self.ftp, P::Ftp),
            (&self.xmpp, P::Xmpp),
            (&self.ldap, P::Ldap),
            (&self.postgres, P::Postgres),
            (&self.irc, P::Irc),
        ]
        .into_iter()
        .find_map(|(ports, p)| ports.contains(&port).then_some(p))
    }
}

impl Default for PreludeSettings {
    fn default() -> Self {
        PreludeSettings {
            smtp: ports_smtp(),
            imap: ports_imap(),
            pop3: ports_pop3(),
            ftp: ports_ftp(),
            xmpp: ports_xmpp(),
            ldap: ports_ldap(),
            postgres: ports_postgres(),
            irc: ports_irc(),
            connect: true,
            max_bytes: default_prelude_bytes(),
            max_exchanges: default_prelude_exchanges(),
            timeout: default_prelude_timeout(),
        }
    }
}

fn ports_smtp() -> Vec<u16> {
    vec![25, 587]
}
fn ports_imap() -> Vec<u16> {
    vec![143]
}
fn ports_pop3() -> Vec<u16> {
    vec![110]
}
fn ports_ftp() -> Vec<u16> {
    vec![21]
}
fn ports_xmpp() -> Vec<u16> {
    vec![5222, 5269]
}
fn ports_ldap() -> Vec<u16> {
    vec![389]
}
fn ports_postgres() -> Vec<u16> {
    vec![5432]
}
fn ports_irc() -> Vec<u16> {
    vec![6667]
}
fn yes() -> bool {
    true
}
fn default_prelude_bytes() -> u32 {
    16 * 1024
}
fn default_prelude_exchanges() -> u32 {
    32
}
fn default_prelude_timeout() -> u32 {
    30
}

/// `[slowpath]`: the lcores that decrypt (take over both TCP connections of a
/// flow whose decision is a decrypt action, terminate TLS on both sides and
/// relay the plaintext), and what they write.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowPathSettings {
    /// Lcore ids of the slow path; each owns one tx queue (and one rx queue,
    /// whose packets it hands to their workers) on every port. None: decrypt
    /// decisions are carried out as do-not-decrypt, and the events say so.
    #[serde(default = "no_lcores")]
    pub lcores: Spanned<Vec<u32>>,
    /// Slots in each ring between a worker and a slow-path lcore.
    #[serde(default = "default_slow_ring")]
    pub ring: u32,
    /// Sessions each slow-path lcore decrypts at once, at most.
    #[serde(default = "default_slow_sessions")]
    pub sessions: u32,
    /// A decrypt decision that the slow path cannot take (its ring full, or
    /// at its session limit): `do-not-decrypt` (fail open) or `block` (fail closed).
    #[serde(default = "default_slow_when_full")]
    pub when_full: SlowWhenFull,
    /// Servers (and SNIs) remembered as not decryptable, per worker.
    #[serde(default = "default_exclusion_cache")]
    pub exclusion_cache: u32,
    /// How long an exclusion lasts, seconds.
    #[serde(default = "default_exclusion_ttl")]
    pub exclusion_ttl: u32,
    /// What later sessions to an SNI get after a client rejected the forged
    /// certificate (certificate pinning): `do-not-decrypt`, `block` or `block-with-reset`.
    #[serde(default = "default_pinned_action")]
    pub pinned_action: PinnedAction,
    /// Forged certificates cached per slow-path lcore (by the original's fingerprint).
    #[serde(default = "default_forged_cache")]
    pub forged_cache: u32,
    /// How long a forged certificates' leaf key is used for new forges, seconds (each slow-path lcore
    /// keeps a few per key type and size; certificates forged with a key keep it while cached).
    #[serde(default = "default_leaf_key_lifetime")]
    pub leaf_key_lifetime: u32,
    /// NSS key log of both TLS sessions of every decrypted flow (appended;
    /// relative to this file's folder). Holds secrets: written mode 0600.
    pub keylog: Option<Spanned<PathBuf>>,
    /// Decrypted traffic as pcap: each direction of each decrypted flow as a
    /// synthetic TCP/IP stream with its own handshake (relative to this file's folder).
    pub decrypted_pcap: Option<Spanned<PathBuf>>,
}

/// What a decrypt decision gets when the slow path cannot take the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlowWhenFull {
    /// Fail open: forward the flow undecrypted.
    DoNotDecrypt,
    /// Fail closed: drop the flow.
    Block,
}

/// A final action in the settings: what sessions to a pinned SNI get
/// (`slowpath.pinned_action`), what an oversized ClientHello gets
/// (`flows.oversized_client_hello`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PinnedAction {
    /// Forward undecrypted.
    DoNotDecrypt,
    /// Drop.
    Block,
    /// Drop and reset both ends.
    BlockWithReset,
}

fn no_lcores() -> Spanned<Vec<u32>> {
    Spanned::new(0..0, Vec::new())
}
fn default_slow_ring() -> u32 {
    4096
}
fn default_slow_sessions() -> u32 {
    4096
}
fn default_slow_when_full() -> SlowWhenFull {
    SlowWhenFull::DoNotDecrypt
}
fn default_exclusion_cache() -> u32 {
    4096
}
fn default_exclusion_ttl() -> u32 {
    600
}
fn default_oversized_client_hello() -> PinnedAction {
    PinnedAction::Block
}
fn default_pinned_action() -> PinnedAction {
    PinnedAction::DoNotDecrypt
}
fn default_forged_cache() -> u32 {
    1024
}
fn default_leaf_key_lifetime() -> u32 {
    3600
}

impl Default for SlowPathSettings {
    fn default() -> Self {
        SlowPathSettings {
            lcores: no_lcores(),
            ring: default_slow_ring(),
            sessions: default_slow_sessions(),
            when_full: default_slow_when_full(),
            exclusion_cache: default_exclusion_cache(),
            exclusion_ttl: default_exclusion_ttl(),
            pinned_action: default_pinned_action(),
            forged_cache: default_forged_cache(),
            leaf_key_lifetime: default_leaf_key_lifetime(),
            keylog: None,
            decrypted_pcap: None,
        }
    }
}

/// Policy for new flows when the table is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhenFull {
    /// Forward, uninspected.
    Bypass,
    /// Drop.
    Drop,
}

/// Policy for flows first seen without a SYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Midstream {
    /// Forward, uninspected.
    Bypass,
    /// Drop every packet.
    Block,
    /// Track and watch for a handshake.
    Inspect,
}

fn default_flow_capacity() -> u32 {
    262_144
}
fn default_when_full() -> WhenFull {
    WhenFull::Bypass
}
fn default_midstream() -> Midstream {
    Midstream::Bypass
}
fn default_handshake_buffer() -> u32 {
    64 * 1024
}
fn default_server_message_limit() -> u32 {
    1 << 20
}
fn default_large_message_budget() -> u32 {
    16 << 20
}
fn default_inspect_timeout() -> u32 {
    30
}
fn default_decided_timeout() -> u32 {
    600
}
fn default_closed_timeout() -> u32 {
    10
}
fn default_server_cache() -> u32 {
    16_384
}
fn default_server_cache_ttl() -> u32 {
    3600
}

impl Default for FlowSettings {
    fn default() -> Self {
        FlowSettings {
            capacity: default_flow_capacity(),
            when_full: default_when_full(),
            midstream: default_midstream(),
            handshake_buffer: default_handshake_buffer(),
            server_message_limit: default_server_message_limit(),
            large_message_budget: default_large_message_budget(),
            inspecting_timeout: default_inspect_timeout(),
            decided_timeout: default_decided_timeout(),
            closed_timeout: default_closed_timeout(),
            server_cache: default_server_cache(),
            server_cache_ttl: default_server_cache_ttl(),
            prelude: PreludeSettings::default(),
            oversized_client_hello: default_oversized_client_hello(),
            normalize: NormalizeSettings::default(),
            fragments: FragmentSettings::default(),
        }
    }
}

fn default_dispatch_ring() -> u32 {
    4096
}
fn default_mbufs() -> u32 {
    32767
}
fn default_cache() -> u32 {
    256
}
fn default_data_room() -> u16 {
    2176
}
fn default_desc() -> u16 {
    1024
}

impl Default for MempoolSettings {
    fn default() -> Self {
        MempoolSettings {
            mbufs: default_mbufs(),
            cache: default_cache(),
            data_room: default_data_room(),
            handler: None,
        }
    }
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings { rx_descriptors: default_desc(), tx_descriptors: default_desc() }
    }
}

impl Settings {
    /// Reads, parses and validates a settings file.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::file(path, format!("cannot read the settings file: {e}")))?;
        Settings::parse(&text, Some(path))
    }

    /// Parses and validates settings from TOML text.
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut s: Settings = toml::from_str(text).map_err(|e| {
            let field = field_of(e.message());
            ConfigError::at(path, Some(text), e.span().map(|r| r.start), field.as_deref(), e.message().trim())
        })?;
        s.source = path.map(Path::to_path_buf);
        s.validate(Some(text))?;
        Ok(s)
    }

    /// Settings made in code (the replay command), validated the same way.
    pub fn from_parts(
        eal_args: Vec<String>,
        pairs: Vec<(String, String)>,
        lcores: Vec<u32>,
    ) -> Result<Settings, ConfigError> {
        let s = Settings {
            eal: EalSettings { args: eal_args },
            pairs: pairs
                .into_iter()
                .map(|(a, b)| PortPair { a: Spanned::new(0..0, a), b: Spanned::new(0..0, b) })
                .collect(),
            workers: WorkerSettings {
                lcores: Spanned::new(0..0, lcores),
                dispatch_ring: default_dispatch_ring(),
                idle: IdleMode::default(),
            },
            mempool: MempoolSettings::default(),
            queues: QueueSettings::default(),
            flows: FlowSettings::default(),
            slowpath: SlowPathSettings::default(),
            dns: DnsSettings::default(),
            metrics: MetricsSettings::default(),
            mirror: MirrorSettings::default(),
            policy: None,
            events: EventSettings::default(),
            source: None,
        };
        s.validate(None)?;
        Ok(s)
    }

    fn err(&self, text: Option<&str>, span: Option<usize>, field: &str, msg: impl Into<String>) -> ConfigError {
        ConfigError::at(self.source.as_deref(), text, span, Some(field), msg)
    }

    /// Checks the settings as loading does (`text`: the file's text, for line numbers).
    pub fn validate(&self, text: Option<&str>) -> Result<(), ConfigError> {
        if self.pairs.is_empty() {
            return Err(self.err(
                text,
                None,
                "pair",
                "no [[pair]] given: name two ports to bridge (a = \"...\", b = \"...\")",
            ));
        }
        let mut seen: Vec<&str> = Vec::new();
        for (i, p) in self.pairs.iter().enumerate() {
            for side in [&p.a, &p.b] {
                let name = side.get_ref().as_str();
                if name.is_empty() {
                    return Err(self.err(text, Some(side.span().start), &format!("pair[{i}]"), "empty port name"));
                }
                if seen.contains(&name) {
                    return Err(self.err(
                        text,
                        Some(side.span().start),
                        &format!("pair[{i}]"),
                        format!("port {name:?} appears in more than one pair (or twice in one)"),
                    ));
                }
                seen.push(name);
            }
        }
        let lcores = self.workers.lcores.get_ref();
        let at = Some(self.workers.lcores.span().start);
        if lcores.is_empty() {
            return Err(self.err(text, at, "workers.lcores", "at least one worker lcore is needed"));
        }
        let mut sorted = lcores.clone();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err(self.err(text, at, "workers.lcores", "an lcore is listed twice"));
        }
        if let Some(&l) = lcores.iter().find(|&&l| l >= 128) {
            return Err(self.err(
                text,
                at,
                "workers.lcores",
                format!("lcore {l} is out of range (DPDK allows 0..127)"),
            ));
        }
        if lcores.len() > 64 {
            return Err(self.err(text, at, "workers.lcores", "at most 64 workers"));
        }
        if let Some(m) = &self.mirror.mac {
            if parse_mac(m.get_ref()).is_none() {
                let msg = format!("{:?} is not a MAC address: write it as aa:bb:cc:dd:ee:ff", m.get_ref());
                return Err(self.err(text, Some(m.span().start), "mirror.mac", msg));
            }
        }
        if let Some(p) = &self.mirror.port {
            let at = Some(p.span().start);
            if seen.contains(&p.get_ref().as_str()) {
                let msg = format!("port {:?} is in a [[pair]]: the mirror needs a port of its own", p.get_ref());
                return Err(self.err(text, at, "mirror.port", msg));
            }
            if self.slowpath.lcores.get_ref().is_empty() {
                let msg = "the mirror carries decrypted sessions: it needs a slow path ([slowpath] lcores)";
                return Err(self.err(text, at, "mirror.port", msg));
            }
        }
        let slow = self.slowpath.lcores.get_ref();
        let slow_at = Some(self.slowpath.lcores.span().start);
        if let Some(&l) = slow.iter().find(|l| lcores.contains(l)) {
            return Err(self.err(text, slow_at, "slowpath.lcores", format!("lcore {l} is also a worker lcore")));
        }
        let mut sorted = slow.clone();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err(self.err(text, slow_at, "slowpath.lcores", "an lcore is listed twice"));
        }
        if let Some(&l) = slow.iter().find(|&&l| l >= 128) {
            return Err(self.err(
                text,
                slow_at,
                "slowpath.lcores",
                format!("lcore {l} is out of range (DPDK allows 0..127)"),
            ));
        }
        if slow.len() > 16 {
            return Err(self.err(text, slow_at, "slowpath.lcores", "at most 16 slow-path lcores"));
        }
        if self.slowpath.ring < 64 {
            return Err(self.err(text, None, "slowpath.ring", "at least 64 slots"));
        }
        if self.slowpath.sessions == 0
            || self.slowpath.forged_cache == 0
            || self.slowpath.exclusion_cache == 0
            || self.slowpath.leaf_key_lifetime == 0
        {
            return Err(self.err(
                text,
                None,
                "slowpath",
                "sessions, forged_cache, exclusion_cache and leaf_key_lifetime must be at least 1",
            ));
        }
        if let Some(l) = &self.metrics.listen {
            if l.get_ref().parse::<std::net::SocketAddr>().is_err() {
                return Err(self.err(
                    text,
                    Some(l.span().start),
                    "metrics.listen",
                    format!("{:?} is not an address:port (such as \"127.0.0.1:9477\")", l.get_ref()),
                ));
            }
        }
        if self.dns.strip_ech && self.policy.is_none() {
            return Err(self.err(
                text,
                None,
                "dns.strip_ech",
                "needs a policy: DNS answers are read by the inspector, which runs with one",
            ));
        }
        if self.slowpath.exclusion_ttl == 0 {
            return Err(self.err(text, None, "slowpath.exclusion_ttl", "at least 1 second"));
        }
        if self.workers.dispatch_ring < 64 {
            return Err(self.err(text, None, "workers.dispatch_ring", "at least 64 slots"));
        }
        if self.mempool.mbufs < 1024 {
            return Err(self.err(text, None, "mempool.mbufs", "at least 1024 mbufs"));
        }
        if self.mempool.data_room < 1024 {
            return Err(self.err(text, None, "mempool.data_room", "at least 1024 bytes (128 of them headroom)"));
        }
        if let Some(h) = &self.mempool.handler {
            // RTE_MEMPOOL_OPS_NAMESIZE is 32 with its NUL.
            if h.is_empty() || h.len() > 31 || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(self.err(
                    text,
                    None,
                    "mempool.handler",
                    "a DPDK mempool handler name (letters, digits and _, at most 31), e.g. \"ring_mp_mc\" or \"lf_stack\"",
                ));
            }
        }
        if self.queues.rx_descriptors == 0 || self.queues.tx_descriptors == 0 {
            return Err(self.err(text, None, "queues", "descriptor counts must be positive"));
        }
        let f = &self.flows;
        if f.capacity < 16 {
            return Err(self.err(text, None, "flows.capacity", "at least 16 flows per worker"));
        }
        let g = &f.fragments;
        if g.capacity < 1 || g.max_fragments < 2 || g.timeout < 1 || g.max_bytes < 65_535 {
            let msg = "capacity >= 1, max_fragments >= 2, timeout >= 1 s, max_bytes >= 65535";
            return Err(self.err(text, None, "flows.fragments", msg));
        }
        if !(1024..=16 << 20).contains(&f.handshake_buffer) {
            return Err(self.err(text, None, "flows.handshake_buffer", "between 1024 bytes and 16 MiB"));
        }
        if !(f.handshake_buffer..=16 << 20).contains(&f.server_message_limit) {
            let msg = format!("between flows.handshake_buffer ({}) and 16 MiB", f.handshake_buffer);
            return Err(self.err(text, None, "flows.server_message_limit", msg));
        }
        if f.large_message_budget > 1 << 30 {
            return Err(self.err(text, None, "flows.large_message_budget", "at most 1 GiB per worker"));
        }
        let p = &f.prelude;
        if !(256..=f.handshake_buffer).contains(&p.max_bytes) {
            let msg = format!("between 256 bytes and flows.handshake_buffer ({})", f.handshake_buffer);
            return Err(self.err(text, None, "flows.prelude.max_bytes", msg));
        }
        if p.max_exchanges == 0 || p.timeout == 0 {
            return Err(self.err(text, None, "flows.prelude", "max_exchanges and timeout must be at least 1"));
        }
        let lists = [&p.smtp, &p.imap, &p.pop3, &p.ftp, &p.xmpp, &p.ldap, &p.postgres, &p.irc];
        let mut seen = std::collections::HashSet::new();
        if let Some(port) = lists.iter().flat_map(|l| l.iter()).find(|port| !seen.insert(**port)) {
            let msg = format!("port {port} is listed for two protocols (or twice)");
            return Err(self.err(text, None, "flows.prelude", msg));
        }
        if f.inspecting_timeout == 0 || f.decided_timeout == 0 || f.closed_timeout == 0 {
            return Err(self.err(text, None, "flows", "timeouts must be at least 1 second"));
        }
        Ok(())
    }

    /// The EAL arguments, with `--lcores` added when the file gives none:
    /// lcore 0 is the control (main) lcore, the workers follow, all free to run
    /// on any CPU (so more lcores than CPUs works).
    pub fn eal_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let given = |p: &str| self.eal.args.iter().any(|a| a == p || a.starts_with(&format!("{p}=")));
        if !given("--log-level") {
            args.push("--log-level=notice".to_owned());
        }
        args.extend(self.eal.args.iter().cloned());
        if !(given("-l") || given("--lcores") || given("-c") || self.eal.args.iter().any(|a| a.starts_with("-l"))) {
            let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            let mut ids = vec![0u32];
            ids.extend(self.workers.lcores.get_ref().iter().copied().filter(|&l| l != 0));
            ids.extend(self.slowpath.lcores.get_ref().iter().copied().filter(|&l| l != 0));
            let list: Vec<String> = ids.iter().map(u32::to_string).collect();
            let cpu_set = if cpus > 1 { format!("0-{}", cpus - 1) } else { "0".to_owned() };
            args.push(format!("--lcores=({})@({})", list.join(","), cpu_set));
        }
        args
    }

    /// The policy file's path, resolved against the settings file's folder.
    pub fn policy_path(&self) -> Option<PathBuf> {
        self.policy.as_ref().map(|p| self.resolve(p.get_ref()))
    }

    /// The key log's path, resolved against the settings file's folder.
    pub fn keylog_path(&self) -> Option<PathBuf> {
        self.slowpath.keylog.as_ref().map(|p| self.resolve(p.get_ref()))
    }

    /// The decrypted-traffic pcap's path, resolved against the settings file's folder.
    pub fn decrypted_pcap_path(&self) -> Option<PathBuf> {
        self.slowpath.decrypted_pcap.as_ref().map(|p| self.resolve(p.get_ref()))
    }

    /// The event log's path, resolved against the settings file's folder.
    pub fn events_path(&self) -> Option<PathBuf> {
        // `-` is standard output, not a file next to the settings.
        self.events.path.as_ref().map(|p| if p == Path::new("-") { p.clone() } else { self.resolve(p) })
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        match self.source.as_deref().and_then(Path::parent) {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        }
    }

    /// All port names, pair by pair (a then b).
    pub fn port_names(&self) -> Vec<String> {
        self.pairs.iter().flat_map(|p| [p.a.get_ref().clone(), p.b.get_ref().clone()]).collect()
    }
}

/// The field a serde message names (`unknown field `x``, `missing field `y``).
fn field_of(msg: &str) -> Option<String> {
    // `unknown variant `x`` names the value, not the field; the line says where.
    if msg.starts_with("unknown variant") || msg.starts_with("invalid value") {
        return None;
    }
    let start = msg.find('`')? + 1;
    let end = start + msg[start..].find('`')?;
    Some(msg[start..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[eal]
args = ["--no-huge", "--vdev=net_null0", "--vdev=net_null1"]

[[pair]]
a = "net_null0"
b = "net_null1"

[workers]
lcores = [1, 2]
"#;

    #[test]
    fn good_file_parses_with_defaults() {
        let s = Settings::parse(GOOD, None).unwrap();
        assert_eq!(s.port_names(), ["net_null0", "net_null1"]);
        assert_eq!(s.workers.lcores.get_ref(), &[1, 2]);
        assert_eq!(s.mempool.mbufs, 32767);
        let args = s.eal_args();
        assert!(args.iter().any(|a| a.starts_with("--lcores=(0,1,2)@")), "{args:?}");
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let text = GOOD.replace("lcores = [1, 2]", "lcores = [1, 2]\nspeed = 3");
        let e = Settings::parse(&text, Some(Path::new("x.toml"))).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("speed"));
        assert_eq!(e.line, Some(11));
        assert!(e.to_string().starts_with("x.toml:11: speed: unknown field"), "{e}");
    }

    #[test]
    fn missing_section_is_named() {
        let text = GOOD.replace("[workers]\nlcores = [1, 2]\n", "");
        let e = Settings::parse(&text, Some(Path::new("x.toml"))).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("workers"), "{e}");
    }

    #[test]
    fn bad_types_and_values_are_refused() {
        let e = Settings::parse(&GOOD.replace("[1, 2]", "[\"one\"]"), None).unwrap_err();
        assert_eq!(e.line, Some(10), "{e}");
        let e = Settings::parse(&GOOD.replace("[1, 2]", "[1, 1]"), None).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("workers.lcores"));
        assert_eq!(e.line, Some(10));
        let e = Settings::parse(&GOOD.replace("[1, 2]", "[]"), None).unwrap_err();
        assert!(e.message.contains("at least one"));
        let e = Settings::parse(&GOOD.replace("net_null1\"\n", "net_null0\"\n"), None).unwrap_err();
        assert!(e.message.contains("more than one pair"), "{e}");
        let e = Settings::parse("this is not toml", None).unwrap_err();
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn the_mempool_handler_is_a_dpdk_name_or_unset() {
        let with = |h: &str| Settings::parse(&format!("{GOOD}[mempool]\nhandler = {h}\n"), None);
        assert_eq!(Settings::parse(GOOD, None).unwrap().mempool.handler, None);
        assert_eq!(with("\"ring_mp_mc\"").unwrap().mempool.handler.as_deref(), Some("ring_mp_mc"));
        for bad in ["\"\"", "\"ring mp\"", "\"../x\"", &format!("\"{}\"", "a".repeat(32))] {
            let e = with(bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("mempool.handler"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_mirror_needs_a_port_of_its_own_a_slow_path_and_a_real_mac() {
        let with = |mirror: &str, slow: &str| {
            Settings::parse(&format!("{GOOD}[slowpath]\nlcores = [{slow}]\n[mirror]\n{mirror}\n"), None)
        };
        let s = with("port = \"net_null2\"\nmac = \"02:00:5e:10:00:01\"", "3").unwrap();
        assert_eq!(s.mirror.mac(), Some([2, 0, 0x5e, 0x10, 0, 1]));
        let e = with("port = \"net_null1\"", "3").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("mirror.port"));
        assert!(e.message.contains("is in a [[pair]]"), "{e}");
        let e = with("port = \"net_null2\"", "").unwrap_err();
        assert!(e.message.contains("needs a slow path"), "{e}");
        for bad in ["02:00:5e:10:00", "02:00:5e:10:00:zz", "0200.5e10.0001"] {
            let e = with(&format!("port = \"net_null2\"\nmac = \"{bad}\""), "3").unwrap_err();
            assert_eq!(e.field.as_deref(), Some("mirror.mac"), "{bad}: {e}");
        }
    }

    #[test]
    fn explicit_lcores_are_kept() {
        let text = GOOD.replace("\"--no-huge\",", "\"--no-huge\", \"-l\", \"0-2\",");
        let s = Settings::parse(&text, None).unwrap();
        assert!(!s.eal_args().iter().any(|a| a.starts_with("--lcores")));
    }

    #[test]
    fn events_as_a_path_or_a_table() {
        let s = Settings::parse(&format!("events = \"ev.json\"\n{GOOD}"), Some(Path::new("/etc/tg/a.toml"))).unwrap();
        assert_eq!(s.events_path(), Some(PathBuf::from("/etc/tg/ev.json")));
        assert_eq!(s.events.handshake, HandshakeEvents::Full);
        let text = format!("{GOOD}\n[events]\npath = \"/var/log/ev.json\"\nhandshake = \"decision\"\n");
        let s = Settings::parse(&text, None).unwrap();
        assert_eq!(s.events_path(), Some(PathBuf::from("/var/log/ev.json")));
        assert_eq!(s.events.handshake, HandshakeEvents::Decision);
        let s = Settings::parse(GOOD, None).unwrap();
        assert_eq!(s.events, EventSettings::default());
        let e = Settings::parse(&format!("{GOOD}\n[events]\nhandshake = \"most\"\n"), None).unwrap_err();
        assert!(e.message.contains("unknown variant"), "{e}");
        let e = Settings::parse(&format!("{GOOD}\n[events]\nfile = \"x\"\n"), None).unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
    }

    #[test]
    fn prelude_ports_are_configurable_and_checked() {
        let s = Settings::parse(GOOD, None).unwrap();
        assert_eq!(s.flows.prelude.for_port(587), Some(PreludeProtocol::Smtp));
        assert_eq!(s.flows.prelude.for_port(443), None);
        let text = format!("{GOOD}\n[flows.prelude]\nsmtp = [2525]\nimap = []\n");
        let s = Settings::parse(&text, None).unwrap();
        assert_eq!(s.flows.prelude.for_port(2525), Some(PreludeProtocol::Smtp));
        assert_eq!(s.flows.prelude.for_port(25), None);
        assert_eq!(s.flows.prelude.for_port(143), None);
        let e = Settings::parse(&format!("{GOOD}\n[flows.prelude]\nsmtp = [143]\n"), None).unwrap_err();
        assert!(e.message.contains("port 143 is listed for two protocols"), "{e}");
        let e = Settings::parse(&format!("{GOOD}\n[flows.prelude]\nmax_bytes = 100000000\n"), None).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("flows.prelude.max_bytes"), "{e}");
    }

    #[test]
    fn large_server_messages_are_bounded() {
        let s = Settings::parse(GOOD, None).unwrap();
        assert_eq!((s.flows.server_message_limit, s.flows.large_message_budget), (1 << 20, 16 << 20));
        let flows = |body: &str| format!("{GOOD}\n[flows]\n{body}\n");
        let s = Settings::parse(&flows("server_message_limit = 65536\nlarge_message_budget = 0"), None).unwrap();
        assert_eq!((s.flows.server_message_limit, s.flows.large_message_budget), (65536, 0));
        for (body, field) in [
            ("server_message_limit = 1000", "flows.server_message_limit"),
            ("handshake_buffer = 131072\nserver_message_limit = 65536", "flows.server_message_limit"),
            ("server_message_limit = 33554432", "flows.server_message_limit"),
            ("large_message_budget = 2147483648", "flows.large_message_budget"),
        ] {
            let e = Settings::parse(&flows(body), None).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{body}: {e}");
        }
    }
}
