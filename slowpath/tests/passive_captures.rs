//! Passive decryption of a capture nobody here made: pcapFS's feature test
//! (three TLS 1.2 sessions with RSA key exchange), with the server's RSA key
//! and with the capture's key log, against pcapFS's expected plaintext.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tlsgate_core::packet::TcpFrame;
use tlsgate_slowpath::passive::capture::{CaptureReader, SessionReport};
use tlsgate_slowpath::passive::keylog::KeyLog;
use tlsgate_slowpath::passive::{Keys, Mode, ServerKey, Unreadable};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/public/pcapfs/feature_test");

fn path(rel: &str) -> PathBuf {
    Path::new(TESTDATA).join(rel)
}

/// Reads the capture through a reader with `keys`: the sessions' reports,
/// and the plaintext of each decrypted stream (by client port, both directions in order).
fn read(keys: Keys) -> (Vec<SessionReport>, BTreeMap<u16, Vec<u8>>) {
    read_reshaped(keys, |f| vec![f])
}

/// The capture's frames, each through `reshape` (which may cut it up or reorder), then as [`read`].
fn read_reshaped(
    keys: Keys,
    reshape: impl Fn(Vec<u8>) -> Vec<Vec<u8>>,
) -> (Vec<SessionReport>, BTreeMap<u16, Vec<u8>>) {
    let f = std::fs::File::open(path("feature_test.pcap")).unwrap();
    let mut r = pcap_file::pcap::PcapReader::new(f).unwrap();
    let mut reader = CaptureReader::new(keys, 1000);
    let mut frames = Vec::new();
    let mut last = 0;
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        last = p.timestamp.as_nanos() as u64;
        for f in reshape(p.data.to_vec()) {
            reader.frame(last, &f, &mut frames);
        }
    }
    let reports = reader.finish(last, &mut frames);
    let mut plain: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
    for (_, f) in &frames {
        let t = TcpFrame::parse(f).expect("decrypted frames are TCP");
        let client_port = if t.dst_port == 443 || t.dst_port < t.src_port { t.src_port } else { t.dst_port };
        plain.entry(client_port).or_default().extend_from_slice(t.payload());
    }
    (reports, plain)
}

fn server_key() -> ServerKey {
    let key = PrivateKeyDer::from_pem_file(path("keyfiles/server_private.key")).unwrap();
    let pkcs1 = matches!(key, PrivateKeyDer::Pkcs1(_));
    let cert = CertificateDer::from_pem_file(path("expected_output/tls/1-193_TLSCertificate.pem")).unwrap();
    ServerKey::new(&cert, key.secret_der(), pkcs1).unwrap()
}

fn expected(rel: &str) -> Vec<u8> {
    std::fs::read(path(&format!("expected_output/{rel}"))).unwrap()
}

fn report(reports: &[SessionReport], client_port: u16) -> &tlsgate_slowpath::passive::Report {
    &reports.iter().find(|r| r.client.1 == client_port).expect("the session is reported").report
}

#[test]
fn sessions_to_the_imported_key_are_read_passively_and_match_pcapfs() {
    let (reports, plain) = read(Keys::new(None, vec![server_key()]));
    assert_eq!(reports.len(), 3);
    // AES128-SHA256 and RC4-SHA, both to the imported certificate.
    for (port, want) in [(51124, "tls/1-1726_TLS"), (51024, "tls/2-1624_TLS")] {
        let r = report(&reports, port);
        assert_eq!(r.mode, Some(Mode::Passive), "{port}: {r:?}");
        assert_eq!((r.mac_failures, r.records_not_decrypted, r.unreadable), (0, 0, None), "{port}: {r:?}");
        assert_eq!(plain[&port], expected(want), "{port}");
    }
    let r = report(&reports, 51124);
    assert_eq!((r.records_to_server, r.records_to_client, r.bytes_to_server + r.bytes_to_client), (3, 4, 35));
    // The third session shows another certificate: not read, and why.
    let r = report(&reports, 43090);
    assert_eq!((r.mode, r.unreadable), (None, Some(Unreadable::OtherCertificate)));
    assert!(!plain.contains_key(&43090));
}

/// An IPv4 TCP frame with payload cut in two at `at`: (first part, second part).
fn split(frame: &[u8], at: usize) -> Option<(Vec<u8>, Vec<u8>)> {
    let t = TcpFrame::parse(frame)?;
    let payload = t.payload();
    if t.ipv6 || payload.len() < 2 {
        return None;
    }
    let header = frame.len() - payload.len();
    let part = |range: std::ops::Range<usize>, seq: u32| {
        let mut f = frame[..header].to_vec();
        f.extend_from_slice(&payload[range]);
        let ip_len = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&ip_len.to_be_bytes());
        let l4 = 14 + usize::from(f[14] & 0x0f) * 4;
        f[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
        f
    };
    let at = at.clamp(1, payload.len() - 1);
    Some((part(0..at, t.seq), part(at..payload.len(), t.seq.wrapping_add(at as u32))))
}

#[test]
fn segments_cut_small_and_delivered_out_of_order_read_the_same() {
    // Every segment in two, the second half first: ClientHellos and records span
    // segments, and the reader puts each stream back in order.
    let (reports, plain) = read_reshaped(Keys::new(None, vec![server_key()]), |f| match split(&f, 7) {
        Some((a, b)) => vec![b, a],
        None => vec![f],
    });
    assert_eq!(plain[&51124], expected("tls/1-1726_TLS"));
    assert_eq!(plain[&51024], expected("tls/2-1624_TLS"));
    assert_eq!(report(&reports, 51124).mode, Some(Mode::Passive));
    // In order, cut after 3 bytes and after 700: the ClientHello's record header itself spans segments.
    for at in [3, 700] {
        let (_, plain) = read_reshaped(Keys::new(None, vec![server_key()]), |f| match split(&f, at) {
            Some((a, b)) => vec![a, b],
            None => vec![f],
        });
        assert_eq!(plain[&51124], expected("tls/1-1726_TLS"), "cut at {at}");
    }
    // And each retransmitted: the copies change nothing.
    let (_, plain) = read_reshaped(Keys::new(None, vec![server_key()]), |f| vec![f.clone(), f]);
    assert_eq!(plain[&51124], expected("tls/1-1726_TLS"));
}

#[test]
fn the_key_log_reads_the_session_the_imported_key_cannot() {
    let log = KeyLog::parse(&std::fs::read_to_string(path("keyfiles/master_and_premaster.key")).unwrap());
    assert_eq!(log.bad_lines, 0);
    let (reports, plain) = read(Keys::new(Some(log), vec![server_key()]));
    // curl's GET and s_server's page, as pcapFS carved them.
    let r = report(&reports, 43090);
    assert_eq!(r.mode, Some(Mode::Keylog));
    let mut want = expected("http/4-0_GET.meta");
    want.extend(expected("http/4-73.meta"));
    want.extend(expected("http/4-117"));
    assert_eq!(plain[&43090], want);
    assert_eq!((r.bytes_to_server, r.bytes_to_client), (73, 44 + 2175));
    assert_eq!(plain[&51124], expected("tls/1-1726_TLS"));
    assert_eq!(plain[&51024], expected("tls/2-1624_TLS"));
}

#[test]
fn without_keys_nothing_is_read_and_each_session_says_why() {
    let (reports, plain) = read(Keys::new(None, Vec::new()));
    assert!(plain.is_empty());
    for r in &reports {
        assert_eq!((r.report.mode, r.report.unreadable), (None, Some(Unreadable::NoKey)), "{r:?}");
        assert!(r.report.records_not_decrypted > 0);
    }
}

#[test]
fn a_wrong_key_for_the_right_certificate_fails_the_mac_and_reads_nothing() {
    // Another RSA key claimed for the same certificate: the premaster does not
    // decrypt, the random fallback is used, and the Finished fails its MAC.
    let cert = CertificateDer::from_pem_file(path("expected_output/tls/1-193_TLSCertificate.pem")).unwrap();
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let key = ServerKey::new(&cert, &other.serialize_der(), false).unwrap();
    let (reports, plain) = read(Keys::new(None, vec![key]));
    assert!(plain.is_empty());
    let r = report(&reports, 51124);
    assert_eq!(r.mode, Some(Mode::Passive));
    assert_eq!((r.records_to_server, r.records_to_client), (0, 0));
    assert_eq!(r.mac_failures, 2, "the first record each way fails, and the direction is read no further");
}

#[test]
fn an_ecdsa_key_is_refused_for_passive_decryption() {
    let cert = CertificateDer::from_pem_file(path("expected_output/tls/1-193_TLSCertificate.pem")).unwrap();
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    assert!(ServerKey::new(&cert, &ec.serialize_der(), false).is_err());
}
