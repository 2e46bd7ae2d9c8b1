//! `poplar`: the one binary. Each subcommand is a thin layer over the library crates; the
//! command-line interface is a contract that scripts and other tools drive, so it stays stable.

#![forbid(unsafe_code)]
// Printing to the terminal is this crate's job; the libraries only log.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod autoconfig;
mod control;
mod db;
mod deliver;
mod dns;
mod fetch;
mod http;
mod man;
mod metrics;
mod migrate;
mod privileges;
mod serve;
mod signing;
mod systemd;
mod user;
mod welcome;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use pop3_server::Config;
use std::path::PathBuf;
use std::process::ExitCode;

/// Poplar: a POP3 mail system.
#[derive(Debug, Parser)]
#[command(name = "poplar", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the POP3 server (without a configuration file: loopback ports 1110 and 1995,
    /// data in ./poplar-data, a self-signed certificate and a demo user).
    Serve(ServeArgs),
    /// Manage users in the passwd-file.
    #[command(subcommand)]
    User(UserCommand),
    /// Deliver one message (read from standard input, stored as is) to users' maildrops.
    /// Exit codes follow sysexits: 0 delivered, 65 bad input, 67 unknown user, 75 try later
    /// (also a full maildrop), 77 full maildrop under `quota.permanent`.
    Deliver(DeliverArgs),
    /// Remove messages whose retention period (`pop3.expire` in days) has passed since they
    /// were retrieved, as `poplar serve` does every hour; each removal is logged.
    Expire(ExpireArgs),
    /// Read every message of users' maildrops (Maildir store) and record in the index what
    /// RETR needs: the exact size, and whether the file goes on the wire as stored, so that
    /// mail delivered by other programs or before `delivery.save_crlf` can be sent by
    /// sendfile too. Waits for no POP3 session: a maildrop in use is reported and skipped.
    Reindex(ReindexArgs),
    /// Download an account's mail from a POP3 server into a Maildir, exactly once, even when
    /// killed: `poplar fetch pop3s://USER@HOST --to maildir:PATH [--keep]`.
    Fetch(fetch::FetchArgs),
    /// Move a maildrop from another server (its Maildir on disk, or live over POP3) keeping every
    /// UIDL, so clients that leave mail on the server download nothing again. Repeatable;
    /// never changes the source.
    Migrate(migrate::MigrateArgs),
    /// Check a configuration and everything `serve` would use (files, certificate, accounts,
    /// sockets), changing nothing; explain any problem. Exit 78 when `serve` would refuse.
    CheckConfig(CheckConfigArgs),
    /// The PostgreSQL store (`store.backend = "postgres"`).
    #[command(subcommand)]
    Db(DbCommand),
    /// List the sessions of the running server (all, or one user's), from its control socket.
    Who(WhoArgs),
    /// End every session of a user on the running server, as a dropped connection would:
    /// nothing the session deleted is applied.
    Kick(KickArgs),
    /// Reload the running server's TLS certificate and key (what SIGHUP does), and say how it
    /// went: a refused certificate's reason, and exit status 1.
    Reload(DbArgs),
    /// Show the running server's metrics in words (what Prometheus scrapes from /metrics),
    /// or the Prometheus text itself with --prometheus.
    Stats(StatsArgs),
    /// Write the manual pages (poplar(1), one per subcommand, poplar.toml(5)) into a directory.
    Man(ManArgs),
    /// Print the shell completion script for bash, zsh or fish.
    Completions(CompletionsArgs),
    /// Client autoconfiguration (`[autoconfig]`).
    #[command(subcommand)]
    Autoconfig(AutoconfigCommand),
}

#[derive(Debug, Subcommand)]
enum AutoconfigCommand {
    /// Print the DNS records that lead mail clients to this server (RFC 6186 SRV for POP3S,
    /// POP3 and submission; the autoconfig and autodiscover names); with --check, ask a
    /// resolver for each and say what is missing or different (exit 1).
    Dns(AutoconfigDnsArgs),
}

#[derive(Debug, Args)]
struct AutoconfigDnsArgs {
    /// The mail domain (as in `autoconfig.domains`).
    #[arg(long)]
    domain: String,
    /// Look the records up and compare.
    #[arg(long)]
    check: bool,
    /// The resolver to ask (`ADDR:PORT`). Default: the first nameserver of /etc/resolv.conf.
    #[arg(long, value_name = "ADDR:PORT", requires = "check")]
    resolver: Option<std::net::SocketAddr>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct WhoArgs {
    /// Only this user's sessions.
    user: Option<String>,
    /// One JSON object per session instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct StatsArgs {
    /// The Prometheus text exposition instead of words.
    #[arg(long)]
    prometheus: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct KickArgs {
    /// The user whose sessions end.
    user: String,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct ManArgs {
    /// Where to write them (e.g. /usr/share/man/man1; poplar.toml.5 goes there too).
    #[arg(default_value = ".")]
    dir: PathBuf,
}

#[derive(Debug, Args)]
struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Create Poplar's tables in `store.url`'s database, or upgrade them to this version's
    /// schema, keeping every message; does nothing when they are current, so it is safe to
    /// run on every deployment (and from several nodes at once).
    Init(DbArgs),
    /// Move a user's maildrop to another shard of `store.url` (numbered from 0 in its order),
    /// keeping every UID and UIDL; sessions get [IN-USE] and deliveries wait while it moves.
    MoveUser(MoveUserArgs),
}

#[derive(Debug, Args)]
struct MoveUserArgs {
    /// The user.
    name: String,
    /// The shard to move to.
    #[arg(long, value_name = "SHARD")]
    to: usize,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct DbArgs {
    #[command(flatten)]
    common: Common,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
struct Common {
    /// The configuration file (TOML). Without it: $POPLAR_CONFIG, else /etc/poplar/poplar.toml
    /// when it exists, else the embedded defaults (data in ./poplar-data).
    #[arg(short = 'c', long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The data directory (overrides `data_dir` from the configuration).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// The system-wide configuration file, used when it exists and nothing else is named.
const SYSTEM_CONFIG: &str = "/etc/poplar/poplar.toml";

/// Where the configuration in use came from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ConfigSource {
    /// A file: named with --config, by $POPLAR_CONFIG, or the system-wide one.
    File(PathBuf, &'static str),
    /// No file: the embedded defaults.
    Embedded,
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::File(path, how) => write!(f, "{} ({how})", path.display()),
            ConfigSource::Embedded => f.write_str(
                "the embedded defaults (no --config, no $POPLAR_CONFIG, no /etc/poplar/poplar.toml)",
            ),
        }
    }
}

/// A problem with the configuration or the command line: exit 78 (EX_CONFIG), the code
/// `check-config` uses, so scripts and service managers can tell it from a failure at run time.
#[derive(Debug)]
struct ConfigProblem(String);

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigProblem {}

#[derive(Debug, Args)]
struct CheckConfigArgs {
    #[command(flatten)]
    common: Common,
    /// Print the effective configuration, every default filled in (as `doveconf -n` does);
    /// anything secret is redacted.
    #[arg(long)]
    dump: bool,
    /// With --dump: as JSON instead of TOML.
    #[arg(long, requires = "dump")]
    json: bool,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    common: Common,
    /// Listen for POP3 (with STLS) here instead of the configured addresses; repeatable.
    #[arg(long, value_name = "ADDR")]
    pop3: Vec<std::net::SocketAddr>,
    /// Listen for POP3S (implicit TLS) here instead of the configured addresses; repeatable.
    #[arg(long, value_name = "ADDR")]
    pop3s: Vec<std::net::SocketAddr>,
    /// Take mail over LMTP here (a loopback ADDR or unix:PATH) instead of the configured
    /// addresses; repeatable.
    #[arg(long, value_name = "ADDR|unix:PATH")]
    lmtp: Vec<pop3_server::config::LmtpAddr>,
    /// Listen for Kerberized POP (KPOP, port 1109: Kerberos logins only) on ADDR instead of
    /// the configured listen.kpop addresses; repeatable. Needs [auth.gssapi].
    #[arg(long, value_name = "ADDR")]
    kpop: Vec<std::net::SocketAddr>,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user (NAME or NAME@DOMAIN); the password is hashed with ARGON2ID.
    Add(UserPasswordArgs),
    /// Change a user's password.
    Passwd(UserPasswordArgs),
    /// Remove a user (the maildrop is kept).
    Del(UserNameArgs),
    /// List the users.
    List(UserListArgs),
    /// Copy the users of a Dovecot passwd-file into the PostgreSQL store's users table, hashes
    /// as they are (names already there are left alone).
    Import(UserImportArgs),
}

#[derive(Debug, Args)]
struct UserListArgs {
    /// One JSON object per user (`{"user": NAME}`) instead of one name per line.
    #[arg(long)]
    json: bool,
    /// Only the users of this domain (UTF-8 or punycode; case does not matter).
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct UserImportArgs {
    /// The passwd-file (`user:{SCHEME}hash[:uid:gid:gecos:home:shell:extra]` lines).
    file: PathBuf,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct UserPasswordArgs {
    /// The user name.
    name: String,
    /// Read the password from the first line of standard input instead of prompting.
    #[arg(long)]
    password_stdin: bool,
    /// Store the password in these schemes (comma-separated; the first is the primary one).
    /// Challenge-response mechanisms need a matching form: SCRAM-SHA-256 for SCRAM-SHA-256,
    /// CRAM-MD5 for CRAM-MD5, PLAIN for APOP. Choices: ARGON2ID, SCRAM-SHA-256, SCRAM-SHA-1,
    /// CRAM-MD5, SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT, PBKDF2, SSHA512, PLAIN.
    #[arg(long, value_delimiter = ',', default_value = "ARGON2ID")]
    schemes: Vec<String>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct UserNameArgs {
    /// The user name.
    name: String,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct DeliverArgs {
    /// The recipients (NAME or NAME@DOMAIN).
    #[arg(required = true)]
    names: Vec<String>,
    /// The envelope sender, for `Return-Path:` when `delivery.return_path` is set (Postfix's
    /// pipe(8): `-f ${sender}`).
    #[arg(short = 'f', long = "from", value_name = "SENDER")]
    from: Option<String>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct ExpireArgs {
    /// Only log what would be removed.
    #[arg(long)]
    dry_run: bool,
    /// Print the outcome as one JSON object (`maildrops`, `messages`, `octets`, `busy`,
    /// `failed`, `dry_run`); each message is in the log either way.
    #[arg(long)]
    json: bool,
    /// Judge as of this Unix time instead of now, e.g. what a run in a week would remove:
    /// `--dry-run --as-of $(date -d '+7 days' +%s)`.
    #[arg(long, value_name = "UNIX_SECONDS")]
    as_of: Option<u64>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct ReindexArgs {
    /// The users whose maildrops to read.
    #[arg(required_unless_present = "all")]
    users: Vec<String>,
    /// Every user of the users file.
    #[arg(long, conflicts_with = "users")]
    all: bool,
    #[command(flatten)]
    common: Common,
}

/// sysexits.h EX_CONFIG: the configuration is unusable.
const EX_CONFIG: u8 = 78;

impl Common {
    /// Where the configuration comes from: `--config`, else `$POPLAR_CONFIG`, else
    /// /etc/poplar/poplar.toml when it exists, else the embedded defaults.
    fn source(&self) -> ConfigSource {
        if let Some(path) = &self.config {
            return ConfigSource::File(path.clone(), "--config");
        }
        if let Some(path) = std::env::var_os("POPLAR_CONFIG").filter(|p| !p.is_empty()) {
            return ConfigSource::File(PathBuf::from(path), "$POPLAR_CONFIG");
        }
        let system = PathBuf::from(SYSTEM_CONFIG);
        if system.exists() {
            return ConfigSource::File(system, "the system-wide file");
        }
        ConfigSource::Embedded
    }

    /// The configuration (see [`Common::source`]); `--data-dir` wins. A file that cannot be
    /// read or parsed is a [`ConfigProblem`].
    fn load(&self) -> Result<Config> {
        let mut config = match self.source() {
            ConfigSource::File(path, how) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    ConfigProblem(format!(
                        "cannot read the configuration file {} ({how}): {e}",
                        path.display()
                    ))
                })?;
                Config::parse(&text)
                    .map_err(|e| ConfigProblem(format!("in {}: {e}", path.display())))?
            }
            ConfigSource::Embedded => Config {
                demo_user: true,
                ..Config::default()
            },
        };
        if let Some(dir) = &self.data_dir {
            config.data_dir.clone_from(dir);
        }
        Ok(config)
    }

    /// For commands that write: says on standard error which configuration and data directory
    /// they use, so that a command run in the wrong place or without the right file does not
    /// silently write somewhere unexpected.
    fn announce(&self, config: &Config) {
        let data = &config.data_dir;
        let shown = if data.is_relative() {
            let relative = data.strip_prefix(".").unwrap_or(data);
            std::env::current_dir().map_or_else(
                |_| data.display().to_string(),
                |cwd| cwd.join(relative).display().to_string(),
            )
        } else {
            data.display().to_string()
        };
        let fresh = if data.exists() { "" } else { ", created now" };
        eprintln!(
            "poplar: configuration: {}; data directory: {shown}{fresh}",
            self.source()
        );
    }
}

fn main() -> ExitCode {
    privileges::private_umask();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors; a wrong option is a setting that is wrong.
            return if e.use_stderr() {
                ExitCode::from(EX_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::User(cmd) => user::run(cmd),
        Command::Deliver(args) => return deliver::run(&args),
        Command::Expire(args) => expire(&args),
        Command::Reindex(args) => reindex(&args),
        Command::Migrate(args) => migrate::run(&args),
        Command::Fetch(args) => fetch::run(&args),
        Command::CheckConfig(args) => check_config(&args),
        Command::Who(args) => args.common.load().and_then(|c| {
            let user = args
                .user
                .as_deref()
                .map(pop3_auth::directory::normalize_name);
            control::who(&c, user.as_deref(), args.json)
        }),
        Command::Kick(args) => args
            .common
            .load()
            .and_then(|c| control::kick(&c, &pop3_auth::directory::normalize_name(&args.user))),
        Command::Reload(args) => args.common.load().and_then(|c| control::reload(&c)),
        Command::Stats(args) => args
            .common
            .load()
            .and_then(|c| control::stats(&c, args.prometheus)),
        Command::Man(args) => man::write_pages(&args.dir).map(|written| {
            for page in written {
                println!("{}", page.display());
            }
            ExitCode::SUCCESS
        }),
        Command::Autoconfig(AutoconfigCommand::Dns(args)) => args.common.load().and_then(|c| {
            let resolver = match (args.check, args.resolver) {
                (false, _) => None,
                (true, Some(r)) => Some(r),
                (true, None) => Some(dns::system_resolver()?),
            };
            dns::run(&c, &args.domain, resolver)
        }),
        Command::Completions(args) => {
            man::print_completions(args.shell).map(|()| ExitCode::SUCCESS)
        }
        Command::Db(DbCommand::Init(args)) => args.common.load().and_then(|c| db::init(&c)),
        Command::Db(DbCommand::MoveUser(args)) => args.common.load().and_then(|c| {
            args.common.announce(&c);
            privileges::become_configured_user(&c, false)?;
            db::move_user(
                &c,
                &pop3_auth::directory::normalize_name(&args.name),
                args.to,
            )
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("poplar: {}", describe(&e));
            if e.downcast_ref::<ConfigProblem>().is_some() {
                ExitCode::from(EX_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// An error and its causes, each said once: a library error that already names its cause (an
/// OS error in its own text) is not followed by that cause again.
fn describe(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

fn reindex(args: &ReindexArgs) -> Result<ExitCode> {
    let config = args.common.load()?;
    args.common.announce(&config);
    init_logging(&config);
    if config.store.backend != pop3_server::config::StoreBackend::Maildir {
        println!(
            "nothing to do: the PostgreSQL store keeps no Maildir index (store.backend = \"postgres\")"
        );
        return Ok(ExitCode::SUCCESS);
    }
    privileges::become_configured_user(&config, false)?;
    let users = if args.all {
        pop3_auth::userdb::edit::list(&config.users_file())?
    } else {
        let rules = config.login_rules();
        args.users.iter().map(|u| rules.canonical(u)).collect()
    };
    let store = config.maildir_store();
    let mut failed = 0;
    let mut total = pop3_store::maildir::Reindexed::default();
    for user in &users {
        match store.reindex_blocking(user) {
            Ok(r) => {
                println!(
                    "{user}: {} messages, {} sent as stored, {} sizes corrected",
                    r.messages, r.verbatim, r.sizes_corrected
                );
                total.messages += r.messages;
                total.verbatim += r.verbatim;
                total.sizes_corrected += r.sizes_corrected;
            }
            Err(pop3_store::StoreError::InUse) => {
                failed += 1;
                println!("{user}: in use by a POP3 session; run again later");
            }
            Err(e) => {
                failed += 1;
                println!("{user}: {e}");
            }
        }
    }
    if users.len() > 1 {
        println!(
            "{} maildrops, {} messages, {} sent as stored, {} sizes corrected, {failed} not done",
            users.len(),
            total.messages,
            total.verbatim,
            total.sizes_corrected
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn expire(args: &ExpireArgs) -> Result<ExitCode> {
    let config = args.common.load()?;
    if !args.dry_run {
        args.common.announce(&config);
    }
    init_logging(&config);
    privileges::become_configured_user(&config, false)?;
    let policy = config.expire_policy();
    if !policy.purges() {
        println!(
            "nothing to do: no user has a retention period in days (pop3.expire, pop3.expire_overrides)"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let now = args.as_of.unwrap_or_else(poplar_util::clock::unix_now);
    let runtime = crate::runtime()?;
    let report = runtime.block_on(async {
        anyhow::Ok(match config.store.backend {
            pop3_server::config::StoreBackend::Maildir => {
                pop3_server::expire::purge(&config.maildir_store(), &policy, now, args.dry_run)
                    .await
            }
            pop3_server::config::StoreBackend::Postgres => {
                let store = db::connect(&config, &pop3_auth::UserReplica::new()).await?;
                pop3_server::expire::purge(&store, &policy, now, args.dry_run).await
            }
        })
    })?;
    if args.json {
        say(&serde_json::json!({
            "maildrops": report.maildrops,
            "messages": report.messages,
            "octets": report.octets,
            "busy": report.busy,
            "failed": report.failed.iter().map(|(user, why)| serde_json::json!({"user": user, "error": why})).collect::<Vec<_>>(),
            "dry_run": args.dry_run,
        }))?;
        return Ok(if report.failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let verb = if args.dry_run {
        "due for removal"
    } else {
        "removed"
    };
    println!(
        "{} maildrops checked, {} messages ({} octets) {verb}",
        report.maildrops, report.messages, report.octets
    );
    if !report.busy.is_empty() {
        println!(
            "in use by a POP3 session, to be done next time: {}",
            report.busy.join(", ")
        );
    }
    for (user, why) in &report.failed {
        println!("failed for {user}: {why}");
    }
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn check_config(args: &CheckConfigArgs) -> Result<ExitCode> {
    let common = &args.common;
    let config = match common.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("poplar: {}", describe(&e));
            return Ok(ExitCode::from(EX_CONFIG));
        }
    };
    if args.dump {
        // Defaults computed at run time are shown as they would be used.
        let mut shown = config.clone();
        shown.hostname = Some(config.hostname());
        shown.auth.users_file = Some(config.users_file());
        let mut value = toml::Value::try_from(&shown).context("cannot show the configuration")?;
        redact(&mut value);
        if args.json {
            say(&serde_json::to_value(&value).context("cannot show the configuration")?)?;
            return Ok(ExitCode::SUCCESS);
        }
        println!("# the effective configuration: {}", common.source());
        print!(
            "{}",
            toml::to_string_pretty(&value).context("cannot show the configuration")?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("configuration: {}", common.source());
    let problems = config.problems(true);
    let mut errors = 0;
    for p in &problems {
        let label = match p.severity {
            pop3_server::config::Severity::Error => {
                errors += 1;
                "error"
            }
            pop3_server::config::Severity::Warning => "warning",
        };
        println!("{label}: {}", p.message);
    }
    // The profile signing key, read and matched to its certificate as `serve` will.
    if let (Some(cert), Some(key)) = (
        &config.autoconfig.profile_cert,
        &config.autoconfig.profile_key,
    ) {
        match signing::ProfileSigner::load(cert, key) {
            Ok(_) => println!("  Apple profiles: signed with {}", cert.display()),
            Err(e) => {
                errors += 1;
                println!("error: cannot sign Apple profiles: {e:#}");
            }
        }
    }
    if errors == 0 && config.store.backend == pop3_server::config::StoreBackend::Postgres {
        // The database must be reachable and carry this version's schema.
        let reached = crate::runtime()?.block_on(db::load_users(&config));
        match reached {
            Ok((_, users)) => {
                println!(
                    "  store:          PostgreSQL, schema version {}, {} user(s)",
                    pop3_store_postgres::schema::VERSION,
                    users.len()
                );
                if users.is_empty() && !config.demo_user {
                    println!(
                        "warning: no users in the database: nobody can log in. Add one with `poplar user add NAME`."
                    );
                }
                for p in config
                    .mechanism_problems(&users)
                    .into_iter()
                    .chain(config.sdps_problems(&users))
                    .chain(config.default_domain_problems(&users))
                {
                    println!("warning: {}", p.message);
                }
            }
            Err(e) => {
                errors += 1;
                println!("error: {e:#}");
            }
        }
    }
    if errors > 0 {
        println!("{errors} error(s): `poplar serve` would refuse to start.");
        return Ok(ExitCode::from(EX_CONFIG));
    }
    let (cert, _, generated) = config.tls_files();
    println!("configuration OK");
    let exists = |p: &std::path::Path| {
        if p.exists() {
            ""
        } else {
            " (created on first start)"
        }
    };
    println!(
        "  data directory: {}{}",
        config.data_dir.display(),
        exists(&config.data_dir)
    );
    let users = config.users_file();
    println!("  users file:     {}{}", users.display(), exists(&users));
    for addr in &config.listen.pop3 {
        let stls = if config.tls.enabled {
            "POP3 (STLS):"
        } else {
            "POP3:       "
        };
        println!("  {stls}    {addr}");
    }
    for addr in &config.listen.pop3s {
        println!("  POP3S:          {addr}");
    }
    for addr in &config.listen.kpop {
        println!("  KPOP:           {addr}");
    }
    for addr in &config.listen.lmtp {
        println!("  LMTP:           {addr}");
    }
    if let Some(g) = &config.auth.gssapi {
        let keytab = g.keytab.as_ref().map_or_else(
            || "the default keytab".to_owned(),
            |k| k.display().to_string(),
        );
        println!(
            "  Kerberos:       {}/{} from {keytab}",
            g.service,
            g.host.clone().unwrap_or_else(|| config.hostname())
        );
    }
    if config.tls.enabled {
        let how = if generated {
            " (self-signed, generated on first start)"
        } else {
            ""
        };
        println!("  certificate:    {}{how}", cert.display());
    }
    if let Some(user) = &config.user {
        println!(
            "  runs as:        {user}{}",
            config
                .group
                .as_ref()
                .map_or(String::new(), |g| format!(":{g}"))
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Replaces values whose key names a secret (`password`, `secret`, `token`) with `<redacted>`.
fn redact(value: &mut toml::Value) {
    match value {
        toml::Value::Table(table) => {
            for (key, v) in table.iter_mut() {
                let key = key.to_ascii_lowercase();
                if ["password", "secret", "token"]
                    .iter()
                    .any(|s| key.contains(s))
                {
                    *v = toml::Value::String("<redacted>".into());
                } else {
                    redact(v);
                }
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// The runtime a one-shot command (`db`, `user` on PostgreSQL, `expire`, ...) runs its async
/// work on: one thread is plenty.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Prints one line of a listing. A reader that stopped reading (`| head`) ends the program
/// quietly instead of making it panic, as `println!` would.
pub(crate) fn say(line: &dyn std::fmt::Display) -> Result<()> {
    use std::io::Write as _;
    match writeln!(std::io::stdout().lock(), "{line}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => other.context("cannot write to standard output"),
    }
}

/// Creates the data directory (mode 0700) if it is missing.
fn create_private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))
}

/// Sets up logging to standard error at the configured level.
fn init_logging(config: &Config) {
    use pop3_server::config::{LogFormat, LogLevel};
    let level = match config.log_level {
        LogLevel::Error => tracing::Level::ERROR,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Debug => tracing::Level::DEBUG,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false);
    match config.log.format {
        // journald stamps each line itself and reads its priority from a `<N>` prefix.
        LogFormat::Text if systemd::stderr_is_journal() => builder
            .event_format(systemd::JournalPriority(
                tracing_subscriber::fmt::format()
                    .with_target(false)
                    .without_time(),
            ))
            .init(),
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
