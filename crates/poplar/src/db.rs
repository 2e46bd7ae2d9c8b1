//! `poplar db init` and the PostgreSQL store as `serve` and `deliver` open it.

use anyhow::{Context, Result};
use pop3_server::Config;
use pop3_store_postgres::{PgOptions, PgStore, schema};
use std::process::ExitCode;

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

/// The PostgreSQL store `serve` and `deliver` use.
pub(crate) async fn connect(config: &Config) -> Result<PgStore> {
    let url = url(config)?;
    let options = PgOptions {
        ca_file: config.store.ca_file.clone(),
        pool_size: config.store.pool_size,
        max_message_size: config.limits.max_message_size,
        quotas: config.quota_rules_with_users(&pop3_auth::UserDbFile::new(config.users_file())),
    };
    PgStore::connect(url, options)
        .await
        .with_context(|| format!("cannot use the PostgreSQL store ({})", describe(url)))
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
