//! `poplar fetch URL --to maildir:PATH`, or `poplar fetch [ACCOUNT...]` for the accounts of
//! `~/.config/poplar/fetch.toml`: download mail, exactly once, accounts in parallel.
//!
//! The URL form is the stable one scripts drive; the work is `pop3_fetch::fetch`. Exit codes
//! follow sysexits(3): 0 done, 75 try again later (network, `[IN-USE]`, `[LOGIN-DELAY]`, another
//! run busy with the account), 77 login refused, 69 the server lacks something needed, 76 the
//! server broke the protocol, 78 a local setting is wrong.

use anyhow::{Context, Result};
use pop3_fetch::config::{AccountConfig, Target, TlsSetting};
use pop3_fetch::journal::Journal;
use pop3_fetch::{Account, Auth, FetchError, ServerUrl, TlsMode};
use poplar_util::clock::unix_now;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

const EX_UNAVAILABLE: u8 = 69;
const EX_CANTCREAT: u8 = 73;
const EX_PROTOCOL: u8 = 76;
const EX_TEMPFAIL: u8 = 75;
const EX_NOPERM: u8 = 77;
const EX_CONFIG: u8 = 78;

/// The command line of `poplar fetch`.
#[derive(Debug, clap::Args)]
pub(crate) struct FetchArgs {
    /// pop3s://USER@HOST[:PORT] (TLS) or pop3://USER@HOST[:PORT] (STLS) with --to; or names of
    /// accounts in the configuration file (default: all of them).
    targets: Vec<String>,
    /// The accounts file; default ~/.config/poplar/fetch.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where to deliver: maildir:PATH, mbox:PATH (mboxrd, dot-lock and fcntl locking),
    /// mda:COMMAND (each message on its stdin, %F the sender) or lmtp:HOST:PORT|lmtp:unix:PATH.
    #[arg(long, value_name = "DEST")]
    to: Option<Target>,
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
    /// Delete messages larger than --max-size on the server, unread, instead of leaving them.
    #[arg(long, requires = "max_size")]
    delete_too_large: bool,
    /// On the first run for an account, fetch nothing: remember what the server holds, so only
    /// mail arriving from now on is fetched.
    #[arg(long)]
    only_new: bool,
    /// Fetch at most this many messages in this run.
    #[arg(long, value_name = "N")]
    max_messages: Option<usize>,
    /// Fetch at most this many octets in this run (K, M, G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_bytes: Option<u64>,
    /// Read the password from the first line of standard input (else it is asked for).
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    trust: TrustArgs,
    /// With --to lmtp:ADDR: the recipient address; default the local user name.
    #[arg(long, value_name = "ADDRESS")]
    lmtp_recipient: Option<String>,
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
    /// Only describe the server (greeting, TLS and certificate, logins, CAPA with EXPIRE and
    /// LOGIN-DELAY explained) without logging in.
    #[arg(long)]
    serverinfo: bool,
    /// Keep running: fetch every account, then again every --interval, never sooner than the
    /// server's LOGIN-DELAY allows. SIGTERM or ^C stops it (safe at any moment).
    #[arg(long)]
    daemon: bool,
    /// With --daemon: seconds between runs of an account.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    interval: u64,
    /// Seconds to wait for the TCP connection (default 10; also `30s`, `2m`).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    connect_timeout: Option<std::time::Duration>,
    /// Seconds to wait for the TLS handshake and the greeting (default 30).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    greeting_timeout: Option<std::time::Duration>,
    /// Seconds to wait for each later reply (default 180, as mpop).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    timeout: Option<std::time::Duration>,
    /// Judge retention as of this Unix time instead of now (for tests and planning).
    #[arg(long, value_name = "UNIX_SECONDS", hide = true)]
    now: Option<u64>,
}

fn parse_size(text: &str) -> Result<u64, String> {
    poplar_util::units::parse_size(text).ok_or_else(|| format!("invalid size {text:?}"))
}

fn parse_seconds(text: &str) -> Result<std::time::Duration, String> {
    poplar_util::units::parse_duration(text).ok_or_else(|| format!("invalid duration {text:?}"))
}

/// How a client trusts a server's certificate: `poplar fetch` and `poplar migrate`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TrustArgs {
    /// The CA certificate, or the server's own (self-signed) certificate, to trust; default:
    /// the system's CAs.
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_file: Option<PathBuf>,
    /// Trust exactly the certificate with this SHA-256 fingerprint (as --serverinfo prints it)
    /// instead of checking it against CAs.
    #[arg(long, value_name = "SHA256")]
    pub(crate) tls_fingerprint: Option<String>,
    /// The name the server's certificate must carry (and TLS SNI); default: the URL's host.
    #[arg(long, value_name = "NAME")]
    pub(crate) server_name: Option<String>,
}

impl TrustArgs {
    /// The trust these options give.
    pub(crate) fn trust(&self) -> Result<pop3_fetch::Trust> {
        Ok(pop3_fetch::Trust::from_settings(
            self.tls_fingerprint.as_deref(),
            self.ca_file.as_deref(),
        )?)
    }
}

/// An account ready to run: its settings and its password.
#[derive(Clone)]
struct Job {
    config: AccountConfig,
    password: String,
}

pub(crate) fn run(args: &FetchArgs) -> Result<ExitCode> {
    if args.serverinfo {
        return serverinfo(args);
    }
    // A wrong URL, option or accounts file is a local setting to fix: exit 78.
    let setting =
        |e: anyhow::Error| -> anyhow::Error { crate::ConfigProblem(crate::describe(&e)).into() };
    let jobs = match args.targets.first() {
        Some(first) if first.contains("://") => vec![one_shot(args, first).map_err(setting)?],
        _ => from_config(args).map_err(setting)?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if args.daemon {
        runtime.block_on(daemon(jobs, std::time::Duration::from_secs(args.interval)));
        return Ok(ExitCode::SUCCESS);
    }
    let now = args.now.unwrap_or_else(unix_now);
    // Accounts run in parallel; each holds its own journal's lock.
    // One bar on a terminal for all accounts together; nothing when not on a terminal.
    let progress_bar = std::io::stderr()
        .is_terminal()
        .then(|| std::sync::Arc::new(ProgressBar::default()));
    let bar_used = progress_bar.clone();
    let results = runtime.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (i, job) in jobs.into_iter().enumerate() {
            let bar = progress_bar.clone();
            set.spawn(async move { (i, fetch_one(&job, now, bar.as_deref(), i).await, job) });
        }
        let mut results = Vec::new();
        while let Some(done) = set.join_next().await {
            results.push(done);
        }
        results
    });
    let mut results: Vec<_> = results
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .context("an account's run stopped unexpectedly")?;
    results.sort_by_key(|(i, _, _)| *i);
    if let Some(bar) = bar_used {
        bar.finish();
    }
    let mut code = 0u8;
    for (_, result, job) in results {
        let journal = job.config.journal_path().ok();
        let c = report(&job.config.label(), &result, journal.as_deref());
        if code == 0 {
            code = c;
        }
    }
    Ok(ExitCode::from(code))
}

/// Prints a run's summary line (standard output) or error (standard error); returns the exit
/// code it stands for.
fn report(
    label: &str,
    result: &Result<(pop3_fetch::Summary, String), FetchError>,
    journal: Option<&std::path::Path>,
) -> u8 {
    match result {
        Ok((s, dest)) => {
            for w in &s.warnings {
                eprintln!("poplar fetch: {label}: warning: {w}");
            }
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", summary_line(label, s, dest, journal));
            let _ = out.flush();
            0
        }
        Err(e) => {
            let (c, hint) = exit_code(e);
            eprintln!("poplar fetch: {label}: {e} ({hint})");
            c
        }
    }
}

/// `--daemon`: each account in its own loop, fetched every `interval` and never sooner than the
/// LOGIN-DELAY its server last advertised, until SIGTERM or SIGINT.
async fn daemon(jobs: Vec<Job>, interval: std::time::Duration) {
    let mut set = tokio::task::JoinSet::new();
    for job in jobs {
        set.spawn(async move {
            let label = job.config.label();
            let mut delay = std::time::Duration::ZERO;
            loop {
                let result = fetch_one(&job, unix_now(), None, 0).await;
                report(&label, &result, job.config.journal_path().ok().as_deref());
                if let Ok((s, _)) = &result {
                    delay = std::time::Duration::from_secs(s.login_delay.unwrap_or(0).into());
                }
                tokio::time::sleep(interval.max(delay)).await;
            }
        });
    }
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    // Stopping in the middle of a run is safe: that is what the journal is for.
    terminate.await;
    set.abort_all();
}

/// `--serverinfo URL|ACCOUNT...`: describe each server, log in nowhere.
fn serverinfo(args: &FetchArgs) -> Result<ExitCode> {
    let accounts: Vec<AccountConfig> = match args.targets.first() {
        Some(first) if first.contains("://") => {
            let url: ServerUrl = first.parse().map_err(anyhow::Error::msg)?;
            vec![url_account(args, &url, Target::Mbox(PathBuf::new()))]
        }
        _ => {
            let path = config_path(args)?;
            pop3_fetch::config::load(&path)?
                .account
                .into_iter()
                .filter(|a| args.targets.is_empty() || args.targets.contains(&a.label()))
                .collect()
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut code = 0;
    for account in accounts {
        let result = runtime.block_on(async {
            let tls = account.tls_mode()?;
            let addr = tokio::net::lookup_host((account.host.as_str(), account.port()))
                .await
                .map_err(FetchError::io_at(format!(
                    "cannot resolve {}",
                    account.host
                )))?
                .next()
                .ok_or_else(|| {
                    FetchError::Unsupported(format!("{} has no address", account.host))
                })?;
            let dialer = account.inspecting_dialer(addr)?;
            pop3_fetch::info::server_info(&dialer, tls != TlsMode::None).await
        });
        match result {
            Ok(text) => print!("{}:\n{text}", account.label()),
            Err(e) => {
                let (c, hint) = exit_code(&e);
                eprintln!("poplar fetch: {}: {e} ({hint})", account.label());
                code = c;
            }
        }
    }
    Ok(ExitCode::from(code))
}

/// `poplar fetch URL --to DEST ...`: one account from the command line.
fn one_shot(args: &FetchArgs, url: &str) -> Result<Job> {
    let url: ServerUrl = url.parse().map_err(anyhow::Error::msg)?;
    url.require_user().map_err(anyhow::Error::msg)?;
    let to = args
        .to
        .clone()
        .context("say where the mail goes: --to maildir:PATH or --to mbox:PATH")?;
    let kerberos = url.kerberos
        || args
            .auth
            .as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case("GSSAPI"));
    let password = if kerberos {
        // The ticket cache (kinit) is the credential.
        String::new()
    } else if args.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        rpassword::prompt_password(format!("Password for {url}: "))
            .context("no password: give it on a terminal or with --password-stdin")?
    };
    Ok(Job {
        config: url_account(args, &url, to),
        password,
    })
}

/// The account a URL and the command line's options describe.
fn url_account(args: &FetchArgs, url: &ServerUrl, to: Target) -> AccountConfig {
    let tls = match (url.tls, args.allow_insecure) {
        (TlsMode::None, _) => TlsSetting::None,
        (TlsMode::Starttls, true) => TlsSetting::None,
        (TlsMode::Starttls, false) => TlsSetting::Starttls,
        _ => TlsSetting::Implicit,
    };
    let auth = if url.kerberos {
        Some("GSSAPI".to_owned())
    } else {
        args.auth.clone()
    };
    AccountConfig {
        name: Some(url.to_string()),
        host: url.host.clone(),
        port: Some(url.port),
        tls,
        allow_insecure: args.allow_insecure,
        user: url.user.clone(),
        password: None,
        password_command: None,
        auth,
        ca_file: args.trust.ca_file.clone(),
        tls_fingerprint: args.trust.tls_fingerprint.clone(),
        server_name: args.trust.server_name.clone(),
        to,
        keep: args.keep,
        delete_after_days: args.delete_after_days,
        max_size: args.max_size,
        delete_too_large: args.delete_too_large,
        only_new: args.only_new,
        max_messages: args.max_messages,
        max_bytes: args.max_bytes,
        accept_uidl_reset: args.accept_uidl_reset,
        journal: args.journal.clone(),
        lmtp_recipient: args.lmtp_recipient.clone(),
        connect_timeout: args.connect_timeout,
        greeting_timeout: args.greeting_timeout,
        timeout: args.timeout,
    }
}

/// The accounts of the configuration file, those named or all; passwords resolved (prompting
/// on a terminal for those that have none) before any account starts.
fn from_config(args: &FetchArgs) -> Result<Vec<Job>> {
    let path = config_path(args)?;
    let config = match pop3_fetch::config::load(&path) {
        Err(FetchError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!(
                "no accounts file at {}: give a URL (poplar fetch pop3s://USER@HOST --to maildir:PATH) or write the accounts file (see docs/fetch.md)",
                path.display()
            )
        }
        other => other?,
    };
    let mut jobs = Vec::new();
    for account in config.account {
        let label = account.label();
        if !args.targets.is_empty() && !args.targets.contains(&label) {
            continue;
        }
        let password = match account.password()? {
            Some(p) => p,
            None if account.uses_kerberos() => String::new(),
            None => rpassword::prompt_password(format!("Password for {label}: ")).with_context(
                || format!("no password for {label}: set password_command, use ~/.netrc or run on a terminal"),
            )?,
        };
        jobs.push(Job {
            config: account,
            password,
        });
    }
    anyhow::ensure!(
        !jobs.is_empty(),
        "no account to fetch in {} (names given: {:?})",
        path.display(),
        args.targets
    );
    Ok(jobs)
}

/// `--config`, or `~/.config/poplar/fetch.toml`.
fn config_path(args: &FetchArgs) -> Result<PathBuf> {
    Ok(match &args.config {
        Some(p) => p.clone(),
        None => std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .context("neither XDG_CONFIG_HOME nor HOME is set; give --config")?
            .join("poplar/fetch.toml"),
    })
}

/// One account's run.
async fn fetch_one(
    job: &Job,
    now: u64,
    progress_bar: Option<&ProgressBar>,
    slot: usize,
) -> Result<(pop3_fetch::Summary, String), FetchError> {
    let c = &job.config;
    let tls = c.tls_mode()?;
    let addr = tokio::net::lookup_host((c.host.as_str(), c.port()))
        .await
        .map_err(FetchError::io_at(format!("cannot resolve {}", c.host)))?
        .next()
        .ok_or_else(|| FetchError::Unsupported(format!("{} has no address", c.host)))?;
    let account = Account {
        dialer: c.dialer(addr)?,
        user: c.user.clone(),
        password: job.password.clone(),
        auth: c
            .auth
            .clone()
            .filter(|a| !a.eq_ignore_ascii_case("auto"))
            .map_or(Auth::Auto, Auth::Named),
        encrypted: tls != TlsMode::None,
        allow_insecure: c.allow_insecure,
    };
    let mut journal = Journal::open(&c.journal_path()?)?;
    let mut dest = c.to.open(&c.recipient())?;
    let mut progress = |done: usize, octets: u64, total: usize, total_octets: u64| {
        if let Some(bar) = progress_bar {
            bar.update(slot, (done, octets, total, total_octets));
        }
    };
    let summary = pop3_fetch::fetch(
        &account,
        &c.policy(),
        &mut journal,
        dest.as_mut(),
        now,
        &mut progress,
    )
    .await?;
    Ok((summary, dest.describe()))
}

/// The progress of every account of a run, drawn as one line on the terminal.
#[derive(Default)]
struct ProgressBar {
    /// Per account slot: messages done, octets done, messages planned, octets planned.
    slots: std::sync::Mutex<std::collections::BTreeMap<usize, (usize, u64, usize, u64)>>,
}

impl ProgressBar {
    fn update(&self, slot: usize, state: (usize, u64, usize, u64)) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.insert(slot, state);
        let (done, octets, total, total_octets) = slots.values().fold((0, 0, 0, 0), |a, s| {
            (a.0 + s.0, a.1 + s.1, a.2 + s.2, a.3 + s.3)
        });
        let width = 30;
        let filled = (done * width)
            .checked_div(total)
            .unwrap_or(width)
            .min(width);
        let accounts = if slots.len() > 1 {
            format!(" ({} accounts)", slots.len())
        } else {
            String::new()
        };
        eprint!(
            "\r[{}{}] {done}/{total} messages, {:.1}/{:.1} MB{accounts} ",
            "#".repeat(filled),
            " ".repeat(width - filled),
            octets as f64 / 1e6,
            total_octets as f64 / 1e6
        );
    }

    /// Ends the bar's line, if one was drawn.
    fn finish(&self) {
        if !self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            eprintln!();
        }
    }
}

/// The one line a run prints per account.
fn summary_line(
    label: &str,
    s: &pop3_fetch::Summary,
    dest: &str,
    journal: Option<&std::path::Path>,
) -> String {
    let mut line = format!(
        "{label}: {} new of {} ({:.1} MB) into {dest}, {} deleted on the server",
        s.fetched,
        s.listed,
        s.octets as f64 / 1e6,
        s.deleted
    );
    if s.already > 0 {
        // Why so few are new: the journal is per account, like mpop's UIDL file.
        line.push_str(&format!(
            ", {} fetched by earlier runs of this account",
            s.already
        ));
        if s.fetched == 0
            && let Some(journal) = journal
        {
            line.push_str(&format!(" (recorded in {})", journal.display()));
        }
    }
    if s.too_large > 0 {
        line.push_str(&format!(", {} too large", s.too_large));
    }
    if s.skipped_old > 0 {
        line.push_str(&format!(
            ", {} already there recorded as old (only new mail is fetched)",
            s.skipped_old
        ));
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
    line
}

/// The sysexits code for a failure, and what to do about it.
fn exit_code(e: &FetchError) -> (u8, &'static str) {
    match e {
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
        FetchError::Delivery { .. } => (
            EX_CANTCREAT,
            "the message stays on the server; see what the destination said",
        ),
        FetchError::Certificate { .. } => (EX_CONFIG, "nothing was sent to the server"),
        _ => (EX_CONFIG, "check the files and options named"),
    }
}
