//! The passive reader on arbitrary frames (2-byte length prefix each): TCP
//! flows put back in order, TLS sessions followed and, where pcapFS's RSA key
//! or key log opens them (read from the shared test data when it is there),
//! decrypted; seeded from real captures.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tlsgate_slowpath::passive::capture::CaptureReader;
use tlsgate_slowpath::passive::keylog::KeyLog;
use tlsgate_slowpath::passive::{Keys, ServerKey};

const PCAPFS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/public/pcapfs/feature_test");

/// pcapFS's key log text, and its server certificate and PKCS#1 key (DER), when present.
fn material() -> &'static (String, Option<(Vec<u8>, Vec<u8>)>) {
    static M: OnceLock<(String, Option<(Vec<u8>, Vec<u8>)>)> = OnceLock::new();
    M.get_or_init(|| {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let log = std::fs::read_to_string(format!("{PCAPFS}/keyfiles/master_and_premaster.key")).unwrap_or_default();
        let cert = CertificateDer::from_pem_file(format!("{PCAPFS}/expected_output/tls/1-193_TLSCertificate.pem"));
        let key = PrivateKeyDer::from_pem_file(format!("{PCAPFS}/keyfiles/server_private.key"));
        let pair = match (cert, key) {
            (Ok(c), Ok(k)) => Some((c.to_vec(), k.secret_der().to_vec())),
            _ => None,
        };
        (log, pair)
    })
}

fuzz_target!(|data: &[u8]| {
    let (log, pair) = material();
    let server_keys = pair.iter().filter_map(|(c, k)| ServerKey::new(c, k, true).ok()).collect();
    let mut reader = CaptureReader::new(Keys::new(Some(KeyLog::parse(log)), server_keys), 64);
    let mut frames = Vec::new();
    let mut rest = data;
    let mut ns = 0u64;
    while rest.len() >= 2 {
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let end = (2 + n).min(rest.len());
        ns += 1000;
        reader.frame(ns, &rest[2..end], &mut frames);
        rest = &rest[end..];
        // The decrypted frames are well-formed TCP.
        for (_, f) in frames.drain(..) {
            assert!(tlsgate_core::packet::TcpFrame::parse(&f).is_some());
        }
    }
    // Key log text from the input's tail as well: garbage lines are counted, never a panic.
    let _ = KeyLog::parse(&String::from_utf8_lossy(&data[data.len().saturating_sub(512)..]));
    let _ = reader.finish(ns, &mut frames);
});
