//! The inspector alone on a capture, for profiling (no DPDK): every frame of
//! a pcap through one worker's sans-IO inspector, PASSES times, and the rate.
//! `perf record` or `valgrind --tool=callgrind` on it shows where a
//! handshake's cycles go.
//!
//! ```sh
//! cargo run --release -p tlsgate-core --example inspect_pcap -- CAPTURE POLICY [PASSES] [full|decision]
//! ```
//!
//! It prints the rate and the inspector's non-zero counters. With `SAME_PORT`
//! set, every frame comes in by one port, as in a replay or the perf harness.

use std::sync::Arc;
use std::time::Instant;

use tlsgate_config::policy::Policy;
use tlsgate_config::{FlowSettings, HandshakeEvents};
use tlsgate_core::inspect::{Inspector, Output};
use tlsgate_core::outcome::FlowEnd;
use tlsgate_core::packet::TcpFrame;

// As the tlsgate binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, pcap, policy, rest @ ..] = args.as_slice() else {
        eprintln!("usage: inspect_pcap CAPTURE POLICY [PASSES] [full|decision]");
        std::process::exit(2);
    };
    let passes: usize = rest.first().and_then(|p| p.parse().ok()).unwrap_or(10);
    // As the perf harness replays a capture: every frame comes in by one port.
    let same_port = std::env::var_os("SAME_PORT").is_some();
    let mode = if rest.get(1).map(String::as_str) == Some("decision") {
        HandshakeEvents::Decision
    } else {
        HandshakeEvents::Full
    };
    let policy = Arc::new(Policy::load(std::path::Path::new(policy)).unwrap_or_else(|e| panic!("{e}")));
    let raw = std::fs::read(pcap).expect("read the capture");
    let mut reader = pcap_file::pcap::PcapReader::new(&raw[..]).expect("a pcap");
    let mut frames = Vec::new();
    while let Some(p) = reader.next_packet() {
        let p = p.expect("a record");
        frames.push((p.timestamp.as_nanos() as u64, p.data.to_vec()));
    }
    let ports: Arc<[String]> = vec!["a".to_string(), "b".to_string()].into();
    let mut ins = Inspector::new(0, policy, &FlowSettings::default(), ports).unwrap().with_handshake_events(mode);
    let span = frames.last().map_or(0, |f| f.0) - frames.first().map_or(0, |f| f.0) + 1_000_000_000;
    let mut out = Output::default();
    let mut events = 0;
    let started = Instant::now();
    for pass in 0..passes as u64 {
        for (t, frame) in &frames {
            let ingress = TcpFrame::parse(frame).map_or(0, |t| usize::from(t.dst_port < t.src_port));
            ins.on_packet(frame, if same_port { 0 } else { ingress }, t + pass * span, &mut out);
            events += out.events.len();
            out = Output::default();
        }
    }
    ins.finish(u64::MAX / 2, FlowEnd::EndOfCapture, &mut out);
    let secs = started.elapsed().as_secs_f64();
    let packets = frames.len() * passes;
    println!(
        "{packets} packets, {events} events in {secs:.3} s: {:.3} Mpps, {:.0} events/s ({mode:?})",
        packets as f64 / secs / 1e6,
        events as f64 / secs
    );
    let counters: Vec<String> =
        ins.counters().named().filter(|(_, n)| *n > 0).map(|(name, n)| format!("{name}={n}")).collect();
    println!("{}", counters.join(" "));
}
