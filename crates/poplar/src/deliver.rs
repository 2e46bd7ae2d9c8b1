//! `poplar deliver NAME... < message`: a local delivery agent for Postfix, Exim or procmail.
//!
//! The message is stored byte for byte as received. Exit codes are the sysexits(3) values MTAs
//! act on: 75 makes them retry later, 67 and 65 bounce.

use crate::DeliverArgs;
use pop3_auth::userdb::normalize_name;
use pop3_store::StoreError;
use std::process::ExitCode;

const EX_DATAERR: u8 = 65;
const EX_NOUSER: u8 = 67;
const EX_TEMPFAIL: u8 = 75;

pub(crate) fn run(args: &DeliverArgs) -> ExitCode {
    let fail = |code: u8, message: String| {
        eprintln!("poplar deliver: {message}");
        ExitCode::from(code)
    };
    let config = match args.common.load() {
        Ok(c) => c,
        Err(e) => return fail(EX_TEMPFAIL, format!("{e:#}")),
    };
    if let Err(e) = crate::privileges::become_configured_user(&config, false) {
        return fail(EX_TEMPFAIL, format!("{e:#}"));
    }
    let users = match pop3_auth::UserDb::load(&config.users_file()) {
        Ok((db, _)) => db,
        Err(e) => return fail(EX_TEMPFAIL, e.to_string()),
    };
    let names: Vec<String> = args.names.iter().map(|n| normalize_name(n)).collect();
    if let Some(unknown) = names.iter().find(|n| users.get(n).is_none()) {
        return fail(EX_NOUSER, format!("unknown user {unknown:?}"));
    }
    let store = config.maildir_store();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    match store.deliver_blocking(&refs, &mut std::io::stdin().lock()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(StoreError::EmptyMessage) => fail(EX_DATAERR, "the message is empty".into()),
        Err(StoreError::MessageTooLarge { limit }) => fail(
            EX_DATAERR,
            format!("message too large: the limit is {limit} octets (limits.max_message_size)"),
        ),
        Err(e @ StoreError::InvalidMailbox(..)) => fail(EX_NOUSER, e.to_string()),
        Err(e) => fail(EX_TEMPFAIL, e.to_string()),
    }
}
