//! `poplar db init`, the PostgreSQL store as `serve`, `deliver` and `check-config` open it,
//! and `poplar user` on its users table.

use anyhow::{Context, Result};
use pop3_auth::{UserReplica, Users};
use pop3_server::Config;
use pop3_store_postgres::{PgOptions, PgStore, schema, users};
use std::process::ExitCode;
use std::sync::Arc;

/// Where `store.url` points, without anything secret in it (for messages).
fn describe(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => format!(
            "database {} on {}",
            c.get_dbname().unwrap_or("(default)"),
            c.get_hosts()
                .iter()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(name) => name.clone(),
                    tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                })
                .collect::<Vec<_>>()
                .join(",")
        ),
        Err(_) => "store.url".to_owned(),
    }
}

fn url(config: &Config) -> Result<&str> {
    config
        .store
        .url
        .as_deref()
        .context("store.backend = \"postgres\" needs store.url")
}

/// The PostgreSQL store `serve`, `deliver` and `user` use, with the users of its `poplar_users`
/// table in `users` (empty until filled: [`connect_following`] or [`load_users`]).
pub(crate) async fn connect(config: &Config, users: &UserReplica) -> Result<PgStore> {
    let url = url(config)?;
    let options = PgOptions {
        ca_file: config.store.ca_file.clone(),
        pool_size: config.store.pool_size,
        max_message_size: config.limits.max_message_size,
        quotas: config.quota_rules_with_users(&Users::Replica(users.clone())),
    };
    PgStore::connect(url, options)
        .await
        .with_context(|| format!("cannot use the PostgreSQL store ({})", describe(url)))
}

/// The store, with its users read and followed as they change (for `serve`).
pub(crate) async fn connect_following(config: &Config) -> Result<(PgStore, Users)> {
    let replica = UserReplica::new();
    let store = connect(config, &replica).await?;
    store
        .follow_users(replica.clone())
        .await
        .context("cannot read the users table")?;
    Ok((store, Users::Replica(replica)))
}

/// The store, with its users read once (for one-shot commands such as `deliver`).
pub(crate) async fn load_users(config: &Config) -> Result<(PgStore, Arc<pop3_auth::UserDb>)> {
    let replica = UserReplica::new();
    let store = connect(config, &replica).await?;
    let client = store.admin().await?;
    replica.replace(
        users::all(&client)
            .await
            .context("cannot read the users table")?,
    );
    let (db, _) = replica.current()?;
    Ok((store, db))
}

/// `poplar user add|passwd|del|list` on the database's `poplar_users` table.
pub(crate) fn edit_users(config: &Config, cmd: UserEdit) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let store = connect(config, &UserReplica::new()).await?;
        let client = store.admin().await?;
        let url = url(config)?;
        match cmd {
            UserEdit::Add(record) => {
                users::add(&client, &record).await?;
                println!("added user {} to the {}", record.name, describe(url));
            }
            UserEdit::Passwd(name, forms) => {
                users::set_password(&client, &name, &forms).await?;
                println!("password changed for {name}");
            }
            UserEdit::Del(name) => {
                users::remove(&client, &name).await?;
                println!("removed user {name}; the maildrop was kept");
            }
            UserEdit::Import(records) => {
                let mut client = client;
                let added = users::import(&mut client, &records).await?;
                println!(
                    "imported {added} of {} user(s) into the {}; {} already there were left as they are",
                    records.len(),
                    describe(url),
                    records.len() as u64 - added
                );
            }
            UserEdit::List => {
                for record in users::all(&client).await? {
                    println!("{}", record.name);
                }
            }
        }
        Ok(())
    })
}

/// A change `poplar user` makes to the users table.
pub(crate) enum UserEdit {
    /// A new user.
    Add(pop3_auth::UserRecord),
    /// A user's new password forms.
    Passwd(String, Vec<String>),
    /// A user removed.
    Del(String),
    /// Users copied from a passwd-file, hashes as they are.
    Import(Vec<pop3_auth::UserRecord>),
    /// Print every user.
    List,
}

/// `poplar db init`: creates or upgrades the schema; safe to run again.
pub(crate) fn init(config: &Config) -> Result<ExitCode> {
    let url = url(config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut client = pop3_store_postgres::connect_one(url, config.store.ca_file.as_deref())
            .await
            .with_context(|| format!("cannot connect to the {}", describe(url)))?;
        let before = schema::init(&mut client)
            .await
            .with_context(|| format!("cannot set up the {}", describe(url)))?;
        match before {
            0 => println!(
                "created Poplar's schema (version {}) in the {}",
                schema::VERSION,
                describe(url)
            ),
            v if v == schema::VERSION => println!(
                "the {} already has Poplar's schema version {v}; nothing to do",
                describe(url)
            ),
            v => println!(
                "upgraded the {} from schema version {v} to {}",
                describe(url),
                schema::VERSION
            ),
        }
        Ok(ExitCode::SUCCESS)
    })
}
