//! The Debian package (`scripts/package`, which `scripts/test` runs before
//! the tests): unpacked into a scratch root with `dpkg-deb -x`, its
//! `tlsgate --version` runs, `tlsgate policy check` accepts the example
//! policy it installs in /etc/tlsgate/, its example settings load, and it has
//! the man page, the systemd unit, the logrotate configuration and the
//! Grafana dashboard, and depends on Debian's DPDK.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tlsgate_tests::{repo, run_with_limit, text, Scratch};

fn the_deb() -> PathBuf {
    let dir = repo().join("target/debian");
    let version = env!("CARGO_PKG_VERSION");
    let deb = dir.join(format!("tlsgate_{version}_amd64.deb"));
    assert!(deb.exists(), "{} is not built: run scripts/package (scripts/test does)", deb.display());
    deb
}

#[test]
fn the_package_installs_a_tlsgate_that_runs_and_checks_its_example_policy() {
    let deb = the_deb();
    let root = Scratch::new("deb-root");
    let o = run_with_limit(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root.0), Duration::from_secs(60));
    assert!(o.status.success(), "{}", text(&o));
    let bin = root.path("usr/bin/tlsgate");
    let o = run_with_limit(Command::new(&bin).arg("--version"), Duration::from_secs(10));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("tlsgate {}", env!("CARGO_PKG_VERSION")));
    let o = run_with_limit(
        Command::new(&bin).args(["policy", "check"]).arg(root.path("etc/tlsgate/policy.toml")),
        Duration::from_secs(10),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("valid"), "{}", text(&o));
    // The example settings are valid settings (the policy next to them).
    tlsgate_config::Settings::load(&root.path("etc/tlsgate/tlsgate.toml")).expect("the example settings");
    for f in [
        "usr/share/man/man1/tlsgate.1.gz",
        "lib/systemd/system/tlsgate.service",
        "etc/logrotate.d/tlsgate",
        "usr/share/tlsgate/grafana/tlsgate.json",
        "usr/share/doc/tlsgate/copyright",
    ] {
        assert!(root.path(f).exists(), "{f} is not in the package");
    }
    let man =
        run_with_limit(Command::new("zcat").arg(root.path("usr/share/man/man1/tlsgate.1.gz")), Duration::from_secs(10));
    assert!(String::from_utf8_lossy(&man.stdout).contains(".TH tlsgate 1"), "a man page");
    let o = run_with_limit(Command::new("dpkg-deb").args(["-f"]).arg(&deb).arg("Depends"), Duration::from_secs(10));
    let depends = String::from_utf8_lossy(&o.stdout);
    for d in ["dpdk", "librte-eal23", "librte-ethdev23"] {
        assert!(depends.split(", ").any(|p| p.starts_with(d)), "Depends: {depends}");
    }
}
