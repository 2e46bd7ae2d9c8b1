//! Users spread over several PostgreSQL databases (shards), each a complete Poplar database:
//! `store.url` lists them, and a user's maildrop lives in exactly one.
//!
//! - **Placement.** The first database also holds `poplar_placements`: which shard each
//!   user's maildrop is in, recorded when the maildrop is first needed. A user without a record
//!   is looked for in every shard (a single database grown into several keeps its users where
//!   they are), and otherwise placed by a stable hash of the name (the first eight octets of
//!   its SHA-256, modulo the number of shards), so that adding a shard moves nobody. Nodes keep
//!   placements they have read in memory.
//! - **Moving** ([`PgCluster::move_user`], `poplar db move-user`) copies a maildrop under its
//!   cluster-wide lock (sessions get `[IN-USE]`) and its counter row's lock (deliveries wait):
//!   every message with its UID, UIDL, sizes, times and body, in one transaction at the
//!   destination; then, in one transaction at the source, the row is marked with the shard it
//!   went to and its messages are deleted; last the placement is updated. A node or delivery
//!   still holding the old placement finds the mark and follows it, so no session or delivery
//!   can land in the old place. Interrupted before the source's commit, nothing has changed
//!   (the copy is discarded by the next attempt); after it, the mark already leads there.
//! - With one database none of this runs: no placement is looked up or recorded.

use crate::{Here, PgError, PgImport, PgMaildrop, PgOptions, PgStore, db};
use pop3_store::{MailStore, MessageInfo, StoreError};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

/// Placements a node keeps in memory before it forgets them all and reads them again.
const CACHED_PLACEMENTS: usize = 200_000;

/// How many times one request follows a moved maildrop before giving up (a move in progress
/// in a loop).
const HOPS: usize = 4;

/// Every shard of `store.url`, the first also holding users and placements.
#[derive(Clone, Debug)]
pub struct PgCluster {
    shards: Arc<[PgStore]>,
    placements: Arc<Mutex<HashMap<String, usize>>>,
}

/// What [`PgCluster::move_user`] moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moved {
    /// The shard it came from.
    pub from: usize,
    /// Messages copied.
    pub messages: u64,
    /// Their stored octets.
    pub octets: u64,
}

/// The shard a stable hash gives `user` among `shards`.
pub fn hashed_shard(user: &str, shards: usize) -> usize {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(user.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // Both fit: the remainder is below `shards`.
    usize::try_from(u64::from_be_bytes(first) % shards.max(1) as u64).unwrap_or(0)
}

impl PgCluster {
    /// Connects to every database in `urls` (at least one), each checked for this build's
    /// schema.
    pub async fn connect(urls: &[&str], options: PgOptions) -> Result<Self, PgError> {
        if urls.is_empty() {
            return Err(PgError::Config("no database given".into()));
        }
        let mut shards = Vec::with_capacity(urls.len());
        for (i, url) in urls.iter().enumerate() {
            let store = PgStore::connect(url, options.clone())
                .await
                .map_err(|e| match e {
                    PgError::Config(why) if urls.len() > 1 => {
                        PgError::Config(format!("shard {i}: {why}"))
                    }
                    other => other,
                })?;
            shards.push(store);
        }
        Ok(Self {
            shards: shards.into(),
            placements: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The first database: users and placements.
    pub fn directory(&self) -> &PgStore {
        &self.shards[0]
    }

    /// How many shards there are.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Whether there are none (never: [`PgCluster::connect`] needs one).
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    fn remember(&self, user: &str, shard: usize) {
        let mut cache = self
            .placements
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHED_PLACEMENTS {
            cache.clear();
        }
        cache.insert(user.to_owned(), shard);
    }

    fn shard(&self, index: i32) -> Result<usize, StoreError> {
        usize::try_from(index)
            .ok()
            .filter(|&i| i < self.shards.len())
            .ok_or_else(|| {
                StoreError::Database(format!(
                    "a maildrop lives in shard {index}, but store.url lists {} database(s)",
                    self.shards.len()
                ))
            })
    }

    /// The shard `user`'s maildrop lives in, recorded if it was not yet.
    pub async fn placement(&self, user: &str) -> Result<usize, StoreError> {
        if self.shards.len() == 1 {
            return Ok(0);
        }
        if let Some(&shard) = self
            .placements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(user)
        {
            return Ok(shard);
        }
        let directory = self.directory().client().await?;
        let find = directory
            .prepare_cached("SELECT shard FROM poplar_placements WHERE name = $1")
            .await
            .map_err(db)?;
        if let Some(row) = directory.query_opt(&find, &[&user]).await.map_err(db)? {
            let shard = self.shard(row.get(0))?;
            self.remember(user, shard);
            return Ok(shard);
        }
        // Not recorded: where a maildrop of that name already is, else where the hash says.
        let mut chosen = hashed_shard(user, self.shards.len());
        for (i, shard) in self.shards.iter().enumerate() {
            let client = shard.client().await?;
            let row = client
                .query_opt(
                    "SELECT 1 FROM poplar_maildrops WHERE name = $1 AND moved_to IS NULL",
                    &[&user],
                )
                .await
                .map_err(db)?;
            if row.is_some() {
                chosen = i;
                break;
            }
        }
        let chosen = i32::try_from(chosen).map_err(db)?;
        directory
            .execute(
                "INSERT INTO poplar_placements (name, shard) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&user, &chosen],
            )
            .await
            .map_err(db)?;
        // Another node may have recorded it first: its record counts.
        let row = directory.query_one(&find, &[&user]).await.map_err(db)?;
        let shard = self.shard(row.get(0))?;
        self.remember(user, shard);
        Ok(shard)
    }

    /// Follows the users table of the first database (see [`PgStore::follow_users`]).
    pub async fn follow_users(&self, replica: pop3_auth::UserReplica) -> Result<(), PgError> {
        self.directory().follow_users(replica).await
    }

    /// A connection to the first database, for administration.
    pub async fn admin(&self) -> Result<deadpool_postgres::Object, PgError> {
        self.directory().admin().await
    }

    /// Does `act` in the shard `user`'s maildrop lives in, following the marks moves left
    /// behind (a stale placement lands on a mark, never on a wrong maildrop).
    async fn where_it_lives<'a, T, F, Fut>(
        &'a self,
        user: &str,
        mut act: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut(&'a PgStore) -> Fut,
        Fut: Future<Output = Result<Here<T>, StoreError>>,
    {
        let mut shard = self.placement(user).await?;
        for _ in 0..HOPS {
            match act(&self.shards[shard]).await? {
                Here::Yes(done) => return Ok(done),
                Here::MovedTo(next) => {
                    shard = self.shard(next)?;
                    self.remember(user, shard);
                }
            }
        }
        Err(still_moving(user))
    }

    /// Locks `user`'s maildrop, in whichever shard it lives, for `poplar migrate`.
    pub async fn import_to(&self, user: &str) -> Result<PgImport, StoreError> {
        self.where_it_lives(user, |shard| shard.import_here(user))
            .await
    }

    /// Moves `user`'s maildrop to shard `to`, keeping every UID and UIDL. Fails with
    /// [`StoreError::InUse`] while a session holds it.
    pub async fn move_user(&self, user: &str, to: usize) -> Result<Moved, StoreError> {
        if to >= self.shards.len() {
            return Err(StoreError::Database(format!(
                "there is no shard {to}: store.url lists {} database(s), numbered from 0",
                self.shards.len()
            )));
        }
        let mut from = self.placement(user).await?;
        // Follow marks left by earlier moves to where the maildrop is now.
        let mut found = None;
        for _ in 0..HOPS {
            let client = self.shards[from].client().await?;
            let row = client
                .query_opt(
                    "SELECT id, moved_to FROM poplar_maildrops WHERE name = $1",
                    &[&user],
                )
                .await
                .map_err(db)?;
            match row.map(|r| (r.get::<_, i64>(0), r.get::<_, Option<i32>>(1))) {
                Some((_, Some(next))) => from = self.shard(next)?,
                Some((id, None)) => {
                    found = Some(id);
                    break;
                }
                None => break,
            }
        }
        let mut report = Moved {
            from,
            ..Moved::default()
        };
        if from != to
            && let Some(id) = found
        {
            let source = &self.shards[from];
            let generation = source.lock(id).await?;
            let copied = copy(source, &self.shards[to], user, id, to).await;
            source.unlock(id, generation).await;
            (report.messages, report.octets) = copied?;
        }
        let to_index = i32::try_from(to).map_err(db)?;
        self.directory()
            .client()
            .await?
            .execute(
                "INSERT INTO poplar_placements (name, shard) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET shard = EXCLUDED.shard",
                &[&user, &to_index],
            )
            .await
            .map_err(db)?;
        self.remember(user, to);
        Ok(report)
    }
}

fn still_moving(user: &str) -> StoreError {
    StoreError::Database(format!("{user}'s maildrop is being moved; try again"))
}

/// Copies maildrop `id` of `source` to `target` (shard `to`), marks it moved and empties it;
/// the caller holds its lock. Returns the messages and octets copied.
async fn copy(
    source: &PgStore,
    target: &PgStore,
    user: &str,
    id: i64,
    to: usize,
) -> Result<(u64, u64), StoreError> {
    let mut src = source.client().await?;
    let mut dst = target.client().await?;
    // Reads a chunk at a time, on a connection of its own, outside both transactions.
    let reader = source.client().await?;
    let src_tx = src.transaction().await.map_err(db)?;
    // Deliveries to the maildrop wait here until the move is done, then follow it.
    let row = src_tx
        .query_one(
            "SELECT next_uid, uidvalidity FROM poplar_maildrops WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await
        .map_err(db)?;
    let (next_uid, uidvalidity): (i64, i64) = (row.get(0), row.get(1));
    let messages = src_tx
        .query(
            "SELECT uid, uidl, size, octets, received, retrieved, envelope_from, envelope_to, origin \
             FROM poplar_messages WHERE maildrop = $1 ORDER BY uid",
            &[&id],
        )
        .await
        .map_err(db)?;
    let dst_tx = dst.transaction().await.map_err(db)?;
    // What an interrupted earlier move left, or the mark of a move away from here.
    dst_tx
        .execute("DELETE FROM poplar_maildrops WHERE name = $1", &[&user])
        .await
        .map_err(db)?;
    let new_id: i64 = dst_tx
        .query_one(
            "INSERT INTO poplar_maildrops (name, next_uid, uidvalidity) VALUES ($1, $2, $3) RETURNING id",
            &[&user, &next_uid, &uidvalidity],
        )
        .await
        .map_err(db)?
        .get(0);
    let insert_message = dst_tx
        .prepare(
            "INSERT INTO poplar_messages \
             (maildrop, uid, uidl, size, octets, received, retrieved, envelope_from, envelope_to, origin) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .await
        .map_err(db)?;
    let insert_chunk = dst_tx
        .prepare("INSERT INTO poplar_chunks (maildrop, uid, seq, data) VALUES ($1, $2, $3, $4)")
        .await
        .map_err(db)?;
    let read_chunk = reader
        .prepare("SELECT data FROM poplar_chunks WHERE maildrop = $1 AND uid = $2 AND seq = $3")
        .await
        .map_err(db)?;
    let mut octets_total = 0u64;
    for m in &messages {
        let uid: i64 = m.get(0);
        let octets: i64 = m.get(3);
        let received: std::time::SystemTime = m.get(4);
        let retrieved: Option<std::time::SystemTime> = m.get(5);
        let (from, to_addr, origin): (Option<String>, Option<String>, Option<String>) =
            (m.get(6), m.get(7), m.get(8));
        dst_tx
            .execute(
                &insert_message,
                &[
                    &new_id,
                    &uid,
                    &m.get::<_, String>(1),
                    &m.get::<_, i64>(2),
                    &octets,
                    &received,
                    &retrieved,
                    &from,
                    &to_addr,
                    &origin,
                ],
            )
            .await
            .map_err(db)?;
        let chunks = u64::try_from(octets)
            .unwrap_or(0)
            .div_ceil(crate::schema::CHUNK as u64);
        for seq in 0..i32::try_from(chunks).map_err(db)? {
            let data: Vec<u8> = reader
                .query_one(&read_chunk, &[&id, &uid, &seq])
                .await
                .map_err(db)?
                .get(0);
            dst_tx
                .execute(&insert_chunk, &[&new_id, &uid, &seq, &data])
                .await
                .map_err(db)?;
        }
        octets_total += u64::try_from(octets).unwrap_or(0);
    }
    dst_tx.commit().await.map_err(db)?;
    let to_index = i32::try_from(to).map_err(db)?;
    src_tx
        .execute(
            "UPDATE poplar_maildrops SET moved_to = $2 WHERE id = $1",
            &[&id, &to_index],
        )
        .await
        .map_err(db)?;
    src_tx
        .execute("DELETE FROM poplar_messages WHERE maildrop = $1", &[&id])
        .await
        .map_err(db)?;
    src_tx.commit().await.map_err(db)?;
    Ok((messages.len() as u64, octets_total))
}

impl MailStore for PgCluster {
    type Maildrop = PgMaildrop;

    /// Every shard must answer: a user on a silent one could not log in.
    async fn check(&self) -> Result<(), StoreError> {
        for shard in self.shards.iter() {
            shard.check_here().await?;
        }
        Ok(())
    }

    async fn open(&self, user: &str) -> Result<(PgMaildrop, Vec<MessageInfo>), StoreError> {
        self.where_it_lives(user, |shard| shard.open_here(user))
            .await
    }

    /// Kept in the first database, with the users: logins do not depend on where mail lives.
    async fn admit_login(
        &self,
        user: &str,
        delay: std::time::Duration,
    ) -> Result<Option<bool>, StoreError> {
        self.directory().admit_login(user, delay).await
    }

    async fn deliver_file(
        &self,
        user: &str,
        prefix: &[u8],
        spool: &Path,
    ) -> Result<u64, StoreError> {
        self.where_it_lives(user, |shard| shard.deliver_here(user, prefix, spool))
            .await
    }
}

impl pop3_store::Retention for PgCluster {
    async fn retaining_users(&self) -> Result<Vec<String>, StoreError> {
        let mut users = Vec::new();
        for shard in self.shards.iter() {
            users.extend(shard.retaining_users().await?);
        }
        users.sort_unstable();
        users.dedup();
        Ok(users)
    }

    async fn expire(
        &self,
        user: &str,
        days: u32,
        now: u64,
        dry_run: bool,
    ) -> Result<Vec<pop3_store::Expired>, StoreError> {
        let shard = self.placement(user).await?;
        self.shards[shard].expire(user, days, now, dry_run).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_stable_and_spreads_users() {
        // Fixed forever: a placement computed by another build must agree.
        assert_eq!(
            ["alice", "bob", "carol", "dave"].map(|u| (hashed_shard(u, 2), hashed_shard(u, 3))),
            [(1, 2), (0, 2), (0, 2), (1, 1)]
        );
        assert_eq!(hashed_shard("anyone", 1), 0);
        let on_first = (0..1000)
            .filter(|i| hashed_shard(&format!("user{i}"), 2) == 0)
            .count();
        assert!((400..600).contains(&on_first), "{on_first}");
    }
}
