//! `poplar db init`, the PostgreSQL store as `serve`, `deliver` and `check-config` open it,
//! and `poplar user` on its users table.

use anyhow::{Context, Result};
use pop3_auth::{UserReplica, Users};
use pop3_server::Config;
use pop3_store_postgres::{PgCluster, PgOptions, schema, users};
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

/// Every database of `store.url`, in shard order.
fn urls(config: &Config) -> Result<Vec<&str>> {
    let urls = config
        .store
        .url
        .as_ref()
        .map(|u| u.list())
        .unwrap_or_default();
    anyhow::ensure!(
        !urls.is_empty(),
        "store.backend = \"postgres\" needs store.url"
    );
    Ok(urls)
}

/// The databases of `store.url` for messages: one, or each shard's.
fn describe_all(urls: &[&str]) -> String {
    match urls {
        [one] => describe(one),
        many => many
            .iter()
            .enumerate()
            .map(|(i, u)| format!("shard {i}: {}", describe(u)))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// The PostgreSQL store `serve`, `deliver` and `user` use, with the users of its `poplar_users`
/// table in `users` (empty until filled: [`connect_following`] or [`load_users`]).
pub(crate) async fn connect(config: &Config, users: &UserReplica) -> Result<PgCluster> {
    let urls = urls(config)?;
    let options = PgOptions {
        ca_file: config.store.ca_file.clone(),
        pool_size: config.store.pool_size,
        max_message_size: config.limits.max_message_size,
        quotas: config.quota_rules_with_users(&Users::Replica(users.clone())),
    };
    PgCluster::connect(&urls, options)
        .await
        .with_context(|| format!("cannot use the PostgreSQL store ({})", describe_all(&urls)))
}

/// The store, with its users read and followed as they change (for `serve`).
pub(crate) async fn connect_following(config: &Config) -> Result<(PgCluster, Users)> {
    let replica = UserReplica::new();
    let store = connect(config, &replica).await?;
    store
        .follow_users(replica.clone())
        .await
        .context("cannot read the users table")?;
    Ok((store, Users::Replica(replica)))
}

/// [`connect_following`] for `serve`, waiting for a database that cannot be reached yet (a
/// node started before PostgreSQL, or during its restart) with a growing pause between tries;
/// what an operator must fix (a refused password or certificate, an old schema) fails at once.
pub(crate) async fn connect_following_patiently(config: &Config) -> Result<(PgCluster, Users)> {
    let mut pause = std::time::Duration::from_secs(1);
    loop {
        match connect_following(config).await {
            Err(e)
                if e.chain().any(|c| {
                    matches!(
                        c.downcast_ref::<pop3_store_postgres::PgError>(),
                        Some(pop3_store_postgres::PgError::Unreachable(_))
                    )
                }) =>
            {
                tracing::warn!("{e:#}; trying again in {} s", pause.as_secs());
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(30));
            }
            done => return done,
        }
    }
}

/// The store, with its users read once (for one-shot commands such as `deliver`).
pub(crate) async fn load_users(config: &Config) -> Result<(PgCluster, Arc<pop3_auth::UserDb>)> {
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
    let runtime = crate::runtime()?;
    runtime.block_on(async {
        let store = connect(config, &UserReplica::new()).await?;
        let client = store.admin().await?;
        let url = urls(config)?[0];
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
        }
        Ok(())
    })
}

/// Every user name in the users table, in order.
pub(crate) fn user_names(config: &Config) -> Result<Vec<String>> {
    let runtime = crate::runtime()?;
    runtime.block_on(async {
        let store = connect(config, &UserReplica::new()).await?;
        let client = store.admin().await?;
        Ok(users::all(&client)
            .await?
            .into_iter()
            .map(|r| r.name)
            .collect())
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
}

/// `poplar db init`: creates or upgrades the schema in every database of `store.url`; safe
/// to run again.
pub(crate) fn init(config: &Config) -> Result<ExitCode> {
    let urls = urls(config)?;
    let runtime = crate::runtime()?;
    runtime.block_on(async {
        for url in urls {
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
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `poplar db move-user NAME --to SHARD`: moves a maildrop between shards, every UIDL kept.
pub(crate) fn move_user(config: &Config, name: &str, to: usize) -> Result<ExitCode> {
    let urls = urls(config)?;
    let runtime = crate::runtime()?;
    runtime.block_on(async {
        let store = connect(config, &UserReplica::new()).await?;
        let started = std::time::Instant::now();
        let moved = store.move_user(name, to).await.map_err(|e| match e {
            pop3_store::StoreError::InUse => anyhow::anyhow!(
                "{name}'s maildrop is in use by a POP3 session; try again when it has ended"
            ),
            other => anyhow::Error::new(other).context(format!("cannot move {name}")),
        })?;
        if moved.from == to {
            println!(
                "{name} is on shard {to} ({}); nothing to move",
                describe(urls.get(to).copied().unwrap_or_default())
            );
        } else {
            println!(
                "moved {name} from shard {} to shard {to}: {} messages, {} octets, in {:.2} s; every UIDL kept",
                moved.from,
                moved.messages,
                moved.octets,
                started.elapsed().as_secs_f64()
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
