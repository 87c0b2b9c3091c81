//! Re-signing arbitrary "server certificates": the forger parses what a
//! server sent; it returns an error, never panics.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use std::sync::Mutex;
use tlsgate_slowpath::forge::Forger;

fuzz_target!(|data: &[u8]| {
    static FORGER: OnceLock<Mutex<Forger>> = OnceLock::new();
    let forger = FORGER.get_or_init(|| {
        let key = rcgen::KeyPair::generate().expect("a P-256 key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("empty SAN list");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).expect("a self-signed CA");
        let der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        Mutex::new(Forger::new(ca.der(), der, 64).expect("a forger for a fresh CA"))
    });
    if let Ok(mut f) = forger.lock() {
        let _ = f.forge(data, data.first().is_some_and(|b| b & 1 == 0));
    }
});
