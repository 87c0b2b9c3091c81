//! The session event: one per TLS session (and one per non-TLS flow the
//! policy judged), built on the worker, carried to the control thread through
//! a ring, and written there as a JSON line with Suricata EVE's field names
//! where EVE has them.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tlsgate_config::facts::{
    cipher_suite_name, colon_hex, CertStatusSet, CertificateFacts, ClientHelloFacts, FlowFacts, ServerHelloFacts,
};

/// What happened to one session, and why.
#[derive(Debug, Clone)]
pub struct SessionEvent {
    /// When the decision was taken (packet time), ns since the Unix epoch.
    pub timestamp_ns: u64,
    /// Unique per run (worker index in the top bits).
    pub flow_id: u64,
    /// `tls` for a TLS session, `flow` for a flow that turned out not to be TLS.
    pub event_type: &'static str,
    /// Where it was on the wire.
    pub flow: FlowFacts,
    /// Phase 1 facts.
    pub client_hello: Option<ClientHelloFacts>,
    /// Phase 2 facts.
    pub server_hello: Option<ServerHelloFacts>,
    /// The server's leaf certificate.
    pub certificate: Option<Arc<CertificateFacts>>,
    /// Its status.
    pub cert_status: Option<CertStatusSet>,
    /// The server asked for a client certificate.
    pub client_cert_requested: bool,
    /// Alerts seen in clear: (sender, level, description).
    pub alerts: Vec<(&'static str, u8, u8)>,
    /// The deciding rule's name (None: the default action or an undecryptable action).
    pub rule: Option<String>,
    /// What the policy asked for.
    pub expected_action: &'static str,
    /// What was carried out.
    pub actual_action: &'static str,
    /// Why, in words.
    pub reason: String,
    /// Monitor rules that held.
    pub monitor_rules: Vec<String>,
    /// Facts that never came and made conditions not match.
    pub missing_facts: Vec<&'static str>,
    /// Where the server facts came from: `handshake`, `cache` (the server
    /// identity cache, at the ClientHello) or `unknown`.
    pub server_identity: &'static str,
    /// For a session the slow path decrypted (or tried to): what happened on
    /// its two TLS sessions.
    pub decrypt: Option<Box<DecryptFacts>>,
}

/// What the slow path did with a session it took over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecryptFacts {
    /// TLS version with the client (tlsgate's server side).
    pub client_version: Option<&'static str>,
    /// TLS version with the server (tlsgate's client side).
    pub server_version: Option<&'static str>,
    /// ALPN protocol both sides use.
    pub alpn: Option<String>,
    /// The server's certificate verified against the trust store.
    pub server_trusted: Option<bool>,
    /// What the client was shown: `forged` (signed by the rule's CA),
    /// `forged-untrusted` (signed by the untrusted CA: the server's own
    /// certificate is not trusted), `known-key`.
    pub shown_certificate: Option<&'static str>,
    /// Plaintext bytes relayed from the client to the server.
    pub bytes_to_server: u64,
    /// Plaintext bytes relayed from the server to the client.
    pub bytes_to_client: u64,
    /// How the session ended, in words.
    pub ended: String,
}

/// `2026-11-28T03:14:15.123456+0000`, EVE's timestamp form.
pub fn eve_timestamp(ns: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(ns);
    let s = humantime::format_rfc3339_micros(t).to_string();
    s.trim_end_matches('Z').to_string() + "+0000"
}

/// `2014-04-09T12:05:08`, EVE's form for certificate dates.
fn eve_date(unix: i64) -> String {
    if unix < 0 {
        return unix.to_string();
    }
    let t = UNIX_EPOCH + Duration::from_secs(unix as u64);
    humantime::format_rfc3339_seconds(t).to_string().trim_end_matches('Z').to_string()
}

impl SessionEvent {
    /// The event as one JSON object.
    pub fn to_json(&self) -> Value {
        let mut tls = Map::new();
        if let Some(ch) = &self.client_hello {
            // Fingerprints are computed here, on the control thread (see ClientHelloFacts::raw).
            let mut fp = ClientHelloFacts { raw: ch.raw.clone(), sslv2: ch.sslv2, ..Default::default() };
            let ch_fp = if ch.ja4.is_empty() && !ch.raw.is_empty() {
                crate::tls::client_hello::fill_fingerprints(&mut fp);
                &fp
            } else {
                ch
            };
            tls.insert("sni".into(), json!(ch.sni));
            tls.insert("ja3".into(), json!({ "hash": ch_fp.ja3, "string": ch_fp.ja3_string }));
            tls.insert("ja4".into(), json!(ch_fp.ja4));
            tls.insert("client_versions".into(), json!(ch.versions.iter().map(|v| v.event_name()).collect::<Vec<_>>()));
            tls.insert("alpn".into(), json!(ch.alpn));
            tls.insert("ech".into(), json!(ch.ech));
            if ch.sslv2 {
                tls.insert("version".into(), json!("SSLv2"));
            }
        }
        if let Some(sh) = &self.server_hello {
            if let Some(v) = sh.version {
                tls.insert("version".into(), json!(v.event_name()));
            }
            let cipher = cipher_suite_name(sh.cipher_suite)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("0x{:04X}", sh.cipher_suite));
            tls.insert("cipher_suite".into(), json!(cipher));
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
            let mut san: Vec<String> = c.san_dns.clone();
            san.extend(c.san_ip.iter().map(|ip| ip.to_string()));
            tls.insert("san".into(), json!(san));
            tls.insert("key".into(), json!({ "type": c.key_type, "bits": c.key_bits }));
            tls.insert("signature_algorithm".into(), json!(c.signature_algorithm));
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
        o.insert("event_type".into(), json!(self.event_type));
        o.insert("src_ip".into(), json!(self.flow.src_ip.to_string()));
        o.insert("src_port".into(), json!(self.flow.src_port));
        o.insert("dest_ip".into(), json!(self.flow.dest_ip.to_string()));
        o.insert("dest_port".into(), json!(self.flow.dest_port));
        o.insert("proto".into(), json!("TCP"));
        if let Some(v) = self.flow.vlan {
            o.insert("vlan".into(), json!([v]));
        }
        o.insert("in_iface".into(), json!(self.flow.ingress));
        o.insert("tls".into(), Value::Object(tls));
        o.insert(
            "policy".into(),
            json!({
                "rule": self.rule,
                "expected_action": self.expected_action,
                "actual_action": self.actual_action,
                "reason": self.reason,
                "monitor_rules": self.monitor_rules,
                "cert_status": self.cert_status.map(|s| s.names()),
                "missing_facts": self.missing_facts,
                "server_identity": self.server_identity,
            }),
        );
        if let Some(d) = &self.decrypt {
            o.insert(
                "decrypt".into(),
                json!({
                    "client_version": d.client_version,
                    "server_version": d.server_version,
                    "alpn": d.alpn,
                    "server_trusted": d.server_trusted,
                    "shown_certificate": d.shown_certificate,
                    "bytes_to_server": d.bytes_to_server,
                    "bytes_to_client": d.bytes_to_client,
                    "ended": d.ended,
                }),
            );
        }
        Value::Object(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_look_like_eve() {
        assert_eq!(eve_timestamp(1_700_000_000_123_456_789), "2023-11-14T22:13:20.123456+0000");
        assert_eq!(eve_date(1397045108), "2014-04-09T12:05:08");
    }
}
