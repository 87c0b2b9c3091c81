//! DNS answers in the inspector (`[dns] strip_ech`): a UDP datagram from
//! port 53 is read as a DNS answer; one whose HTTPS or SVCB records carry ECH
//! configurations goes on without them (the rewritten frame replaces it,
//! and a `dns` event says so), so that the client never starts Encrypted
//! Client Hello and its real server name is seen and judged. Anything that
//! cannot be read to its end goes on as it came, counted.

use tlsgate_config::facts::{FlowFacts, SessionFacts};
use tlsgate_config::policy::Action;

use super::{Inspector, Output, Verdict};
use crate::dns::{strip_ech, DnsError};
use crate::event::SessionEvent;
use crate::outcome::{Cause, Outcome, ServerIdentitySource};
use crate::packet::{to_ip, UdpFrame};

/// Where DNS answers come from.
pub(super) const DNS_PORT: u16 = 53;

impl Inspector {
    /// A DNS answer (`fragmented`: it came in IP fragments).
    pub(super) fn on_dns_answer(
        &mut self,
        u: &UdpFrame,
        fragmented: bool,
        ingress: usize,
        now: u64,
        out: &mut Output,
    ) -> Verdict {
        let c = &mut self.judge.counters;
        c.dns_answers += 1;
        if !u.checksum_ok() {
            c.dns_untouched_malformed += 1;
            return Verdict::Forward;
        }
        let mut strip = match strip_ech(u.payload()) {
            Ok(s) => s,
            Err(DnsError::NotAnswer) => {
                c.dns_answers -= 1;
                c.udp_not_quic += 1;
                return Verdict::Forward;
            }
            Err(DnsError::Truncated) => {
                c.dns_untouched_truncated += 1;
                return Verdict::Forward;
            }
            Err(DnsError::Malformed) => {
                c.dns_untouched_malformed += 1;
                return Verdict::Forward;
            }
        };
        let Some(message) = strip.message.take() else { return Verdict::Forward };
        // A datagram that came in fragments goes on in them: rewritten whole it
        // could exceed the path's MTU, and its fragments are not ours to remake.
        if fragmented {
            c.dns_untouched_fragmented += 1;
            return Verdict::Forward;
        }
        let Some(frame) = u.with_payload(&message) else {
            c.dns_untouched_malformed += 1;
            return Verdict::Forward;
        };
        c.dns_ech_stripped += 1;
        c.dns_ech_removed += u64::from(strip.removed);
        out.released.push(frame);
        let flow = FlowFacts {
            src_ip: to_ip(&u.src, u.ipv6),
            src_port: u.src_port,
            dest_ip: to_ip(&u.dst, u.ipv6),
            dest_port: u.dst_port,
            vlan: u.vlan,
            ingress: self.judge.port_names.get(ingress).cloned().unwrap_or_default(),
        };
        self.judge.next_flow += 1;
        let flow_id = (self.judge.worker << 56) | self.judge.next_flow;
        let facts = SessionFacts::new(flow);
        out.events.push(SessionEvent {
            timestamp_ns: now,
            started_ns: now,
            flow_id,
            tls: false,
            flow: facts.flow,
            client_hello: None,
            server_hello: None,
            certificate: None,
            certificate_source: ServerIdentitySource::Unknown,
            cert_status: None,
            ocsp_stapled: false,
            client_cert_requested: false,
            unread: None,
            starttls: None,
            connect_target: None,
            quic_version: None,
            alerts: Vec::new(),
            evasions: Default::default(),
            outcome: Outcome {
                carried_out: Action::DoNotDecrypt,
                asked: Action::DoNotDecrypt,
                rule: None,
                cause: Cause::DnsEchStripped,
                cut_short: None,
                monitor_rules: Vec::new(),
                missing_facts: Vec::new(),
                server_identity: ServerIdentitySource::Unknown,
            },
            decrypt: None,
            dns: Some(Box::new(strip)),
        });
        Verdict::Replaced
    }
}
