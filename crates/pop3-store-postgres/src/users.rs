//! Users in the cluster's database, table `poplar_users`: one row per user with the
//! passwd-file's password field (`{SCHEME}data`, so a Dovecot SQL passdb can be pointed at the
//! same table) and its extra fields (further forms of the password, quota rules).
//!
//! Every node keeps a replica in memory ([`pop3_auth::UserReplica`]) and follows the table: a
//! trigger announces each changed name on the channel `poplar_users` (`NOTIFY`), and the node
//! re-reads just those rows, so a user added or a password changed on one node, or by any SQL
//! client, counts on every node a moment later. The follower listens before it reads the table,
//! so no change falls between the two; if its connection ends, the node keeps answering from
//! the last copy and reads the whole table again once it is back.

use crate::{PgError, PgStore, chain};
use pop3_auth::{UserRecord, UserReplica};
use std::time::Duration;
use tokio_postgres::{AsyncMessage, Client};

/// The notification channel the table's trigger announces changed names on; an empty name
/// means "read everything again" (after TRUNCATE).
pub const CHANNEL: &str = "poplar_users";

/// Changed names gathered at once above which the whole table is read again.
const RELOAD_ABOVE: usize = 1000;

/// The `application_name` of the connection that follows the users table.
pub const FOLLOWER: &str = "poplar: users follower";

/// How long a follower gathers announcements before applying them: a bulk import of
/// thousands of users rebuilds the replica a few times, not thousands.
const GATHER: Duration = Duration::from_millis(20);

fn record(row: &tokio_postgres::Row) -> UserRecord {
    UserRecord {
        name: row.get(0),
        password: row.get(1),
        extra: row.get(2),
    }
}

/// Every user's record.
pub async fn all(client: &Client) -> Result<Vec<UserRecord>, PgError> {
    Ok(client
        .query(
            "SELECT name, password, extra FROM poplar_users ORDER BY name",
            &[],
        )
        .await?
        .iter()
        .map(record)
        .collect())
}

/// Adds a user; [`PgError::UserExists`] when the name is taken.
pub async fn add(client: &Client, record: &UserRecord) -> Result<(), PgError> {
    let added = client
        .execute(
            "INSERT INTO poplar_users (name, password, extra) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
            &[&record.name, &record.password, &record.extra],
        )
        .await?;
    if added == 0 {
        return Err(PgError::UserExists(record.name.clone()));
    }
    Ok(())
}

/// Adds every record whose name is not taken yet, in one transaction; returns how many were
/// added (the others are left as they are). Rows go in batches of [`IMPORT_BATCH`], one
/// statement each.
pub async fn import(client: &mut Client, records: &[UserRecord]) -> Result<u64, PgError> {
    let tx = client.transaction().await?;
    let insert = tx
        .prepare(
            "INSERT INTO poplar_users (name, password, extra) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) \
             ON CONFLICT (name) DO NOTHING",
        )
        .await?;
    let mut added = 0;
    for batch in records.chunks(IMPORT_BATCH) {
        let column = |f: fn(&UserRecord) -> &str| batch.iter().map(f).collect::<Vec<&str>>();
        let (names, passwords, extras) = (
            column(|r| &r.name),
            column(|r| &r.password),
            column(|r| &r.extra),
        );
        added += tx.execute(&insert, &[&names, &passwords, &extras]).await?;
    }
    tx.commit().await?;
    Ok(added)
}

/// Users per statement of [`import`].
const IMPORT_BATCH: usize = 5000;

/// Replaces a user's password forms, keeping the other extra fields; [`PgError::NoSuchUser`]
/// when there is no such user.
pub async fn set_password(client: &Client, name: &str, forms: &[String]) -> Result<(), PgError> {
    // Compare-and-set, so that a concurrent change of the extra fields is not lost.
    loop {
        let Some(row) = client
            .query_opt("SELECT extra FROM poplar_users WHERE name = $1", &[&name])
            .await?
        else {
            return Err(PgError::NoSuchUser(name.to_owned()));
        };
        let before: String = row.get(0);
        let new = UserRecord::with_forms(name.to_owned(), forms, &before);
        let changed = client
            .execute(
                "UPDATE poplar_users SET password = $2, extra = $3 WHERE name = $1 AND extra = $4",
                &[&name, &new.password, &new.extra, &before],
            )
            .await?;
        if changed == 1 {
            return Ok(());
        }
    }
}

/// Removes a user (not the maildrop); [`PgError::NoSuchUser`] when there is no such user.
pub async fn remove(client: &Client, name: &str) -> Result<(), PgError> {
    let gone = client
        .execute("DELETE FROM poplar_users WHERE name = $1", &[&name])
        .await?;
    if gone == 0 {
        return Err(PgError::NoSuchUser(name.to_owned()));
    }
    Ok(())
}

impl PgStore {
    /// Fills `replica` with every user, then keeps it current in a task of its own until the
    /// store is dropped. Fails when the table cannot be read the first time.
    pub async fn follow_users(&self, replica: UserReplica) -> Result<(), PgError> {
        let (client, mut notices) = self.listen().await?;
        replica.replace(all(&client).await?);
        tracing::info!(users = replica.len(), "read the users table");
        let weak = std::sync::Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut client = Some(client);
            loop {
                if let Some(c) = &client {
                    if let Err(e) = follow(c, &mut notices, &replica).await {
                        tracing::warn!(
                            "lost the connection that follows the users table ({}); logins use the last copy until it is back",
                            chain(&e)
                        );
                    }
                    client = None;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(inner) = weak.upgrade() else { return };
                let store = PgStore { inner };
                match store.listen().await {
                    Ok((c, n)) => match all(&c).await {
                        Ok(records) => {
                            replica.replace(records);
                            tracing::info!(users = replica.len(), "read the users table again");
                            client = Some(c);
                            notices = n;
                        }
                        Err(e) => tracing::debug!("cannot read the users table yet: {e}"),
                    },
                    Err(e) => tracing::debug!("cannot follow the users table yet: {e}"),
                }
            }
        });
        Ok(())
    }

    /// A connection listening on [`CHANNEL`], and the names it announces.
    async fn listen(
        &self,
    ) -> Result<(Client, tokio::sync::mpsc::UnboundedReceiver<String>), PgError> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = self
            .connect_with(Box::new(move |message| {
                if let AsyncMessage::Notification(n) = message {
                    let _ = tx.send(n.payload().to_owned());
                }
            }))
            .await?;
        // Named, so that an operator can tell it in pg_stat_activity.
        client
            .batch_execute(&format!(
                "SET application_name = '{FOLLOWER}'; LISTEN {CHANNEL}"
            ))
            .await?;
        Ok((client, rx))
    }
}

/// Applies announced changes until the connection ends.
async fn follow(
    client: &Client,
    notices: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    replica: &UserReplica,
) -> Result<(), tokio_postgres::Error> {
    let select = client
        .prepare("SELECT name, password, extra FROM poplar_users WHERE name = ANY($1)")
        .await?;
    // The sender goes with the connection's driver: the channel closes when the connection does.
    while let Some(first) = notices.recv().await {
        let mut names = vec![first];
        tokio::time::sleep(GATHER).await;
        while let Ok(more) = notices.try_recv() {
            names.push(more);
        }
        names.sort_unstable();
        names.dedup();
        // An empty name: TRUNCATE. Many names (a bulk import): one read of the whole table
        // costs less than a query with every name.
        if names.len() > RELOAD_ABOVE || names.iter().any(String::is_empty) {
            replica.replace(
                client
                    .query("SELECT name, password, extra FROM poplar_users", &[])
                    .await?
                    .iter()
                    .map(record),
            );
            continue;
        }
        let rows = client.query(&select, &[&names]).await?;
        let mut found: std::collections::HashMap<String, UserRecord> = rows
            .iter()
            .map(|r| {
                let r = record(r);
                (r.name.clone(), r)
            })
            .collect();
        replica.apply(names.into_iter().map(|n| {
            let r = found.remove(&n);
            (n, r)
        }));
        tracing::debug!(users = replica.len(), "users table changed");
    }
    // Ended: make the caller find out why (the client's next use fails).
    client.simple_query("SELECT 1").await.map(|_| ())
}
