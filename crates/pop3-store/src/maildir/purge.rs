//! The retention purge: removing, through the same path as a QUIT, the messages whose period
//! since their first retrieval (see [`super::retention`]) has passed.

use super::*;

pub use crate::Expired;

impl crate::Retention for MaildirStore {
    /// Every maildrop (a listing of the root): the retrieval record is read per maildrop.
    async fn retaining_users(&self) -> Result<Vec<String>, StoreError> {
        let store = self.clone();
        blocking(move || store.users_blocking()).await
    }

    async fn expire(
        &self,
        user: &str,
        days: u32,
        now: u64,
        dry_run: bool,
    ) -> Result<Vec<Expired>, StoreError> {
        let (store, user) = (self.clone(), user.to_owned());
        blocking(move || store.expire_blocking(&user, days, now, dry_run)).await
    }
}

impl MaildirStore {
    /// Removes from `user`'s maildrop the messages first retrieved at least `days` days before
    /// `now` (Unix seconds), or only lists them when `dry_run`. Messages never retrieved are
    /// never touched. Fails with [`StoreError::InUse`] while a POP3 session holds the maildrop.
    pub fn expire_blocking(
        &self,
        user: &str,
        days: u32,
        now: u64,
        dry_run: bool,
    ) -> Result<Vec<Expired>, StoreError> {
        let dir = self.maildir_path(user)?;
        if !retention::exists(&dir) {
            return Ok(Vec::new());
        }
        let (mut drop, listing) = self.open_blocking(user)?;
        let mut record = retention::read(&dir)?;
        let cutoff = now.saturating_sub(u64::from(days) * 86_400);
        let mut due = Vec::new();
        let mut expired = Vec::new();
        for (i, info) in listing.iter().enumerate() {
            let Some(entry) = drop.entry(i) else { continue };
            if let Some(&at) = record.get(&entry.base).filter(|&&at| at <= cutoff) {
                due.push(i);
                expired.push(Expired {
                    uidl: info.uidl.clone(),
                    size: info.size,
                    retrieved_at: at,
                });
            }
        }
        if dry_run {
            return Ok(expired);
        }
        let removed = if due.is_empty() {
            Ok(())
        } else {
            drop.remove(due)
        };
        // Keep only records of messages still in the maildrop (whatever removed the others).
        let present: HashSet<&str> = drop
            .indexed
            .entries
            .iter()
            .map(|e| e.base.as_str())
            .collect();
        let files = scan(&dir)?;
        record.retain(|base, _| present.contains(base.as_str()) && files.contains_key(base));
        retention::rewrite(&dir, &record)?;
        removed.map(|()| expired)
    }

    /// Every user with a maildrop under the root, by the names [`MailStore::open`] takes
    /// (`local@domain`, or `local` for the default domain).
    pub fn users_blocking(&self) -> Result<Vec<String>, StoreError> {
        let root = &self.inner.root;
        let mut users = Vec::new();
        let domains = match fs::read_dir(root) {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(users),
            Err(e) => return Err(StoreError::io(root, e)),
        };
        for domain in domains.flatten() {
            let Ok(domain_name) = domain.file_name().into_string() else {
                continue;
            };
            let Ok(locals) = fs::read_dir(domain.path()) else {
                continue;
            };
            for local in locals.flatten() {
                let Ok(local_name) = local.file_name().into_string() else {
                    continue;
                };
                if !local.path().join("Maildir").is_dir() {
                    continue;
                }
                let user = if domain_name == crate::DEFAULT_DOMAIN {
                    local_name
                } else {
                    format!("{local_name}@{domain_name}")
                };
                if MailboxPath::parse(&user).is_ok() {
                    users.push(user);
                }
            }
        }
        users.sort();
        Ok(users)
    }
}
