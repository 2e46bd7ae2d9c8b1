//! `poplar user add|passwd|del|list`: on the users file, or on the database's users table when
//! the store is PostgreSQL (every node sees the change at once).

use crate::UserCommand;
use crate::db::UserEdit;
use anyhow::{Context, Result, bail};
use pop3_auth::{scheme, userdb::edit};
use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

pub(crate) fn run(cmd: UserCommand) -> Result<ExitCode> {
    match cmd {
        UserCommand::Add(args) => {
            let config = args.common.load()?;
            args.common.announce(&config);
            crate::privileges::become_configured_user(&config, false)?;
            let path = config.users_file();
            let name = config.login_rules().canonical(&args.name);
            pop3_auth::userdb::validate_name(&name)?;
            pop3_store::MailboxPath::parse(&name)?;
            let forms = hash_forms(
                &args.schemes,
                read_password(args.password_stdin)?.as_bytes(),
            )?;
            if in_database(&config) {
                let record = pop3_auth::UserRecord::with_forms(name, &forms, "");
                crate::db::edit_users(&config, UserEdit::Add(record))?;
                return Ok(ExitCode::SUCCESS);
            }
            edit::add(&path, &name, &forms)?;
            println!("added user {name} to {}", path.display());
        }
        UserCommand::Passwd(args) => {
            let config = args.common.load()?;
            args.common.announce(&config);
            crate::privileges::become_configured_user(&config, false)?;
            let path = config.users_file();
            let name = config.login_rules().canonical(&args.name);
            if in_database(&config) {
                let forms = hash_forms(
                    &args.schemes,
                    read_password(args.password_stdin)?.as_bytes(),
                )?;
                crate::db::edit_users(&config, UserEdit::Passwd(name, forms))?;
                return Ok(ExitCode::SUCCESS);
            }
            let listed = edit::list(&path)?;
            if !listed
                .iter()
                .any(|n| pop3_auth::directory::normalize_name(n) == name)
            {
                bail!("no such user {name:?} in {}", path.display());
            }
            let forms = hash_forms(
                &args.schemes,
                read_password(args.password_stdin)?.as_bytes(),
            )?;
            edit::set_password(&path, &name, &forms)?;
            println!("password changed for {name}");
        }
        UserCommand::Del(args) => {
            let config = args.common.load()?;
            args.common.announce(&config);
            crate::privileges::become_configured_user(&config, false)?;
            let name = config.login_rules().canonical(&args.name);
            if in_database(&config) {
                crate::db::edit_users(&config, UserEdit::Del(name))?;
                return Ok(ExitCode::SUCCESS);
            }
            let path = config.users_file();
            edit::remove(&path, &name)?;
            let store = config.maildir_store();
            println!("removed user {name}; the maildrop was kept");
            if config.store.backend == pop3_server::config::StoreBackend::Maildir
                && let Ok(dir) = store.maildir_path(&name)
            {
                println!(
                    "  delete {} yourself once its mail is no longer needed",
                    dir.display()
                );
            }
        }
        UserCommand::Import(args) => {
            let config = args.common.load()?;
            args.common.announce(&config);
            if !in_database(&config) {
                bail!(
                    "with the maildir store the users file is a passwd-file already: copy {} to {} (or point auth.users_file at it)",
                    args.file.display(),
                    config.users_file().display()
                );
            }
            let text = std::fs::read_to_string(&args.file)
                .with_context(|| format!("cannot read {}", args.file.display()))?;
            let (records, warnings) = pop3_auth::UserDb::records(&text);
            for w in &warnings {
                eprintln!(
                    "{} line {}: {} (skipped)",
                    args.file.display(),
                    w.line,
                    w.reason
                );
            }
            let mut usable = Vec::new();
            for (line, record) in records {
                match pop3_auth::userdb::validate_name(&record.name) {
                    Ok(()) => usable.push(record),
                    Err(e) => eprintln!("{} line {line}: {e} (skipped)", args.file.display()),
                }
            }
            crate::db::edit_users(&config, UserEdit::Import(usable))?;
        }
        UserCommand::List(args) => {
            let config = args.common.load()?;
            let names = if in_database(&config) {
                crate::db::user_names(&config)?
            } else {
                edit::list(&config.users_file())?
            };
            let domain = args
                .domain
                .as_deref()
                .map(pop3_auth::directory::normalize_domain);
            let in_domain = |name: &String| match &domain {
                None => true,
                Some(d) => pop3_auth::directory::normalize_name(name)
                    .rsplit_once('@')
                    .is_some_and(|(_, own)| own == d),
            };
            for name in names.into_iter().filter(in_domain) {
                if args.json {
                    crate::say(&serde_json::json!({ "user": name }))?;
                } else {
                    crate::say(&name)?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether users live in the database (a PostgreSQL store) rather than the users file.
fn in_database(config: &pop3_server::Config) -> bool {
    config.store.backend == pop3_server::config::StoreBackend::Postgres
}

/// The password hashed in each requested scheme.
fn hash_forms(schemes: &[String], password: &[u8]) -> Result<Vec<String>> {
    let mut forms = Vec::new();
    for s in schemes {
        let s = s.trim().to_ascii_uppercase();
        if !scheme::WRITABLE.contains(&s.as_str()) {
            bail!(
                "cannot store passwords as {s}; choose from {}",
                scheme::WRITABLE.join(", ")
            );
        }
        forms.push(scheme::hash(&s, password)?);
    }
    if forms.is_empty() {
        bail!("--schemes is empty");
    }
    Ok(forms)
}

fn read_password(from_stdin: bool) -> Result<String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        if !std::io::stdin().is_terminal() {
            bail!(
                "standard input is not a terminal: pass --password-stdin to read the password from it"
            );
        }
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Again: ")?;
        if first != second {
            bail!("the passwords differ");
        }
        first
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
}
