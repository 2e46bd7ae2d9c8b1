//! Brute-force defence: failure delays that grow per client address and per account.
//!
//! Every failed login is answered after a delay: `base` for the first failure of an address
//! (IPv6 addresses count per /48, the unit a single subscriber or attacker controls) or
//! account, doubling with each further one up to `cap`. Each address and account also has a
//! "busy until" time, so failures queue behind each other: a thousand parallel connections
//! guessing one account get their answers one `cap` apart, not all at once. A client that
//! retries the same wrong password (a stale password in a phone) is not escalated: the last
//! few wrong secrets are remembered as keyed fingerprints, never in clear. A successful login
//! clears the account's record (so the right password works straight after a burst of wrong
//! ones from elsewhere); records also expire after a quiet period. Trusted networks (a webmail
//! host) are exempt. Memory is bounded: at most [`MAX_RECORDS`] records per table, the oldest
//! dropped first.

use ipnet::IpNet;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Records kept per table (addresses, accounts).
pub(crate) const MAX_RECORDS: usize = 100_000;
/// Wrong-secret fingerprints remembered per record.
const REMEMBERED: usize = 4;

#[derive(Debug, Clone)]
struct Record {
    failures: u32,
    last: Instant,
    busy_until: Instant,
    recent: [Option<u64>; REMEMBERED],
    next: usize,
}

impl Record {
    fn new(now: Instant) -> Self {
        Self {
            failures: 0,
            last: now,
            busy_until: now,
            recent: [None; REMEMBERED],
            next: 0,
        }
    }

    /// Counts a failure unless it repeats a remembered wrong secret.
    fn fail(&mut self, fingerprint: Option<u64>, now: Instant) {
        self.last = now;
        if let Some(f) = fingerprint {
            if self.recent.contains(&Some(f)) {
                return;
            }
            self.recent[self.next] = Some(f);
            self.next = (self.next + 1) % REMEMBERED;
        }
        self.failures = self.failures.saturating_add(1);
    }
}

/// The penalty tables.
#[derive(Debug)]
pub(crate) struct Penalties {
    base: Duration,
    cap: Duration,
    reset_after: Duration,
    trusted: Vec<IpNet>,
    keys: std::collections::hash_map::RandomState,
    tables: Mutex<Tables>,
}

#[derive(Debug, Default)]
struct Tables {
    addresses: HashMap<IpNet, Record>,
    accounts: HashMap<String, Record>,
}

/// IPv4 addresses count alone, IPv6 per /48.
fn address_key(ip: IpAddr) -> IpNet {
    let prefix = if ip.is_ipv4() { 32 } else { 48 };
    IpNet::new(ip, prefix)
        .map(|n| n.trunc())
        .unwrap_or_else(|_| IpNet::from(ip))
}

impl Penalties {
    pub(crate) fn new(
        base: Duration,
        cap: Duration,
        reset_after: Duration,
        trusted: Vec<IpNet>,
    ) -> Self {
        Self {
            base,
            cap,
            reset_after,
            trusted,
            keys: Default::default(),
            tables: Mutex::default(),
        }
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// A keyed fingerprint of a wrong secret for one account (the key is random per process,
    /// so fingerprints are useless outside it).
    pub(crate) fn fingerprint(&self, user: &str, secret: &[u8]) -> u64 {
        let mut h = self.keys.build_hasher();
        h.write(user.as_bytes());
        h.write_u8(0);
        h.write(secret);
        h.finish()
    }

    fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        self.base.saturating_mul(1 << doublings).min(self.cap)
    }

    /// Records a failed login and returns how long to wait before answering it.
    pub(crate) fn failure(
        &self,
        ip: IpAddr,
        user: Option<&str>,
        fingerprint: Option<u64>,
    ) -> Duration {
        if self.trusted(ip) {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let reset_after = self.reset_after;
        let fresh = |r: &mut Record| {
            if now.duration_since(r.last) > reset_after {
                *r = Record::new(now);
            }
        };
        let mut answer_at = now;
        let key = address_key(ip);
        evict(&mut tables.addresses, now);
        let address = tables
            .addresses
            .entry(key)
            .or_insert_with(|| Record::new(now));
        fresh(address);
        address.fail(fingerprint, now);
        let delay = self.delay(address.failures);
        address.busy_until = address.busy_until.max(now) + delay;
        answer_at = answer_at.max(address.busy_until);
        if let Some(user) = user {
            evict(&mut tables.accounts, now);
            let account = tables
                .accounts
                .entry(user.to_owned())
                .or_insert_with(|| Record::new(now));
            fresh(account);
            account.fail(fingerprint, now);
            let delay = self.delay(account.failures);
            account.busy_until = account.busy_until.max(now) + delay;
            answer_at = answer_at.max(account.busy_until);
        }
        // Never hold a connection longer than a few caps, whatever the queue.
        answer_at.duration_since(now).min(self.cap * 4)
    }

    /// A successful login clears the account's record.
    pub(crate) fn success(&self, user: &str) {
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        tables.accounts.remove(user);
    }

    /// The failure count for an address and an account (for tests and diagnostics).
    #[cfg(test)]
    fn failures(&self, ip: IpAddr, user: &str) -> (u32, u32) {
        let tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        (
            tables
                .addresses
                .get(&address_key(ip))
                .map_or(0, |r| r.failures),
            tables.accounts.get(user).map_or(0, |r| r.failures),
        )
    }
}

/// Keeps a table within [`MAX_RECORDS`] by dropping the records idle the longest.
fn evict<K: std::hash::Hash + Eq + Clone>(table: &mut HashMap<K, Record>, now: Instant) {
    if table.len() < MAX_RECORDS {
        return;
    }
    let mut ages: Vec<(Duration, K)> = table
        .iter()
        .map(|(k, r)| (now.duration_since(r.last), k.clone()))
        .collect();
    ages.sort_by_key(|(age, _)| std::cmp::Reverse(*age));
    for (_, k) in ages.into_iter().take(MAX_RECORDS / 10) {
        table.remove(&k);
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    fn penalties() -> Penalties {
        Penalties::new(
            Duration::from_secs(2),
            Duration::from_secs(15),
            Duration::from_secs(600),
            vec!["10.0.0.0/8".parse().unwrap()],
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let p = penalties();
        let delays: Vec<u64> = (0u8..6)
            .map(|i| {
                // Different addresses and accounts: no queueing, only the doubling.
                let d = p.failure(ip("192.0.2.1"), Some("alice"), Some(u64::from(i)));
                // Simulate time passing so the queue drains between attempts.
                p.tables
                    .lock()
                    .unwrap()
                    .addresses
                    .values_mut()
                    .for_each(|r| r.busy_until = Instant::now());
                p.tables
                    .lock()
                    .unwrap()
                    .accounts
                    .values_mut()
                    .for_each(|r| r.busy_until = Instant::now());
                d.as_secs_f64().round() as u64
            })
            .collect();
        assert_eq!(delays, [2, 4, 8, 15, 15, 15]);
    }

    #[test]
    fn parallel_failures_queue_per_account() {
        let p = penalties();
        // Five failures for one account from five addresses at the same instant.
        let delays: Vec<u64> = (1..=5)
            .map(|i| {
                let d = p.failure(ip(&format!("198.51.100.{i}")), Some("alice"), Some(i));
                d.as_secs_f64().round() as u64
            })
            .collect();
        assert_eq!(delays, [2, 6, 14, 29, 44]);
    }

    #[test]
    fn repeating_the_same_wrong_password_does_not_escalate() {
        let p = penalties();
        let f = p.fingerprint("alice", b"old password");
        for _ in 0..10 {
            p.failure(ip("192.0.2.7"), Some("alice"), Some(f));
        }
        assert_eq!(p.failures(ip("192.0.2.7"), "alice"), (1, 1));
        p.failure(
            ip("192.0.2.7"),
            Some("alice"),
            Some(p.fingerprint("alice", b"another")),
        );
        assert_eq!(p.failures(ip("192.0.2.7"), "alice"), (2, 2));
    }

    #[test]
    fn ipv6_counts_per_48_and_trusted_networks_are_exempt() {
        let p = penalties();
        p.failure(ip("2001:db8:1:1::1"), None, Some(1));
        p.failure(ip("2001:db8:1:ffff::2"), None, Some(2));
        assert_eq!(p.failures(ip("2001:db8:1::"), "x").0, 2);
        assert_eq!(p.failures(ip("2001:db8:2::"), "x").0, 0);
        assert_eq!(
            p.failure(ip("10.1.2.3"), Some("alice"), Some(1)),
            Duration::ZERO
        );
        assert_eq!(p.failures(ip("10.1.2.3"), "alice"), (0, 0));
    }

    #[test]
    fn success_resets_the_account() {
        let p = penalties();
        for i in 0..3 {
            p.failure(ip("192.0.2.9"), Some("alice"), Some(i));
        }
        p.success("alice");
        assert_eq!(p.failures(ip("192.0.2.9"), "alice"), (3, 0));
    }

    #[test]
    fn quiet_periods_reset_and_memory_is_bounded() {
        let p = Penalties::new(
            Duration::from_secs(2),
            Duration::from_secs(15),
            Duration::ZERO,
            vec![],
        );
        p.failure(ip("192.0.2.9"), Some("alice"), Some(1));
        std::thread::sleep(Duration::from_millis(5));
        p.failure(ip("192.0.2.9"), Some("alice"), Some(2));
        assert_eq!(p.failures(ip("192.0.2.9"), "alice"), (1, 1));
        for i in 0..(MAX_RECORDS as u32 + 10) {
            p.failure(
                IpAddr::from(std::net::Ipv4Addr::from(0xc000_0000 | i)),
                None,
                None,
            );
        }
        assert!(p.tables.lock().unwrap().addresses.len() <= MAX_RECORDS);
    }
}
