//! Re-signing arbitrary "server certificates": the forger parses what a
//! server sent; it returns an error, never panics.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use std::sync::Mutex;
use tlsgate_slowpath::forge::Forger;
use tlsgate_slowpath::keys::{Accepts, LeafKeys};

fuzz_target!(|data: &[u8]| {
    static FORGER: OnceLock<Mutex<(Forger, LeafKeys)>> = OnceLock::new();
    let forger = FORGER.get_or_init(|| {
        let key = rcgen::KeyPair::generate().expect("a P-256 key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("empty SAN list");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).expect("a self-signed CA");
        let der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let forger = Forger::new(ca.der(), der, 64).expect("a forger for a fresh CA");
        Mutex::new((forger, LeafKeys::new(None, 3600)))
    });
    if let Ok(mut guard) = forger.lock() {
        let (f, keys) = &mut *guard;
        let _ = f.forge(keys, data, data.first().is_some_and(|b| b & 1 == 0), Accepts::ANY);
    }
});
