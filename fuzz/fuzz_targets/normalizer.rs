//! The inline normaliser: arbitrary frames (2-byte length prefix each)
//! through the inspector with checksums verified, after this target has
//! made each frame's IPv4 and TCP checksums right (unless the length's top
//! bit says to leave them), so that mutated segments get past the checksum
//! to the receiver model (window, ACK, PAWS, MD5, RST, conflicting
//! retransmissions) and the fragment reassembler. The first byte picks the
//! settings: unjudged segments forwarded or dropped, conflicts dropped or
//! blocked, software dispatch over two workers or not.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tlsgate_config::policy::Policy;
use tlsgate_config::{Conflicts, FlowSettings, Unjudged};
use tlsgate_core::inspect::{Inspector, Output};
use tlsgate_core::packet::internet_checksum;

const POLICY: &str = r#"
[policy]
default_action = "do-not-decrypt"
[[rule]]
name = "r"
action = "block-with-reset"
sni = ["*.example.com"]
[[rule]]
name = "v"
action = "block"
versions = ["tls1.0"]
"#;

/// Sets the IPv4 header checksum and the TCP checksum of an untagged or
/// single-tagged IPv4/IPv6 TCP frame (no extension headers); others as they are.
fn fix_checksums(frame: &mut [u8]) {
    let mut l3 = 14;
    if frame.len() >= 18 && frame[12..14] == [0x81, 0x00] {
        l3 = 18;
    }
    let Some(et) = frame.get(l3 - 2..l3) else { return };
    match [et[0], et[1]] {
        [0x08, 0x00] => {
            let Some(&v) = frame.get(l3) else { return };
            let ihl = ((v & 0x0f) as usize) * 4;
            if ihl < 20 || frame.len() < l3 + ihl {
                return;
            }
            let total = u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]) as usize;
            frame[l3 + 10] = 0;
            frame[l3 + 11] = 0;
            let c = internet_checksum(&[&frame[l3..l3 + ihl]]);
            frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
            let frag = u16::from_be_bytes([frame[l3 + 6], frame[l3 + 7]]) & 0x3fff != 0;
            let l4 = l3 + ihl;
            if frame[l3 + 9] != 6 || frag || total < ihl || l3 + total > frame.len() || total - ihl < 20 {
                return;
            }
            let seg_len = (total - ihl) as u16;
            frame[l4 + 16] = 0;
            frame[l4 + 17] = 0;
            let (src, dst) = (frame[l3 + 12..l3 + 16].to_vec(), frame[l3 + 16..l3 + 20].to_vec());
            let c = internet_checksum(&[&src, &dst, &[0, 6], &seg_len.to_be_bytes(), &frame[l4..l3 + total]]);
            frame[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
        }
        [0x86, 0xdd] => {
            if frame.len() < l3 + 60 || frame[l3 + 6] != 6 {
                return;
            }
            let plen = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]) as usize;
            let l4 = l3 + 40;
            if plen < 20 || l4 + plen > frame.len() {
                return;
            }
            frame[l4 + 16] = 0;
            frame[l4 + 17] = 0;
            let (src, dst) = (frame[l3 + 8..l3 + 24].to_vec(), frame[l3 + 24..l3 + 40].to_vec());
            let len = (plen as u32).to_be_bytes();
            let c = internet_checksum(&[&src, &dst, &len, &[0, 0, 0, 6], &frame[l4..l4 + plen]]);
            frame[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    static POL: OnceLock<Arc<Policy>> = OnceLock::new();
    let policy = POL.get_or_init(|| Arc::new(Policy::parse(POLICY, None).expect("the fuzz policy is valid"))).clone();
    let Some((&pick, mut rest)) = data.split_first() else { return };
    let mut settings = FlowSettings { capacity: 64, handshake_buffer: 4096, ..FlowSettings::default() };
    settings.normalize.unjudged = if pick & 1 == 0 { Unjudged::Drop } else { Unjudged::Forward };
    settings.normalize.conflicts = if pick & 2 == 0 { Conflicts::Drop } else { Conflicts::Block };
    settings.fragments.capacity = 16;
    settings.fragments.max_fragments = 16;
    let names: Arc<[String]> = vec!["a".to_string(), "b".to_string()].into();
    let Ok(mut ins) = Inspector::new(0, policy, &settings, names) else { return };
    if pick & 4 != 0 {
        ins = ins.with_dispatch(2);
    }
    let mut out = Output::default();
    let mut now = 1_700_000_000_000_000_000u64;
    while rest.len() >= 2 {
        let raw = u16::from_be_bytes([rest[0], rest[1]]);
        let len = ((raw & 0x7fff) as usize).min(rest.len() - 2);
        let mut frame = rest[2..2 + len].to_vec();
        if raw & 0x8000 == 0 {
            fix_checksums(&mut frame);
        }
        now += 1_000_000;
        let _ = ins.on_packet(&frame, len & 1, now, &mut out);
        out.released.clear();
        out.redirected.clear();
        out.to_slow_path.clear();
        ins.expire(now, &mut out);
        rest = &rest[2 + len..];
    }
    ins.finish(now, tlsgate_core::outcome::FlowEnd::EndOfCapture, &mut out);
});
