//! The DER reader for client certificates, channel binding and `poplar fetch --serverinfo`:
//! never panics on any input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|der: &[u8]| {
    let _ = pop3_auth::der::client_identity(der, false);
    let _ = pop3_auth::der::client_identity(der, true);
    let _ = pop3_auth::der::end_point_hash(der);
    let _ = pop3_auth::der::summary(der);
});
