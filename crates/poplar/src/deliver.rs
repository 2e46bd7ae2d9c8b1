//! `poplar deliver NAME... < message`: a local delivery agent for Postfix, Exim or procmail.
//!
//! The message is stored byte for byte as received. Exit codes are the sysexits(3) values MTAs
//! act on: 75 makes them retry later, 67, 65 and 77 bounce.

use crate::DeliverArgs;
use pop3_server::Config;
use pop3_server::config::StoreBackend;
use pop3_store::MailStore;
use pop3_store::StoreError;
use pop3_store::maildir::sdps::HostView;
use std::io::{BufRead, Read, Seek};
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
    let rules = config.login_rules();
    let names: Vec<String> = args.names.iter().map(|n| rules.canonical(n)).collect();
    let trace = config.delivery.trace();
    let result = if config.store.backend == StoreBackend::Postgres {
        match to_postgres(&config, &names, args.from.as_deref()) {
            Err(Refusal::UnknownUser(name)) => {
                return fail(EX_NOUSER, format!("unknown user {name:?}"));
            }
            Err(Refusal::Store(e)) => Err(e),
            Ok(()) => Ok(()),
        }
    } else {
        // Parsed once, for the recipients' existence and their quota rules.
        let users_source = config.users_source();
        let users = match users_source.current() {
            Ok((db, _)) => db,
            Err(e) => return fail(EX_TEMPFAIL, e.to_string()),
        };
        let store = config.maildir_store_with_users(&users_source);
        // Addresses at an SDPS host go to the host's maildrop, with their envelope.
        // The host's own name is its maildrop, without an envelope: only the owner sees it.
        let (hosted, names): (Vec<String>, Vec<String>) = names
            .into_iter()
            .partition(|n| matches!(store.host_view(n), Some((_, HostView::Recipient(_)))));
        if let Some(unknown) = names.iter().find(|n| users.get(n).is_none()) {
            return fail(EX_NOUSER, format!("unknown user {unknown:?}"));
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        if !hosted.is_empty() {
            to_hosts(&store, &hosted, &refs, args.from.as_deref(), trace)
        } else if trace.any() {
            let sender = args.from.as_deref();
            store
                .deliver_each_blocking(&refs, &mut std::io::stdin().lock(), &|name, eol| {
                    trace.lines(sender, name, eol)
                })
                .map(|_| ())
        } else {
            store
                .deliver_blocking(&refs, &mut std::io::stdin().lock())
                .map(|_| ())
        }
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

/// Why a delivery to the PostgreSQL store did not happen.
/// Delivers to SDPS host maildrops (once per host, with the sender and that host's recipients)
/// and to the ordinary `names`: the message is spooled first, since it is read several times.
fn to_hosts(
    store: &pop3_store::MaildirStore,
    hosted: &[String],
    names: &[&str],
    sender: Option<&str>,
    trace: pop3_store::delivery::TraceHeaders,
) -> Result<(), StoreError> {
    let spool_error = |e: std::io::Error| StoreError::io(std::env::temp_dir(), e);
    let mut spool = tempfile::tempfile().map_err(spool_error)?;
    std::io::copy(&mut std::io::stdin().lock(), &mut spool).map_err(spool_error)?;
    let mut hosts: Vec<(String, Vec<String>)> = Vec::new();
    for name in hosted {
        // `lee+example.net` is lee@example.net.
        let Some((host, HostView::Recipient(address))) = store.host_view(name) else {
            continue;
        };
        match hosts.iter_mut().find(|(h, _)| *h == host) {
            Some((_, recipients)) => recipients.push(address),
            None => hosts.push((host, vec![address])),
        }
    }
    // As over LMTP: Return-Path if configured, never a Delivered-To naming one recipient to
    // the others.
    let return_path = pop3_store::delivery::TraceHeaders {
        delivered_to: false,
        ..trace
    }
    .lines(sender, "", "\n");
    for (host, recipients) in hosts {
        spool.rewind().map_err(spool_error)?;
        let mut message = return_path.as_bytes().chain(&spool);
        store.deliver_to_host_blocking(&host, sender.unwrap_or(""), &recipients, &mut message)?;
    }
    if !names.is_empty() {
        spool.rewind().map_err(spool_error)?;
        store.deliver_each_blocking(names, &mut &spool, &|name, eol| {
            trace.lines(sender, name, eol)
        })?;
    }
    Ok(())
}

enum Refusal {
    /// A recipient is not in the users table.
    UnknownUser(String),
    /// The store refused or failed.
    Store(StoreError),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Store(e)
    }
}

/// Delivers standard input to each of `names` in the PostgreSQL store, each recipient in a
/// transaction of its own (Postfix runs one `deliver` per recipient), with the configured trace
/// headers in the message's own line ending.
fn to_postgres(config: &Config, names: &[String], sender: Option<&str>) -> Result<(), Refusal> {
    let spool_error = |e: std::io::Error| StoreError::io(std::env::temp_dir(), e);
    let mut spool = tempfile::NamedTempFile::new().map_err(spool_error)?;
    std::io::copy(&mut std::io::stdin().lock(), &mut spool).map_err(spool_error)?;
    spool.rewind().map_err(spool_error)?;
    let mut first_line = Vec::new();
    std::io::BufReader::new(spool.as_file())
        .read_until(b'\n', &mut first_line)
        .map_err(spool_error)?;
    let eol = if first_line.ends_with(b"\r\n") {
        "\r\n"
    } else {
        "\n"
    };
    let path = spool.path();
    let trace = config.delivery.trace();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    runtime.block_on(async {
        let (store, users) = crate::db::load_users(config)
            .await
            .map_err(|e| StoreError::Database(format!("{e:#}")))?;
        if let Some(unknown) = names.iter().find(|n| users.get(n).is_none()) {
            return Err(Refusal::UnknownUser(unknown.clone()));
        }
        for name in names {
            let prefix = if trace.any() {
                trace.lines(sender, name, eol)
            } else {
                String::new()
            };
            store.deliver_file(name, prefix.as_bytes(), path).await?;
        }
        Ok(())
    })
}
