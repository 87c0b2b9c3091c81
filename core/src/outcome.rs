//! What happened to a session, as data: the action carried out, the action
//! the policy asked for, and a [`Cause`] with a stable snake_case
//! [code](Cause::code) that events carry as `policy.reason_code`. The fast
//! path and the slow path both end sessions with these values; the English
//! sentence is made from them in one place only, the event writer.

use tlsgate_config::policy::{Action, Undecryptable};
use tlsgate_config::PreludeProtocol;

use crate::identity::ExclusionReason;
use crate::tls::NoTls;

/// One end of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The TLS client (the TCP connection's initiator).
    Client,
    /// The TLS server.
    Server,
}

impl Side {
    /// `client` or `server`.
    pub fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }
}

/// Where a session's server facts came from, for the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerIdentitySource {
    /// Not known when the session was decided.
    Unknown,
    /// From the server identity cache, at the ClientHello.
    Cache,
    /// From this session's own handshake (or the slow path's upstream one).
    Handshake,
}

impl ServerIdentitySource {
    /// The name in events.
    pub fn name(self) -> &'static str {
        match self {
            ServerIdentitySource::Unknown => "unknown",
            ServerIdentitySource::Cache => "cache",
            ServerIdentitySource::Handshake => "handshake",
        }
    }
}

/// What happened to a session, as its event carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What was carried out.
    pub carried_out: Action,
    /// What the policy asked for.
    pub asked: Action,
    /// The deciding rule's name (`None`: the default action, or a case the
    /// policy's undecryptable actions settled before any rule).
    pub rule: Option<String>,
    /// Why.
    pub cause: Cause,
    /// The flow ended before the handshake completed, so facts may be missing.
    pub cut_short: Option<FlowEnd>,
    /// Monitor rules that held.
    pub monitor_rules: Vec<String>,
    /// Facts that never came and so made conditions not match.
    pub missing_facts: Vec<&'static str>,
    /// Where the server facts came from.
    pub server_identity: ServerIdentitySource,
}

/// Why a session got what it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The first rule that held decided.
    RuleMatched,
    /// No rule matched: the default action.
    DefaultAction,
    /// A decrypt decision, but the handshake shows the session cannot be
    /// decrypted: the undecryptable action for this reason.
    Undecryptable(Undecryptable),
    /// A decrypt decision, but the server (or SNI) is in the exclusion cache.
    Excluded(ExclusionReason),
    /// A decrypt decision the slow path could not take.
    SlowPathFull(SlowPathFull),
    /// A decrypt decision that could not be handed to the slow path.
    NotTakenOver(NotTakenOver),
    /// A decrypt decision that needed the server's facts, which were not
    /// known at the ClientHello (where a decryption has to begin).
    ServerIdentityUnknown,
    /// The flow is not TLS.
    NotTls(NotTls),
    /// A segment resent judged bytes with other bytes, and
    /// `flows.normalize.conflicts = "block"`.
    ConflictingRetransmission,
    /// A QUIC flow whose Initial packets held no readable ClientHello.
    QuicUndecodable,
    /// A DNS answer's ECH configurations were removed (`[dns] strip_ech`).
    DnsEchStripped,
    /// The TLS handshake could not be followed to its end.
    HandshakeFailed(HandshakeFailure),
    /// The flow ended (or stopped being watched) before the handshake was
    /// complete; the policy judged what was known.
    FlowEnded(FlowEnd),
    /// A passive `decrypt-known-key` rule: the flow forwarded untouched, its
    /// RSA key exchange read with the imported key.
    ReadPassively,
    /// Decrypted by the slow path.
    Decrypted {
        /// What the client was shown.
        shown: ShownCertificate,
        /// How the session ended.
        end: DecryptEnd,
    },
    /// The server's certificate is not trusted; the client was shown a copy
    /// signed by the untrusted CA and rejected it, as it would the original.
    UntrustedRejected {
        /// How the session ended.
        end: DecryptEnd,
    },
    /// Taken over by the slow path, but it could not be decrypted.
    TakeoverFailed(Box<TakeoverFailure>),
    /// Taken over, but the two handshakes did not complete.
    HandshakesIncomplete {
        /// How the session ended.
        end: DecryptEnd,
    },
}

/// Why the slow path could not take a decrypt decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowPathFull {
    /// The worker's ring to the slow-path lcore was full.
    RingFull,
    /// The slow-path lcore was at its limit of this many sessions.
    SessionLimit(u32),
}

/// Why a decrypt decision was not handed to the slow path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotTakenOver {
    /// No slow path runs here (`[slowpath] lcores` is empty, or a replay).
    NoSlowPath,
    /// The decision came on a packet from the server.
    ServerPacket,
    /// The TCP handshake was not seen (a flow picked up mid-stream).
    Midstream,
    /// The ClientHello's first segment reached the server before tlsgate saw it.
    OutOfOrder,
    /// The ClientHello came in SSLv2 format (which offers TLS too), which the
    /// slow path's TLS stack cannot answer.
    Sslv2Hello,
    /// The TLS session follows a cleartext prelude (STARTTLS, HTTP CONNECT).
    Prelude,
}

/// Why a flow is not TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotTls {
    /// This side spoke first in another protocol.
    OtherProtocol(Side),
    /// This side's first bytes looked like TLS but are not well formed.
    Malformed(Side, String),
    /// A cleartext prelude (STARTTLS, HTTP CONNECT) that did not lead to TLS.
    Prelude(PreludeProtocol, NoTls),
}

/// Why a TLS handshake could not be followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// This side sent malformed TLS.
    Malformed(Side, String),
    /// This side's handshake exceeds `flows.handshake_buffer` (bytes).
    TooLarge(Side, u32),
}

/// How a flow ended before its handshake completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowEnd {
    /// FIN from both sides, or a RST.
    Closed,
    /// Idle past `flows.inspecting_timeout`.
    Idle,
    /// A new connection reused the flow's addresses and ports.
    PortReused,
    /// The appliance stopped.
    Shutdown,
    /// The replayed capture ended.
    EndOfCapture,
}

impl FlowEnd {
    /// The name in events (`policy.flow_ended`).
    pub fn name(self) -> &'static str {
        match self {
            FlowEnd::Closed => "closed",
            FlowEnd::Idle => "idle",
            FlowEnd::PortReused => "port_reused",
            FlowEnd::Shutdown => "shutdown",
            FlowEnd::EndOfCapture => "end_of_capture",
        }
    }
}

/// What a decrypted session's client was shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShownCertificate {
    /// A copy of the server's certificate signed by the rule's CA.
    Forged,
    /// A copy signed by the untrusted CA (the server's own is not trusted).
    ForgedUntrusted,
    /// The imported certificate of a known key.
    KnownKey,
}

impl ShownCertificate {
    /// The name in events (`decrypt.shown_certificate`).
    pub fn name(self) -> &'static str {
        match self {
            ShownCertificate::Forged => "forged",
            ShownCertificate::ForgedUntrusted => "forged-untrusted",
            ShownCertificate::KnownKey => "known-key",
        }
    }
}

/// Why a session the slow path took over cannot be decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailReason {
    /// The server sent a CertificateRequest.
    ClientAuth,
    /// The upstream handshake failed: no common version or cipher suite, or the server refused.
    HandshakeFailure,
    /// The client sent alert bad_certificate, unknown_ca or certificate_unknown (pinning).
    ClientRejectedCertificate,
    /// Known Key, and the server presented another certificate.
    CertificateChanged,
    /// A record failed to decrypt.
    DecryptionError,
    /// A peer broke the protocol (garbage, unexpected message).
    ProtocolError,
    /// The client offered Encrypted Client Hello and sent alert
    /// `ech_required`: the re-signed session could not accept its ECH.
    EchRejected,
}

impl FailReason {
    /// The undecryptable case whose action applies.
    pub fn undecryptable(self) -> Undecryptable {
        match self {
            FailReason::ClientAuth => Undecryptable::ClientAuth,
            FailReason::DecryptionError => Undecryptable::DecryptionError,
            FailReason::EchRejected => Undecryptable::Ech,
            _ => Undecryptable::HandshakeError,
        }
    }
}

/// A taken-over session that could not be decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeoverFailure {
    /// Which case.
    pub reason: FailReason,
    /// What the TLS stack said.
    pub detail: String,
    /// The client's doing (garbage, its own incompatible handshake): the
    /// server stays decryptable.
    pub by_client: bool,
    /// How the session ended.
    pub end: DecryptEnd,
}

/// How a session the slow path took over ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecryptEnd {
    /// What ended it.
    pub how: Ending,
    /// The client connection's last TCP state.
    pub client_tcp: TcpEnd,
    /// The server connection's last TCP state.
    pub server_tcp: TcpEnd,
}

/// What ended a decrypted session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// TLS was closed this way.
    Tls(TlsClose),
    /// The TCP connections ended without a TLS close.
    Tcp,
    /// Idle past `flows.decided_timeout`: both connections reset.
    Idle,
    /// The handshakes did not complete in `flows.inspecting_timeout`: both reset.
    HandshakeTimeout,
}

/// How TLS was closed on a decrypted session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsClose {
    /// Both peers closed cleanly (close_notify).
    Clean,
    /// tlsgate closed both sides (the session failed, or at shutdown).
    ByRelay,
    /// A peer sent a fatal alert (its name).
    Alert(Side, String),
}

/// A TCP connection's state when its session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpEnd {
    /// Still open.
    Open,
    /// FIN sent or received, not both.
    Closing,
    /// Closed by FIN both ways.
    Closed,
    /// Reset.
    Reset,
    /// Retransmissions gave up.
    TimedOut,
}

impl TcpEnd {
    /// In words.
    pub fn name(self) -> &'static str {
        match self {
            TcpEnd::Open => "open",
            TcpEnd::Closing => "closing",
            TcpEnd::Closed => "closed",
            TcpEnd::Reset => "reset",
            TcpEnd::TimedOut => "timed out",
        }
    }
}

impl Cause {
    /// The stable reason code (`policy.reason_code` in events).
    pub fn code(&self) -> &'static str {
        match self {
            Cause::RuleMatched => "rule_matched",
            Cause::DefaultAction => "default_action",
            Cause::Undecryptable(u) => u.code(),
            Cause::Excluded(ExclusionReason::Undecryptable(Undecryptable::Ech)) => "excluded_ech",
            Cause::Excluded(ExclusionReason::Undecryptable(_)) => "excluded_undecryptable",
            Cause::Excluded(ExclusionReason::ClientRejectedCertificate) => "excluded_pinned",
            Cause::Excluded(ExclusionReason::CertificateChanged) => "excluded_certificate_changed",
            Cause::SlowPathFull(_) => "slowpath_full",
            Cause::NotTakenOver(NotTakenOver::NoSlowPath) => "no_slowpath",
            Cause::NotTakenOver(NotTakenOver::ServerPacket) => "not_taken_over_server_packet",
            Cause::NotTakenOver(NotTakenOver::Midstream) => "not_taken_over_midstream",
            Cause::NotTakenOver(NotTakenOver::OutOfOrder) => "not_taken_over_out_of_order",
            Cause::NotTakenOver(NotTakenOver::Sslv2Hello) => "not_taken_over_sslv2_hello",
            Cause::NotTakenOver(NotTakenOver::Prelude) => "not_taken_over_starttls",
            Cause::ServerIdentityUnknown => "server_identity_unknown",
            Cause::NotTls(NotTls::Prelude(..)) => "prelude_without_tls",
            Cause::NotTls(_) => "not_tls",
            Cause::ConflictingRetransmission => "conflicting_retransmission",
            Cause::QuicUndecodable => "quic_undecodable",
            Cause::DnsEchStripped => "dns_ech_stripped",
            Cause::HandshakeFailed(HandshakeFailure::Malformed(..)) => "handshake_malformed",
            Cause::HandshakeFailed(HandshakeFailure::TooLarge(..)) => "handshake_too_large",
            Cause::FlowEnded(_) => "flow_ended_before_handshake",
            Cause::ReadPassively => "read_passively",
            Cause::Decrypted { .. } => "decrypted",
            Cause::UntrustedRejected { .. } => "untrusted_certificate_rejected",
            Cause::TakeoverFailed(f) => match f.reason {
                FailReason::ClientRejectedCertificate => "client_rejected_certificate",
                FailReason::CertificateChanged => "known_key_certificate_changed",
                other => other.undecryptable().code(),
            },
            Cause::HandshakesIncomplete { .. } => "decrypt_incomplete",
        }
    }
}

/// Every reason code and what it means: the README's table is checked
/// against this list.
pub const REASON_CODES: &[(&str, &str)] = &[
    ("rule_matched", "the first rule that held decided; `policy.rule` names it"),
    ("default_action", "no rule matched: the policy's default action"),
    ("undecryptable_sslv2", "the server answered in SSL 2.0: `undecryptable.sslv2`"),
    ("undecryptable_compressed", "a decrypt rule matched, but the session uses TLS compression"),
    ("undecryptable_unknown_cipher", "a decrypt rule matched, but the negotiated cipher suite is not known"),
    ("undecryptable_unsupported_cipher", "a decrypt rule matched, but the cipher suite cannot be decrypted here"),
    ("undecryptable_session_not_cached", "a decrypt rule matched, but the server resumed a session tlsgate did not see"),
    ("undecryptable_handshake_error", "a decrypt rule matched, but the handshake failed (after takeover: upstream refusal, protocol error)"),
    ("undecryptable_decryption_error", "taken over, but a record failed to decrypt"),
    ("undecryptable_client_auth", "a decrypt rule matched, but the server asked for a client certificate"),
    ("undecryptable_quic", "a decrypt rule matched a QUIC session, which the decrypting path does not take over: `undecryptable.quic` (default block; the client falls back to TCP)"),
    ("undecryptable_ech", "taken over; the client offered Encrypted Client Hello and aborted with alert ech_required, as the re-signed session could not accept it: later ECH sessions to the server are excluded (`undecryptable.ech`)"),
    ("excluded_ech", "a decrypt rule matched an Encrypted Client Hello; an earlier ECH session to the server ended in ech_required (exclusion cache; `undecryptable.ech`)"),
    ("excluded_undecryptable", "a decrypt rule matched; an earlier session to the server was undecryptable (exclusion cache)"),
    ("excluded_pinned", "a decrypt rule matched; a client rejected the re-signed certificate for this SNI (pinning; `slowpath.pinned_action`)"),
    ("excluded_certificate_changed", "a decrypt rule matched; the server no longer presents its known key's certificate"),
    ("slowpath_full", "a decrypt rule matched, but the slow path's ring was full or it was at its session limit (`slowpath.when_full`)"),
    ("no_slowpath", "a decrypt rule matched, but no decrypting slow path runs (`[slowpath] lcores` empty, or a replay)"),
    ("not_taken_over_server_packet", "a decrypt rule matched on a packet from the server: too late to take the flow over"),
    ("not_taken_over_midstream", "a decrypt rule matched, but the TCP handshake was not seen"),
    ("not_taken_over_out_of_order", "a decrypt rule matched, but the ClientHello's first segment passed before tlsgate saw it"),
    ("not_taken_over_sslv2_hello", "a decrypt rule matched, but the ClientHello came in SSLv2 format, which the decrypting path cannot answer"),
    ("not_taken_over_starttls", "a decrypt rule matched, but the TLS session follows a cleartext prelude (STARTTLS, HTTP CONNECT), which the decrypting path does not take over"),
    ("server_identity_unknown", "a decrypt rule needed the server's certificate, unknown at the ClientHello; the server identity cache (or a probe) learns it for later sessions"),
    ("not_tls", "the flow is not TLS; judged on its flow conditions (`event_type` is `flow`)"),
    ("conflicting_retransmission", "a segment resent bytes already judged with other bytes, and `flows.normalize.conflicts = \"block\"`"),
    ("quic_undecodable", "a QUIC flow whose Initial packets held no readable ClientHello; judged on its flow conditions"),
    ("dns_ech_stripped", "a DNS answer's HTTPS/SVCB records carried ECH configurations, removed on the wire (`[dns] strip_ech`; `event_type` is `dns`)"),
    ("prelude_without_tls", "a cleartext prelude (STARTTLS, HTTP CONNECT) did not lead to TLS: refused, abandoned, or past `flows.prelude`'s limits; judged on flow conditions (`event_type` is `flow`)"),
    ("handshake_malformed", "a side sent malformed TLS; judged on what was known"),
    ("handshake_too_large", "a handshake exceeds `flows.handshake_buffer`; judged on what was known"),
    ("flow_ended_before_handshake", "the flow closed, went idle, was reused, or the appliance stopped before the handshake completed"),
    ("read_passively", "a passive decrypt-known-key rule matched a session with RSA key exchange and the imported certificate: forwarded untouched, read with the key where a reader runs (replay; `decrypt` says what was read)"),
    ("undecryptable_not_passively_decryptable", "a passive decrypt-known-key rule matched, but the session cannot be read without taking it over: (EC)DHE key exchange, TLS 1.3, an unknown cipher suite, or another certificate than the imported one"),
    ("decrypted", "decrypted by the slow path; `decrypt` says how it ended"),
    ("untrusted_certificate_rejected", "the server's certificate is not trusted; the client rejected the untrusted copy, as it would the original"),
    ("client_rejected_certificate", "taken over; the client rejected the re-signed certificate (pinning): later sessions to the SNI are excluded"),
    ("known_key_certificate_changed", "taken over; the server presented another certificate than the known key's"),
    ("decrypt_incomplete", "taken over, but the handshakes did not complete"),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's table of reason codes is this list, code for code.
    #[test]
    fn the_readme_lists_every_reason_code() {
        let readme = include_str!("../../README.md");
        let in_table: Vec<&str> =
            readme.lines().filter_map(|l| l.strip_prefix("| `")?.split_once("` |").map(|(code, _)| code)).collect();
        for (code, _) in REASON_CODES {
            assert!(in_table.contains(code), "README.md lacks reason code {code}");
        }
    }

    #[test]
    fn every_code_is_listed_once() {
        let end = DecryptEnd { how: Ending::Tcp, client_tcp: TcpEnd::Closed, server_tcp: TcpEnd::Closed };
        let mut causes = vec![
            Cause::RuleMatched,
            Cause::DefaultAction,
            Cause::Excluded(ExclusionReason::Undecryptable(Undecryptable::ClientAuth)),
            Cause::Excluded(ExclusionReason::Undecryptable(Undecryptable::Ech)),
            Cause::Excluded(ExclusionReason::ClientRejectedCertificate),
            Cause::Excluded(ExclusionReason::CertificateChanged),
            Cause::SlowPathFull(SlowPathFull::RingFull),
            Cause::NotTakenOver(NotTakenOver::NoSlowPath),
            Cause::NotTakenOver(NotTakenOver::ServerPacket),
            Cause::NotTakenOver(NotTakenOver::Midstream),
            Cause::NotTakenOver(NotTakenOver::OutOfOrder),
            Cause::NotTakenOver(NotTakenOver::Sslv2Hello),
            Cause::NotTakenOver(NotTakenOver::Prelude),
            Cause::NotTls(NotTls::Prelude(PreludeProtocol::Smtp, NoTls::Refused)),
            Cause::ServerIdentityUnknown,
            Cause::NotTls(NotTls::OtherProtocol(Side::Client)),
            Cause::ConflictingRetransmission,
            Cause::QuicUndecodable,
            Cause::DnsEchStripped,
            Cause::HandshakeFailed(HandshakeFailure::Malformed(Side::Server, String::new())),
            Cause::HandshakeFailed(HandshakeFailure::TooLarge(Side::Client, 1)),
            Cause::FlowEnded(FlowEnd::Idle),
            Cause::ReadPassively,
            Cause::Decrypted { shown: ShownCertificate::Forged, end: end.clone() },
            Cause::UntrustedRejected { end: end.clone() },
            Cause::HandshakesIncomplete { end: end.clone() },
        ];
        causes.extend(Undecryptable::ALL.map(Cause::Undecryptable));
        for r in [FailReason::ClientRejectedCertificate, FailReason::CertificateChanged, FailReason::EchRejected] {
            let f = TakeoverFailure { reason: r, detail: String::new(), by_client: false, end: end.clone() };
            causes.push(Cause::TakeoverFailed(Box::new(f)));
        }
        let mut codes: Vec<&str> = causes.iter().map(Cause::code).collect();
        codes.sort();
        codes.dedup();
        let mut listed: Vec<&str> = REASON_CODES.iter().map(|(c, _)| *c).collect();
        listed.sort();
        assert_eq!(codes, listed);
        assert!(codes.iter().all(|c| c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')));
    }
}
