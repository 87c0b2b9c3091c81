//! Cleartext preludes (STARTTLS, HTTP CONNECT) through the handshake
//! observer: the first byte picks the protocol, the rest is cut into segments
//! as the `observer` target does (direction bit, sequence skew, length).
//! Seeds: `seed.py` turns each TCP flow of a capture into one input, the
//! protocol chosen by its server port.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tlsgate_config::PreludeProtocol as P;
use tlsgate_core::tls::{Direction, HandshakeObserver, ObserverLimits, PreludeLimits};

const PROTOCOLS: [Option<P>; 10] =
    [Some(P::Smtp), Some(P::Imap), Some(P::Pop3), Some(P::Ftp), Some(P::Xmpp), Some(P::Ldap), Some(P::Postgres), Some(P::Irc), Some(P::HttpConnect), None];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, mut rest)) = data.split_first() else { return };
    let limits = ObserverLimits {
        max_buffer: 16 * 1024,
        prelude: PROTOCOLS[usize::from(pick) % PROTOCOLS.len()],
        connect: pick & 0x80 != 0,
        prelude_limits: PreludeLimits { max_bytes: 4096, max_exchanges: 16 },
        ..ObserverLimits::default()
    };
    let mut o = HandshakeObserver::new(limits);
    o.set_initial_seq(Direction::ToServer, 1000);
    o.set_initial_seq(Direction::ToClient, 5000);
    let (mut seq_c, mut seq_s) = (1000u32, 5000u32);
    while rest.len() >= 3 {
        let dir = if rest[0] & 1 == 0 { Direction::ToServer } else { Direction::ToClient };
        let skew = (rest[0] >> 1) as u32 % 16;
        let len = (usize::from(rest[1]) << 2 | usize::from(rest[0] >> 6)).min(rest.len() - 2);
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
