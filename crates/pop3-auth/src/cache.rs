//! Verified credentials, remembered for a while in memory only, so a client that polls every
//! few minutes with the same password does not pay for an Argon2 check each time.
//!
//! What is kept is not the password: it is an HMAC-SHA-256, under a key drawn at random when
//! the process starts and never stored, of the user name, the stored password forms and the
//! password that matched them. A later login with the same password finds its tag in
//! microseconds. A wrong password makes a different tag, so it never matches and always pays
//! the full check. A changed password (users file, `poplar user passwd`, the PostgreSQL table)
//! changes the stored forms and with them every tag: the old password stops matching at once,
//! with nothing to invalidate. Entries expire after the configured time and the least recently
//! used go first when the cache is full; nothing of it is ever written anywhere.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Remembered logins.
#[derive(Debug)]
pub struct CredentialCache {
    key: [u8; 32],
    ttl: Duration,
    entries: Mutex<lru::LruCache<[u8; 32], Instant>>,
    hits: AtomicU64,
}

impl CredentialCache {
    /// A cache keeping each verified login for `ttl`, at most `capacity` of them.
    pub fn new(ttl: Duration, capacity: NonZeroUsize) -> Result<Self, crate::AuthError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| crate::AuthError::Internal(e.to_string()))?;
        Ok(Self {
            key,
            ttl,
            entries: Mutex::new(lru::LruCache::new(capacity)),
            hits: AtomicU64::new(0),
        })
    }

    fn tag(&self, user: &str, stored: &[&str], password: &[u8]) -> [u8; 32] {
        // The key is 32 bytes: HMAC takes any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        let mut field = |bytes: &[u8]| {
            mac.update(&(bytes.len() as u64).to_be_bytes());
            mac.update(bytes);
        };
        field(user.as_bytes());
        for s in stored {
            field(s.as_bytes());
        }
        field(password);
        mac.finalize().into_bytes().into()
    }

    /// Whether this password was verified for these stored forms within the time to live.
    pub fn hit(&self, user: &str, stored: &[&str], password: &[u8], now: Instant) -> bool {
        let tag = self.tag(user, stored, password);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(&tag) {
            Some(&until) if now < until => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                true
            }
            Some(_) => {
                entries.pop(&tag);
                false
            }
            None => false,
        }
    }

    /// Remembers a verified password.
    pub fn remember(&self, user: &str, stored: &[&str], password: &[u8], now: Instant) {
        let tag = self.tag(user, stored, password);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.put(tag, now + self.ttl);
    }

    /// Entries held now (expired ones included until they are met or pushed out).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Logins answered from the cache since the process started.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_password_for_the_same_stored_forms_hits_until_it_expires() {
        let cache =
            CredentialCache::new(Duration::from_secs(60), NonZeroUsize::new(2).unwrap()).unwrap();
        let t0 = Instant::now();
        let stored = ["{ARGON2ID}$argon2id$v=19$..."];
        assert!(!cache.hit("alice", &stored, b"right", t0));
        cache.remember("alice", &stored, b"right", t0);
        assert!(cache.hit("alice", &stored, b"right", t0 + Duration::from_secs(59)));
        assert!(!cache.hit("alice", &stored, b"wrong", t0));
        assert!(!cache.hit("bob", &stored, b"right", t0));
        // The password changed: the stored form is another, the old password no longer hits.
        assert!(!cache.hit("alice", &["{ARGON2ID}$argon2id$v=19$new"], b"right", t0));
        assert!(!cache.hit("alice", &stored, b"right", t0 + Duration::from_secs(60)));
        // Bounded: the least recently used goes.
        for user in ["a", "b", "c"] {
            cache.remember(user, &stored, b"p", t0);
        }
        assert_eq!(cache.len(), 2);
        assert!(!cache.hit("a", &stored, b"p", t0));
    }

    #[test]
    fn tags_do_not_run_fields_together() {
        let cache =
            CredentialCache::new(Duration::from_secs(60), NonZeroUsize::new(8).unwrap()).unwrap();
        assert_ne!(cache.tag("ab", &["c"], b"d"), cache.tag("a", &["bc"], b"d"));
    }
}
