//! `poplar migrate`: moving a maildrop to Poplar without any client downloading its mail again.
//!
//! Two sources: another server's Maildir on disk (`maildir:PATH`, UIDLs read as that server
//! computes them, see `pop3_store::maildir::migrate`), or any live POP3 server
//! (`pop3s://user@host[:port]`, or `pop3://` with STLS), whose UIDL listing is taken as is and
//! whose messages are downloaded. Either way each message is stored with the old UIDL pinned,
//! the run can be repeated (what is already there is skipped), and the source is never changed:
//! migration sends no DELE and writes nothing into the old Maildir.
//!
//! `--dry-run` answers the question an operator has before switching: how many messages would a
//! client that keeps mail on the server see as new afterwards? It must be 0.

use anyhow::{Context, Result, bail, ensure};
use pop3_fetch::{Dialer, ServerUrl};
use pop3_proto::Command;
use pop3_server::config::StoreBackend;
use pop3_store::MaildirStore;
use pop3_store::maildir::migrate::{
    DOVECOT_DEFAULT_FORMAT, ImportMessage, Served, SourceMessage, UidlScheme, read_source,
};
use pop3_store::maildir::valid_uidl;
use pop3_store::maildir::writer::Writer;
use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

/// Messages stored per import call: each call takes the maildrop's locks and rewrites its index
/// once, so batches keep a large migration from rewriting the index per message.
const BATCH: usize = 500;

/// Where the mail comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A Maildir on disk.
    Maildir(PathBuf),
    /// A live server.
    Pop3(ServerUrl),
}

impl std::str::FromStr for Source {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.strip_prefix("maildir:") {
            Some(path) => Ok(Source::Maildir(PathBuf::from(path))),
            None if text.contains("://") => {
                let url: ServerUrl = text.parse()?;
                url.require_user()?;
                Ok(Source::Pop3(url))
            }
            None => Err(format!(
                "{text:?}: give maildir:PATH, pop3s://USER@HOST[:PORT] or pop3://USER@HOST[:PORT] (STLS)"
            )),
        }
    }
}

/// How the on-disk source computes UIDLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SourceFormat {
    /// Dovecot's dovecot-uidlist and pop3_uidl_format.
    Dovecot,
    /// Courier's courierpop3dsizelist.
    Courier,
    /// X-UIDL headers (qpopper).
    XUidl,
}

/// The command line of `poplar migrate`.
#[derive(Debug, clap::Args)]
pub(crate) struct MigrateArgs {
    /// maildir:PATH (another server's Maildir), pop3s://USER@HOST[:PORT] or
    /// pop3://USER@HOST[:PORT] (STLS required).
    source: Source,
    /// The Poplar user whose maildrop receives the mail.
    #[arg(long, value_name = "USER")]
    to: String,
    /// How the old server derived UIDLs from the Maildir; found from its index files if not
    /// given (dovecot-uidlist, courierpop3dsizelist).
    #[arg(long, value_enum)]
    format: Option<SourceFormat>,
    /// Dovecot's pop3_uidl_format as the old server had it.
    #[arg(long, value_name = "FORMAT", default_value = DOVECOT_DEFAULT_FORMAT)]
    uidl_format: String,
    /// Read the old server's password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    trust: crate::fetch::TrustArgs,
    /// Change nothing; report per maildrop what would be imported and how many messages
    /// clients would download again after the switch (which must be 0).
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    common: crate::Common,
}

/// What a run found and did.
#[derive(Debug, Default)]
struct Tally {
    source: usize,
    to_import: usize,
    present: usize,
    /// Messages a client that has seen them would download again after the switch.
    again: usize,
    size_mismatches: usize,
    octets: u64,
    /// Source files refused: not regular files, or too large.
    refused: Vec<(PathBuf, String)>,
    /// Messages already in the target that serve the UIDL of a message to import: they get
    /// new UIDLs, so clients download them once more.
    collisions: usize,
}

pub(crate) fn run(args: &MigrateArgs) -> Result<ExitCode> {
    let config = args.common.load()?;
    args.common.announce(&config);
    crate::init_logging(&config);
    crate::privileges::become_configured_user(&config, false)?;
    let to = pop3_auth::directory::normalize_name(&args.to);
    let runtime = crate::runtime()?;
    let started = Instant::now();
    let tally = runtime.block_on(async {
        let (users, target) = match config.store.backend {
            StoreBackend::Maildir => {
                let users = pop3_auth::UserDb::load(&config.users_file())
                    .map(|(db, _)| Arc::new(db))
                    .with_context(|| format!("cannot read {}", config.users_file().display()))?;
                // Quotas are for deliveries; a migration brings what the user already had.
                let store = MaildirStore::new(config.mail_root(), config.hostname())
                    .with_limits(pop3_store::StoreLimits {
                        max_message_size: config.limits.max_message_size,
                        max_snapshot_messages: usize::MAX,
                    })
                    .with_save_crlf(config.delivery.save_crlf);
                (users, Target::Maildir(store))
            }
            StoreBackend::Postgres => {
                let (store, users) = crate::db::load_users(&config).await?;
                let import = store.import_to(&to).await.with_context(|| {
                    format!("cannot lock {to}'s maildrop (is a POP3 session open?)")
                })?;
                (users, Target::Postgres(import))
            }
        };
        ensure!(
            users.get(&to).is_some(),
            "{to:?} is not a Poplar user; add it first with `poplar user add {to}`"
        );
        let max_size = config.limits.max_message_size;
        let tally = match &args.source {
            Source::Maildir(dir) => from_maildir(&target, &to, dir, args, max_size).await,
            Source::Pop3(_) => from_server(&target, &to, args, max_size).await,
        };
        if let Target::Postgres(import) = target {
            import.finish().await;
        }
        tally
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let verb = if args.dry_run {
        "to import"
    } else {
        "imported"
    };
    println!(
        "{to}: {} messages at the source, {} {verb}, {} already here; {} would be downloaded again after the switch",
        tally.source, tally.to_import, tally.present, tally.again
    );
    for (path, why) in &tally.refused {
        println!("refused {}: {why}", path.display());
    }
    if !tally.refused.is_empty() {
        println!(
            "{} file(s) of the source were refused and not imported (see above): a Maildir holds regular files; remove or replace these if they should be mail",
            tally.refused.len()
        );
    }
    if tally.collisions > 0 {
        println!(
            "{} message(s) already here had the UIDL of a message {}: the imported message keeps it (clients know it by it) and {} a new UIDL, so a client that keeps mail on the server downloads {} once more: a duplicate, never a loss",
            tally.collisions,
            if args.dry_run {
                "to import"
            } else {
                "imported"
            },
            if args.dry_run {
                "each of them gets"
            } else {
                "each of them got"
            },
            if tally.collisions == 1 { "it" } else { "them" },
        );
    }
    if tally.size_mismatches > 0 {
        println!(
            "warning: {} messages arrived with another size than the old server's LIST said; they are stored as received",
            tally.size_mismatches
        );
    }
    if !args.dry_run && tally.to_import > 0 {
        println!(
            "{:.1} s, {:.0} messages/s, {:.1} MB/s",
            seconds,
            tally.to_import as f64 / seconds,
            tally.octets as f64 / seconds / 1e6
        );
    }
    Ok(if tally.again == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Where the mail goes: the configured store.
enum Target {
    /// A Maildir under the data directory (locked per batch).
    Maildir(MaildirStore),
    /// A maildrop in PostgreSQL, locked for the whole run.
    Postgres(pop3_store_postgres::PgImport),
}

impl Target {
    /// The UIDLs the target maildrop already serves, keyed by what identifies a message at a
    /// source (a Maildir base name; in PostgreSQL, the origin an earlier import noted, and for
    /// mail delivered there a key no source has), and whether each is pinned (imported).
    async fn listing(&self, user: &str) -> Result<HashMap<String, Served>> {
        match self {
            Target::Maildir(store) => {
                let dir = store.maildir_path(user)?;
                if !dir.exists() {
                    return Ok(HashMap::new());
                }
                store
                    .served_uidls_blocking(user)
                    .context("cannot open the target maildrop (is a POP3 session open?)")
            }
            Target::Postgres(import) => Ok(import
                .held()
                .await?
                .into_iter()
                .enumerate()
                .map(|(i, held)| match held.origin {
                    Some(origin) => (
                        origin,
                        Served {
                            uidl: held.uidl,
                            pinned: true,
                        },
                    ),
                    None => (
                        format!("/delivered/{i}"),
                        Served {
                            uidl: held.uidl,
                            pinned: false,
                        },
                    ),
                })
                .collect()),
        }
    }
}

async fn from_maildir(
    target: &Target,
    to: &str,
    dir: &Path,
    args: &MigrateArgs,
    max: u64,
) -> Result<Tally> {
    ensure!(
        pop3_store::maildir::is_maildir(dir),
        "{} is not a Maildir (no cur/ and new/)",
        dir.display()
    );
    let format = match args.format {
        Some(f) => f,
        None if dir.join("dovecot-uidlist").exists() => SourceFormat::Dovecot,
        None if dir.join("courierpop3dsizelist").exists() => SourceFormat::Courier,
        None => bail!(
            "{} has neither dovecot-uidlist nor courierpop3dsizelist; say which UIDLs its clients know with --format (x-uidl for X-UIDL headers)",
            dir.display()
        ),
    };
    let scheme = match format {
        SourceFormat::Dovecot => UidlScheme::Dovecot {
            format: args.uidl_format.clone(),
        },
        SourceFormat::Courier => UidlScheme::Courier,
        SourceFormat::XUidl => UidlScheme::XUidl,
    };
    let listing = read_source(dir, &scheme)?;
    let messages = listing.messages;
    let held = target.listing(to).await?;
    let owners: HashMap<&String, &String> = held.iter().map(|(b, s)| (&s.uidl, b)).collect();
    let mut tally = Tally {
        source: messages.len(),
        refused: listing
            .refused
            .into_iter()
            .map(|(path, why)| (path, why.to_owned()))
            .collect(),
        ..Tally::default()
    };
    let mut todo = Vec::new();
    for m in messages {
        let base = pop3_store::maildir::filename::base(&m.name).to_owned();
        let len = m.size;
        if len > max {
            let why = format!("{len} octets, more than limits.max_message_size ({max})");
            tally.refused.push((m.path, why));
            continue;
        }
        let served = held.get(&base).map(|s| &s.uidl);
        tally.again += usize::from(would_change(&m, served));
        if served.is_some() {
            tally.present += 1;
        } else {
            // The same file is not here yet; another one serving its UIDL gives way.
            let owner = m.uidl.as_ref().and_then(|u| owners.get(u));
            tally.collisions += usize::from(owner.is_some_and(|o| **o != base));
            tally.to_import += 1;
            tally.octets += len;
            todo.push(m);
        }
    }
    if args.dry_run {
        return Ok(tally);
    }
    let store = match target {
        Target::Maildir(store) => store,
        Target::Postgres(import) => {
            for m in todo {
                let base = pop3_store::maildir::filename::base(&m.name);
                let uidl = m.uidl.as_deref().filter(|u| valid_uidl(u));
                let file = match pop3_store::maildir::untrusted::open_message(&m.path, Some(max)) {
                    Ok(file) => file,
                    Err(e) => {
                        tally.to_import -= 1;
                        tally.refused.push((m.path, e.to_string()));
                        continue;
                    }
                };
                let mut file = tokio::io::BufReader::new(tokio::fs::File::from_std(file));
                import
                    .import(base, uidl, &mut file)
                    .await
                    .with_context(|| format!("cannot import {}", m.path.display()))?;
            }
            return Ok(tally);
        }
    };
    for batch in todo.chunks(BATCH) {
        let imports: Vec<ImportMessage> = batch
            .iter()
            .map(|m| ImportMessage {
                source: m.path.clone(),
                take: false,
                name: m.name.clone(),
                in_cur: m.in_cur,
                uidl: m.uidl.clone().filter(|u| valid_uidl(u)),
            })
            .collect();
        let outcome = store.import_blocking(to, &imports)?;
        tally.to_import -= outcome.refused.len();
        tally.refused.extend(outcome.refused);
    }
    Ok(tally)
}

/// Whether a client that saw `m` at the old server would see it as new at Poplar: its UIDL
/// cannot be served (not a valid POP3 UIDL), or the target already holds the same file under
/// another UIDL (`served`). An imported message always keeps its UIDL, even where another
/// message of the target served it (that one gets a new UIDL instead).
fn would_change(m: &SourceMessage, served: Option<&String>) -> bool {
    match (&m.uidl, served) {
        (Some(old), _) if !valid_uidl(old) => true,
        (Some(old), Some(current)) => old != current,
        _ => false,
    }
}

async fn from_server(
    target: &Target,
    to: &str,
    args: &MigrateArgs,
    max_size: u64,
) -> Result<Tally> {
    let Source::Pop3(ServerUrl {
        tls,
        user,
        host,
        port,
        ..
    }) = &args.source
    else {
        unreachable!("called for POP3 sources only")
    };
    ensure!(
        args.password_stdin,
        "give the old server's password on standard input with --password-stdin"
    );
    let mut password = String::new();
    std::io::stdin().lock().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']);
    let addr = tokio::net::lookup_host((host.as_str(), *port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let trust = args.trust.trust()?;
    let name = args.trust.server_name.as_deref().unwrap_or(host);
    let account = pop3_fetch::Account {
        dialer: Dialer::new(addr, *tls, &trust, name)?,
        user: user.clone(),
        password: password.to_owned(),
        auth: pop3_fetch::Auth::Auto,
        encrypted: *tls != pop3_fetch::TlsMode::None,
        allow_insecure: false,
    };
    let logged_in = pop3_fetch::fetch::log_in(&account).await?;
    for note in &logged_in.notes {
        eprintln!("poplar migrate: warning: {note}");
    }
    let mut conn = logged_in.conn;
    // A server without UIDL is refused: without it nothing identifies messages to clients, so
    // there is nothing to preserve.
    let listing = pop3_fetch::fetch::list(&mut conn).await?;
    let held = target.listing(to).await?;
    // A message imported by an earlier run serves its UIDL pinned; a message that arrived
    // here otherwise and happens to serve the same UIDL is another message, which gives way.
    let imported: std::collections::HashSet<&String> = held
        .values()
        .filter(|s| s.pinned)
        .map(|s| &s.uidl)
        .collect();
    let native: std::collections::HashSet<&String> = held
        .values()
        .filter(|s| !s.pinned)
        .map(|s| &s.uidl)
        .collect();
    let mut tally = Tally::default();
    let mut todo = Vec::new();
    for m in listing {
        tally.source += 1;
        if !valid_uidl(&m.uidl) {
            tally.again += 1;
        } else if imported.contains(&m.uidl) {
            tally.present += 1;
        } else {
            tally.collisions += usize::from(native.contains(&m.uidl));
            tally.to_import += 1;
            tally.octets += m.size;
            todo.push(m);
        }
    }
    if args.dry_run {
        conn.cmd(&Command::Quit).await?;
        return Ok(tally);
    }
    let maildir = match target {
        Target::Maildir(store) => {
            Some((store, Writer::open(&store.maildir_path(to)?, store.host())?))
        }
        Target::Postgres(_) => None,
    };
    let mut batch = Vec::new();
    let mut body = Vec::new();
    for (i, m) in todo.iter().enumerate() {
        conn.cmd(&Command::Retr(m.number)).await?;
        body.clear();
        conn.body(&mut body, max_size).await?;
        if m.size != body.len() as u64 {
            tracing::warn!(
                uidl = m.uidl,
                listed = m.size,
                received = body.len(),
                "size differs from LIST"
            );
            tally.size_mismatches += 1;
        }
        let Some((store, writer)) = &maildir else {
            if let Target::Postgres(import) = target {
                import
                    .import(&m.uidl, Some(&m.uidl), &mut body.as_slice())
                    .await?;
            }
            continue;
        };
        let mut draft = writer
            .draft(&writer.unique_base(), max_size)?
            .save_crlf(store.saves_crlf());
        draft.copy_from(&mut body.as_slice())?;
        let written = draft.finish()?;
        // Moved into place, made durable and pinned by the import, under the session lock.
        batch.push(ImportMessage {
            source: written.path().to_owned(),
            take: true,
            name: written.name().to_owned(),
            in_cur: false,
            uidl: Some(m.uidl.clone()),
        });
        if batch.len() == BATCH || i + 1 == todo.len() {
            store.import_blocking(to, &batch)?;
            batch.clear();
        }
    }
    conn.cmd(&Command::Quit).await?;
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        assert_eq!(
            "maildir:/var/mail/a/Maildir".parse::<Source>().unwrap(),
            Source::Maildir("/var/mail/a/Maildir".into())
        );
        assert!(matches!(
            "pop3s://alice%40example.org@mail.example.org".parse::<Source>(),
            Ok(Source::Pop3(u)) if u.user == "alice@example.org"
        ));
        for bad in [
            "imap://x@y",
            "pop3s://host",
            "pop3s://u@h:port",
            "/plain/path",
        ] {
            assert!(bad.parse::<Source>().is_err(), "{bad}");
        }
    }
}
