//! The policy file: its TOML schema, and the checks that turn it into a
//! [`Source`] of typed rules and loaded objects, with errors that name the
//! file, the line and the field (`rule[2] "block-bad-hosts".dest_ports`).
//!
//! ```toml
//! [policy]
//! default_action = "do-not-decrypt"
//!
//! [[rule]]
//! name = "block-bad-hosts"
//! action = "block"
//! sni = ["*.example.org"]
//! ```

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::action::{Action, FinalAction, Undecryptable};
use super::objects::{self, CaObject, CertificateObject, KnownKey, Trust};
use crate::facts::{self, CertStatus, TlsVersion};
use crate::ConfigError;

/// A checked policy file, before compiling.
#[derive(Debug)]
pub(super) struct Source {
    pub default_action: FinalAction,
    /// Per [`Undecryptable::index`]; `None` = inherit.
    pub undecryptable: [Option<FinalAction>; 11],
    pub trust: Trust,
    pub cas: Vec<CaObject>,
    pub known_keys: Vec<KnownKey>,
    pub certificates: Vec<CertificateObject>,
    pub rules: Vec<RuleSpec>,
}

/// Reads and checks a policy from TOML text, loading the object files it
/// names. `path` is the file it came from: messages name it, and relative
/// object paths are taken from its folder.
pub(super) fn parse(text: &str, path: Option<&Path>) -> Result<Source, ConfigError> {
    let ctx = Ctx { path, text };
    let file: PolicyFile = toml::from_str(text).map_err(|e| serde_error(&ctx, &e))?;

    let p = &file.policy;
    let default_action = FinalAction::from_name(p.default_action.get_ref()).ok_or_else(|| {
        ctx.err(
            p.default_action.span(),
            "policy.default_action",
            format!("unknown action {:?}: use do-not-decrypt, block or block-with-reset", p.default_action.get_ref()),
        )
    })?;

    let u = p.undecryptable.as_ref();
    let given: [Option<&Spanned<String>>; 11] = match u {
        None => [None; 11],
        Some(u) => [
            u.sslv2.as_ref(),
            u.compressed.as_ref(),
            u.unknown_cipher.as_ref(),
            u.unsupported_cipher.as_ref(),
            u.session_not_cached.as_ref(),
            u.handshake_error.as_ref(),
            u.decryption_error.as_ref(),
            u.client_auth.as_ref(),
            u.quic.as_ref(),
            u.ech.as_ref(),
            u.not_passively_decryptable.as_ref(),
        ],
    };
    let mut undecryptable = [None; 11];
    for (reason, value) in Undecryptable::ALL.into_iter().zip(given) {
        let Some(value) = value else { continue };
        let v = value.get_ref().as_str();
        undecryptable[reason.index()] = match v {
            // QUIC's reason defaults to block, not to the default action: inherit says so explicitly.
            "inherit" if reason == Undecryptable::Quic => Some(default_action),
            "inherit" => None,
            _ => Some(FinalAction::from_name(v).ok_or_else(|| {
                ctx.err(
                    value.span(),
                    &format!("policy.undecryptable.{}", reason.name()),
                    format!("unknown action {v:?}: use inherit, do-not-decrypt, block or block-with-reset"),
                )
            })?),
        };
    }

    let mut trust = Trust::default();
    if let Some(t) = &file.trust {
        for (i, f) in t.ca_files.iter().enumerate() {
            let field = format!("trust.ca_files[{i}]");
            let p = ctx.resolve(f, &field)?;
            trust.anchors.extend(objects::load_certificates(&p).map_err(|m| ctx.err(f.span(), &field, m))?);
        }
        for (i, f) in t.crl_files.iter().enumerate() {
            let field = format!("trust.crl_files[{i}]");
            let p = ctx.resolve(f, &field)?;
            trust.crls.extend(objects::load_crls(&p).map_err(|m| ctx.err(f.span(), &field, m))?);
        }
    }

    let mut cas = Vec::new();
    for (i, o) in file.ca.iter().enumerate() {
        let (name, cert_der, key_der, key_format) = load_keyed(&ctx, o, &format!("ca[{i}]"), &cas_names(&cas))?;
        cas.push(CaObject { name, cert_der, key_der, key_format });
    }
    let mut known_keys: Vec<KnownKey> = Vec::new();
    for (i, o) in file.known_key.iter().enumerate() {
        let names: Vec<&str> = known_keys.iter().map(|k| k.name.as_str()).collect();
        let (name, cert_der, key_der, key_format) = load_keyed(&ctx, o, &format!("known_key[{i}]"), &names)?;
        let cert_sha256 = objects::sha256(&cert_der);
        known_keys.push(KnownKey { name, cert_der, key_der, key_format, cert_sha256 });
    }
    let mut certificates: Vec<CertificateObject> = Vec::new();
    for (i, c) in file.certificate.iter().enumerate() {
        let at = format!("certificate[{i}]");
        let name = check_name(&ctx, &c.name, &format!("{at}.name"))?;
        if certificates.iter().any(|o| o.name == name) {
            return Err(ctx.err(
                c.name.span(),
                &format!("{at}.name"),
                format!("a certificate named {name:?} exists already"),
            ));
        }
        let sha256 = match (&c.file, &c.sha256) {
            (Some(f), None) => {
                let field = format!("{at}.file");
                let p = ctx.resolve(f, &field)?;
                // At least one certificate, or an error: `certs[0]` cannot panic.
                let certs = objects::load_certificates(&p).map_err(|m| ctx.err(f.span(), &field, m))?;
                objects::sha256(&certs[0])
            }
            (None, Some(h)) => parse_sha256(h.get_ref()).ok_or_else(|| {
                ctx.err(h.span(), &format!("{at}.sha256"), "not a SHA-256: 64 hex digits, colons allowed")
            })?,
            _ => {
                return Err(ctx.err(c.name.span(), &at, "give exactly one of `file` (a PEM certificate) and `sha256`"));
            }
        };
        certificates.push(CertificateObject { name, sha256 });
    }

    let mut rules: Vec<RuleSpec> = Vec::with_capacity(file.rule.len());
    let mut rule_names = HashSet::new();
    for (i, r) in file.rule.iter().enumerate() {
        let spec = check_rule(&ctx, i, r, &cas, &known_keys, &certificates)?;
        if !rule_names.insert(spec.name.clone()) {
            return Err(ctx.err(
                r.name.span(),
                &format!("rule[{i}] {:?}.name", spec.name),
                format!("a rule named {:?} exists already: rule names must be unique", spec.name),
            ));
        }
        rules.push(spec);
    }

    Ok(Source { default_action, undecryptable, trust, cas, known_keys, certificates, rules })
}

/// One checked rule. A condition that is `None` does not constrain.
#[derive(Clone, Debug, Default)]
pub(super) struct RuleSpec {
    pub name: String,
    pub action: Option<Action>,
    pub enabled: bool,
    pub source_networks: Option<Vec<IpNet>>,
    pub dest_networks: Option<Vec<IpNet>>,
    pub source_ports: Option<Vec<(u16, u16)>>,
    pub dest_ports: Option<Vec<(u16, u16)>>,
    /// 0 = untagged.
    pub vlan: Option<Vec<u16>>,
    pub ingress: Option<Vec<String>>,
    /// `tcp`, `quic`.
    pub transport: Option<Vec<String>>,
    /// The ClientHello offers Encrypted Client Hello (or GREASE ECH: they look alike).
    pub ech: Option<bool>,
    pub sni: Option<Vec<NamePattern>>,
    pub subject: Option<Vec<DnPattern>>,
    pub issuer: Option<Vec<DnPattern>>,
    /// Indexes into `Source::certificates`.
    pub certificate: Option<Vec<usize>>,
    /// (status, wanted): the condition holds if any status is as wanted.
    pub cert_status: Option<Vec<(CertStatus, bool)>>,
    pub cipher_suites: Option<Vec<u16>>,
    pub versions: Option<Vec<TlsVersion>>,
}

/// A host name to match, lower case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum NamePattern {
    /// The whole name.
    Exact(String),
    /// `*.` + this suffix: one more label in front.
    Wildcard(String),
}

impl NamePattern {
    fn parse(s: &str) -> Result<NamePattern, String> {
        let lower = s.trim().to_ascii_lowercase();
        if lower.is_empty() {
            return Err("empty name".into());
        }
        if let Some(suffix) = lower.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') || suffix.starts_with('.') {
                return Err(format!("{s:?}: a wildcard is `*.` followed by a name (`*.example.com`)"));
            }
            return Ok(NamePattern::Wildcard(suffix.to_owned()));
        }
        if lower.contains('*') {
            return Err(format!("{s:?}: `*` is allowed only as a whole first label (`*.example.com`)"));
        }
        Ok(NamePattern::Exact(lower))
    }
}

impl std::fmt::Display for NamePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NamePattern::Exact(s) => f.write_str(s),
            NamePattern::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

/// Distinguished-name attributes a `subject` or `issuer` condition can test.
pub(super) const DN_ATTRS: [&str; 6] = ["CN", "O", "OU", "C", "L", "ST"];

/// `ATTR=value` of a `subject` or `issuer` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct DnPattern {
    /// Index into [`DN_ATTRS`].
    pub attr: usize,
    pub value: NamePattern,
    /// As written (attribute upper-cased), for summaries.
    pub text: String,
}

impl DnPattern {
    fn parse(s: &str) -> Result<DnPattern, String> {
        let Some((attr, value)) = s.split_once('=') else {
            return Err(format!("{s:?}: write ATTR=value, ATTR one of {}", DN_ATTRS.join(", ")));
        };
        let attr_name = attr.trim();
        let Some(attr) = DN_ATTRS.iter().position(|a| a.eq_ignore_ascii_case(attr_name)) else {
            return Err(format!("{s:?}: unknown attribute {attr_name:?}, use one of {}", DN_ATTRS.join(", ")));
        };
        let text = format!("{}={}", DN_ATTRS[attr], value.trim());
        let value = NamePattern::parse(value).map_err(|e| format!("{s:?}: {e}"))?;
        Ok(DnPattern { attr, value, text })
    }
}

impl std::fmt::Display for DnPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

// ---------------------------------------------------------------------------
// The TOML schema.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    policy: PolicySection,
    #[serde(default)]
    trust: Option<TrustSection>,
    #[serde(default)]
    ca: Vec<KeyedObjectEntry>,
    #[serde(default)]
    known_key: Vec<KeyedObjectEntry>,
    #[serde(default)]
    certificate: Vec<CertificateEntry>,
    #[serde(default)]
    rule: Vec<RuleEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySection {
    default_action: Spanned<String>,
    #[serde(default)]
    undecryptable: Option<UndecryptableSection>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UndecryptableSection {
    sslv2: Option<Spanned<String>>,
    compressed: Option<Spanned<String>>,
    unknown_cipher: Option<Spanned<String>>,
    unsupported_cipher: Option<Spanned<String>>,
    session_not_cached: Option<Spanned<String>>,
    handshake_error: Option<Spanned<String>>,
    decryption_error: Option<Spanned<String>>,
    client_auth: Option<Spanned<String>>,
    quic: Option<Spanned<String>>,
    ech: Option<Spanned<String>>,
    not_passively_decryptable: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustSection {
    #[serde(default)]
    ca_files: Vec<Spanned<String>>,
    #[serde(default)]
    crl_files: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyedObjectEntry {
    name: Spanned<String>,
    cert: Spanned<String>,
    key: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateEntry {
    name: Spanned<String>,
    file: Option<Spanned<String>>,
    sha256: Option<Spanned<String>>,
}

type List = Option<Spanned<Vec<Spanned<toml::Value>>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    name: Spanned<String>,
    enabled: Option<Spanned<bool>>,
    action: Spanned<String>,
    known_key: Option<Spanned<String>>,
    /// `active` (take over, the default) or `passive`, with decrypt-known-key.
    mode: Option<Spanned<String>>,
    ca: Option<Spanned<String>>,
    source_networks: List,
    dest_networks: List,
    source_ports: List,
    dest_ports: List,
    vlan: List,
    ingress: List,
    transport: List,
    ech: Option<Spanned<bool>>,
    sni: List,
    subject: List,
    issuer: List,
    certificate: List,
    cert_status: Option<Spanned<BTreeMap<Spanned<String>, Spanned<toml::Value>>>>,
    cipher_suites: List,
    versions: List,
}

// ---------------------------------------------------------------------------
// Checking.

/// Where errors point: the policy file (relative object paths start from its folder) and its text.
struct Ctx<'a> {
    path: Option<&'a Path>,
    text: &'a str,
}

impl Ctx<'_> {
    fn err(&self, span: Range<usize>, field: &str, msg: impl Into<String>) -> ConfigError {
        ConfigError::at(self.path, Some(self.text), Some(span.start), Some(field), msg)
    }

    /// A path from the file, relative to the policy file's folder.
    fn resolve(&self, p: &Spanned<String>, field: &str) -> Result<PathBuf, ConfigError> {
        let given = Path::new(p.get_ref());
        if p.get_ref().is_empty() {
            return Err(self.err(p.span(), field, "empty file name"));
        }
        if given.is_absolute() {
            return Ok(given.to_path_buf());
        }
        match self.path {
            Some(file) => Ok(file.parent().unwrap_or(Path::new("")).join(given)),
            None => Err(self.err(
                p.span(),
                field,
                format!("relative path {:?} needs the policy file's location: give an absolute path", p.get_ref()),
            )),
        }
    }
}

fn cas_names(cas: &[CaObject]) -> Vec<&str> {
    cas.iter().map(|c| c.name.as_str()).collect()
}

type Keyed = (String, Vec<u8>, Vec<u8>, objects::KeyFormat);

fn load_keyed(ctx: &Ctx, o: &KeyedObjectEntry, at: &str, taken: &[&str]) -> Result<Keyed, ConfigError> {
    let name = check_name(ctx, &o.name, &format!("{at}.name"))?;
    if taken.contains(&name.as_str()) {
        return Err(ctx.err(o.name.span(), &format!("{at}.name"), format!("the name {name:?} is used twice")));
    }
    let field = format!("{at}.cert");
    let p = ctx.resolve(&o.cert, &field)?;
    // `load_certificates` returns at least one certificate, so `swap_remove(0)` below cannot panic.
    let mut certs = objects::load_certificates(&p).map_err(|m| ctx.err(o.cert.span(), &field, m))?;
    let field = format!("{at}.key");
    let p = ctx.resolve(&o.key, &field)?;
    let (key, format) = objects::load_private_key(&p).map_err(|m| ctx.err(o.key.span(), &field, m))?;
    Ok((name, certs.swap_remove(0), key, format))
}

fn check_name(ctx: &Ctx, name: &Spanned<String>, field: &str) -> Result<String, ConfigError> {
    let n = name.get_ref().trim();
    if n.is_empty() {
        return Err(ctx.err(name.span(), field, "empty name"));
    }
    Ok(n.to_owned())
}

fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    let hex: Vec<u8> = s.bytes().filter(|&b| b != b':').collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

fn check_rule(
    ctx: &Ctx,
    i: usize,
    r: &RuleEntry,
    cas: &[CaObject],
    known_keys: &[KnownKey],
    certificates: &[CertificateObject],
) -> Result<RuleSpec, ConfigError> {
    let name = check_name(ctx, &r.name, &format!("rule[{i}].name"))?;
    let at = format!("rule[{i}] {name:?}");
    let f = |field: &str| format!("{at}.{field}");

    let action_name = r.action.get_ref().as_str();
    if !Action::NAMES.contains(&action_name) {
        return Err(ctx.err(
            r.action.span(),
            &f("action"),
            format!("unknown action {action_name:?}: use {}", Action::NAMES.join(", ")),
        ));
    }
    // `known_key` goes with decrypt-known-key and `ca` with decrypt-resign: both ways.
    for (given, key, action) in [(&r.known_key, "known_key", "decrypt-known-key"), (&r.ca, "ca", "decrypt-resign")] {
        match (given, action_name == action) {
            (Some(g), false) => {
                return Err(ctx.err(g.span(), &f(key), format!("`{key}` goes only with action = \"{action}\"")));
            }
            (None, true) => {
                return Err(ctx.err(
                    r.action.span(),
                    &f(key),
                    format!("action {action_name:?} needs `{key}`: the name of a [[{key}]]"),
                ));
            }
            _ => {}
        }
    }
    if let (Some(m), false) = (&r.mode, action_name == "decrypt-known-key") {
        return Err(ctx.err(m.span(), &f("mode"), "`mode` goes only with action = \"decrypt-known-key\"".to_string()));
    }
    let action = match (action_name, &r.known_key, &r.ca) {
        ("decrypt-known-key", Some(k), _) => {
            let wanted = k.get_ref().trim();
            let known_key = known_keys
                .iter()
                .position(|o| o.name == wanted)
                .ok_or_else(|| ctx.err(k.span(), &f("known_key"), format!("no [[known_key]] is named {wanted:?}")))?;
            let passive = match r.mode.as_ref().map(|m| (m, m.get_ref().as_str())) {
                None | Some((_, "active")) => false,
                Some((_, "passive")) => {
                    // Passive reading decrypts the premaster secret with the key: only RSA can.
                    let k = &known_keys[known_key];
                    if !k.is_rsa() {
                        return Err(ctx.err(
                            r.mode.as_ref().map_or(r.action.span(), |m| m.span()),
                            &f("mode"),
                            format!(
                                "mode = \"passive\" needs an RSA key: [[known_key]] {:?} holds another kind, and only \
                                 RSA key exchange can be read without taking the session over",
                                k.name
                            ),
                        ));
                    }
                    true
                }
                Some((m, other)) => {
                    return Err(ctx.err(m.span(), &f("mode"), format!("unknown mode {other:?}: use active or passive")))
                }
            };
            Action::DecryptKnownKey { known_key, passive }
        }
        ("decrypt-resign", _, Some(c)) => {
            let wanted = c.get_ref().trim();
            let ca = cas
                .iter()
                .position(|o| o.name == wanted)
                .ok_or_else(|| ctx.err(c.span(), &f("ca"), format!("no [[ca]] is named {wanted:?}")))?;
            Action::DecryptResign { ca }
        }
        ("monitor", ..) => Action::Monitor,
        ("block", ..) => Action::Block,
        ("block-with-reset", ..) => Action::BlockWithReset,
        ("do-not-decrypt", ..) => Action::DoNotDecrypt,
        // Not reached: unknown actions, and decrypt actions without their object, were refused above.
        _ => return Err(ctx.err(r.action.span(), &f("action"), format!("action {action_name:?} is incomplete"))),
    };

    let mut spec = RuleSpec { name: name.clone(), action: Some(action), enabled: true, ..Default::default() };
    spec.enabled = !matches!(&r.enabled, Some(e) if !*e.get_ref());
    spec.source_networks = each(ctx, &at, &r.source_networks, "source_networks", net)?;
    spec.dest_networks = each(ctx, &at, &r.dest_networks, "dest_networks", net)?;
    spec.source_ports = each(ctx, &at, &r.source_ports, "source_ports", ports)?;
    spec.dest_ports = each(ctx, &at, &r.dest_ports, "dest_ports", ports)?;
    spec.vlan = each(ctx, &at, &r.vlan, "vlan", vlan)?;
    spec.ingress = each(ctx, &at, &r.ingress, "ingress", |v| {
        let s = string(v)?.trim();
        if s.is_empty() {
            return Err("empty port name".into());
        }
        Ok(s.to_owned())
    })?;
    spec.ech = r.ech.as_ref().map(|e| *e.get_ref());
    spec.transport = each(ctx, &at, &r.transport, "transport", |v| {
        let s = string(v)?.trim();
        match s {
            "tcp" | "quic" => Ok(s.to_owned()),
            _ => Err(format!("unknown transport {s:?}: use tcp or quic")),
        }
    })?;
    spec.sni = each(ctx, &at, &r.sni, "sni", |v| NamePattern::parse(string(v)?))?;
    spec.subject = each(ctx, &at, &r.subject, "subject", |v| DnPattern::parse(string(v)?))?;
    spec.issuer = each(ctx, &at, &r.issuer, "issuer", |v| DnPattern::parse(string(v)?))?;
    spec.certificate = each(ctx, &at, &r.certificate, "certificate", |v| {
        let n = string(v)?.trim();
        certificates.iter().position(|c| c.name == n).ok_or_else(|| format!("no [[certificate]] is named {n:?}"))
    })?;
    spec.cipher_suites = each(ctx, &at, &r.cipher_suites, "cipher_suites", |v| {
        let n = string(v)?.trim();
        facts::cipher_suite_id(n)
            .or_else(|| facts::cipher_suite_id(&n.to_ascii_uppercase()))
            .ok_or_else(|| format!("unknown cipher suite {n:?}: use IANA names (TLS_AES_128_GCM_SHA256)"))
    })?;
    spec.versions = each(ctx, &at, &r.versions, "versions", |v| {
        let n = string(v)?;
        TlsVersion::from_config_name(&n.trim().to_ascii_lowercase()).ok_or_else(|| {
            let all: Vec<&str> = TlsVersion::ALL.iter().map(|v| v.config_name()).collect();
            format!("unknown version {n:?}: use {}", all.join(", "))
        })
    })?;

    if let Some(cs) = &r.cert_status {
        let field = f("cert_status");
        if cs.get_ref().is_empty() {
            return Err(ctx.err(cs.span(), &field, "no status given: write e.g. { expired = true, valid = false }"));
        }
        let mut tests = Vec::new();
        for (k, v) in cs.get_ref() {
            let status = CertStatus::from_name(k.get_ref()).ok_or_else(|| {
                let all: Vec<&str> = CertStatus::ALL.iter().map(|s| s.name()).collect();
                ctx.err(k.span(), &field, format!("unknown status {:?}: use {}", k.get_ref(), all.join(", ")))
            })?;
            let wanted = v
                .get_ref()
                .as_bool()
                .ok_or_else(|| ctx.err(v.span(), &field, format!("{}: write true or false", k.get_ref())))?;
            tests.push((status, wanted));
        }
        spec.cert_status = Some(tests);
    }
    Ok(spec)
}

/// Converts each value of a condition's list with `conv`, naming the field on error.
fn each<T>(
    ctx: &Ctx,
    at: &str,
    l: &List,
    key: &str,
    conv: impl Fn(&toml::Value) -> Result<T, String>,
) -> Result<Option<Vec<T>>, ConfigError> {
    let Some(values) = l else { return Ok(None) };
    if values.get_ref().is_empty() {
        return Err(ctx.err(
            values.span(),
            &format!("{at}.{key}"),
            "an empty list matches nothing: remove the key to match everything",
        ));
    }
    let mut out = Vec::with_capacity(values.get_ref().len());
    for v in values.get_ref() {
        out.push(conv(v.get_ref()).map_err(|m| ctx.err(v.span(), &format!("{at}.{key}"), m))?);
    }
    Ok(Some(out))
}

fn string(v: &toml::Value) -> Result<&str, String> {
    v.as_str().ok_or_else(|| format!("expected a string, found {} `{v}`", v.type_str()))
}

/// `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a /32 or /128).
fn net(v: &toml::Value) -> Result<IpNet, String> {
    let s = string(v)?.trim();
    if !s.contains('/') {
        let a: IpAddr = s.parse().map_err(|_| format!("{s:?} is not an IP address or CIDR network (10.0.0.0/8)"))?;
        return Ok(IpNet::from(a));
    }
    let n: IpNet = s.parse().map_err(|_| format!("{s:?} is not a CIDR network (10.0.0.0/8, 2001:db8::/32)"))?;
    if n.trunc() != n {
        return Err(format!("{s:?} has bits set past the prefix length: did you mean {}?", n.trunc()));
    }
    Ok(n)
}

/// `443`, `"443"` or `"1024-65535"`.
fn ports(v: &toml::Value) -> Result<(u16, u16), String> {
    let bad = |s: &str| format!("{s:?} is not a port or range: write \"443\" or \"1024-65535\" (0 to 65535)");
    if let Some(n) = v.as_integer() {
        let p = u16::try_from(n).map_err(|_| bad(&n.to_string()))?;
        return Ok((p, p));
    }
    let s = string(v)?.trim();
    let one = |t: &str| t.trim().parse::<u16>().map_err(|_| bad(s));
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (one(a)?, one(b)?),
        None => (one(s)?, one(s)?),
    };
    if lo > hi {
        return Err(format!("{s:?}: the range runs backwards; write the low port first"));
    }
    Ok((lo, hi))
}

/// A VLAN id, 0 (untagged) to 4094.
fn vlan(v: &toml::Value) -> Result<u16, String> {
    let n = v.as_integer().ok_or_else(|| format!("expected a VLAN id (a number), found {} `{v}`", v.type_str()))?;
    u16::try_from(n)
        .ok()
        .filter(|&n| n <= 4094)
        .ok_or_else(|| format!("VLAN id {n} is out of range (0 = untagged, 1 to 4094)"))
}

// ---------------------------------------------------------------------------
// Serde's errors, with the field path found from where they point.

/// Turns a TOML or schema error into a [`ConfigError`] naming the field.
fn serde_error(ctx: &Ctx, e: &toml::de::Error) -> ConfigError {
    let msg = e.message().trim();
    let offset = e.span().map(|r| r.start);
    let field = offset.and_then(|o| locate_field(ctx.text, o, msg));
    let mut message = msg.to_owned();
    if msg.contains("expected a sequence") {
        message.push_str(": write a list, e.g. [\"443\"]");
    }
    ConfigError::at(ctx.path, Some(ctx.text), offset, field.as_deref(), message)
}

/// The dotted field at byte `offset` of the policy text: the table header
/// above it, the key on its line, or the key a message quotes
/// (`unknown field `x``, `missing field `y``). A best guess, for messages only.
fn locate_field(text: &str, offset: usize, msg: &str) -> Option<String> {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[line_start..line_end].trim();
    let quoted = quoted_field(msg);

    // The table headers up to and including this line.
    let mut section: Option<(String, Option<usize>)> = None;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for l in text[..line_end].lines() {
        if let Some((name, array)) = header(l) {
            let index = if array {
                let c = counts.entry(name.clone()).or_insert(0);
                *c += 1;
                Some(*c - 1)
            } else {
                None
            };
            section = Some((name, index));
        }
    }
    let prefix = section.as_ref().map(|(name, index)| match index {
        None => name.clone(),
        Some(i) => match (name.as_str(), rule_name(text, *i)) {
            ("rule", Some(n)) => format!("rule[{i}] {n:?}"),
            _ => format!("{name}[{i}]"),
        },
    });
    let key = if header(line).is_some() {
        if msg.starts_with("unknown field") {
            // The header itself names an unknown table.
            return section.map(|(name, _)| name);
        }
        quoted
    } else {
        quoted.or_else(|| {
            let k = line.split_once('=')?.0.trim().trim_matches('"');
            (!k.is_empty()).then(|| k.to_owned())
        })
    };
    match (prefix, key) {
        (Some(p), Some(k)) => Some(format!("{p}.{k}")),
        (Some(p), None) => Some(p),
        (None, k) => k,
    }
}

/// `[name]` -> (name, false); `[[name]]` -> (name, true).
fn header(line: &str) -> Option<(String, bool)> {
    let t = line.trim();
    if let Some(rest) = t.strip_prefix("[[") {
        let end = rest.find("]]")?;
        return Some((rest[..end].trim().to_owned(), true));
    }
    let rest = t.strip_prefix('[')?;
    let end = rest.find(']')?;
    Some((rest[..end].trim().to_owned(), false))
}

fn quoted_field(msg: &str) -> Option<String> {
    if !(msg.starts_with("unknown field") || msg.starts_with("missing field") || msg.starts_with("duplicate key")) {
        return None;
    }
    let start = msg.find('`')? + 1;
    let end = start + msg[start..].find('`')?;
    Some(msg[start..end].to_owned())
}

/// The name of the `i`-th rule, if the text is valid TOML that far.
fn rule_name(text: &str, i: usize) -> Option<String> {
    let table: toml::Table = toml::from_str(text).ok()?;
    table.get("rule")?.as_array()?.get(i)?.get("name")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{fixture, write, Fixture, GOOD};
    use super::*;

    #[test]
    fn name_patterns() {
        assert_eq!(NamePattern::parse("WWW.Example.com"), Ok(NamePattern::Exact("www.example.com".into())));
        assert_eq!(NamePattern::parse("*.Example.com"), Ok(NamePattern::Wildcard("example.com".into())));
        for bad in ["", "*.", "*", "a.*.com", "*.*.com", "w*.example.com", "*..com"] {
            assert!(NamePattern::parse(bad).is_err(), "{bad}");
        }
        let d = DnPattern::parse("cn = *.example.com").unwrap();
        assert_eq!(d.to_string(), "CN=*.example.com");
        assert!(DnPattern::parse("XX=y").unwrap_err().contains("unknown attribute"));
        assert!(DnPattern::parse("CN").is_err());
    }

    #[test]
    fn values() {
        let s = |x: &str| toml::Value::String(x.into());
        assert_eq!(ports(&s("443")), Ok((443, 443)));
        assert_eq!(ports(&s(" 1024 - 65535 ")), Ok((1024, 65535)));
        assert_eq!(ports(&toml::Value::Integer(22)), Ok((22, 22)));
        for bad in ["", "65536", "10-5", "a", "-1", "1-", "1-2-3"] {
            assert!(ports(&s(bad)).is_err(), "{bad}");
        }
        assert!(ports(&toml::Value::Integer(-1)).is_err());
        assert_eq!(net(&s("10.0.0.0/8")).unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(net(&s("192.0.2.1")).unwrap().to_string(), "192.0.2.1/32");
        assert_eq!(net(&s("2001:db8::1")).unwrap().to_string(), "2001:db8::1/128");
        assert!(net(&s("10.0.0.1/8")).unwrap_err().contains("10.0.0.0/8"));
        for bad in ["10.0.0.0/33", "10.0.0", "x", "", "/8"] {
            assert!(net(&s(bad)).is_err(), "{bad}");
        }
        assert!(vlan(&toml::Value::Integer(4095)).is_err());
        assert_eq!(vlan(&toml::Value::Integer(10)), Ok(10));
        assert_eq!(parse_sha256(&"ab:".repeat(32)[..95]), Some([0xab; 32]));
        assert_eq!(parse_sha256(&"AB".repeat(32)), Some([0xab; 32]));
        assert_eq!(parse_sha256(&"zz".repeat(32)), None);
        assert_eq!(parse_sha256("ab"), None);
        assert_eq!(parse_sha256(&"é".repeat(32)), None);
    }

    #[test]
    fn fields_are_located() {
        let text = "[policy]\ndefault_action = \"block\"\n[[rule]]\nname = \"a\"\naction = \"block\"\n[[rule]]\nname = \"b\"\naction = \"block\"\nvlan = \"x\"\n";
        let off = text.find("\"x\"").unwrap();
        assert_eq!(locate_field(text, off, "invalid type").as_deref(), Some("rule[1] \"b\".vlan"));
        assert_eq!(locate_field(text, 3, "unknown field `polic`").as_deref(), Some("policy"));
        assert_eq!(locate_field(text, text.len() + 10, "x").as_deref(), Some("rule[1] \"b\""));
    }

    /// Checks `text` as the fixture's policy file.
    fn check(fx: &Fixture, text: &str) -> Result<Source, ConfigError> {
        parse(text, Some(&fx.path()))
    }

    /// The error for GOOD with `from` replaced by `to`.
    fn error(fx: &Fixture, from: &str, to: &str) -> ConfigError {
        assert!(GOOD.contains(from), "{from}");
        match check(fx, &GOOD.replacen(from, to, 1)) {
            Ok(_) => panic!("accepted: {from} -> {to}"),
            Err(e) => e,
        }
    }

    #[test]
    fn passive_mode_goes_with_an_rsa_known_key_only() {
        let fx = fixture();
        let rule = "known_key = \"intranet\"\ncertificate";
        // The fixture's key is ECDSA: passive reading cannot use it.
        let e = error(&fx, rule, "known_key = \"intranet\"\nmode = \"passive\"\ncertificate");
        assert_eq!(e.field.as_deref(), Some("rule[1] \"intranet\".mode"), "{e}");
        assert!(e.message.contains("needs an RSA key"), "{e}");
        let e = error(&fx, rule, "known_key = \"intranet\"\nmode = \"sideways\"\ncertificate");
        assert!(e.message.contains("use active or passive"), "{e}");
        let e = error(&fx, "action = \"block\"\n", "action = \"block\"\nmode = \"passive\"\n");
        assert!(e.message.contains("goes only with action = \"decrypt-known-key\""), "{e}");
        // With an RSA key it loads, passive.
        let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["intranet.example".into()]).unwrap().self_signed(&rsa).unwrap();
        write(fx.dir.path(), "intranet.pem", &cert.pem(), 0o644);
        write(fx.dir.path(), "keys/intranet.key", &rsa.serialize_pem(), 0o600);
        let src = check(&fx, &GOOD.replacen(rule, "known_key = \"intranet\"\nmode = \"passive\"\ncertificate", 1))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(src.rules.iter().any(|r| r.action.is_some_and(Action::is_passive)));
        assert!(src.known_keys[0].is_rsa());
    }

    const KNOWN_KEY_TWICE: &str =
        "[[known_key]]\nname = \"intranet\"\ncert = \"intranet.pem\"\nkey = \"keys/intranet.key\"\n\n[[certificate]]\nname = \"bad-cert\"";

    #[test]
    fn every_error_names_file_line_and_field() {
        let fx = fixture();
        write(fx.dir.path(), "cert-only.key", &std::fs::read_to_string(fx.dir.path().join("ca.pem")).unwrap(), 0o600);
        let r0 = "rule[0] \"block-bad-hosts\"";
        let r = |s: &str| s.to_owned();
        let cases: Vec<(&str, &str, String, usize, &str)> = vec![
            ("enabled = true\n", "enabled = true\nspeed = 1\n", format!("{r0}.speed"), 34, "unknown field"),
            ("[policy]\n", "[polcy]\n", r("polcy"), 1, "unknown field"),
            ("sslv2 = \"block\"", "sslv3 = \"block\"", r("policy.undecryptable.sslv3"), 5, "unknown field"),
            ("sslv2 = \"block\"", "sslv2 = \"drop\"", r("policy.undecryptable.sslv2"), 5, "inherit, do-not-decrypt"),
            ("\"do-not-decrypt\"\n", "\"allow\"\n", r("policy.default_action"), 2, "unknown action \"allow\""),
            ("default_action = \"do-not-decrypt\"\n", "", r("policy.default_action"), 1, "missing field"),
            ("[trust]", "[trust]\nca_file = []", r("trust.ca_file"), 10, "unknown field"),
            ("roots.pem", "absent.pem", r("trust.ca_files[0]"), 10, "cannot read"),
            ("revoked.crl.pem", "ca.pem", r("trust.crl_files[0]"), 11, "holds no CRL"),
            ("name = \"corp-resign\"\n", "", r("ca[0].name"), 13, "missing field"),
            ("cert = \"ca.pem\"", "cert = \"nope.pem\"", r("ca[0].cert"), 15, "cannot read"),
            ("cert = \"ca.pem\"", "cert = \"ca.key\"", r("ca[0].cert"), 15, "holds no certificate"),
            ("key = \"ca.key\"", "key = \"cert-only.key\"", r("ca[0].key"), 16, "holds no private key"),
            ("key = \"ca.key\"", "key = \"ca.pem\"", r("ca[0].key"), 16, "chmod 600"),
            ("key = \"ca.key\"", "key = \"keys\"", r("ca[0].key"), 16, "not a regular file"),
            ("[[certificate]]\nname = \"bad-cert\"", KNOWN_KEY_TWICE, r("known_key[1].name"), 24, "used twice"),
            ("name = \"intranet-cert\"", "name = \"bad-cert\"", r("certificate[1].name"), 28, "exists already"),
            ("sha256 = \"ab:cd:", "sha256 = \"zz:cd:", r("certificate[0].sha256"), 25, "64 hex digits"),
            (
                "file = \"intranet.pem\"",
                "file = \"intranet.pem\"\nsha256 = \"00\"",
                r("certificate[1]"),
                28,
                "exactly one",
            ),
            ("action = \"block\"\n", "action = \"allow\"\n", format!("{r0}.action"), 34, "unknown action \"allow\""),
            ("enabled = true", "enabled = \"yes\"", format!("{r0}.enabled"), 33, "expected a boolean"),
            ("\"10.0.0.0/8\"", "\"10.0.0.1/8\"", format!("{r0}.source_networks"), 35, "did you mean 10.0.0.0/8"),
            ("\"192.0.2.0/24\"", "\"192.0.2.0/33\"", format!("{r0}.dest_networks"), 36, "not a CIDR"),
            ("\"192.0.2.0/24\"", "\"192.0.2\"", format!("{r0}.dest_networks"), 36, "not an IP address"),
            ("\"1024-65535\"", "\"1024-65536\"", format!("{r0}.source_ports"), 37, "not a port or range"),
            ("\"8000-8080\"", "\"8080-8000\"", format!("{r0}.dest_ports"), 38, "runs backwards"),
            ("vlan = [10, 20]", "vlan = [10, 4095]", format!("{r0}.vlan"), 39, "out of range"),
            ("vlan = [10, 20]", "vlan = 10", format!("{r0}.vlan"), 39, "write a list"),
            ("ingress = [\"net_af_packet0\"]", "ingress = [\"\"]", format!("{r0}.ingress"), 40, "empty port name"),
            ("sni = [\"example.com\", \"*.example.org\"]", "sni = []", format!("{r0}.sni"), 41, "empty list"),
            ("\"*.example.org\"", "\"w*.example.org\"", format!("{r0}.sni"), 41, "`*` is allowed only"),
            ("\"O=Example Inc\"", "\"XX=Example Inc\"", format!("{r0}.subject"), 42, "unknown attribute"),
            ("issuer = [\"CN=Evil CA\"]", "issuer = [\"Evil CA\"]", format!("{r0}.issuer"), 43, "ATTR=value"),
            ("[\"bad-cert\"]", "[\"good-cert\"]", format!("{r0}.certificate"), 44, "no [[certificate]] is named"),
            ("expired = true,", "expird = true,", format!("{r0}.cert_status"), 45, "unknown status \"expird\""),
            ("expired = true,", "expired = 1,", format!("{r0}.cert_status"), 45, "write true or false"),
            ("RC4_128_MD5", "RC4_128_MD6", format!("{r0}.cipher_suites"), 46, "unknown cipher suite"),
            ("\"tls1.0\"]", "\"tls1.4\"]", format!("{r0}.versions"), 47, "unknown version \"tls1.4\""),
            (
                "versions = [\"ssl3.0\", \"tls1.0\"]",
                "versions = [\"ssl3.0\",\n 7]",
                format!("{r0}.versions"),
                48,
                "expected a string",
            ),
            (
                "action = \"decrypt-known-key\"\nknown_key = \"intranet\"\n",
                "action = \"decrypt-known-key\"\n",
                r("rule[1] \"intranet\".known_key"),
                51,
                "needs `known_key`",
            ),
            (
                "known_key = \"intranet\"\n",
                "known_key = \"intranett\"\n",
                r("rule[1] \"intranet\".known_key"),
                52,
                "no [[known_key]] is named \"intranett\"",
            ),
            ("ca = \"corp-resign\"\n", "", r("rule[2] \"resign\".ca"), 57, "needs `ca`"),
            (
                "ca = \"corp-resign\"\n",
                "ca = \"corp\"\n",
                r("rule[2] \"resign\".ca"),
                58,
                "no [[ca]] is named \"corp\"",
            ),
            (
                "ca = \"corp-resign\"\n",
                "ca = \"corp-resign\"\nknown_key = \"intranet\"\n",
                r("rule[2] \"resign\".known_key"),
                59,
                "goes only with action = \"decrypt-known-key\"",
            ),
            (
                "action = \"monitor\"",
                "action = \"monitor\"\nca = \"corp-resign\"",
                r("rule[3] \"watch\".ca"),
                64,
                "goes only with action = \"decrypt-resign\"",
            ),
            ("name = \"watch\"", "name = \"resign\"", r("rule[3] \"resign\".name"), 62, "must be unique"),
            ("name = \"watch\"", "name = \"watch\"\nname = \"x\"", r("rule[3].name"), 63, "duplicate key"),
            ("name = \"watch\"", "name = \" \"", r("rule[3].name"), 62, "empty name"),
        ];
        let path = fx.path();
        let mut failures = Vec::new();
        for (from, to, field, line, msg) in &cases {
            let e = error(&fx, from, to);
            let ok = e.file.as_deref() == Some(path.as_path())
                && e.field.as_deref() == Some(field.as_str())
                && e.line == Some(*line)
                && e.message.contains(msg)
                && e.to_string().starts_with(&format!("{}:{line}: {field}: ", path.display()));
            if !ok {
                failures.push(format!("{from:?} -> {to:?}: wanted {line} {field} {msg:?}\n     got {e}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn key_open_to_others_is_refused() {
        let fx = fixture();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let key = fx.dir.path().join("keys/intranet.key");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = check(&fx, GOOD).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("known_key[0].key"));
            assert_eq!(e.line, Some(21));
            assert!(e.message.contains(&format!("chmod 600 {}", key.display())), "{e}");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
            assert!(check(&fx, GOOD).unwrap_err().message.contains("mode 0640"));
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
            check(&fx, GOOD).unwrap();
        }
    }

    #[test]
    fn key_bytes_never_reach_a_message() {
        let fx = fixture();
        let key_pem = std::fs::read_to_string(fx.dir.path().join("ca.key")).unwrap();
        let body = key_pem.lines().nth(2).unwrap().to_owned();
        // A key file with a damaged line, and a policy naming the key file as a certificate.
        write(fx.dir.path(), "bad.key", &key_pem.replacen(&body, &format!("{body}!!"), 1), 0o600);
        let e = error(&fx, "key = \"ca.key\"", "key = \"bad.key\"");
        assert!(e.message.contains("not valid PEM") && !e.to_string().contains(&body[..20]), "{e}");
        let e = error(&fx, "cert = \"ca.pem\"", "cert = \"ca.key\"");
        assert!(!e.to_string().contains(&body[..20]), "{e}");
        let src = check(&fx, GOOD).unwrap();
        let debug = format!("{src:?}");
        assert!(!debug.contains(&format!("{:?}", &src.cas[0].key_der[..8])[1..20]), "{debug}");
    }
}
