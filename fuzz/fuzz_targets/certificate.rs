//! The DER reader for client certificates and channel binding: never panics on any input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|der: &[u8]| {
    let _ = pop3_server::der::client_identity(der, false);
    let _ = pop3_server::der::client_identity(der, true);
    let _ = pop3_server::der::end_point_hash(der);
});
