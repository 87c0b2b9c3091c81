//! The handshake observer on arbitrary segments: the input is cut into
//! segments (2-byte header: direction bit + length, then a sequence-number
//! skew so that segments overlap, repeat and leave holes).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tlsgate_core::tls::{Direction, HandshakeObserver, ObserverLimits};

fuzz_target!(|data: &[u8]| {
    let mut o = HandshakeObserver::new(ObserverLimits { max_buffer: 16 * 1024, ..ObserverLimits::default() });
    o.set_initial_seq(Direction::ToServer, 1000);
    o.set_initial_seq(Direction::ToClient, 5000);
    let (mut seq_c, mut seq_s) = (1000u32, 5000u32);
    let mut rest = data;
    while rest.len() >= 3 {
        let dir = if rest[0] & 1 == 0 { Direction::ToServer } else { Direction::ToClient };
        let skew = (rest[0] >> 1) as u32 % 16;
        let len = (rest[1] as usize).min(rest.len() - 2);
        let seg = &rest[2..2 + len];
        let seq = match dir {
            Direction::ToServer => &mut seq_c,
            Direction::ToClient => &mut seq_s,
        };
        o.on_segment(dir, seq.wrapping_sub(skew), seg);
        *seq = seq.wrapping_add(len as u32).wrapping_sub(skew);
        while o.poll_event().is_some() {}
        assert!(o.buffered() <= 4 * 16 * 1024 + 4096);
        rest = &rest[2 + len..];
    }
});
