//! The policy loader on arbitrary text: an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = tlsgate_config::policy::Policy::parse(&text, None);
    let _ = tlsgate_config::Settings::parse(&text, None);
});
