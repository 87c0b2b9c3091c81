//! The QUIC Initial observer on arbitrary datagrams (2-byte length prefix
//! each, its top bit the direction): long headers, Initial decryption with
//! keys from whatever DCID the first client packet names, Retry re-keying,
//! CRYPTO reassembly into the TLS observer. Never a panic; bounded.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tlsgate_core::quic::{crypto_frames, parse_long_header, QuicLimits, QuicObserver};

fuzz_target!(|data: &[u8]| {
    let mut o = QuicObserver::new(QuicLimits { max_packets: 8, max_crypto: 16 * 1024 });
    let mut rest = data;
    while rest.len() >= 2 {
        let raw = u16::from_be_bytes([rest[0], rest[1]]);
        let len = ((raw & 0x7fff) as usize).min(rest.len() - 2);
        let datagram = &rest[2..2 + len];
        let _ = parse_long_header(datagram);
        let _ = crypto_frames(datagram);
        o.on_datagram(raw & 0x8000 == 0, datagram);
        while o.poll_event().is_some() {}
        rest = &rest[2 + len..];
    }
});
