//! `tlsgate replay` on the net_pcap PMD: it stops by itself, and a bridge
//! changes no byte: the output capture holds exactly the input's frames, in order.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tlsgate_tests::{dpdk_lock, pcap_frames, run_with_limit, testdata, text, tlsgate, Scratch};

fn replay_is_byte_exact(input: &Path) {
    let _g = dpdk_lock();
    let dir = Scratch::new("replay");
    let out = dir.path("out.pcap");
    let json = dir.path("c.json");
    let o = run_with_limit(
        Command::new(tlsgate())
            .args(["replay", "--pcap"])
            .arg(input)
            .arg("--out")
            .arg(&out)
            .arg("--counters-json")
            .arg(&json),
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}: {}", input.display(), text(&o));
    let want = pcap_frames(input);
    let got = pcap_frames(&out);
    assert_eq!(got.len(), want.len(), "{}: frame count", input.display());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(g == w, "{}: frame {i} differs", input.display());
    }
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(c["ports"][0]["rx_packets"].as_u64(), Some(want.len() as u64));
    assert_eq!(c["ports"][1]["tx_packets"].as_u64(), Some(want.len() as u64));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("net_pcap_in") && stdout.contains("lcore 1"), "{stdout}");
}

#[test]
fn every_shared_capture_replays_byte_for_byte() {
    let root = testdata();
    let mut seen = 0;
    for dir in ["zeek", "pcapfs/feature_test"] {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(dir)).unwrap().flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if name.ends_with(".pcap") || name.ends_with(".pcap.gz") {
                replay_is_byte_exact(&p);
                seen += 1;
            }
        }
    }
    assert!(seen >= 10, "expected the shared captures, found {seen}");
}

#[test]
fn demo_capture_replays_byte_for_byte() {
    replay_is_byte_exact(&tlsgate_tests::repo().join("demo/demo.pcap"));
}
