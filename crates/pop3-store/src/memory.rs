//! An in-memory store for tests: the same contract as the Maildir backend (lock per session,
//! snapshot at open, removal only on commit) without touching the disk.

use crate::error::StoreError;
use crate::{MailStore, Maildrop, MessageInfo};
use pop3_proto::canonical_size;
use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Mailbox {
    locked: bool,
    next_uid: u64,
    messages: Vec<(u64, Arc<Vec<u8>>)>,
}

/// Maildrops held in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    boxes: Arc<Mutex<HashMap<String, Mailbox>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a message to `user`'s maildrop.
    pub fn deliver(&self, user: &str, message: &[u8]) {
        let mut boxes = self.lock();
        let mailbox = boxes.entry(user.to_owned()).or_default();
        mailbox.next_uid += 1;
        let uid = mailbox.next_uid;
        mailbox.messages.push((uid, Arc::new(message.to_vec())));
    }

    /// The messages currently stored for `user`.
    pub fn messages(&self, user: &str) -> Vec<Vec<u8>> {
        self.lock()
            .get(user)
            .map(|m| m.messages.iter().map(|(_, b)| b.to_vec()).collect())
            .unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Mailbox>> {
        self.boxes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A locked in-memory maildrop.
#[derive(Debug)]
pub struct MemoryDrop {
    store: MemoryStore,
    user: String,
    snapshot: Vec<(u64, Arc<Vec<u8>>)>,
}

impl MailStore for MemoryStore {
    type Maildrop = MemoryDrop;

    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn deliver_file(
        &self,
        user: &str,
        prefix: &[u8],
        spool: &std::path::Path,
    ) -> Result<u64, StoreError> {
        let body = std::fs::read(spool).map_err(|e| StoreError::io(spool, e))?;
        if body.is_empty() {
            return Err(StoreError::EmptyMessage);
        }
        let message = [prefix, &body].concat();
        self.deliver(user, &message);
        Ok(message.len() as u64)
    }

    async fn open(&self, user: &str) -> Result<(MemoryDrop, Vec<MessageInfo>), StoreError> {
        let mut boxes = self.lock();
        let mailbox = boxes.entry(user.to_owned()).or_default();
        if mailbox.locked {
            return Err(StoreError::InUse);
        }
        mailbox.locked = true;
        let snapshot = mailbox.messages.clone();
        let listing = snapshot
            .iter()
            .map(|(uid, m)| MessageInfo {
                uidl: format!("mem{uid}"),
                size: canonical_size(m),
                envelope: None,
            })
            .collect();
        Ok((
            MemoryDrop {
                store: self.clone(),
                user: user.to_owned(),
                snapshot,
            },
            listing,
        ))
    }
}

impl Maildrop for MemoryDrop {
    type Reader = Cursor<Vec<u8>>;

    async fn read(&mut self, index: usize) -> Result<Cursor<Vec<u8>>, StoreError> {
        let (_, bytes) = self
            .snapshot
            .get(index)
            .ok_or(StoreError::MessageGone(index))?;
        Ok(Cursor::new(bytes.to_vec()))
    }

    async fn mark_seen(&mut self, _index: usize) -> Result<(), StoreError> {
        Ok(())
    }

    async fn commit(self, deleted: Vec<usize>) -> Result<(), StoreError> {
        let uids: Vec<u64> = deleted
            .iter()
            .filter_map(|&i| self.snapshot.get(i))
            .map(|(u, _)| *u)
            .collect();
        if let Some(mailbox) = self.store.lock().get_mut(&self.user) {
            mailbox.messages.retain(|(uid, _)| !uids.contains(uid));
        }
        Ok(())
    }
}

impl Drop for MemoryDrop {
    fn drop(&mut self) {
        if let Some(mailbox) = self.store.lock().get_mut(&self.user) {
            mailbox.locked = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MessageSource as _;

    #[tokio::test]
    async fn contract() {
        let store = MemoryStore::new();
        store.deliver("u", b"one\n");
        store.deliver("u", b"two");
        let (mut drop1, listing) = store.open("u").await.unwrap();
        assert_eq!(
            listing.iter().map(|m| m.size).collect::<Vec<_>>(),
            vec![5, 5]
        );
        assert!(matches!(store.open("u").await, Err(StoreError::InUse)));
        store.deliver("u", b"three");
        let body = drop1.read(1).await.unwrap().read_to_end().await.unwrap();
        assert_eq!(body, b"two");
        drop1.commit(vec![0]).await.unwrap();
        assert_eq!(
            store.messages("u"),
            vec![b"two".to_vec(), b"three".to_vec()]
        );
        let (drop2, listing) = store.open("u").await.unwrap();
        assert_eq!(listing[0].uidl, "mem2");
        drop(drop2);
        store.open("u").await.unwrap();
    }
}
