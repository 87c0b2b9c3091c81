//! The slow path's side of a decrypted flow: arbitrary frames (2-byte length
//! prefix each, the low bit of the length picks the side) read into segments
//! and fed to an interception (two takeover TCP endpoints and the TLS relay),
//! driven and drained, on a clock that moves a millisecond a frame.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tlsgate_core::escalate::{TcpSeen, TcpSideSeen};
use tlsgate_core::packet::{TcpFrame, TcpOptions};
use tlsgate_slowpath::intercept::{Interception, Output};
use tlsgate_slowpath::relay::{ClientFacing, Relay, RelayConfig};
use tlsgate_slowpath::wire::segment_of;

fuzz_target!(|data: &[u8]| {
    let opts =
        TcpOptions { mss: Some(1460), wscale: Some(7), sack_permitted: true, timestamps: Some((1, 0)), md5: false };
    let side = TcpSideSeen { syn: Some(opts), window: 500, window_on_syn: false, tsval: Some((1, 0)) };
    let seen = TcpSeen { client: side, server: side, client_seq: 1000, server_seq: 5000 };
    let relay = Relay::new(RelayConfig {
        trust: tlsgate_slowpath::ServerTrust::new(rustls::RootCertStore::empty()),
        client_facing: ClientFacing::Resign,
        keylog: true,
    });
    let mut icpt = Interception::new(&seen, relay, true, 0);
    let mut now = 0u64;
    let mut rest = data;
    while rest.len() >= 2 {
        let len = (u16::from_be_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let frame = &rest[2..2 + len];
        now += 1_000_000;
        if let Some(t) = TcpFrame::parse(frame) {
            let seg = segment_of(&t);
            if len & 1 == 0 {
                icpt.on_client_segment(&seg, now);
            } else {
                icpt.on_server_segment(&seg, now);
            }
        }
        icpt.drive(now, &mut |_, _, _| None, &mut Output::default());
        while icpt.poll_transmit(now).is_some() {}
        let _ = icpt.finished(now, 60_000_000_000);
        rest = &rest[2 + len..];
    }
});
