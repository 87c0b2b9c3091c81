//! The session event: one per TLS session (and one per non-TLS flow the
//! policy judged), built on the worker, carried to the control thread through
//! a ring, and written there as a JSON line with Suricata EVE's field names
//! where EVE has them. The event's `policy.reason` sentence is made here, and
//! only here, from its typed [`Outcome`].

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tlsgate_config::facts::{
    cipher_suite_name, colon_hex, version_name, CertStatusSet, CertificateFacts, ClientHelloFacts, FlowFacts,
    ServerHelloFacts,
};

use crate::outcome::{
    Cause, DecryptEnd, Ending, FailReason, FlowEnd, HandshakeFailure, NotTakenOver, NotTls, Outcome,
    ServerIdentitySource, ShownCertificate, SlowPathFull, TlsClose,
};

/// Subject alternative names an event lists at most (`tls.san`); past
/// that, `tls.san_total` says how many the certificate has.
pub const EVENT_SAN_MAX: usize = 100;

/// What happened to one session, and why.
#[derive(Debug, Clone)]
pub struct SessionEvent {
    /// When the decision was taken (packet time), ns since the Unix epoch.
    pub timestamp_ns: u64,
    /// When the flow's first packet came, on the same clock (0: not known,
    /// as for sessions the slow path reports).
    pub started_ns: u64,
    /// Unique per run (worker index in the top bits).
    pub flow_id: u64,
    /// True for a TLS session (`tls` event), false for a flow that turned
    /// out not to be TLS (`flow` event).
    pub tls: bool,
    /// Where it was on the wire.
    pub flow: FlowFacts,
    /// Phase 1 facts.
    pub client_hello: Option<ClientHelloFacts>,
    /// Phase 2 facts.
    pub server_hello: Option<ServerHelloFacts>,
    /// The server's leaf certificate.
    pub certificate: Option<Arc<CertificateFacts>>,
    /// Where the certificate facts come from: this session's handshake, or
    /// the server identity cache (TLS 1.3 and resumed sessions show none).
    pub certificate_source: ServerIdentitySource,
    /// Its status.
    pub cert_status: Option<CertStatusSet>,
    /// The server stapled an OCSP response.
    pub ocsp_stapled: bool,
    /// The server asked for a client certificate.
    pub client_cert_requested: bool,
    /// The handshake was read on after the decision (for the event), but
    /// reading stopped early: why. The facts that would have followed are missing.
    pub unread: Option<HandshakeFailure>,
    /// The cleartext prelude TLS followed (or did not): `smtp`, `http-connect` ...
    pub starttls: Option<&'static str>,
    /// An HTTP CONNECT's target (`host:port`).
    pub connect_target: Option<String>,
    /// A QUIC session: its version (the event is `event_type: "quic"`).
    pub quic_version: Option<u32>,
    /// Alerts seen in clear: (sender, level, description).
    pub alerts: Vec<(&'static str, u8, u8)>,
    /// What the inline normaliser met on the flow while it was inspected
    /// (segments not judged, conflicting retransmissions), counted.
    pub evasions: crate::inspect::Evasions,
    /// What the policy asked, what was done, and why.
    pub outcome: Outcome,
    /// For a session the slow path decrypted (or tried to): what happened on
    /// its two TLS sessions.
    pub decrypt: Option<Box<DecryptFacts>>,
    /// A DNS answer rewritten on the wire (the event is `event_type: "dns"`,
    /// from the DNS server to the client).
    pub dns: Option<Box<crate::dns::EchStrip>>,
}

/// What the slow path did with a session it took over (or read passively).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecryptFacts {
    /// How it was read: `None` taken over; `passive` read with a known key, the flow untouched.
    pub mode: Option<&'static str>,
    /// Records whose MAC or tag failed (passive reading; the direction is read no further).
    pub records_failed: u64,
    /// Protected records not opened (passive reading: no keys, or after a failure).
    pub records_not_decrypted: u64,
    /// Why reading failed or stopped (passive reading: `decryption_error`, `no_key`, ...).
    pub reason_code: Option<&'static str>,
    /// TLS version with the client (tlsgate's server side).
    pub client_version: Option<&'static str>,
    /// TLS version with the server (tlsgate's client side).
    pub server_version: Option<&'static str>,
    /// ALPN protocol both sides use.
    pub alpn: Option<String>,
    /// The server's certificate verified against the trust store.
    pub server_trusted: Option<bool>,
    /// What the client was shown.
    pub shown_certificate: Option<ShownCertificate>,
    /// Plaintext bytes relayed from the client to the server.
    pub bytes_to_server: u64,
    /// Plaintext bytes relayed from the server to the client.
    pub bytes_to_client: u64,
    /// Protected records from the client (encrypted handshake, data, alerts, post-handshake messages).
    pub records_to_server: u64,
    /// Protected records from the server.
    pub records_to_client: u64,
    /// From the takeover to the server's certificate (the handshake toward the server), ns.
    pub server_handshake_ns: Option<u64>,
    /// From then to both handshakes complete (the handshake toward the client), ns.
    pub client_handshake_ns: Option<u64>,
    /// From the takeover to the first plaintext byte relayed, ns.
    pub first_plaintext_ns: Option<u64>,
    /// tlsgate's TCP connection with the client (a takeover's; passive reading has none).
    pub tcp_client: Option<TcpFacts>,
    /// tlsgate's TCP connection with the server.
    pub tcp_server: Option<TcpFacts>,
}

/// How one of a taken-over session's TCP connections went, as tlsgate's
/// endpoint on it counted: a slow transfer with retransmissions, timeouts or
/// zero windows says which side was lossy or slow to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpFacts {
    /// Segments sent (data, ACKs, FIN, retransmissions).
    pub segments_sent: u64,
    /// Segments received.
    pub segments_received: u64,
    /// Segments sent again (after a timeout, or three duplicate ACKs).
    pub retransmissions: u64,
    /// Retransmission timeouts.
    pub timeouts: u64,
    /// Segments (or the new parts of them) that came ahead of a gap.
    pub out_of_order: u64,
    /// Out-of-order segments dropped for want of room.
    pub out_of_order_dropped: u64,
    /// Probes of the peer's zero window (it stopped reading).
    pub zero_window_probes: u64,
}

impl TcpFacts {
    fn json(&self) -> Value {
        json!({
            "segments_sent": self.segments_sent,
            "segments_received": self.segments_received,
            "retransmissions": self.retransmissions,
            "timeouts": self.timeouts,
            "out_of_order": self.out_of_order,
            "out_of_order_dropped": self.out_of_order_dropped,
            "zero_window_probes": self.zero_window_probes,
        })
    }
}

/// `2026-11-28T03:14:15.123456+0000`, EVE's timestamp form.
pub fn eve_timestamp(ns: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(ns);
    let s = humantime::format_rfc3339_micros(t).to_string();
    s.trim_end_matches('Z').to_string() + "+0000"
}

/// `2014-04-09T12:05:08`, EVE's form for certificate dates (any year from
/// 0000 to 9999: certificates carry dates before 1970 and after 2049).
fn eve_date(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (the proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

impl SessionEvent {
    /// `tls`, `quic`, or `flow` for a flow that is not TLS.
    pub fn event_type(&self) -> &'static str {
        if self.dns.is_some() {
            "dns"
        } else if self.quic_version.is_some() {
            "quic"
        } else if self.tls {
            "tls"
        } else {
            "flow"
        }
    }

    /// The event as one JSON object.
    pub fn to_json(&self) -> Value {
        let mut tls = Map::new();
        if let Some(ch) = &self.client_hello {
            // Fingerprints are computed here, on the control thread (see ClientHelloFacts::raw).
            let mut fp = ClientHelloFacts { raw: ch.raw.clone(), sslv2: ch.sslv2, quic: ch.quic, ..Default::default() };
            let ch_fp = if ch.ja4.is_empty() && !ch.raw.is_empty() {
                crate::tls::client_hello::fill_fingerprints(&mut fp);
                &fp
            } else {
                ch
            };
            tls.insert("sni".into(), json!(ch.sni));
            tls.insert("ja3".into(), json!({ "hash": ch_fp.ja3, "string": ch_fp.ja3_string }));
            tls.insert("ja4".into(), json!(ch_fp.ja4));
            let offered: Vec<_> = ch.wire_versions.iter().map(|v| version_name(*v)).collect();
            tls.insert("client_versions".into(), json!(offered));
            tls.insert("alpn".into(), json!(ch.alpn));
            tls.insert("ech".into(), json!(ch.ech));
            if ch.ech {
                // With ECH the SNI in clear is the outer (public) name, not the real one.
                tls.insert("sni_is_outer".into(), json!(true));
            }
            if ch.sslv2 {
                // The session's version is what the server answers.
                tls.insert("sslv2_client_hello".into(), json!(true));
            }
        }
        if let Some(sh) = &self.server_hello {
            tls.insert("version".into(), json!(version_name(sh.wire_version)));
            // An SSL 2.0 SERVER-HELLO lists cipher kinds, not a TLS cipher suite.
            if sh.wire_version != 0x0002 {
                let cipher = cipher_suite_name(sh.cipher_suite)
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("0x{:04X}", sh.cipher_suite));
                tls.insert("cipher_suite".into(), json!(cipher));
            }
            tls.insert("session_resumed".into(), json!(sh.resumed));
            tls.insert("alpn_server".into(), json!(sh.alpn));
            if sh.hello_retry {
                tls.insert("hello_retry".into(), json!(true));
            }
        }
        if let Some(c) = &self.certificate {
            tls.insert("subject".into(), json!(c.subject.to_string()));
            tls.insert("issuerdn".into(), json!(c.issuer.to_string()));
            tls.insert("serial".into(), json!(c.serial));
            tls.insert("fingerprint".into(), json!(colon_hex(&c.sha1)));
            tls.insert("fingerprint_sha256".into(), json!(colon_hex(&c.sha256)));
            tls.insert("notbefore".into(), json!(eve_date(c.not_before)));
            tls.insert("notafter".into(), json!(eve_date(c.not_after)));
            // A certificate may name thousands; the event lists the first
            // EVENT_SAN_MAX (the policy matched on all of them) and the count.
            let total = c.san_dns.len() + c.san_ip.len();
            let san: Vec<String> = (c.san_dns.iter().cloned())
                .chain(c.san_ip.iter().map(|ip| ip.to_string()))
                .take(EVENT_SAN_MAX)
                .collect();
            tls.insert("san".into(), json!(san));
            if total > EVENT_SAN_MAX {
                tls.insert("san_total".into(), json!(total));
            }
            tls.insert("key".into(), json!({ "type": c.key_type, "bits": c.key_bits }));
            tls.insert("signature_algorithm".into(), json!(c.signature_algorithm));
            tls.insert("certificate_source".into(), json!(self.certificate_source.name()));
        }
        if self.ocsp_stapled {
            tls.insert("ocsp_stapled".into(), json!(true));
        }
        if let Some(protocol) = self.starttls {
            tls.insert("starttls".into(), json!(protocol));
        }
        if let Some(target) = &self.connect_target {
            tls.insert("connect_target".into(), json!(target));
        }
        if let Some(why) = &self.unread {
            // As a reason code: `handshake_too_large`, `handshake_malformed`.
            tls.insert("facts_incomplete".into(), json!(Cause::HandshakeFailed(why.clone()).code()));
        }
        if self.client_cert_requested {
            tls.insert("client_certificate_requested".into(), json!(true));
        }
        if !self.alerts.is_empty() {
            let alerts: Vec<Value> = self
                .alerts
                .iter()
                .map(|(from, level, desc)| json!({ "from": from, "level": level, "description": desc }))
                .collect();
            tls.insert("alerts".into(), Value::Array(alerts));
        }
        let mut o = Map::new();
        o.insert("timestamp".into(), json!(eve_timestamp(self.timestamp_ns)));
        o.insert("flow_id".into(), json!(self.flow_id));
        o.insert("event_type".into(), json!(self.event_type()));
        o.insert("src_ip".into(), json!(self.flow.src_ip.to_string()));
        o.insert("src_port".into(), json!(self.flow.src_port));
        o.insert("dest_ip".into(), json!(self.flow.dest_ip.to_string()));
        o.insert("dest_port".into(), json!(self.flow.dest_port));
        let udp = self.quic_version.is_some() || self.dns.is_some();
        o.insert("proto".into(), json!(if udp { "UDP" } else { "TCP" }));
        if let Some(v) = self.flow.vlan {
            o.insert("vlan".into(), json!([v]));
        }
        o.insert("in_iface".into(), json!(self.flow.ingress));
        if let Some(d) = &self.dns {
            // Suricata's dns answer fields, and what was removed.
            let dns = json!({
                "type": "answer",
                "id": d.id,
                "rrname": d.qname,
                "rrtype": crate::dns::type_name(d.qtype),
                "rcode": crate::dns::rcode_name(d.rcode),
                "svcb_records": d.svcb_records,
                "ech_removed": d.removed,
            });
            o.insert("dns".into(), dns);
        } else {
            match self.quic_version {
                // A QUIC session's handshake facts, as Suricata's quic events name them.
                Some(version) => {
                    let mut quic = Map::new();
                    let name = match version {
                        crate::quic::VERSION_1 => "1".to_string(),
                        crate::quic::VERSION_2 => "2".to_string(),
                        v => format!("{v:#010x}"),
                    };
                    quic.insert("version".into(), json!(name));
                    for k in ["sni", "alpn", "ja4", "client_versions", "cipher_suite"] {
                        if let Some(v) = tls.remove(k) {
                            quic.insert(k.into(), v);
                        }
                    }
                    o.insert("quic".into(), Value::Object(quic));
                }
                None => {
                    o.insert("tls".into(), Value::Object(tls));
                }
            }
        }
        let p = &self.outcome;
        let mut policy = json!({
            "rule": p.rule,
            "expected_action": p.asked.name(),
            "actual_action": p.carried_out.name(),
            "reason_code": p.cause.code(),
            "reason": self.outcome.reason(),
            "monitor_rules": p.monitor_rules,
            "cert_status": self.cert_status.map(|s| s.names()),
            "missing_facts": p.missing_facts,
            "server_identity": p.server_identity.name(),
        });
        if let Some(end) = p.cut_short {
            policy["flow_ended"] = json!(end.name());
        }
        o.insert("policy".into(), policy);
        if !self.evasions.is_empty() {
            // What the normaliser met, by name, counted: `{"bad_checksum": 1}`.
            let met: Map<String, Value> = self.evasions.iter().map(|(name, n)| (name.to_string(), json!(n))).collect();
            o.insert("evasion".into(), Value::Object(met));
        }
        if let Some(d) = &self.decrypt {
            o.insert(
                "decrypt".into(),
                json!({
                    // Taken over by the slow path, or read passively (a replay's reader also says keylog).
                    "mode": d.mode.unwrap_or("takeover"),
                    "records_failed": d.records_failed,
                    "records_not_decrypted": d.records_not_decrypted,
                    "reason_code": d.reason_code,
                    "client_version": d.client_version,
                    "server_version": d.server_version,
                    "alpn": d.alpn,
                    "server_trusted": d.server_trusted,
                    "shown_certificate": d.shown_certificate.map(ShownCertificate::name),
                    "bytes_to_server": d.bytes_to_server,
                    "bytes_to_client": d.bytes_to_client,
                    "records_to_server": d.records_to_server,
                    "records_to_client": d.records_to_client,
                    "server_handshake_ms": d.server_handshake_ns.map(|n| n as f64 / 1e6),
                    "client_handshake_ms": d.client_handshake_ns.map(|n| n as f64 / 1e6),
                    "first_plaintext_ms": d.first_plaintext_ns.map(|n| n as f64 / 1e6),
                    "ended": p.cause.decrypt_end().map(ended),
                }),
            );
            if let (Some(c), Some(s), Some(Value::Object(d))) = (&d.tcp_client, &d.tcp_server, o.get_mut("decrypt")) {
                d.insert("tcp".into(), json!({ "client": c.json(), "server": s.json() }));
            }
        }
        Value::Object(o)
    }
}

impl Outcome {
    /// The outcome in one sentence, for a person (`policy.reason`).
    pub fn reason(&self) -> String {
        let rule = match &self.rule {
            Some(name) => format!("rule {name:?}"),
            None => "the default action".to_string(),
        };
        let (asked, done) = (self.asked.name(), self.carried_out.name());
        let decided = || {
            let mut s = match &self.rule {
                Some(name) => format!("rule {name:?} matched"),
                None => "no rule matched: default action".to_string(),
            };
            if !self.missing_facts.is_empty() {
                s.push_str(&format!("; never seen, so not matched: {}", self.missing_facts.join(", ")));
            }
            s
        };
        // A judgement on what was known, after something went wrong: `why` first.
        let judged = |why: String| {
            if self.asked.is_decrypt() {
                format!("{why} (undecryptable.handshake_error = {done})")
            } else if self.rule.is_some() || !self.missing_facts.is_empty() {
                format!("{why}; {}", decided())
            } else {
                why
            }
        };
        let s = match &self.cause {
            Cause::RuleMatched | Cause::DefaultAction => decided(),
            Cause::Undecryptable(u) if self.asked.is_decrypt() => format!(
                "{rule} asks for {asked}, but the session cannot be decrypted: {} (undecryptable.{} = {done})",
                u.name(),
                u.name()
            ),
            Cause::Undecryptable(u) => format!(
                "{}: the session cannot be evaluated (undecryptable.{} = {done})",
                if *u == tlsgate_config::policy::Undecryptable::Sslv2 { "SSLv2 ClientHello" } else { u.name() },
                u.name()
            ),
            Cause::Excluded(why) => {
                let why = match why {
                    crate::identity::ExclusionReason::Undecryptable(tlsgate_config::policy::Undecryptable::Ech) => {
                        "an earlier client offering Encrypted Client Hello to it aborted with ech_required".into()
                    }
                    crate::identity::ExclusionReason::Undecryptable(u) => {
                        format!("an earlier session to it was undecryptable: {}", u.name())
                    }
                    crate::identity::ExclusionReason::ClientRejectedCertificate => {
                        "a client rejected the re-signed certificate (certificate pinning)".into()
                    }
                    crate::identity::ExclusionReason::CertificateChanged => {
                        "the server no longer presents its known key's certificate".into()
                    }
                };
                format!("{rule} asks for {asked}, but the server is in the exclusion cache ({why}): {done}")
            }
            Cause::SlowPathFull(SlowPathFull::RingFull) => {
                format!("{rule} asks for {asked}, but the slow path's ring is full (slowpath.when_full = {done})")
            }
            Cause::SlowPathFull(SlowPathFull::SessionLimit(n)) => format!(
                "{rule} asks for {asked}, but the slow path is at its limit of {n} sessions (slowpath.when_full = {done})"
            ),
            Cause::NotTakenOver(why) => {
                let why = match why {
                    NotTakenOver::NoSlowPath => {
                        "no decrypting slow path runs here ([slowpath] lcores is empty, or this is a replay)"
                    }
                    NotTakenOver::ServerPacket => "the decision came on a packet from the server",
                    NotTakenOver::Midstream => "the TCP handshake was not seen (a flow picked up mid-stream)",
                    NotTakenOver::OutOfOrder => {
                        "the ClientHello's first segment reached the server before tlsgate saw it (out of order)"
                    }
                    NotTakenOver::Sslv2Hello => {
                        "the ClientHello came in SSLv2 format, which the decrypting path cannot answer"
                    }
                    NotTakenOver::Prelude => {
                        "the TLS session follows a cleartext prelude (STARTTLS, HTTP CONNECT), which the decrypting path \
                         does not take over"
                    }
                };
                format!("{rule} asks for {asked}; carried out as {done}: {why}")
            }
            Cause::ServerIdentityUnknown => format!(
                "{rule} asks for {asked}, but it needs server facts: server identity unknown at the ClientHello, \
                 where a decryption has to begin (the server identity cache has learned it for later sessions where \
                 the certificate was visible)"
            ),
            Cause::DnsEchStripped => "[dns] strip_ech: the answer's HTTPS/SVCB records carried ECH configurations, \
                 removed on the wire (record lengths and the UDP checksum fixed), so that the client sends its real \
                 server name in clear"
                .into(),
            Cause::QuicUndecodable => {
                judged("QUIC: no ClientHello could be read from the flow's Initial packets".into())
            }
            Cause::ConflictingRetransmission => {
                "a segment resent bytes already judged with other bytes (flows.normalize.conflicts = block)".into()
            }
            Cause::NotTls(NotTls::OtherProtocol(side)) => {
                judged(format!("not TLS: the {} spoke first in another protocol", side.name()))
            }
            Cause::NotTls(NotTls::Malformed(side, why)) => {
                judged(format!("not TLS: malformed TLS from the {}: {why}", side.name()))
            }
            Cause::NotTls(NotTls::Prelude(protocol, why)) => {
                judged(format!("the {} prelude did not lead to TLS: {}", protocol.name(), why.describe()))
            }
            Cause::HandshakeFailed(HandshakeFailure::Malformed(side, why)) => {
                judged(format!("malformed TLS from the {}: {why}", side.name()))
            }
            Cause::HandshakeFailed(HandshakeFailure::TooLarge(side, limit)) => judged(format!(
                "the {}'s handshake exceeds the {limit}-byte buffer (flows.handshake_buffer)",
                side.name()
            )),
            Cause::FlowEnded(end) => judged(flow_end(*end).to_string()),
            Cause::ReadPassively => format!(
                "{rule} matched ({asked}, passive): RSA key exchange with the imported certificate, so the session \
                 can be read with its key; the flow was forwarded untouched"
            ),
            Cause::Decrypted { shown, end } => {
                let how = match shown {
                    ShownCertificate::Forged => "the server's certificate re-signed by the rule's CA",
                    ShownCertificate::ForgedUntrusted => {
                        "the server's certificate is not trusted: re-signed by the untrusted CA, as the client would \
                         have seen it"
                    }
                    ShownCertificate::KnownKey => "the imported certificate and key",
                };
                format!("{rule} matched; decrypted, the client shown {how}; {}", ended(end))
            }
            Cause::UntrustedRejected { end } => format!(
                "{rule} matched; the server's certificate is not trusted, so the client was shown a copy signed by \
                 the untrusted CA, and rejected it as it would have rejected the original; {}",
                ended(end)
            ),
            Cause::TakeoverFailed(f) => {
                let later = match f.reason {
                    FailReason::CertificateChanged => format!(
                        "the known key no longer applies: the server identity cache has the new certificate, so \
                         {rule} no longer matches the server's next sessions"
                    ),
                    FailReason::ClientRejectedCertificate => format!(
                        "the client rejected the re-signed certificate (certificate pinning): later sessions to it get \
                         {done} at their ClientHello (slowpath.pinned_action)"
                    ),
                    FailReason::EchRejected => format!(
                        "the client offered Encrypted Client Hello and aborted with alert ech_required (the re-signed \
                         session could not accept it): later ECH sessions to the server get {done} at their \
                         ClientHello (undecryptable.ech; exclusion cache); sessions without ECH are still decrypted"
                    ),
                    other if f.by_client => format!(
                        "the client's doing (undecryptable.{} = {done}), so the server stays decryptable",
                        other.undecryptable().name()
                    ),
                    other => format!(
                        "later sessions to the server get {done} at their ClientHello (undecryptable.{}; exclusion \
                         cache)",
                        other.undecryptable().name()
                    ),
                };
                format!(
                    "{rule} asks for {asked}; the session was taken over but cannot be decrypted: {}; it was ended \
                     for both sides; {later}; {}",
                    f.detail,
                    ended(&f.end)
                )
            }
            Cause::HandshakesIncomplete { end } => {
                format!("{rule} matched; taken over for decryption, but the handshakes did not complete: {}", ended(end))
            }
        };
        match self.cut_short {
            Some(end) if !matches!(self.cause, Cause::FlowEnded(_)) => format!("{}; {s}", flow_end(end)),
            _ => s,
        }
    }
}

impl Cause {
    /// How a session the slow path took over ended, if it was one.
    pub fn decrypt_end(&self) -> Option<&DecryptEnd> {
        match self {
            Cause::Decrypted { end, .. } | Cause::UntrustedRejected { end } | Cause::HandshakesIncomplete { end } => {
                Some(end)
            }
            Cause::TakeoverFailed(f) => Some(&f.end),
            _ => None,
        }
    }
}

fn flow_end(end: FlowEnd) -> &'static str {
    match end {
        FlowEnd::Closed => "the flow closed before the handshake completed",
        FlowEnd::Idle => "the flow went idle before the handshake completed",
        FlowEnd::PortReused => "a new connection reused the flow's addresses and ports",
        FlowEnd::Shutdown => "tlsgate stopped before the handshake completed",
        FlowEnd::EndOfCapture => "the capture ended before the handshake completed",
    }
}

/// How a decrypted session ended, in words (`decrypt.ended`).
fn ended(end: &DecryptEnd) -> String {
    let tcp = format!("client connection {}, server connection {}", end.client_tcp.name(), end.server_tcp.name());
    match &end.how {
        Ending::Idle => "idle too long: both connections reset".into(),
        Ending::HandshakeTimeout => "the handshakes did not complete in time: both connections reset".into(),
        Ending::Tls(TlsClose::Clean) => format!("client and server closed cleanly; {tcp}"),
        Ending::Tls(TlsClose::ByRelay) => format!("closed by the relay; {tcp}"),
        Ending::Tls(TlsClose::Alert(side, alert)) => format!("the {} sent alert {alert}; {tcp}", side.name()),
        Ending::Tcp => tcp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_look_like_eve() {
        assert_eq!(eve_timestamp(1_700_000_000_123_456_789), "2023-11-14T22:13:20.123456+0000");
        assert_eq!(eve_date(1397045108), "2014-04-09T12:05:08");
        assert_eq!(eve_date(0), "1970-01-01T00:00:00");
        assert_eq!(eve_date(-1), "1969-12-31T23:59:59");
        assert_eq!(eve_date(-152_668_800), "1965-03-01T00:00:00");
        assert_eq!(eve_date(2_871_763_200), "2061-01-01T00:00:00");
        assert_eq!(eve_date(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(eve_date(253_402_300_799), "9999-12-31T23:59:59");
    }
}
