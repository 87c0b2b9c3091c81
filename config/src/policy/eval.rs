//! Evaluating a compiled policy against what is known of a session, in
//! three-valued logic: each condition is true, false, or unknown (its fact has
//! not been seen). Rules are walked top-down; the first rule that is not false
//! decides if it is true, and makes the decision wait if it is unknown.
//!
//! Cost: one index look-up and one bitset AND per condition type in use, then
//! a scan for the first rule left standing. No loop over the rules.

use std::borrow::Cow;

use super::compile::{Bits, DnIndex, Free, CERTIFICATE, CERT_STATUS, GROUPS, SERVER_HELLO, SNI};
use super::file::DN_ATTRS;
use super::{Action, Policy};
use crate::facts::{DistinguishedName, SessionFacts};

/// The outcome of evaluating a session at one phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evaluation {
    /// A rule before the first true one is unknown: wait for the next phase.
    Pending {
        /// Monitor rules true so far, in order (indexes into [`Policy::rules`]).
        monitor_rules: Vec<usize>,
        /// The facts the first unknown rule waits on: `sni`, `server_hello`,
        /// `certificate`, `cert_status`.
        waiting_on: Vec<&'static str>,
    },
    /// The decision is final.
    Decided(Decision),
}

/// A final decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Index into [`Policy::rules`]; `None` = no rule matched: the default action.
    pub rule: Option<usize>,
    /// The rule's action, or the default action.
    pub action: Action,
    /// Monitor rules that held, in order.
    pub monitor_rules: Vec<usize>,
    /// At the last phase: the facts that never came and so made rules before
    /// the deciding one not match (same names as `Evaluation::Pending::waiting_on`).
    pub missing_facts: Vec<&'static str>,
}

impl Policy {
    /// Evaluates the policy against what is known of a session.
    ///
    /// `last_phase`: no more facts will come, so an unknown condition counts as
    /// not matching (and its fact is listed in `Decision::missing_facts`).
    ///
    /// A monitor rule whose conditions are unknown does not make the decision
    /// wait: it cannot change the action, and waiting would make a decrypt
    /// decision below it impossible (that must be known at the ClientHello).
    pub fn evaluate(&self, facts: &SessionFacts, last_phase: bool) -> Evaluation {
        self.evaluate_traced(facts, last_phase, &mut NoTrace)
    }

    /// [`Policy::evaluate`], reporting its work to `trace` (tests count it).
    pub(super) fn evaluate_traced(&self, facts: &SessionFacts, last_phase: bool, trace: &mut impl Trace) -> Evaluation {
        let ix = &self.index;
        // Rules whose every known condition holds so far.
        let mut live = ix.enabled.clone();
        let mut scratch = Bits::zeros(ix.words);
        let mut cut = |live: &mut Bits, free: &Free, matches: &dyn Fn(&mut Bits)| {
            if !free.used {
                return;
            }
            trace.bitset_words(ix.words);
            scratch.copy_from(&free.bits);
            matches(&mut scratch);
            live.and_assign(&scratch);
        };

        let flow = &facts.flow;
        cut(&mut live, &ix.source_networks.free, &|o| ix.source_networks.matches(flow.src_ip, o));
        cut(&mut live, &ix.dest_networks.free, &|o| ix.dest_networks.matches(flow.dest_ip, o));
        cut(&mut live, &ix.source_ports.free, &|o| ix.source_ports.matches(flow.src_port, o));
        cut(&mut live, &ix.dest_ports.free, &|o| ix.dest_ports.matches(flow.dest_port, o));
        cut(&mut live, &ix.vlan.free, &|o| ix.vlan.matches(&flow.vlan.unwrap_or(0), o));
        cut(&mut live, &ix.ingress.free, &|o| ix.ingress.matches(flow.ingress.as_str(), o));
        let transport = if facts.quic_version.is_some() { "quic" } else { "tcp" };
        cut(&mut live, &ix.transport.free, &|o| ix.transport.matches(transport, o));

        let mut unknown = [false; 4];
        match &facts.client_hello {
            Some(ch) => {
                cut(&mut live, &ix.sni.free, &|o| {
                    if let Some(sni) = &ch.sni {
                        ix.sni.names.matches(&lower(sni), o);
                    }
                });
                cut(&mut live, &ix.ech.free, &|o| ix.ech.matches(&ch.ech, o));
            }
            None => unknown[SNI] = true,
        }
        match &facts.server_hello {
            Some(sh) => {
                cut(&mut live, &ix.cipher_suites.free, &|o| ix.cipher_suites.matches(&sh.cipher_suite, o));
                cut(&mut live, &ix.versions.free, &|o| {
                    if let Some(v) = &sh.version {
                        ix.versions.matches(v, o);
                    }
                });
            }
            None => unknown[SERVER_HELLO] = true,
        }
        match &facts.certificate {
            Some(c) => {
                cut(&mut live, &ix.subject.free, &|o| dn_matches(&ix.subject, &c.subject, o));
                cut(&mut live, &ix.issuer.free, &|o| dn_matches(&ix.issuer, &c.issuer, o));
                cut(&mut live, &ix.certificate.free, &|o| ix.certificate.matches(&c.sha256, o));
                // A known key applies only to the certificate it was imported with. While the
                // certificate is unknown the rule stays live: the slow path checks it exactly.
                for &(rule, sha256) in &self.known_key_rules {
                    if c.sha256 != sha256 {
                        live.clear(rule);
                    }
                }
            }
            None => unknown[CERTIFICATE] = true,
        }
        match facts.cert_status {
            Some(s) => cut(&mut live, &ix.cert_status.free, &|o| ix.cert_status.matches(s, o)),
            None => unknown[CERT_STATUS] = true,
        }

        // Rules among `live` that test a fact not seen yet are unknown; the others are true.
        let mut waiting = Bits::zeros(ix.words);
        for g in (0..GROUPS.len()).filter(|&g| unknown[g] && ix.needs_any[g]) {
            trace.bitset_words(ix.words);
            waiting.or_assign(&ix.needs[g]);
        }
        let unknown_groups_of = |rule: usize| -> u8 {
            (0..GROUPS.len()).filter(|&g| unknown[g] && ix.needs[g].get(rule)).fold(0, |m, g| m | 1 << g)
        };

        let mut monitor_rules = Vec::new();
        let mut missing: u8 = 0;
        for (w, &word) in live.words().iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let rule = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                trace.rule_visited();
                let monitor = ix.monitor.get(rule);
                if waiting.get(rule) {
                    if last_phase {
                        missing |= unknown_groups_of(rule);
                    } else if !monitor {
                        return Evaluation::Pending { monitor_rules, waiting_on: group_names(unknown_groups_of(rule)) };
                    }
                    continue;
                }
                if monitor {
                    monitor_rules.push(rule);
                    continue;
                }
                return Evaluation::Decided(Decision {
                    rule: Some(rule),
                    action: self.rules[rule].action,
                    monitor_rules,
                    missing_facts: group_names(missing),
                });
            }
        }
        Evaluation::Decided(Decision {
            rule: None,
            action: self.default_action.into(),
            monitor_rules,
            missing_facts: group_names(missing),
        })
    }
}

/// Counts what an evaluation does (tests only; compiled away in [`NoTrace`]).
pub(super) trait Trace {
    /// A bitset of `words` words was combined.
    fn bitset_words(&mut self, _words: usize) {}
    /// The final scan looked at one rule.
    fn rule_visited(&mut self) {}
}

/// Records nothing.
pub(super) struct NoTrace;

impl Trace for NoTrace {}

fn group_names(mask: u8) -> Vec<&'static str> {
    GROUPS.iter().enumerate().filter(|(g, _)| mask & (1 << g) != 0).map(|(_, n)| *n).collect()
}

fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// ORs into `out` the rules whose `ATTR=value` entries some attribute of `dn` satisfies.
fn dn_matches(ix: &DnIndex, dn: &DistinguishedName, out: &mut Bits) {
    for (attr, value) in &dn.attributes {
        if let Some(a) = DN_ATTRS.iter().position(|n| n.eq_ignore_ascii_case(attr)) {
            ix.attrs[a].matches(&lower(value.trim()), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{
        cipher_suite_id, CertStatus, CertStatusSet, CertificateFacts, ClientHelloFacts, FlowFacts, ServerHelloFacts,
        TlsVersion,
    };
    use crate::policy::FinalAction;

    const HEAD: &str = "[policy]\ndefault_action = \"do-not-decrypt\"\n";

    fn policy(rules: &str) -> Policy {
        Policy::parse(&format!("{HEAD}{rules}"), None).unwrap_or_else(|e| panic!("{e}"))
    }

    fn flow() -> SessionFacts {
        SessionFacts::new(FlowFacts {
            src_ip: "10.1.2.3".parse().unwrap(),
            src_port: 40000,
            dest_ip: "192.0.2.10".parse().unwrap(),
            dest_port: 443,
            vlan: Some(10),
            ingress: "net_af_packet0".into(),
        })
    }

    fn hello(sni: Option<&str>) -> ClientHelloFacts {
        ClientHelloFacts { sni: sni.map(str::to_owned), ..Default::default() }
    }

    fn cert(subject: &[(&str, &str)], issuer: &[(&str, &str)]) -> CertificateFacts {
        let dn = |v: &[(&str, &str)]| DistinguishedName {
            attributes: v.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect(),
        };
        CertificateFacts { subject: dn(subject), issuer: dn(issuer), sha256: [7; 32], ..Default::default() }
    }

    fn decided(e: Evaluation) -> Decision {
        match e {
            Evaluation::Decided(d) => d,
            p => panic!("expected a decision, got {p:?}"),
        }
    }

    /// The rule that decides, for a one-rule policy: Some(0) = true, None = false.
    fn one(p: &Policy, f: &SessionFacts) -> Option<usize> {
        decided(p.evaluate(f, false)).rule
    }

    fn pending(e: Evaluation) -> (Vec<usize>, Vec<&'static str>) {
        match e {
            Evaluation::Pending { monitor_rules, waiting_on } => (monitor_rules, waiting_on),
            d => panic!("expected pending, got {d:?}"),
        }
    }

    fn rule(conds: &str) -> String {
        format!("[[rule]]\nname = \"r\"\naction = \"block\"\n{conds}\n")
    }

    #[test]
    fn flow_conditions_are_always_known() {
        let f = flow();
        let cases: &[(&str, bool)] = &[
            ("source_networks = [\"10.0.0.0/8\"]", true),
            ("source_networks = [\"10.1.2.3\", \"2001:db8::/32\"]", true),
            ("source_networks = [\"11.0.0.0/8\", \"2001:db8::/32\"]", false),
            ("dest_networks = [\"192.0.2.0/24\"]", true),
            ("dest_networks = [\"192.0.3.0/24\"]", false),
            ("source_ports = [\"1024-65535\"]", true),
            ("source_ports = [\"1-1023\"]", false),
            ("dest_ports = [\"80\", \"443\"]", true),
            ("dest_ports = [\"8000-8080\"]", false),
            ("vlan = [10, 20]", true),
            ("vlan = [0]", false),
            ("ingress = [\"net_af_packet0\"]", true),
            ("ingress = [\"net_af_packet1\"]", false),
            ("transport = [\"tcp\"]", true),
            ("transport = [\"quic\"]", false),
            ("", true),
        ];
        for (conds, want) in cases {
            let p = policy(&rule(conds));
            assert_eq!(one(&p, &f), want.then_some(0), "{conds}");
        }
        // Untagged traffic matches vlan 0; IPv6 flows match IPv6 networks.
        let mut g = flow();
        g.flow.vlan = None;
        g.flow.src_ip = "2001:db8::5".parse().unwrap();
        assert_eq!(one(&policy(&rule("vlan = [0]")), &g), Some(0));
        assert_eq!(one(&policy(&rule("source_networks = [\"2001:db8::/32\"]")), &g), Some(0));
        assert_eq!(one(&policy(&rule("source_networks = [\"10.0.0.0/8\"]")), &g), None);
        // ech is a ClientHello fact: true, false, or unknown before it.
        let mut h = flow();
        let p = policy(&rule("ech = true"));
        assert!(matches!(p.evaluate(&h, false), Evaluation::Pending { .. }));
        h.client_hello = Some(ClientHelloFacts { ech: true, ..hello(Some("outer.example")) });
        assert_eq!(one(&p, &h), Some(0));
        h.client_hello = Some(hello(Some("outer.example")));
        assert_eq!(one(&p, &h), None);
        assert_eq!(one(&policy(&rule("ech = false")), &h), Some(0));
        // A QUIC session matches transport quic, not tcp.
        let mut q = flow();
        q.quic_version = Some(1);
        assert_eq!(one(&policy(&rule("transport = [\"quic\"]")), &q), Some(0));
        assert_eq!(one(&policy(&rule("transport = [\"tcp\"]")), &q), None);
        assert!(Policy::parse(&format!("{HEAD}{}", rule("transport = [\"sctp\"]")), None).is_err());
    }

    #[test]
    fn sni_true_false_unknown() {
        let p = policy(&rule("sni = [\"example.com\", \"*.example.org\"]"));
        let mut f = flow();
        assert_eq!(pending(p.evaluate(&f, false)), (vec![], vec!["sni"]));
        for (sni, want) in [
            (Some("example.com"), true),
            (Some("EXAMPLE.com"), true),
            (Some("www.example.org"), true),
            (Some("example.org"), false),
            (Some("a.b.example.org"), false),
            (Some(".example.org"), false),
            (Some("www.example.com"), false),
            (None, false),
        ] {
            f.client_hello = Some(hello(sni));
            assert_eq!(one(&p, &f), want.then_some(0), "{sni:?}");
        }
    }

    #[test]
    fn certificate_conditions_true_false_unknown() {
        let sha = crate::hex::colon_hex(&[7; 32]);
        let text = format!("[[certificate]]\nname = \"seven\"\nsha256 = \"{sha}\"\n");
        let mut f = flow();
        f.client_hello = Some(hello(Some("x")));
        let c = cert(&[("CN", "www.example.com"), ("O", "Example Inc")], &[("CN", "Evil CA"), ("C", "XX")]);
        let cases: &[(&str, bool)] = &[
            ("subject = [\"CN=*.example.com\"]", true),
            ("subject = [\"cn=WWW.example.com\"]", true),
            ("subject = [\"O=example inc\"]", true),
            ("subject = [\"CN=*.com\"]", false),
            ("subject = [\"OU=Example Inc\"]", false),
            ("subject = [\"CN=Evil CA\"]", false),
            ("issuer = [\"CN=Evil CA\"]", true),
            ("issuer = [\"C=xx\", \"O=nobody\"]", true),
            ("issuer = [\"O=Evil CA\"]", false),
            ("certificate = [\"seven\"]", true),
        ];
        for (conds, want) in cases {
            let p = policy(&format!("{text}{}", rule(conds)));
            assert_eq!(pending(p.evaluate(&f, false)), (vec![], vec!["certificate"]), "{conds}");
            let mut g = f.clone();
            g.certificate = Some(std::sync::Arc::new(c.clone()));
            assert_eq!(one(&p, &g), want.then_some(0), "{conds}");
        }
        let p = policy(&format!("{text}{}", rule("certificate = [\"seven\"]")));
        let mut g = f.clone();
        g.certificate = Some(std::sync::Arc::new(CertificateFacts { sha256: [8; 32], ..c }));
        assert_eq!(one(&p, &g), None);
    }

    #[test]
    fn cert_status_true_false_unknown() {
        let p = policy(&rule("cert_status = { expired = true, self-signed = true, valid = false }"));
        let mut f = flow();
        assert_eq!(pending(p.evaluate(&f, false)), (vec![], vec!["cert_status"]));
        let set = |v: &[CertStatus]| {
            let mut s = CertStatusSet::default();
            v.iter().for_each(|&x| s.insert(x));
            s
        };
        for (statuses, want) in [
            (vec![CertStatus::Valid], false),
            (vec![CertStatus::Valid, CertStatus::Expired], true),
            (vec![CertStatus::Revoked], true),
            (vec![], true),
        ] {
            f.cert_status = Some(set(&statuses));
            assert_eq!(one(&p, &f), want.then_some(0), "{statuses:?}");
        }
    }

    #[test]
    fn negotiated_cipher_and_version_true_false_unknown() {
        let p = policy(&rule("cipher_suites = [\"TLS_RSA_WITH_RC4_128_MD5\"]\nversions = [\"ssl3.0\", \"tls1.0\"]"));
        let mut f = flow();
        f.client_hello = Some(hello(None));
        assert_eq!(pending(p.evaluate(&f, false)), (vec![], vec!["server_hello"]));
        let rc4 = cipher_suite_id("TLS_RSA_WITH_RC4_128_MD5").unwrap();
        for (suite, version, want) in [
            (rc4, Some(TlsVersion::Tls10), true),
            (rc4, Some(TlsVersion::Ssl3), true),
            (rc4, Some(TlsVersion::Tls12), false),
            (rc4, None, false),
            (0x1301, Some(TlsVersion::Tls10), false),
        ] {
            f.server_hello = Some(ServerHelloFacts { version, cipher_suite: suite, ..Default::default() });
            assert_eq!(one(&p, &f), want.then_some(0), "{suite:x} {version:?}");
        }
    }

    #[test]
    fn monitor_rules_are_logged_and_evaluation_goes_on() {
        let p = policy(
            "[[rule]]\nname = \"watch-all\"\naction = \"monitor\"\n\
             [[rule]]\nname = \"watch-other\"\naction = \"monitor\"\ndest_ports = [\"80\"]\n\
             [[rule]]\nname = \"watch-443\"\naction = \"monitor\"\ndest_ports = [\"443\"]\n\
             [[rule]]\nname = \"block\"\naction = \"block\"\nvlan = [10]\n\
             [[rule]]\nname = \"after\"\naction = \"monitor\"\n",
        );
        let d = decided(p.evaluate(&flow(), false));
        assert_eq!(
            d,
            Decision { rule: Some(3), action: Action::Block, monitor_rules: vec![0, 2], missing_facts: vec![] }
        );
        // Only monitors match: the default action, with the monitors logged.
        let mut f = flow();
        f.flow.vlan = None;
        let d = decided(p.evaluate(&f, false));
        assert_eq!(d.rule, None);
        assert_eq!(d.action, Action::DoNotDecrypt);
        assert_eq!(d.monitor_rules, vec![0, 2, 4]);
    }

    #[test]
    fn unknown_monitor_rules_do_not_hold_the_decision() {
        let p = policy(
            "[[rule]]\nname = \"watch-expired\"\naction = \"monitor\"\ncert_status = { expired = true }\n\
             [[rule]]\nname = \"bl\"\naction = \"block\"\n",
        );
        let d = decided(p.evaluate(&flow(), false));
        assert_eq!((d.rule, d.monitor_rules, d.missing_facts), (Some(1), vec![], vec![]));
    }

    #[test]
    fn pending_at_phase_one_then_decided_at_phase_two() {
        let p = policy(
            "[[rule]]\nname = \"log\"\naction = \"monitor\"\nsni = [\"*.example.com\"]\n\
             [[rule]]\nname = \"old\"\naction = \"block\"\nversions = [\"tls1.0\"]\n\
             [[rule]]\nname = \"bank\"\naction = \"do-not-decrypt\"\nsni = [\"bank.example.com\"]\n\
             [[rule]]\nname = \"rest\"\naction = \"block-with-reset\"\n",
        );
        let mut f = flow();
        assert_eq!(pending(p.evaluate(&f, false)), (vec![], vec!["server_hello"]));
        f.client_hello = Some(hello(Some("bank.example.com")));
        assert_eq!(pending(p.evaluate(&f, false)), (vec![0], vec!["server_hello"]));
        f.server_hello = Some(ServerHelloFacts { version: Some(TlsVersion::Tls12), ..Default::default() });
        let d = decided(p.evaluate(&f, false));
        assert_eq!((d.rule, d.action, d.monitor_rules), (Some(2), Action::DoNotDecrypt, vec![0]));
        f.server_hello = Some(ServerHelloFacts { version: Some(TlsVersion::Tls10), ..Default::default() });
        assert_eq!(decided(p.evaluate(&f, false)).rule, Some(1));
        // A rule after the first true one does not make it wait.
        let q = policy(
            "[[rule]]\nname = \"a\"\naction = \"block\"\ndest_ports = [\"443\"]\n\
             [[rule]]\nname = \"b\"\naction = \"do-not-decrypt\"\nsni = [\"x\"]\n",
        );
        assert_eq!(decided(q.evaluate(&flow(), false)).rule, Some(0));
    }

    #[test]
    fn last_phase_counts_missing_certificate_as_not_matching() {
        // TLS 1.3: the certificate is encrypted, so it never comes on the wire.
        let p = policy(
            "[[rule]]\nname = \"evil\"\naction = \"block\"\nissuer = [\"CN=Evil CA\"]\n\
             [[rule]]\nname = \"watch\"\naction = \"monitor\"\ncert_status = { valid = false }\n\
             [[rule]]\nname = \"v13\"\naction = \"block-with-reset\"\nversions = [\"tls1.3\"]\nsni = [\"a.b\"]\n",
        );
        let mut f = flow();
        f.client_hello = Some(hello(Some("a.b")));
        f.server_hello = Some(ServerHelloFacts { version: Some(TlsVersion::Tls13), ..Default::default() });
        assert_eq!(pending(p.evaluate(&f, false)), (vec![], vec!["certificate"]));
        let d = decided(p.evaluate(&f, true));
        assert_eq!(d.rule, Some(2));
        assert_eq!(d.action, Action::BlockWithReset);
        assert_eq!(d.missing_facts, vec!["certificate", "cert_status"]);
        // Nothing else matches: the default, still saying what was missing.
        f.client_hello = Some(hello(Some("c.d")));
        let d = decided(p.evaluate(&f, true));
        assert_eq!((d.rule, d.missing_facts), (None, vec!["certificate", "cert_status"]));
    }

    #[test]
    fn disabled_rules_are_ignored() {
        let p = policy(
            "[[rule]]\nname = \"off\"\naction = \"block\"\nenabled = false\n\
             [[rule]]\nname = \"off-unknown\"\naction = \"block\"\nenabled = false\nsni = [\"x\"]\n\
             [[rule]]\nname = \"on\"\naction = \"block-with-reset\"\nenabled = true\n",
        );
        assert!(!p.rules()[0].enabled && p.rules()[2].enabled);
        let d = decided(p.evaluate(&flow(), false));
        assert_eq!((d.rule, d.action), (Some(2), Action::BlockWithReset));
    }

    #[test]
    fn no_rules_and_no_match_give_the_default() {
        let p = Policy::parse("[policy]\ndefault_action = \"block\"\n", None).unwrap();
        let d = decided(p.evaluate(&flow(), false));
        assert_eq!(d, Decision { rule: None, action: Action::Block, monitor_rules: vec![], missing_facts: vec![] });
        assert_eq!(p.default_action(), FinalAction::Block);
    }

    /// Counts the work of an evaluation.
    #[derive(Default)]
    struct Count {
        words: usize,
        rules: usize,
    }

    impl Trace for Count {
        fn bitset_words(&mut self, words: usize) {
            self.words += words;
        }
        fn rule_visited(&mut self) {
            self.rules += 1;
        }
    }

    #[test]
    fn two_thousand_rules_picked_through_bitsets() {
        const N: usize = 2000;
        let mut text = String::from(HEAD);
        for i in 0..N {
            let (a, b) = (i / 250, i % 250);
            let action = if i % 100 == 7 { "monitor" } else { "block" };
            text.push_str(&format!(
                "[[rule]]\nname = \"r{i}\"\naction = \"{action}\"\n\
                 dest_networks = [\"10.{a}.{b}.0/24\", \"2001:db8:{i:x}::/48\"]\n\
                 dest_ports = [\"{}\", \"{}-{}\"]\nsni = [\"host{i}.example.com\", \"*.h{i}.example.net\"]\n\
                 vlan = [{}]\n{}",
                1000 + i,
                20000 + 10 * i,
                20000 + 10 * i + 5,
                i % 4094 + 1,
                if i % 3 == 0 { "cert_status = { expired = true }\n" } else { "" },
            ));
        }
        // A catch-all for 10.0.0.0/8 at the end.
        text.push_str("[[rule]]\nname = \"tail\"\naction = \"block-with-reset\"\ndest_networks = [\"10.0.0.0/8\"]\n");
        let p = Policy::parse(&text, None).unwrap();
        assert_eq!(p.rules().len(), N + 1);

        let session = |i: usize, port: u16, sni: &str| {
            let mut f = flow();
            f.flow.dest_ip = format!("10.{}.{}.9", i / 250, i % 250).parse().unwrap();
            f.flow.dest_port = port;
            f.flow.vlan = Some((i % 4094 + 1) as u16);
            f.client_hello = Some(hello(Some(sni)));
            f.cert_status = Some(CertStatusSet(CertStatus::Expired.bit()));
            f
        };
        for i in [0, 1, 7, 999, 1234, 1999] {
            let mut count = Count::default();
            let f = session(i, (20003 + 10 * i) as u16, &format!("www.h{i}.example.net"));
            let d = decided(p.evaluate_traced(&f, false, &mut count));
            if i % 100 == 7 {
                // A monitor rule: logged, then the catch-all decides.
                assert_eq!((d.rule, d.monitor_rules.as_slice()), (Some(N), &[i][..]), "{i}");
            } else {
                assert_eq!((d.rule, d.action), (Some(i), Action::Block), "{i}");
            }
            // The work is a fixed number of bitset operations (condition types
            // in use: networks, ports, vlan, sni, cert_status) and a scan that
            // looks at the rules left standing only: not at 2,000 rules.
            let words = N.div_ceil(64) + 1;
            assert!(count.words <= 6 * words, "{i}: {} words", count.words);
            assert!(count.rules <= 2, "{i}: visited {} rules", count.rules);
        }
        // Wrong port: falls through to the catch-all; wrong SNI likewise.
        let d = decided(p.evaluate(&session(5, 1, "host5.example.com"), false));
        assert_eq!(d.rule, Some(N));
        let d = decided(p.evaluate(&session(5, 1005, "www.example.com"), false));
        assert_eq!(d.rule, Some(N));
        let d = decided(p.evaluate(&session(5, 1005, "host5.example.com"), false));
        assert_eq!(d.rule, Some(5));
        // Before the ClientHello, rule 5 is unknown: the decision waits on the SNI.
        let mut f = session(5, 1005, "");
        f.client_hello = None;
        assert_eq!(pending(p.evaluate(&f, false)), (vec![], vec!["sni"]));
    }

    #[test]
    fn policy_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Policy>();
        check::<Evaluation>();
    }
}
