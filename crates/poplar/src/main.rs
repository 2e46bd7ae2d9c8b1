//! `poplar`: the one binary. Each subcommand is a thin layer over the library crates; the
//! command-line interface is a contract that scripts and other tools drive, so it stays stable.

#![forbid(unsafe_code)]
// Printing to the terminal is this crate's job; the libraries only log.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod deliver;
mod fetch;
mod migrate;
mod privileges;
mod serve;
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
    /// Download an account's mail from a POP3 server into a Maildir, exactly once, even when
    /// killed: `poplar fetch pop3s://USER@HOST --to maildir:PATH [--keep]`.
    Fetch(fetch::FetchArgs),
    /// Move a maildrop from another server (its Maildir on disk, or live over POP3) keeping every
    /// UIDL, so clients that leave mail on the server download nothing again. Repeatable;
    /// never changes the source.
    Migrate(migrate::MigrateArgs),
    /// Check a configuration and the files it names; explain any problem.
    CheckConfig(Common),
    /// Load generator and benchmark helpers (see docs/benchmarks.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
struct Common {
    /// The configuration file (TOML). Without it the embedded defaults apply.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The data directory (overrides `data_dir` from the configuration).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
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
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user (NAME or NAME@DOMAIN); the password is hashed with ARGON2ID.
    Add(UserPasswordArgs),
    /// Change a user's password.
    Passwd(UserPasswordArgs),
    /// Remove a user from the users file (the maildrop is kept).
    Del(UserNameArgs),
    /// List the users.
    List(Common),
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
    /// Judge as of this Unix time instead of now, e.g. what a run in a week would remove:
    /// `--dry-run --as-of $(date -d '+7 days' +%s)`.
    #[arg(long, value_name = "UNIX_SECONDS")]
    as_of: Option<u64>,
    #[command(flatten)]
    common: Common,
}

/// sysexits.h EX_CONFIG: the configuration is unusable.
const EX_CONFIG: u8 = 78;

impl Common {
    /// The configuration: the file if given, else the embedded defaults; `--data-dir` wins.
    fn load(&self) -> Result<Config> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read the configuration file {}", path.display())
                })?;
                Config::parse(&text).with_context(|| format!("in {}", path.display()))?
            }
            None => Config::default(),
        };
        if let Some(dir) = &self.data_dir {
            config.data_dir.clone_from(dir);
        }
        Ok(config)
    }

    /// Whether the embedded default is in use (no configuration file).
    fn embedded(&self) -> bool {
        self.config.is_none()
    }
}

fn main() -> ExitCode {
    privileges::private_umask();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::User(cmd) => user::run(cmd),
        Command::Deliver(args) => return deliver::run(&args),
        Command::Expire(args) => expire(&args),
        Command::Migrate(args) => migrate::run(&args),
        Command::Fetch(args) => fetch::run(&args),
        Command::CheckConfig(common) => check_config(&common),
        Command::Bench(cmd) => bench::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("poplar: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn expire(args: &ExpireArgs) -> Result<ExitCode> {
    let config = args.common.load()?;
    init_logging(config.log_level);
    privileges::become_configured_user(&config, false)?;
    let policy = config.expire_policy();
    if !policy.purges() {
        println!(
            "nothing to do: no user has a retention period in days (pop3.expire, pop3.expire_overrides)"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let now = args.as_of.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let report = pop3_server::expire::purge(&config.maildir_store(), &policy, now, args.dry_run);
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

fn check_config(common: &Common) -> Result<ExitCode> {
    let config = match common.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("poplar: {e:#}");
            return Ok(ExitCode::from(EX_CONFIG));
        }
    };
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
    if errors > 0 {
        println!("{errors} error(s): `poplar serve` would refuse to start.");
        return Ok(ExitCode::from(EX_CONFIG));
    }
    let (cert, _, generated) = config.tls_files();
    println!("configuration OK");
    println!("  data directory: {}", config.data_dir.display());
    println!("  users file:     {}", config.users_file().display());
    for addr in &config.listen.pop3 {
        println!("  POP3 (STLS):    {addr}");
    }
    for addr in &config.listen.pop3s {
        println!("  POP3S:          {addr}");
    }
    if config.tls.enabled {
        let how = if generated {
            " (self-signed, generated on first start)"
        } else {
            ""
        };
        println!("  certificate:    {}{how}", cert.display());
    }
    Ok(ExitCode::SUCCESS)
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
fn init_logging(level: pop3_server::config::LogLevel) {
    use pop3_server::config::LogLevel;
    let level = match level {
        LogLevel::Error => tracing::Level::ERROR,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Debug => tracing::Level::DEBUG,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .init();
}
