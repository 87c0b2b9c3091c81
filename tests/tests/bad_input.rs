//! Bad settings and a failing EAL: one clear message naming the file, line
//! and field (exit 2 for settings and arguments, 1 for the EAL and ports), never
//! a panic.

use std::process::Command;
use std::time::Duration;

use tlsgate_tests::{dpdk_lock, run_with_limit, text, tlsgate, Scratch};

fn run_config(body: &str) -> (std::process::Output, String) {
    let dir = Scratch::new("bad");
    let cfg = dir.path("appliance.toml");
    std::fs::write(&cfg, body).unwrap();
    let o = run_with_limit(Command::new(tlsgate()).args(["run", "--config"]).arg(&cfg), Duration::from_secs(30));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!err.contains("panicked"), "{}", text(&o));
    (o, err)
}

const GOOD: &str = r#"[eal]
args = ["--no-huge", "--no-shconf", "--no-pci", "--no-telemetry", "-m", "256", "--vdev=net_null0", "--vdev=net_null1"]

[[pair]]
a = "net_null0"
b = "net_null1"

[workers]
lcores = [1]
"#;

#[test]
fn missing_settings_file_is_exit_2() {
    let o = run_with_limit(
        Command::new(tlsgate()).args(["run", "--config", "/nonexistent/x.toml"]),
        Duration::from_secs(10),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/x.toml: cannot read"), "{}", text(&o));
}

#[test]
fn unknown_field_names_file_line_and_field() {
    let (o, err) = run_config(&GOOD.replace("lcores = [1]", "lcores = [1]\nturbo = true"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(err.contains("appliance.toml:10: turbo: unknown field"), "{err}");
}

#[test]
fn wrong_type_and_syntax_errors_name_the_line() {
    let (o, err) = run_config(&GOOD.replace("lcores = [1]", "lcores = \"one\""));
    assert_eq!(o.status.code(), Some(2));
    assert!(err.contains("appliance.toml:9:"), "{err}");
    let (o, err) = run_config(&GOOD.replace("[[pair]]", "[[pair"));
    assert_eq!(o.status.code(), Some(2));
    assert!(err.contains("appliance.toml:4:"), "{err}");
    let (o, err) = run_config(&GOOD.replace("b = \"net_null1\"", "b = \"net_null0\""));
    assert_eq!(o.status.code(), Some(2));
    assert!(err.contains("appliance.toml:6: pair[0]: port \"net_null0\" appears in more than one pair"), "{err}");
    let (o, _) = run_config("");
    assert_eq!(o.status.code(), Some(2));
    let (o, _) = run_config("\u{0}\u{1}garbage[[[");
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn unknown_vdev_says_what_to_try() {
    let _g = dpdk_lock();
    let (o, err) = run_config(&GOOD.replace("--vdev=net_null1", "--vdev=net_bogus1"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(err.contains("EAL initialisation failed") && err.contains("--vdev"), "{err}");
}

#[test]
fn missing_port_lists_the_ports_there_are() {
    let _g = dpdk_lock();
    let (o, err) = run_config(&GOOD.replace("b = \"net_null1\"", "b = \"net_null7\""));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(err.contains("port \"net_null7\" not found; the EAL has: net_null0, net_null1"), "{err}");
}

#[test]
fn main_lcore_as_worker_is_refused() {
    let _g = dpdk_lock();
    let (o, err) = run_config(&GOOD.replace("lcores = [1]", "lcores = [0]"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(err.contains("lcore 0 is the main (control) lcore"), "{err}");
}

#[test]
fn replay_of_a_file_that_is_not_a_capture_is_exit_2() {
    let dir = Scratch::new("notpcap");
    let p = dir.path("x.pcap");
    std::fs::write(&p, b"this is not a capture at all").unwrap();
    let o = run_with_limit(Command::new(tlsgate()).args(["replay", "--pcap"]).arg(&p), Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--pcap"), "{}", text(&o));
    let o = run_with_limit(
        Command::new(tlsgate()).args(["replay", "--pcap", "/nonexistent.pcap"]),
        Duration::from_secs(10),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn slow_path_settings_are_checked() {
    let slow = |extra: &str| GOOD.to_string() + "\n[slowpath]\n" + extra;
    let (o, err) = run_config(&slow("lcores = [1]\n"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(err.contains("slowpath.lcores: lcore 1 is also a worker lcore"), "{err}");
    let (o, err) = run_config(&slow("lcores = [2, 2]\n"));
    assert_eq!(o.status.code(), Some(2));
    assert!(err.contains("slowpath.lcores: an lcore is listed twice"), "{err}");
    let (o, err) = run_config(&slow("lcores = [2]\nwhen_full = \"sometimes\"\n"));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err.contains("appliance.toml:13: unknown variant `sometimes`, expected `do-not-decrypt` or `block`"),
        "{err}"
    );
    let (o, err) = run_config(&slow("lcores = [2]\nring = 8\n"));
    assert_eq!(o.status.code(), Some(2));
    assert!(err.contains("slowpath.ring: at least 64 slots"), "{err}");
}

/// A CA that is not a CA, a key that belongs to another certificate: refused
/// at start, naming the object, and no key material in the message.
#[test]
fn resigning_ca_and_known_key_of_the_wrong_kind_are_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Scratch::new("bad-keys");
    let pki = tlsgate_perf::handshake::Pki::new("Corp CA");
    let leaf = pki.issue(&["a.test"], "A", 1_700_000_000, 1_900_000_000);
    let other = pki.issue(&["b.test"], "B", 1_700_000_000, 1_900_000_000);
    let write_key = |name: &str, pem: &str| {
        std::fs::write(dir.path(name), pem).unwrap();
        std::fs::set_permissions(dir.path(name), std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    std::fs::write(dir.path("leaf.pem"), &leaf.cert_pem).unwrap();
    write_key("leaf.key", &leaf.key_pem);
    write_key("other.key", &other.key_pem);
    let check = |objects: &str| {
        let policy = dir.path("policy.toml");
        std::fs::write(&policy, format!("[policy]\ndefault_action = \"do-not-decrypt\"\n\n{objects}")).unwrap();
        let cfg = dir.path("appliance.toml");
        std::fs::write(&cfg, format!("policy = \"policy.toml\"\n{GOOD}")).unwrap();
        let o = run_with_limit(Command::new(tlsgate()).args(["run", "--config"]).arg(&cfg), Duration::from_secs(30));
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!err.contains("PRIVATE KEY") && !err.contains("panicked"), "{err}");
        err
    };
    let err = check("[[ca]]\nname = \"corp\"\ncert = \"leaf.pem\"\nkey = \"leaf.key\"\n");
    assert!(err.contains("ca \"corp\": the certificate is not a CA certificate"), "{err}");
    let err = check("[[known_key]]\nname = \"intranet\"\ncert = \"leaf.pem\"\nkey = \"other.key\"\n");
    assert!(err.contains("known_key \"intranet\": the key file holds another key than the certificate's"), "{err}");
}
