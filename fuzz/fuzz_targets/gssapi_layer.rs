//! RFC 4752's security-layer messages, the part of a GSSAPI login Poplar parses itself (the
//! Kerberos tokens around them are MIT Kerberos' to parse): the client's choice, as the server
//! reads it after unwrapping, and the server's offer, as `poplar fetch` answers it. Neither
//! may panic; a parsed choice always has layer 1 (the only one offered) and says back what it
//! read.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pop3_auth::sasl::gssapi::{NO_SECURITY_LAYER, layer_answer, parse_layer_choice};

fuzz_target!(|input: (Vec<u8>, String)| {
    let (message, authzid) = input;
    if let Ok(choice) = parse_layer_choice(&message) {
        assert_eq!(choice.layer, NO_SECURITY_LAYER);
        assert_eq!(choice.authzid.as_bytes(), &message[4..]);
    }
    if let Ok(answer) = layer_answer(&message, &authzid) {
        let back = parse_layer_choice(&answer).expect("our own answer parses");
        assert_eq!(back.authzid, authzid);
    }
});
