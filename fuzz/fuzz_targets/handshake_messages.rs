//! The message parsers on arbitrary bodies: ClientHello (TLS and SSLv2
//! format) and X.509 certificates.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tlsgate_core::tls::client_hello::{client_hello_facts, fill_fingerprints, sslv2_client_hello_facts};
use tlsgate_core::tls::{certificate_facts, CertVerifier};

fuzz_target!(|data: &[u8]| {
    if let Ok(mut f) = client_hello_facts(data) {
        fill_fingerprints(&mut f);
    }
    let _ = sslv2_client_hello_facts(data);
    let _ = certificate_facts(data);
    if let Ok(mut v) = CertVerifier::new(&[], &[]) {
        let _ = v.status(&[data.to_vec()], Some("example.com"), 1_700_000_000);
    }
});
