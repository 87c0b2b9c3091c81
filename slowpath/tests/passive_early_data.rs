//! TLS 1.3 0-RTT read with a key log, on sessions rustls makes at both ends
//! (in memory, so the early data sent is exactly what the test asked for):
//! more early data than the reader holds while it waits to learn whether the
//! server takes it, taken and refused.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use tlsgate_slowpath::passive::keylog::KeyLog;
use tlsgate_slowpath::passive::{EarlyData, Keys, PassiveSession, Plaintext, Report};

/// What the reader holds of 0-RTT data until the server's answer.
const HELD: usize = 256 * 1024;
/// The server's early-data limit: more than the client sends.
const SERVER_LIMIT: u32 = 400_000;

/// The bytes that crossed, in order, each with whether the client sent them.
type Wire = Vec<(bool, Vec<u8>)>;

/// Key log lines as SSLKEYLOGFILE has them.
#[derive(Debug, Default)]
struct Lines(Mutex<String>);

impl rustls::KeyLog for Lines {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let line = format!("{label} {} {}\n", hex(client_random), hex(secret));
        self.0.lock().unwrap().push_str(&line);
    }
}

struct Setup {
    client: Arc<ClientConfig>,
    /// Takes early data up to [`SERVER_LIMIT`] and issues tickets saying so.
    server: Arc<ServerConfig>,
    lines: Arc<Lines>,
}

fn setup() -> Setup {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["server.test".into()]).unwrap().self_signed(&key).unwrap();
    let cert_der: CertificateDer<'static> = cert.der().clone();
    let key_der = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let lines = Arc::new(Lines::default());
    let mut server =
        ServerConfig::builder().with_no_client_auth().with_single_cert(vec![cert_der.clone()], key_der()).unwrap();
    server.max_early_data_size = SERVER_LIMIT;
    server.key_log = lines.clone();
    let mut roots = RootCertStore::empty();
    roots.add(cert_der.clone()).unwrap();
    let mut client = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    client.enable_early_data = true;
    client.key_log = lines.clone();
    Setup { client: Arc::new(client), server: Arc::new(server), lines }
}

/// One session in memory. The client sends `early` as 0-RTT data (as much as
/// its ticket allows) and `after` once the handshake is done; the server
/// refuses the early data if told to, and reads everything else. Returns each direction's bytes in the order they crossed, what
/// the server read, and how much the client sent as early data.
fn session(
    config: &Arc<ClientConfig>,
    server: &Arc<ServerConfig>,
    refuse: bool,
    early: &[u8],
    after: &[u8],
) -> (Wire, Vec<u8>, usize) {
    let mut c = ClientConnection::new(config.clone(), ServerName::try_from("server.test").unwrap()).unwrap();
    // All of it in the first flight, not the 64 KiB rustls buffers by default.
    c.set_buffer_limit(None);
    let mut s = ServerConnection::new(server.clone()).unwrap();
    let mut sent_early = 0;
    if let Some(mut w) = c.early_data() {
        sent_early = w.write(early).unwrap();
    }
    let mut wire = Vec::new();
    let mut read = Vec::new();
    let mut after_sent = false;
    // Client bytes the server has not taken yet: rustls reads no further
    // while its own flight waits to be written.
    let mut backlog: Vec<u8> = Vec::new();
    // How much of the backlog's start is on the wire already.
    let mut on_wire = 0;
    if refuse {
        s.reject_early_data();
        // A server skips the early data it refused (RFC 8446 4.2.10). rustls
        // keeps the records it skips in its read buffer until a record it can
        // open follows, which 16 KiB records overflow: the harness skips them
        // for it. The wire keeps them: they are what the reader must account for.
        while c.wants_write() {
            c.write_tls(&mut backlog).unwrap();
        }
        wire.push((true, backlog.clone()));
        backlog = records(&backlog).filter(|r| r[0] != 23).flatten().copied().collect();
        on_wire = backlog.len();
    }
    for _ in 0..10_000 {
        let mut moved = false;
        while c.wants_write() {
            c.write_tls(&mut backlog).unwrap();
        }
        let mut r = &backlog[..];
        while !r.is_empty() && s.read_tls(&mut r).is_ok() {
            s.process_new_packets().unwrap();
            if let Some(mut e) = s.early_data() {
                e.read_to_end(&mut read).unwrap();
            }
        }
        let taken = backlog.len() - r.len();
        if taken > 0 {
            let seen = on_wire.min(taken);
            on_wire -= seen;
            backlog.drain(..seen);
            if taken > seen {
                wire.push((true, backlog.drain(..taken - seen).collect()));
            }
            moved = true;
        }
        while s.wants_write() {
            let mut b = Vec::new();
            s.write_tls(&mut b).unwrap();
            let mut r = &b[..];
            while !r.is_empty() {
                c.read_tls(&mut r).unwrap();
                c.process_new_packets().unwrap();
            }
            wire.push((false, b));
            moved = true;
        }
        let mut buf = [0u8; 65536];
        while let Ok(n) = s.reader().read(&mut buf) {
            if n == 0 {
                break;
            }
            read.extend_from_slice(&buf[..n]);
        }
        if !c.is_handshaking() && !after_sent {
            c.writer().write_all(after).unwrap();
            after_sent = true;
            moved = true;
        }
        if !moved {
            assert!(backlog.is_empty(), "the server took every byte");
            return (wire, read, sent_early);
        }
    }
    panic!("the session did not settle");
}

/// The TLS records of `bytes` (whole records only).
fn records(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        let len = 5 + usize::from(u16::from_be_bytes([*rest.get(3)?, *rest.get(4)?]));
        let (r, next) = rest.split_at(len);
        rest = next;
        Some(r)
    })
}

/// Reads `wire` with the key log the sessions wrote so far.
fn read_passively(lines: &Lines, wire: &Wire) -> (Report, Vec<u8>) {
    let mut keys = Keys::new(Some(KeyLog::parse(&lines.0.lock().unwrap())), Vec::new());
    let mut p = PassiveSession::new();
    let mut out: Plaintext = Vec::new();
    for (from_client, bytes) in wire {
        p.feed(&mut keys, *from_client, bytes, &mut out);
    }
    p.finish();
    let to_server = out.iter().filter(|(c, _)| *c).flat_map(|(_, b)| b.iter().copied()).collect();
    (p.report().clone(), to_server)
}

/// A first session for its ticket, then a resumption with `early_len` bytes of 0-RTT data.
fn resumed_with_early_data(refuse: bool, early_len: usize) -> (Report, Vec<u8>, Vec<u8>) {
    let setup = setup();
    let (_, read, _) = session(&setup.client, &setup.server, false, b"", b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(read, b"GET / HTTP/1.1\r\n\r\n");
    let early: Vec<u8> = (0..early_len).map(|i| (i * 7 % 251) as u8).collect();
    let after = b"after the handshake";
    let (wire, read, sent_early) = session(&setup.client, &setup.server, refuse, &early, after);
    assert_eq!(sent_early, early_len, "the ticket allows all of it");
    let (report, to_server) = read_passively(&setup.lines, &wire);
    (report, to_server, read)
}

#[test]
fn early_data_past_what_is_held_is_counted_once_and_its_bytes_said() {
    let early_len = 300 * 1024;
    let (r, to_server, server_read) = resumed_with_early_data(false, early_len);
    assert_eq!(r.early_data, Some(EarlyData::Accepted), "{r:?}");
    assert!(r.resumed, "{r:?}");
    assert_eq!(server_read.len(), early_len + b"after the handshake".len(), "the server took it all");
    // rustls sends 16 KiB records: 16 of them fill what is held, the rest is opened and not kept.
    let held = HELD.min(early_len) / 16384 * 16384;
    assert_eq!(r.early_data_not_held_bytes, (early_len - held) as u64, "{r:?}");
    assert_eq!((r.records_not_decrypted, r.mac_failures, r.early_data_refused_bytes), (0, 0, 0), "{r:?}");
    // What the reader exports is what the server read, less the bytes not held.
    let mut want = server_read[..held].to_vec();
    want.extend_from_slice(&server_read[early_len..]);
    assert_eq!(to_server, want);
    assert_eq!(r.bytes_to_server, want.len() as u64, "{r:?}");
}

#[test]
fn early_data_within_what_is_held_is_all_exported() {
    let early_len = 100_000;
    let (r, to_server, server_read) = resumed_with_early_data(false, early_len);
    assert_eq!(r.early_data, Some(EarlyData::Accepted), "{r:?}");
    assert_eq!((r.early_data_not_held_bytes, r.records_not_decrypted, r.mac_failures), (0, 0, 0), "{r:?}");
    assert_eq!(to_server, server_read);
}

#[test]
fn refused_early_data_is_not_exported_and_says_how_much_there_was() {
    let early_len = 300 * 1024;
    let (r, to_server, server_read) = resumed_with_early_data(true, early_len);
    assert_eq!(r.early_data, Some(EarlyData::Refused), "{r:?}");
    assert_eq!(server_read, b"after the handshake", "the server skipped the early data");
    assert_eq!(to_server, server_read, "only what the server read is exported");
    let held = HELD.min(early_len) / 16384 * 16384;
    assert_eq!(r.early_data_refused_bytes, held as u64, "{r:?}");
    assert_eq!(r.early_data_not_held_bytes, (early_len - held) as u64, "{r:?}");
    assert_eq!((r.records_not_decrypted, r.mac_failures), (0, 0), "{r:?}");
}
