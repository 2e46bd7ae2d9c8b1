//! `poplar fetch URL --to maildir:PATH`: download an account's mail, exactly once.
//!
//! The command line is the stable form scripts drive; the work is `pop3_fetch::fetch`. Exit codes
//! follow sysexits(3): 0 done, 75 try again later (network, `[IN-USE]`, `[LOGIN-DELAY]`, another
//! run busy with the account), 77 login refused, 69 the server lacks something needed, 76 the
//! server broke the protocol, 78 a local setting is wrong.

use anyhow::{Context, Result};
use pop3_fetch::dest::{Destination, Maildir};
use pop3_fetch::journal::Journal;
use pop3_fetch::mbox::Mbox;
use pop3_fetch::{Account, Auth, Dialer, FetchError, Policy, ServerUrl, TlsMode};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

const EX_UNAVAILABLE: u8 = 69;
const EX_PROTOCOL: u8 = 76;
const EX_TEMPFAIL: u8 = 75;
const EX_NOPERM: u8 = 77;
const EX_CONFIG: u8 = 78;

/// Where fetched mail goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A Maildir (created if missing).
    Maildir(PathBuf),
    /// An mbox file in the mboxrd format (created if missing).
    Mbox(PathBuf),
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            Some(("maildir", path)) if !path.is_empty() => Ok(Target::Maildir(path.into())),
            Some(("mbox", path)) if !path.is_empty() => Ok(Target::Mbox(path.into())),
            _ => Err(format!("{text:?}: give maildir:PATH or mbox:PATH")),
        }
    }
}

/// The command line of `poplar fetch`.
#[derive(Debug, clap::Args)]
pub(crate) struct FetchArgs {
    /// pop3s://USER@HOST[:PORT] (TLS) or pop3://USER@HOST[:PORT] (STLS).
    url: ServerUrl,
    /// Where to deliver: maildir:PATH or mbox:PATH (mboxrd, dot-lock and fcntl locking).
    #[arg(long, value_name = "DEST")]
    to: Target,
    /// Leave messages on the server (tracked by UIDL); without it, each message is deleted
    /// from the server once it is safely delivered.
    #[arg(long)]
    keep: bool,
    /// With --keep: delete from the server what was first fetched this many days ago.
    #[arg(long, value_name = "DAYS")]
    delete_after_days: Option<u32>,
    /// Leave messages larger than this on the server (octets, or with K, M, G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_size: Option<u64>,
    /// Fetch at most this many messages in this run.
    #[arg(long, value_name = "N")]
    max_messages: Option<usize>,
    /// Fetch at most this many octets in this run (K, M, G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_bytes: Option<u64>,
    /// Read the password from the first line of standard input (else it is asked for).
    #[arg(long)]
    password_stdin: bool,
    /// The CA (or self-signed) certificate to trust; default: the system's.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// The login mechanism; default: the strongest the server offers.
    #[arg(long, value_name = "MECHANISM")]
    auth: Option<String>,
    /// With pop3://, talk plain POP3 without STLS. Passwords then only travel by
    /// challenge-response (SCRAM, CRAM-MD5, APOP).
    #[arg(long)]
    allow_insecure: bool,
    /// Go on although the server appears to have changed every UIDL (all mail would be
    /// downloaded again).
    #[arg(long)]
    accept_uidl_reset: bool,
    /// The UIDL journal; default: ~/.local/state/poplar/fetch/USER@HOST:PORT.journal.
    #[arg(long, value_name = "FILE")]
    journal: Option<PathBuf>,
    /// Judge retention as of this Unix time instead of now (for tests and planning).
    #[arg(long, value_name = "UNIX_SECONDS", hide = true)]
    now: Option<u64>,
}

fn parse_size(text: &str) -> Result<u64, String> {
    pop3_server::config::parse_size(text).ok_or_else(|| format!("invalid size {text:?}"))
}

pub(crate) fn run(args: &FetchArgs) -> Result<ExitCode> {
    let url = &args.url;
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        rpassword::prompt_password(format!("Password for {url}: "))
            .context("no password: give it on a terminal or with --password-stdin")?
    };
    let tls = match (url.tls, args.allow_insecure) {
        (TlsMode::Starttls, true) => TlsMode::None,
        (mode, _) => mode,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result: Result<(pop3_fetch::Summary, String), FetchError> = runtime.block_on(async {
        let addr = tokio::net::lookup_host((url.host.as_str(), url.port))
            .await
            .map_err(|e| FetchError::Io {
                context: format!("cannot resolve {}", url.host),
                source: e,
            })?
            .next()
            .ok_or_else(|| FetchError::Unsupported(format!("{} has no address", url.host)))?;
        let account = Account {
            dialer: Dialer::new(addr, tls, args.ca_file.as_deref(), &url.host)?,
            user: url.user.clone(),
            password,
            auth: args.auth.clone().map_or(Auth::Auto, Auth::Named),
            encrypted: tls != TlsMode::None,
        };
        let policy = Policy {
            keep: args.keep,
            delete_after_days: args.delete_after_days,
            max_size: args.max_size,
            max_messages: args.max_messages,
            max_bytes: args.max_bytes,
            accept_uidl_reset: args.accept_uidl_reset,
        };
        let journal_path = match &args.journal {
            Some(p) => p.clone(),
            None => default_journal(url)?,
        };
        let mut journal = Journal::open(&journal_path)?;
        let mut dest: Box<dyn Destination> = match &args.to {
            Target::Maildir(dir) => Box::new(Maildir::open(dir)?),
            Target::Mbox(path) => Box::new(Mbox::open(path)?),
        };
        let now = args.now.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
        let tty = std::io::stderr().is_terminal();
        let mut progress = |done: usize, octets: u64, total: usize, total_octets: u64| {
            if tty {
                let width = 30;
                let filled = (done * width).checked_div(total).unwrap_or(width);
                eprint!(
                    "\r[{}{}] {done}/{total} messages, {:.1}/{:.1} MB ",
                    "#".repeat(filled),
                    " ".repeat(width - filled),
                    octets as f64 / 1e6,
                    total_octets as f64 / 1e6
                );
                if done == total {
                    eprintln!();
                }
            }
        };
        let summary = pop3_fetch::fetch(
            &account,
            &policy,
            &mut journal,
            dest.as_mut(),
            now,
            &mut progress,
        )
        .await?;
        Ok((summary, dest.describe()))
    });
    match result {
        Ok((s, dest)) => {
            for w in &s.warnings {
                eprintln!("poplar fetch: warning: {w}");
            }
            let mut line = format!(
                "{url}: {} new of {} ({:.1} MB) into {dest}, {} deleted on the server",
                s.fetched,
                s.listed,
                s.octets as f64 / 1e6,
                s.deleted
            );
            if s.too_large > 0 {
                line.push_str(&format!(", {} too large left there", s.too_large));
            }
            if s.deferred > 0 {
                line.push_str(&format!(", {} left for the next run", s.deferred));
            }
            if s.recovered > 0 {
                line.push_str(&format!(
                    ", {} deliveries of an interrupted run settled",
                    s.recovered
                ));
            }
            if let Some(delay) = s.login_delay.filter(|&d| d > 0) {
                line.push_str(&format!("; the server allows the next login in {delay} s"));
            }
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let (code, hint) = match &e {
                FetchError::Refused { status, .. } if status.code.as_deref() == Some("AUTH") => {
                    (EX_NOPERM, "check the user name and password")
                }
                e if e.is_temporary() => (EX_TEMPFAIL, "try again later"),
                FetchError::Refused { command, .. } if command.starts_with("login") => {
                    (EX_NOPERM, "check the user name, password and --auth")
                }
                FetchError::Refused { .. } | FetchError::Unsupported(_) => {
                    (EX_UNAVAILABLE, "nothing was changed on the server")
                }
                FetchError::Protocol(_) => (EX_PROTOCOL, "nothing was deleted on the server"),
                _ => (EX_CONFIG, "check the files and options named"),
            };
            eprintln!("poplar fetch: {url}: {e} ({hint})");
            Ok(ExitCode::from(code))
        }
    }
}

/// `~/.local/state/poplar/fetch/USER@HOST:PORT.journal` (or under `$XDG_STATE_HOME`).
fn default_journal(url: &ServerUrl) -> Result<PathBuf, FetchError> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .ok_or_else(|| FetchError::File {
            path: PathBuf::from("~"),
            why: "neither XDG_STATE_HOME nor HOME is set; give --journal".into(),
        })?;
    let name: String = format!("{}@{}:{}", url.user, url.host, url.port)
        .chars()
        .map(|c| if c == '/' || c.is_control() { '_' } else { c })
        .collect();
    Ok(base.join("poplar/fetch").join(format!("{name}.journal")))
}
