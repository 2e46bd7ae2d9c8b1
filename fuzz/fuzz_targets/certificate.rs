//! What Poplar reads from certificates (client certificates, channel binding, `poplar fetch
//! --serverinfo` and the client's trust decisions): never panics on any input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|der: &[u8]| {
    let _ = pop3_auth::cert::client_identity(der, false);
    let _ = pop3_auth::cert::client_identity(der, true);
    let _ = pop3_auth::cert::end_point_hash(der);
    if let Some(s) = pop3_auth::cert::summary(der) {
        let _ = poplar_util::clock::utc(s.not_before);
        let _ = poplar_util::clock::utc(s.not_after);
    }
});
