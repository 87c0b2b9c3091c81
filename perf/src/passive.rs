//! The passive reader's rate: one TLS 1.2 session made in memory by rustls
//! (its secrets logged), moving bulk data from the server, read back by the
//! passive reader; beside it, in the same run, the record work a takeover does
//! on the same bytes (rustls opens each record toward the client's side and
//! seals it again toward the other).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection, SupportedCipherSuite};
use tlsgate_slowpath::passive::keylog::KeyLog;
use tlsgate_slowpath::passive::{Keys, PassiveSession, Plaintext};

/// One suite's figures (MB: 10^6 bytes of application plaintext).
#[derive(Debug, Clone)]
pub struct Rates {
    /// The suite's IANA name.
    pub suite: String,
    /// Passive reading, MB/s on one core.
    pub passive_mb_s: f64,
    /// A takeover's record work on the same bytes (open, then seal again), MB/s on one core.
    pub takeover_mb_s: f64,
}

/// rustls's key log, kept as NSS lines.
#[derive(Debug, Default)]
struct Lines(Mutex<String>);

impl rustls::KeyLog for Lines {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        use tlsgate_config::hex;
        if let Ok(mut s) = self.0.lock() {
            s.push_str(&format!("{label} {} {}\n", hex(client_random), hex(secret)));
        }
    }
}

/// A session's bytes in the order they crossed: (from the client, bytes).
type Wire = Vec<(bool, Vec<u8>)>;

/// Measures `suite` over `mib` MiB sent by the server in 16 KiB writes, best of `rounds`.
pub fn measure(suite: SupportedCipherSuite, mib: usize, rounds: usize) -> Result<Rates, String> {
    let (wire, keylog, plaintext_len) = session(suite, mib)?;
    let mut best_passive = f64::MAX;
    let mut best_takeover = f64::MAX;
    for _ in 0..rounds.max(1) {
        let mut keys = Keys::new(Some(KeyLog::parse(&keylog)), Vec::new());
        let mut s = PassiveSession::new();
        let mut out = Plaintext::new();
        let mut read = 0usize;
        let t = Instant::now();
        for (from_client, bytes) in &wire {
            s.feed(&mut keys, *from_client, bytes, &mut out);
            read += out.iter().map(|(_, p)| p.len()).sum::<usize>();
            out.clear();
        }
        best_passive = best_passive.min(t.elapsed().as_secs_f64());
        if read != plaintext_len {
            return Err(format!("the passive reader read {read} of {plaintext_len} bytes: {:?}", s.report()));
        }
        best_takeover = best_takeover.min(takeover_work(suite, plaintext_len)?);
    }
    let mb = plaintext_len as f64 / 1e6;
    Ok(Rates {
        suite: format!("{:?}", suite.suite()),
        passive_mb_s: mb / best_passive,
        takeover_mb_s: mb / best_takeover,
    })
}

/// The server's records opened by a rustls client and sealed again by a
/// rustls server, as a takeover's relay does for a download: seconds taken.
fn takeover_work(suite: SupportedCipherSuite, plaintext_len: usize) -> Result<f64, String> {
    // The relay's two sessions, each a pair of its own, handshaken first; then
    // the same amount of data in the same 16 KiB writes, timed.
    let (mut client, mut server) = pair(suite, None)?;
    let (mut client2, mut server2) = pair(suite, None)?;
    handshake(&mut client, &mut server)?;
    handshake(&mut client2, &mut server2)?;
    let data = vec![0x5au8; 16 * 1024];
    // What the server sends is made before the clock starts: only the relay's work is timed.
    let mut sealed = Vec::new();
    let mut left = plaintext_len;
    while left > 0 {
        let n = left.min(data.len());
        std::io::Write::write_all(&mut server.writer(), &data[..n]).map_err(|e| e.to_string())?;
        while server.wants_write() {
            server.write_tls(&mut sealed).map_err(|e| e.to_string())?;
        }
        left -= n;
    }
    let t = Instant::now();
    let mut rest = &sealed[..];
    let mut buf = vec![0u8; 64 * 1024];
    let mut resealed = Vec::with_capacity(sealed.len() + 4096);
    let mut moved = 0usize;
    while !rest.is_empty() {
        client.read_tls(&mut rest).map_err(|e| e.to_string())?;
        client.process_new_packets().map_err(|e| e.to_string())?;
        loop {
            match std::io::Read::read(&mut client.reader(), &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    std::io::Write::write_all(&mut server2.writer(), &buf[..n]).map_err(|e| e.to_string())?;
                    moved += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        while server2.wants_write() {
            server2.write_tls(&mut resealed).map_err(|e| e.to_string())?;
        }
        resealed.clear();
    }
    let took = t.elapsed().as_secs_f64();
    if moved != plaintext_len {
        return Err(format!("the relay moved {moved} of {plaintext_len} bytes"));
    }
    Ok(took)
}

/// A session moving `mib` MiB from the server: its wire bytes, its key log, the plaintext length.
fn session(suite: SupportedCipherSuite, mib: usize) -> Result<(Wire, String, usize), String> {
    let log = Arc::new(Lines::default());
    let (mut client, mut server) = pair(suite, Some(log.clone()))?;
    let mut wire = Wire::new();
    let mut step = |from: &mut Connection, to: &mut Connection, from_client: bool| -> Result<usize, String> {
        let bytes = pass(from, to)?;
        let n = bytes.len();
        if n > 0 {
            wire.push((from_client, bytes));
        }
        Ok(n)
    };
    loop {
        let c = step(&mut client, &mut server, true)?;
        let s = step(&mut server, &mut client, false)?;
        if c == 0 && s == 0 {
            break;
        }
    }
    if client.is_handshaking() || server.is_handshaking() {
        return Err("handshake stalled".into());
    }
    let data = vec![0xa5u8; 16 * 1024];
    let total = mib << 20;
    let mut left = total;
    while left > 0 {
        let n = left.min(data.len());
        std::io::Write::write_all(&mut server.writer(), &data[..n]).map_err(|e| e.to_string())?;
        step(&mut server, &mut client, false)?;
        left -= n;
    }
    let keylog = log.0.lock().map_err(|_| "key log poisoned")?.clone();
    Ok((wire, keylog, total))
}

fn handshake(client: &mut Connection, server: &mut Connection) -> Result<(), String> {
    for _ in 0..16 {
        let moved = pass(client, server)?.len() + pass(server, client)?.len();
        if moved == 0 {
            break;
        }
    }
    if client.is_handshaking() || server.is_handshaking() {
        return Err("handshake stalled".into());
    }
    Ok(())
}

/// Moves what `from` has to send into `to` (whose plaintext is read and
/// dropped); returns the bytes moved.
fn pass(from: &mut Connection, to: &mut Connection) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut bytes).map_err(|e| e.to_string())?;
    }
    let mut rest = &bytes[..];
    let mut sink = vec![0u8; 64 * 1024];
    while !rest.is_empty() {
        to.read_tls(&mut rest).map_err(|e| e.to_string())?;
        to.process_new_packets().map_err(|e| e.to_string())?;
        while let Ok(n) = std::io::Read::read(&mut to.reader(), &mut sink) {
            if n == 0 {
                break;
            }
        }
    }
    Ok(bytes)
}

/// A client and a server speaking TLS 1.2 with `suite` only, the server with
/// a fresh RSA-2048 certificate the client trusts.
fn pair(suite: SupportedCipherSuite, log: Option<Arc<Lines>>) -> Result<(Connection, Connection), String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).map_err(|e| e.to_string())?;
    let cert = rcgen::CertificateParams::new(vec!["bench.test".to_string()])
        .map_err(|e| e.to_string())?
        .self_signed(&key)
        .map_err(|e| e.to_string())?;
    let provider =
        Arc::new(CryptoProvider { cipher_suites: vec![suite], ..rustls::crypto::aws_lc_rs::default_provider() });
    let server_config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(cert.der().to_vec())).map_err(|e| e.to_string())?;
    let mut client_config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    if let Some(l) = log {
        client_config.key_log = l;
    }
    let name = ServerName::try_from("bench.test").map_err(|e| e.to_string())?;
    let client = ClientConnection::new(Arc::new(client_config), name).map_err(|e| e.to_string())?;
    let server = ServerConnection::new(Arc::new(server_config)).map_err(|e| e.to_string())?;
    Ok((Connection::from(client), Connection::from(server)))
}
