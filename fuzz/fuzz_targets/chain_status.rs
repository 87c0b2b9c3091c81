//! Certificate chains as a server sends them, through what tlsgate reads of
//! them: the facts of each certificate (x509-parser) and the chain's status
//! (webpki path building at a time, cached by span). Input: a flags byte
//! (bit 0: trust the last certificate as a root), an 8-byte time, then
//! certificates, each behind a 2-byte big-endian length. Seeds: `seed.py`
//! takes the certificate chains out of real captures.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tlsgate_core::tls::{certificate_facts, CertVerifier};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let Some((time, mut rest)) = rest.split_first_chunk::<8>() else { return };
    let now = i64::from_be_bytes(*time) % (400 * 365 * 86_400);
    let mut chain = Vec::new();
    while let [a, b, more @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*a, *b])).min(more.len());
        chain.push(more[..len].to_vec());
        rest = &more[len..];
        if chain.len() == 8 {
            break;
        }
    }
    for der in &chain {
        let _ = certificate_facts(der);
    }
    let anchors: Vec<Vec<u8>> = if flags & 1 != 0 { chain.last().cloned().into_iter().collect() } else { Vec::new() };
    let mut v = match CertVerifier::new(&anchors, &[]) {
        Ok(v) => v,
        Err(_) => CertVerifier::new(&[], &[]).expect("an empty trust store always builds"),
    };
    let first = v.status(&chain, Some("a.example"), now);
    // The same chain at the same time: the cached verdict is the same.
    assert_eq!(v.status(&chain, Some("a.example"), now), first);
    let _ = v.status(&chain, None, now.saturating_add(i64::from(flags) * 86_400 * 365));
});
