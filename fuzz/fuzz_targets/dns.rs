//! DNS answers with ECH stripped, on arbitrary messages: never a panic, and
//! whatever is rewritten reads back as a well-formed answer with the same
//! question, the same HTTPS/SVCB records and no `ech` left in them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tlsgate_core::dns::strip_ech;

fuzz_target!(|data: &[u8]| {
    let Ok(first) = strip_ech(data) else { return };
    let Some(message) = &first.message else { return };
    assert!(message.len() < data.len());
    let again = strip_ech(message).expect("a rewritten answer reads back");
    assert_eq!((again.id, &again.qname, again.qtype, again.rcode), (first.id, &first.qname, first.qtype, first.rcode));
    assert_eq!(again.svcb_records, first.svcb_records);
    assert_eq!((again.removed, again.message), (0, None));
});
