//! Captures of real stacks talking on loopback: tcpdump on `lo`, filtered to
//! one address and port of the test's own, for `tlsgate replay` to read.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills a child process when dropped (a failed test leaves nothing behind).
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the file at `path` holds `what` (at most 10 s).
pub fn wait_for(path: &Path, what: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(what)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{}: no {what:?} within 10 s", path.display());
}

/// A self-signed P-256 server certificate for `name` (subject CN and SAN),
/// made by openssl in `dir`: (certificate, key) PEM files.
pub fn server_certificate(dir: &crate::Scratch, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.path("cert.pem"), dir.path("key.pem"));
    let o = crate::run_with_limit(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .args(["-subj", &format!("/CN={name}"), "-addext", &format!("subjectAltName=DNS:{name}")])
            .args(["-addext", "basicConstraints=critical,CA:FALSE", "-days", "30"]),
        Duration::from_secs(20),
    );
    assert!(o.status.success(), "{}", crate::text(&o));
    (cert, key)
}

/// tcpdump writing what crosses `addr:port` on loopback into a pcap.
pub struct Capture {
    dump: Reaped,
    pcap: PathBuf,
    log: PathBuf,
}

impl Capture {
    /// Starts capturing into `pcap` (tcpdump's messages go to `pcap` + `.log`);
    /// returns once tcpdump listens.
    pub fn start(pcap: &Path, addr: &str, port: u16) -> Capture {
        let log = pcap.with_extension("log");
        let dump = Command::new("tcpdump")
            .args(["-i", "lo", "-U", "--immediate-mode", "-Z", "root", "-w"])
            .arg(pcap)
            .args(["host", addr, "and", "port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("tcpdump (scripts/setup installs it)");
        let c = Capture { dump: Reaped(dump), pcap: pcap.to_path_buf(), log };
        wait_for(&c.log, "listening on");
        c
    }

    /// Stops capturing (tcpdump writes out what it holds) and returns the capture.
    pub fn finish(mut self) -> PathBuf {
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("kill").args(["-INT", &self.dump.0.id().to_string()]).status();
        let _ = self.dump.0.wait();
        let size = std::fs::metadata(&self.pcap).map(|m| m.len()).unwrap_or(0);
        assert!(size > 24, "nothing captured: {}", std::fs::read_to_string(&self.log).unwrap_or_default());
        // Kept for fuzzing seeds (fuzz/seed.py) when asked.
        if let Some(dir) = std::env::var_os("TLSGATE_KEEP_CAPTURES") {
            let dir = Path::new(&dir);
            let _ = std::fs::create_dir_all(dir);
            let name = self.pcap.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let _ = std::fs::copy(&self.pcap, dir.join(format!("{}-{name}", std::process::id())));
        }
        self.pcap.clone()
    }
}
