//! `poplar deliver NAME... < message`: a local delivery agent for Postfix, Exim or procmail.
//!
//! The message is stored byte for byte as received. Exit codes are the sysexits(3) values MTAs
//! act on: 75 makes them retry later, 67, 65 and 77 bounce.

use crate::DeliverArgs;
use pop3_auth::directory::normalize_name;
use pop3_store::StoreError;
use std::process::ExitCode;

const EX_DATAERR: u8 = 65;
const EX_NOUSER: u8 = 67;
const EX_TEMPFAIL: u8 = 75;
/// A permanent refusal (a full maildrop under `quota.permanent`), as Dovecot's LDA uses it.
const EX_NOPERM: u8 = 77;

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
    // Parsed once, for the recipients' existence and their quota rules.
    let users_file = pop3_auth::UserDbFile::new(config.users_file());
    let users = match users_file.current() {
        Ok((db, _)) => db,
        Err(e) => return fail(EX_TEMPFAIL, e.to_string()),
    };
    let names: Vec<String> = args.names.iter().map(|n| normalize_name(n)).collect();
    if let Some(unknown) = names.iter().find(|n| users.get(n).is_none()) {
        return fail(EX_NOUSER, format!("unknown user {unknown:?}"));
    }
    let store = config.maildir_store_with_users(&users_file);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let trace = config.delivery.trace();
    let result = if trace.any() {
        let sender = args.from.as_deref();
        store.deliver_each_blocking(&refs, &mut std::io::stdin().lock(), &|name, eol| {
            trace.lines(sender, name, eol)
        })
    } else {
        store.deliver_blocking(&refs, &mut std::io::stdin().lock())
    };
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(StoreError::EmptyMessage) => fail(EX_DATAERR, "the message is empty".into()),
        Err(StoreError::MessageTooLarge { limit }) => fail(
            EX_DATAERR,
            format!("message too large: the limit is {limit} octets (limits.max_message_size)"),
        ),
        Err(e @ StoreError::InvalidMailbox(..)) => fail(EX_NOUSER, e.to_string()),
        Err(StoreError::OverQuota { usage, permanent }) => fail(
            if permanent { EX_NOPERM } else { EX_TEMPFAIL },
            format!("mailbox full ({usage}); see [quota] in the configuration"),
        ),
        Err(e) => fail(EX_TEMPFAIL, e.to_string()),
    }
}
