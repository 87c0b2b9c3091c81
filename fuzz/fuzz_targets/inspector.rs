//! The whole per-packet path without DPDK: arbitrary frames (2-byte length
//! prefix each) through the inspector with a policy that uses every action,
//! decrypt-resign included, and a slow path to hand flows to (the first
//! input's length being odd says one runs; its escalations are refused or taken).
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tlsgate_config::policy::Policy;
use tlsgate_config::{FlowSettings, SlowPathSettings};
use tlsgate_core::inspect::{Inspector, Output};

const POLICY: &str = r#"
[policy]
default_action = "do-not-decrypt"
[[rule]]
name = "m"
action = "monitor"
[[rule]]
name = "r"
action = "block-with-reset"
sni = ["*.example.com"]
[[rule]]
name = "b"
action = "block"
cert_status = { self-signed = true }
[[rule]]
name = "v"
action = "block"
versions = ["tls1.0"]
[[rule]]
name = "d"
action = "decrypt-resign"
ca = "fuzz"
sni = ["*.test"]
"#;

/// The policy, with a resigning CA written to a folder of this process's own.
fn policy() -> Arc<Policy> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("tlsgate-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    let key = rcgen::KeyPair::generate().expect("a CA key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("a CA certificate");
    std::fs::write(dir.join("ca.pem"), cert.pem()).expect("writing the CA");
    std::fs::write(dir.join("ca.key"), key.serialize_pem()).expect("writing the CA key");
    std::fs::set_permissions(dir.join("ca.key"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let text = format!(
        "{POLICY}\n[[ca]]\nname = \"fuzz\"\ncert = \"{}\"\nkey = \"{}\"\n",
        dir.join("ca.pem").display(),
        dir.join("ca.key").display()
    );
    Arc::new(Policy::parse(&text, None).expect("the fuzz policy is valid"))
}

fuzz_target!(|data: &[u8]| {
    static POL: OnceLock<Arc<Policy>> = OnceLock::new();
    let policy = POL.get_or_init(policy).clone();
    let mut settings = FlowSettings { capacity: 64, handshake_buffer: 4096, ..FlowSettings::default() };
    // Mutated frames have wrong checksums; the normalizer target fuzzes with them verified.
    settings.normalize.checksums = tlsgate_config::Checksums::Ignore;
    let names: Arc<[String]> = vec!["a".to_string(), "b".to_string()].into();
    let Ok(mut ins) = Inspector::new(0, policy, &settings, names) else { return };
    let slow = data.len() % 2 == 1;
    if slow {
        ins = ins.with_slow_path(2, &SlowPathSettings::default());
    }
    let mut out = Output::default();
    let mut rest = data;
    let mut now = 1_700_000_000_000_000_000u64;
    while rest.len() >= 2 {
        let len = (u16::from_be_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let frame = &rest[2..2 + len];
        now += 1_000_000;
        let _ = ins.on_packet(frame, len & 1, now, &mut out);
        // Every other escalation finds the slow path's ring full.
        for (i, (_, esc)) in std::mem::take(&mut out.escalations).into_iter().enumerate() {
            if i % 2 == 1 {
                let _ = ins.escalation_refused(esc, now, &mut out);
            }
        }
        ins.expire(now, &mut out);
        rest = &rest[2 + len..];
    }
    ins.finish(now, tlsgate_core::outcome::FlowEnd::EndOfCapture, &mut out);
});
