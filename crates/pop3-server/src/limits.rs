//! Counting connections per key (client address, user) against a limit.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// At most `max` slots per key.
#[derive(Debug)]
pub(crate) struct Slots<K: Hash + Eq + Clone> {
    max: usize,
    counts: Mutex<HashMap<K, usize>>,
}

/// A taken slot, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot<K: Hash + Eq + Clone> {
    slots: Arc<Slots<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Slots<K> {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            counts: Mutex::default(),
        }
    }

    /// Takes a slot for `key`, or `None` when `key` already has `max`.
    pub(crate) fn try_take(self: &Arc<Self>, key: K) -> Option<Slot<K>> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(key.clone()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot {
            slots: Arc::clone(self),
            key,
        })
    }
}

impl<K: Hash + Eq + Clone> Slot<K> {
    /// The key this slot counts for.
    pub(crate) fn key(&self) -> &K {
        &self.key
    }
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut counts = self.slots.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_and_given_back() {
        let slots = Arc::new(Slots::new(2));
        let a = slots.try_take("x").unwrap();
        let _b = slots.try_take("x").unwrap();
        assert!(slots.try_take("x").is_none());
        assert!(slots.try_take("y").is_some());
        drop(a);
        assert!(slots.try_take("x").is_some());
        assert!(
            slots.counts.lock().unwrap().get("y").is_none(),
            "empty keys are forgotten"
        );
    }
}

/// How often refused connections are logged individually.
const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);

/// Logs refused connections without letting a flood of them flood the log: the first refusal
/// in each 10-second window is logged with its peer and reason; the others are counted, and the
/// count is logged with the first refusal of a later window.
#[derive(Debug, Default)]
pub(crate) struct RefusalLog {
    state: Mutex<(Option<Instant>, u64)>,
}

impl RefusalLog {
    pub(crate) fn record(&self, peer: Option<SocketAddr>, reason: &str) {
        let now = Instant::now();
        let suppressed = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            match state.0 {
                Some(start) if now.duration_since(start) < REFUSAL_LOG_WINDOW => {
                    state.1 += 1;
                    return;
                }
                _ => {
                    state.0 = Some(now);
                    std::mem::take(&mut state.1)
                }
            }
        };
        if suppressed > 0 {
            tracing::info!(
                "refused {suppressed} further connections since the last report (logged at most once per {REFUSAL_LOG_WINDOW:?})"
            );
        }
        tracing::info!(peer = ?peer, "refused a connection: {reason}");
    }
}

/// Connections that have not logged in yet, in arrival order. At the connection limit the
/// longest-waiting one is closed to make room for a newcomer, so connections that linger
/// unauthenticated (slowloris, scanners) cannot lock real clients out until `timeouts.login`
/// expires; a real client logs in within moments and so is never the oldest for long.
#[derive(Debug, Default)]
pub(crate) struct Waiting {
    next: std::sync::atomic::AtomicU64,
    queue: Mutex<std::collections::BTreeMap<u64, Arc<tokio::sync::Notify>>>,
}

/// A connection's place in [`Waiting`]; leaves the queue when dropped.
#[derive(Debug)]
pub(crate) struct WaitingTicket {
    waiting: Arc<Waiting>,
    id: u64,
    notify: Arc<tokio::sync::Notify>,
}

impl Waiting {
    /// Joins the queue.
    pub(crate) fn enter(self: &Arc<Self>) -> WaitingTicket {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let notify = Arc::new(tokio::sync::Notify::new());
        self.lock().insert(id, Arc::clone(&notify));
        WaitingTicket {
            waiting: Arc::clone(self),
            id,
            notify,
        }
    }

    /// Tells the longest-waiting connection to close; `false` if none is waiting.
    pub(crate) fn evict_oldest(&self) -> bool {
        let Some((_, notify)) = self.lock().pop_first() else {
            return false;
        };
        // Stored if the connection is not listening right now: it closes when it next is.
        notify.notify_one();
        true
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, Arc<tokio::sync::Notify>>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl WaitingTicket {
    /// Resolves when this connection is told to make room.
    pub(crate) async fn evicted(&self) {
        self.notify.notified().await;
    }
}

impl Drop for WaitingTicket {
    fn drop(&mut self) {
        self.waiting.lock().remove(&self.id);
    }
}
