//! The whole per-packet path without DPDK: arbitrary frames (2-byte length
//! prefix each) through the inspector with a policy that uses every action.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tlsgate_config::policy::Policy;
use tlsgate_config::FlowSettings;
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
"#;

fuzz_target!(|data: &[u8]| {
    static POL: OnceLock<Arc<Policy>> = OnceLock::new();
    let policy = POL.get_or_init(|| Arc::new(Policy::parse(POLICY, None).expect("the fuzz policy is valid"))).clone();
    let settings = FlowSettings { capacity: 64, handshake_buffer: 4096, ..FlowSettings::default() };
    let names: Arc<[String]> = vec!["a".to_string(), "b".to_string()].into();
    let Ok(mut ins) = Inspector::new(0, policy, &settings, names) else { return };
    let mut out = Output::default();
    let mut rest = data;
    let mut now = 1_700_000_000_000_000_000u64;
    while rest.len() >= 2 {
        let len = (u16::from_be_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let frame = &rest[2..2 + len];
        now += 1_000_000;
        let _ = ins.on_packet(frame, len & 1, now, &mut out);
        ins.expire(now, &mut out);
        rest = &rest[2 + len..];
    }
    ins.finish(now, tlsgate_core::outcome::FlowEnd::EndOfCapture, &mut out);
});
