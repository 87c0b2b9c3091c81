//! The fragment reassembler on arbitrary frames (2-byte length prefix each):
//! IPv4 and IPv6 fragments in any order, overlapping, duplicated, truncated,
//! on a clock that moves a millisecond a frame (so that datagrams time out).
//! Never a panic; the table stays within its limits; what it gives back
//! whole is a datagram no longer than IP allows.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tlsgate_core::fragment::{Defrag, Defragmenter, FragmentLimits};
use tlsgate_core::packet::{classify, Layer};

const LIMITS: FragmentLimits =
    FragmentLimits { capacity: 16, max_bytes: 256 * 1024, max_fragments: 32, timeout_ns: 50_000_000 };

fuzz_target!(|data: &[u8]| {
    let mut d = Defragmenter::new(LIMITS);
    let mut now = 0u64;
    let mut rest = data;
    while rest.len() >= 2 {
        let len = (u16::from_be_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let frame = &rest[2..2 + len];
        now += 1_000_000;
        if let Layer::Fragment(f) = classify(frame) {
            if let Defrag::Complete(whole) = d.push(&f, now) {
                assert!(whole.frame.len() <= 65_535 + 14 + 12 + 40 + frame.len());
                assert!(whole.earlier.len() < LIMITS.max_fragments);
                let _ = classify(&whole.frame);
            }
        }
        let (datagrams, bytes) = d.held();
        assert!(datagrams <= LIMITS.capacity && bytes <= LIMITS.max_bytes);
        rest = &rest[2 + len..];
    }
    d.expire(now + LIMITS.timeout_ns);
    assert_eq!(d.held(), (0, 0));
});
