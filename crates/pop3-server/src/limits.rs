//! Counting connections per key (client network, user) against a limit, and the queue of
//! connections that have not logged in yet, which make room for newcomers at a limit.

use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// What per-address connection limits count: an IPv4 address, or an IPv6 /64. A /64 is one
/// subscriber's network (a single host may use any address in it, and privacy addresses
/// change by the hour), so counting each /128 would give one host a thousand times the limit.
pub(crate) fn client_net(ip: IpAddr) -> IpNet {
    let prefix = if ip.is_ipv4() { 32 } else { 64 };
    IpNet::new(ip, prefix)
        .map(|n| n.trunc())
        .unwrap_or_else(|_| IpNet::from(ip))
}

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

    /// Takes a slot for `key` although it has `max` already: for a newcomer that has just
    /// told one of `key`'s connections to make room. That connection gives its slot back a
    /// moment later, so the count exceeds `max` only by the evictions still under way, and
    /// no other newcomer can take the freed slot first.
    pub(crate) fn take_over(self: &Arc<Self>, key: K) -> Slot<K> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry(key.clone()).or_insert(0) += 1;
        Slot {
            slots: Arc::clone(self),
            key,
        }
    }

    /// Slots taken, over every key.
    pub(crate) fn total(&self) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.values().sum()
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
    pub(crate) fn record(&self, peer: SocketAddr, reason: &str, now: Instant) {
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
        tracing::info!(%peer, "refused a connection: {reason}");
    }
}

/// Connections that have not logged in yet, ordered by how long each has waited since it
/// arrived or last completed a command. At a connection limit the longest-waiting one is
/// closed to make room for a newcomer: of all, at the global limit; from the newcomer's own
/// network, at the per-address limit. So connections that linger unauthenticated (slowloris,
/// idle scanners, a broken client behind the same NAT) cannot lock real clients out until
/// `timeouts.login` expires. A real client goes to the end of the queue with each command,
/// one round trip after the last reply: it gives way only if more connections than the limit
/// arrive (or complete a command) from its address within one round trip. Logged-in sessions
/// are never evicted.
#[derive(Debug, Default)]
pub(crate) struct Waiting {
    next: std::sync::atomic::AtomicU64,
    state: Mutex<WaitState>,
}

#[derive(Debug, Default)]
struct WaitState {
    queue: BTreeMap<Place, (IpNet, Arc<tokio::sync::Notify>)>,
    by_net: HashMap<IpNet, BTreeSet<Place>>,
}

/// A place in the queue: a sequence number taken on arrival and on each complete command.
type Place = u64;

/// A connection's place in [`Waiting`]; leaves the queue when dropped.
#[derive(Debug)]
pub(crate) struct WaitingTicket {
    waiting: Arc<Waiting>,
    id: Place,
    notify: Arc<tokio::sync::Notify>,
}

impl Waiting {
    /// Joins the queue, for a connection from `net` (see [`client_net`]).
    pub(crate) fn enter(self: &Arc<Self>, net: IpNet) -> WaitingTicket {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let notify = Arc::new(tokio::sync::Notify::new());
        let mut state = self.lock();
        state.queue.insert(id, (net, Arc::clone(&notify)));
        state.by_net.entry(net).or_default().insert(id);
        WaitingTicket {
            waiting: Arc::clone(self),
            id,
            notify,
        }
    }

    /// Tells the longest-waiting connection to close; `false` if none is waiting.
    pub(crate) fn evict_oldest(&self) -> bool {
        let mut state = self.lock();
        let Some((&id, _)) = state.queue.first_key_value() else {
            return false;
        };
        state.evict(id);
        true
    }

    /// Tells the longest-waiting connection from `net` to close; `false` if none is waiting.
    pub(crate) fn evict_oldest_from(&self, net: IpNet) -> bool {
        let mut state = self.lock();
        let Some(&id) = state.by_net.get(&net).and_then(BTreeSet::first) else {
            return false;
        };
        state.evict(id);
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WaitState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl WaitState {
    fn remove(&mut self, id: Place) -> Option<Arc<tokio::sync::Notify>> {
        let (net, notify) = self.queue.remove(&id)?;
        if let Some(ids) = self.by_net.get_mut(&net) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_net.remove(&net);
            }
        }
        Some(notify)
    }

    fn evict(&mut self, id: Place) {
        if let Some(notify) = self.remove(id) {
            // Stored if the connection is not listening right now: it closes when it next is.
            notify.notify_one();
        }
    }
}

impl WaitingTicket {
    /// The connection has just completed a command: it goes to the end of the queue.
    pub(crate) fn touch(&mut self) {
        let mut state = self.waiting.lock();
        let Some(entry) = state.queue.remove(&self.id) else {
            return; // evicted already
        };
        let net = entry.0;
        let id = self
            .waiting
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        state.queue.insert(id, entry);
        if let Some(ids) = state.by_net.get_mut(&net) {
            ids.remove(&self.id);
            ids.insert(id);
        }
        self.id = id;
    }

    /// Resolves when this connection is told to make room.
    pub(crate) async fn evicted(&self) {
        self.notify.notified().await;
    }
}

impl Drop for WaitingTicket {
    fn drop(&mut self) {
        self.waiting.lock().remove(self.id);
    }
}

#[cfg(test)]
mod waiting_tests {
    use super::*;

    #[test]
    fn eviction_picks_the_oldest_overall_or_from_one_network() {
        let w = Arc::new(Waiting::default());
        let a: IpNet = client_net("192.0.2.1".parse().unwrap());
        let b: IpNet = client_net("2001:db8:1:2::5".parse().unwrap());
        assert_eq!(
            b,
            client_net("2001:db8:1:2:ffff::9".parse().unwrap()),
            "one /64"
        );
        assert_ne!(b, client_net("2001:db8:1:3::5".parse().unwrap()));
        let first_a = w.enter(a);
        let mut busy_b = w.enter(b);
        let first_b = w.enter(b);
        let second_b = w.enter(b);
        busy_b.touch();
        assert!(w.evict_oldest_from(b));
        assert!(w.lock().queue.contains_key(&first_a.id));
        assert!(
            !w.lock().queue.contains_key(&first_b.id),
            "busy_b went to the end"
        );
        assert!(w.lock().queue.contains_key(&busy_b.id));
        drop(busy_b);
        assert!(w.evict_oldest());
        assert!(
            !w.lock().queue.contains_key(&first_a.id),
            "the oldest of all"
        );
        drop(second_b);
        assert!(!w.evict_oldest_from(b), "a ticket leaves when dropped");
        assert!(w.lock().by_net.is_empty());
    }

    #[test]
    fn a_newcomer_takes_over_the_slot_it_freed() {
        let slots: Arc<Slots<&str>> = Arc::new(Slots::new(1));
        let victim = slots.try_take("x").unwrap();
        let newcomer = slots.take_over("x");
        drop(victim);
        assert!(
            slots.try_take("x").is_none(),
            "the freed slot is the newcomer's"
        );
        drop(newcomer);
        assert!(slots.try_take("x").is_some());
    }
}
