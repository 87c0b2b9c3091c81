//! The decryption policy: an ordered list of rules, each a set of conditions on
//! a session's [facts](crate::facts) and an action, plus the objects the rules
//! name (resigning CAs, imported server keys, certificates, the trust store).
//!
//! [`Policy::load`] reads and checks the TOML file (`file.rs`), loads the PEM
//! objects (`objects.rs`), and compiles the rules into bitset indexes
//! (`compile.rs`) so that [`Policy::evaluate`] (`eval.rs`) costs a few hash
//! look-ups and bitset ANDs per session however many rules there are. The
//! words for actions and undecryptable reasons are in `action.rs`.
//!
//! Evaluation is three-valued: a condition whose fact has not been seen yet is
//! unknown, and a decision that depends on it waits for the next phase.

mod action;
mod compile;
mod eval;
mod file;
#[cfg(test)]
mod fixture;
mod objects;

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

pub use action::{Action, FinalAction, RuleInfo, Undecryptable};
pub use eval::{Decision, Evaluation};
pub use objects::{check_crl, CaObject, KeyFormat, KnownKey, Trust};

use crate::ConfigError;
use compile::RuleIndex;
use file::Source;
use objects::CertificateObject;

/// A checked, compiled policy: immutable, shared by every worker.
pub struct Policy {
    source: Option<PathBuf>,
    default_action: FinalAction,
    /// Per [`Undecryptable::index`]: (action, given in the file rather than inherited).
    undecryptable: [(FinalAction, bool); 11],
    trust: Trust,
    cas: Vec<CaObject>,
    known_keys: Vec<KnownKey>,
    certificates: Vec<CertificateObject>,
    rules: Vec<RuleInfo>,
    /// (rule, SHA-256 of its known key's certificate) for every decrypt-known-key rule: such a
    /// rule applies only while the server presents exactly that certificate.
    known_key_rules: Vec<(usize, [u8; 32])>,
    /// Some enabled rule decrypts.
    may_decrypt: bool,
    /// Some enabled rule reads sessions passively.
    may_read_passively: bool,
    /// Each rule's conditions in words, for [`Policy::summary`].
    conditions: Vec<String>,
    index: RuleIndex,
}

impl Policy {
    /// Reads, checks, loads the objects of, and compiles a policy file.
    pub fn load(path: &Path) -> Result<Policy, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::file(path, format!("cannot read the policy file: {e}")))?;
        Policy::parse(&text, Some(path))
    }

    /// Checks and compiles a policy from TOML text. `path` is the file it came
    /// from: messages name it, and relative object paths are taken from its
    /// folder (without it, object files need absolute paths).
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Policy, ConfigError> {
        let source = file::parse(text, path)?;
        Ok(Policy::from_source(source, path))
    }

    /// Whether some enabled rule decrypts (else no ClientHello needs holding back).
    pub fn may_decrypt(&self) -> bool {
        self.may_decrypt
    }

    /// The action when no rule decides.
    pub fn default_action(&self) -> FinalAction {
        self.default_action
    }

    /// The action for an undecryptable session (`inherit` resolved to the default action).
    pub fn undecryptable(&self, reason: Undecryptable) -> FinalAction {
        self.undecryptable[reason.index()].0
    }

    /// The rules in order, disabled ones included; `Decision::rule` indexes this.
    pub fn rules(&self) -> &[RuleInfo] {
        &self.rules
    }

    /// Trust anchors and CRLs for certificate status.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// The CAs for `decrypt-resign`; `Action::DecryptResign::ca` indexes this.
    pub fn cas(&self) -> &[CaObject] {
        &self.cas
    }

    /// The imported keys for `decrypt-known-key`; `Action::DecryptKnownKey::known_key` indexes this.
    pub fn known_keys(&self) -> &[KnownKey] {
        &self.known_keys
    }

    /// Whether an enabled rule reads sessions passively (`decrypt-known-key`, `mode = "passive"`).
    pub fn has_passive_rules(&self) -> bool {
        self.may_read_passively
    }

    /// The imported keys enabled passive `decrypt-known-key` rules read sessions with.
    pub fn passive_keys(&self) -> Vec<&KnownKey> {
        let mut used: Vec<usize> = self
            .rules
            .iter()
            .filter(|r| r.enabled)
            .filter_map(|r| match r.action {
                Action::DecryptKnownKey { known_key, passive: true } => Some(known_key),
                _ => None,
            })
            .collect();
        used.sort_unstable();
        used.dedup();
        used.into_iter().filter_map(|i| self.known_keys.get(i)).collect()
    }

    /// The policy in words, for `tlsgate policy check`: the default and
    /// undecryptable actions, each rule in order with its action and
    /// conditions, and the objects loaded.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail: the results are ignored below.
        if let Some(p) = &self.source {
            let _ = writeln!(s, "policy {}", p.display());
        }
        let _ = writeln!(s, "default action: {}", self.default_action.name());
        let _ = writeln!(s, "undecryptable sessions:");
        for r in Undecryptable::ALL {
            let (a, given) = self.undecryptable[r.index()];
            let _ = writeln!(s, "  {:<19} {}{}", r.name(), a.name(), if given { "" } else { " (inherited)" });
        }
        let enabled = self.rules.iter().filter(|r| r.enabled).count();
        let _ = writeln!(
            s,
            "rules: {} ({} enabled), first match decides; monitor rules log and go on:",
            self.rules.len(),
            enabled
        );
        for (i, (r, cond)) in self.rules.iter().zip(&self.conditions).enumerate() {
            let action = match r.action {
                Action::DecryptKnownKey { known_key, passive } => format!(
                    "decrypt-known-key with {:?}{}",
                    self.known_keys[known_key].name,
                    if passive { ", passive (read, never taken over)" } else { "" }
                ),
                Action::DecryptResign { ca } => format!("decrypt-resign with CA {:?}", self.cas[ca].name),
                a => a.name().to_owned(),
            };
            let off = if r.enabled { "" } else { " [disabled]" };
            let _ = writeln!(s, "  {:>3}. {:?}{off}: {action} {cond}", i + 1, r.name);
        }
        if self.rules.is_empty() {
            let _ = writeln!(s, "  (none: every session gets the default action)");
        }
        let _ = writeln!(s, "objects:");
        let _ =
            writeln!(s, "  trust store: {} CA certificates, {} CRLs", self.trust.anchors.len(), self.trust.crls.len());
        let names = |v: Vec<&str>| if v.is_empty() { "none".to_owned() } else { v.join(", ") };
        let _ = writeln!(s, "  resigning CAs: {}", names(self.cas.iter().map(|c| c.name.as_str()).collect()));
        let _ = writeln!(s, "  known keys: {}", names(self.known_keys.iter().map(|k| k.name.as_str()).collect()));
        let _ = writeln!(s, "  certificates: {}", names(self.certificates.iter().map(|c| c.name.as_str()).collect()));
        s
    }

    /// Compiles a checked policy file's rules and keeps its objects.
    fn from_source(src: Source, path: Option<&Path>) -> Policy {
        let Source { default_action, undecryptable, trust, cas, known_keys, certificates, rules } = src;
        let compiled = compile::compile(rules, &certificates, &known_keys);
        let may_read_passively = compiled.rules.iter().any(|r| r.enabled && r.action.is_passive());
        Policy {
            source: path.map(Path::to_path_buf),
            default_action,
            undecryptable: {
                let mut u = undecryptable.map(|a| (a.unwrap_or(default_action), a.is_some()));
                // A decrypt decision on QUIC is blocked unless the policy says
                // otherwise: the client falls back to TCP, where it is decrypted.
                if undecryptable[Undecryptable::Quic.index()].is_none() {
                    u[Undecryptable::Quic.index()] = (FinalAction::Block, false);
                }
                u
            },
            trust,
            cas,
            known_keys,
            certificates,
            rules: compiled.rules,
            known_key_rules: compiled.known_key_rules,
            may_decrypt: compiled.may_decrypt,
            may_read_passively,
            conditions: compiled.conditions,
            index: compiled.index,
        }
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("source", &self.source)
            .field("default_action", &self.default_action)
            .field("rules", &self.rules)
            .field("cas", &self.cas)
            .field("known_keys", &self.known_keys)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{fixture, GOOD};
    use super::*;

    #[test]
    fn good_file_loads_with_its_objects() {
        let fx = fixture();
        let p = Policy::load(&fx.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.default_action(), FinalAction::DoNotDecrypt);
        assert_eq!(p.undecryptable(Undecryptable::Sslv2), FinalAction::Block);
        assert_eq!(p.undecryptable(Undecryptable::Compressed), FinalAction::DoNotDecrypt, "inherit");
        assert_eq!(p.undecryptable(Undecryptable::HandshakeError), FinalAction::DoNotDecrypt, "not given");
        assert_eq!(p.undecryptable(Undecryptable::ClientAuth), FinalAction::BlockWithReset);
        let rules: Vec<(&str, Action, bool)> =
            p.rules().iter().map(|r| (r.name.as_str(), r.action, r.enabled)).collect();
        assert_eq!(
            rules,
            [
                ("block-bad-hosts", Action::Block, true),
                ("intranet", Action::DecryptKnownKey { known_key: 0, passive: false }, true),
                ("resign", Action::DecryptResign { ca: 0 }, true),
                ("watch", Action::Monitor, false),
            ]
        );
        assert_eq!((p.trust().anchors.len(), p.trust().crls.len()), (2, 1));
        assert_eq!(objects::sha256(&p.trust().anchors[0]), fx.ca_sha256);
        assert_eq!(objects::sha256(&p.cas()[0].cert_der), fx.ca_sha256);
        assert_eq!(p.cas()[0].name, "corp-resign");
        assert_eq!(p.known_keys()[0].cert_sha256, fx.intranet_sha256);
        assert!(!p.known_keys()[0].key_der.is_empty());
        let debug = format!("{p:?}");
        assert!(debug.contains("<redacted>") && debug.contains("corp-resign"), "{debug}");

        let summary = p.summary();
        for want in [
            "default action: do-not-decrypt",
            "sslv2               block\n",
            "compressed          do-not-decrypt (inherited)",
            "1. \"block-bad-hosts\": block when source in 10.0.0.0/8 or 2001:db8::/32, and source port 1024-65535",
            "subject has CN=*.example.com or O=Example Inc",
            "certificate status expired or self-signed or not valid",
            "negotiated cipher TLS_RSA_WITH_RC4_128_MD5, and negotiated version ssl3.0 or tls1.0",
            "2. \"intranet\": decrypt-known-key with \"intranet\" when certificate is \"intranet-cert\"",
            "3. \"resign\": decrypt-resign with CA \"corp-resign\" when SNI *.example.net",
            "4. \"watch\" [disabled]: monitor always",
            "trust store: 2 CA certificates, 1 CRLs",
            "certificates: bad-cert, intranet-cert",
        ] {
            assert!(summary.contains(want), "{want:?} not in\n{summary}");
        }

        // The known key's certificate object matches by the file's fingerprint.
        let mut f = crate::facts::SessionFacts::new(crate::facts::FlowFacts {
            src_ip: "10.0.0.1".parse().unwrap(),
            src_port: 50000,
            dest_ip: "198.51.100.1".parse().unwrap(),
            dest_port: 443,
            vlan: None,
            ingress: "p0".into(),
        });
        f.certificate = Some(std::sync::Arc::new(crate::facts::CertificateFacts {
            sha256: fx.intranet_sha256,
            ..Default::default()
        }));
        match p.evaluate(&f, false) {
            Evaluation::Decided(d) => {
                assert_eq!((d.rule, d.action), (Some(1), Action::DecryptKnownKey { known_key: 0, passive: false }))
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn key_bytes_never_reach_debug_output() {
        let fx = fixture();
        let p = Policy::load(&fx.path()).unwrap();
        let debug = format!("{:?} {:?} {:?}", p, p.cas(), p.known_keys());
        assert!(!debug.contains(&format!("{:?}", &p.cas()[0].key_der[..8])[1..20]), "{debug}");
    }

    #[test]
    fn missing_or_unreadable_policy_file() {
        let e = Policy::load(Path::new("/nonexistent/policy.toml")).unwrap_err();
        assert_eq!(e.file.as_deref(), Some(Path::new("/nonexistent/policy.toml")));
        assert!(e.message.contains("cannot read the policy file"), "{e}");
        // Relative object paths need the file's location.
        let e = Policy::parse(GOOD, None).unwrap_err();
        assert_eq!((e.field.as_deref(), e.line), (Some("trust.ca_files[0]"), Some(10)));
        assert!(e.message.contains("absolute path"), "{e}");
        assert_eq!(Policy::parse("", None).unwrap_err().field.as_deref(), Some("policy"));
    }

    /// xorshift: the same garbage every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn garbage_never_panics() {
        let fx = fixture();
        let path = fx.path();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let tokens = [
            "[",
            "]",
            "[[",
            "]]",
            "=",
            "\"",
            "{",
            "}",
            ",",
            "\n",
            "rule",
            "policy",
            "name",
            "action",
            "sni",
            "*.",
            "vlan",
            "-",
            "/",
            ".",
            "é",
            "\u{0}",
            "'''",
            "\"\"\"",
            "0x",
            "99999999999999999999",
            "#",
            "*",
            "CN=",
            "::",
        ];
        for round in 0..3000 {
            let text: String = match round % 3 {
                // Bytes of every kind.
                0 => {
                    let bytes: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                // Token soup.
                1 => (0..rng.below(60)).map(|_| tokens[rng.below(tokens.len())]).collect(),
                // The good file, mutated.
                _ => {
                    let mut t: Vec<char> = GOOD.chars().collect();
                    for _ in 0..1 + rng.below(4) {
                        let at = rng.below(t.len());
                        match rng.below(4) {
                            0 => {
                                t.remove(at);
                            }
                            1 => t.insert(at, tokens[rng.below(tokens.len())].chars().next().unwrap_or('x')),
                            2 => {
                                let end = (at + rng.below(40)).min(t.len());
                                t.drain(at..end);
                            }
                            _ => t[at] = char::from(rng.next() as u8 & 0x7f),
                        }
                    }
                    t.into_iter().collect()
                }
            };
            let _ = Policy::parse(&text, None);
            if round % 3 == 2 {
                let _ = Policy::parse(&text, Some(&path));
            }
        }
    }
}
