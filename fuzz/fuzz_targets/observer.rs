//! The handshake observer on arbitrary segments: the input is cut into
//! segments (2-byte header: direction bit + length, then a sequence-number
//! skew so that segments overlap, repeat and leave holes). Server messages up
//! to 48 KiB, past the 16 KiB buffer, draw on a budget of 40 KiB, which must
//! be whole again when the observer is gone.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tlsgate_core::tls::{Direction, HandshakeObserver, LargeMessages, ObserverLimits};

fuzz_target!(|data: &[u8]| {
    const BUFFER: usize = 16 * 1024;
    const LIMIT: usize = 48 * 1024;
    const BUDGET: usize = 40 * 1024;
    const RECORD: usize = 16 * 1024 + 2048 + 5;
    let budget = LargeMessages::new(LIMIT, BUDGET);
    let mut o = HandshakeObserver::new(ObserverLimits { max_buffer: BUFFER, ..ObserverLimits::default() })
        .with_large_messages(budget.clone());
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
        // Reassembly and one message (with the record that completed it) per
        // side; the server's message within the budget's limit.
        assert!(o.buffered() <= 2 * BUFFER + (BUFFER + 4 + RECORD) + (BUDGET.min(LIMIT) + 4 + RECORD));
        assert!(budget.room() <= BUDGET);
        rest = &rest[2 + len..];
    }
    drop(o);
    assert_eq!(budget.room(), BUDGET);
});
