//! Brute-force defence: failure delays that grow per client address and per account, and a
//! queue that holds however many connections carry the guesses to that schedule.
//!
//! Every failed login is answered after a delay: `base` for the first failure of an address
//! (IPv6 addresses count per /48, the unit a single subscriber or attacker controls) or
//! account, doubling with each further one up to `cap`. Each address and account also has a
//! "busy until" time: the answers to its attempts are released one delay apart, in turn. Once
//! an address has failed, *every* attempt from it is answered no earlier than its turn,
//! success included: were a right password answered at once, a guesser with many connections
//! would learn each guess's result from the timing without waiting for the failures. An
//! attempt whose turn lies beyond the horizon (four caps) is not answered at all: the
//! connection is closed with `[SYS/TEMP]`, whatever the password was, and the queue does not
//! grow. So one address gets at most one verdict per delay, with 2 or 2000 connections.
//!
//! Failures for an account queue the same way whatever address they come from. A right
//! password from an address that has never failed is answered at once even while its account
//! is under attack, so an attacker cannot lock the owner out; the price is that each address
//! new to the server gets one guess answered without waiting (a botnet's addresses, one each).
//!
//! A client that retries the same wrong password (a stale password in a phone) is not
//! escalated: the last few wrong secrets are remembered as keyed fingerprints, never in clear.
//! A successful login clears the account's record; records also expire after a quiet period.
//! Trusted networks (a webmail host) are exempt. Memory is bounded: at most [`MAX_RECORDS`]
//! records per table, the oldest dropped first. Time is passed in.

use ipnet::IpNet;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

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

/// The outcome of a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The credentials were right.
    Success,
    /// They were not (or the exchange was abandoned); `fingerprint` identifies the wrong
    /// secret, so retrying the same one does not escalate.
    Failure { fingerprint: Option<u64> },
}

/// When to answer a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// After this long.
    After(Duration),
    /// Never: its turn is too far away; close the connection (`[SYS/TEMP]`) without saying
    /// whether the credentials were right.
    Close,
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

    /// Addresses and accounts with failures not yet forgotten: their next attempt waits.
    pub(crate) fn in_force(&self, now: Instant) -> usize {
        let tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let live = |r: &&Record| {
            r.failures > 0 && now.saturating_duration_since(r.last) < self.reset_after
        };
        tables.addresses.values().filter(live).count()
            + tables.accounts.values().filter(live).count()
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

    /// Decides when to answer a login attempt from `ip` (for `user`, when known) whose
    /// outcome is known: after a delay, or not at all. A failure is recorded.
    pub(crate) fn conclude(
        &self,
        ip: IpAddr,
        user: Option<&str>,
        outcome: Outcome,
        now: Instant,
    ) -> Answer {
        if self.trusted(ip) {
            return Answer::After(Duration::ZERO);
        }
        let horizon = self.cap * 4;
        let reset_after = self.reset_after;
        let fresh = |r: &mut Record| {
            if now.saturating_duration_since(r.last) > reset_after {
                *r = Record::new(now);
            }
        };
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let tables = &mut *tables;
        evict(&mut tables.addresses, now);
        if user.is_some() {
            evict(&mut tables.accounts, now);
        }
        let address = tables
            .addresses
            .entry(address_key(ip))
            .or_insert_with(|| Record::new(now));
        fresh(address);
        // An address that has failed before waits its turn for every answer.
        let dirty = address.failures > 0;
        let mut account = user.map(|u| {
            let r = tables
                .accounts
                .entry(u.to_owned())
                .or_insert_with(|| Record::new(now));
            fresh(r);
            r
        });
        let turn = |r: &Record| r.busy_until.max(now);
        match outcome {
            Outcome::Success => {
                let mut at = now;
                if dirty {
                    at = at.max(turn(address));
                    if let Some(a) = account.as_ref().filter(|a| a.failures > 0) {
                        at = at.max(turn(a));
                    }
                }
                if at.saturating_duration_since(now) > horizon {
                    return Answer::Close;
                }
                address.busy_until = address.busy_until.max(at);
                if let Some(u) = user {
                    tables.accounts.remove(u);
                }
                Answer::After(at.saturating_duration_since(now))
            }
            Outcome::Failure { fingerprint } => {
                let address_turn = if dirty { turn(address) } else { now };
                address.fail(fingerprint, now);
                let address_answer = address_turn + self.delay(address.failures);
                let account_answer = account.as_mut().map(|a| {
                    let at = turn(a);
                    a.fail(fingerprint, now);
                    at + self.delay(a.failures)
                });
                let at = account_answer.map_or(address_answer, |a| a.max(address_answer));
                if at.saturating_duration_since(now) > horizon {
                    return Answer::Close;
                }
                address.busy_until = address_answer;
                if let (Some(a), Some(answer)) = (account, account_answer) {
                    a.busy_until = answer;
                }
                Answer::After(at.saturating_duration_since(now))
            }
        }
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
        .map(|(k, r)| (now.saturating_duration_since(r.last), k.clone()))
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

    fn fail(p: &Penalties, from: &str, user: &str, secret: u64, now: Instant) -> Answer {
        p.conclude(
            ip(from),
            Some(user),
            Outcome::Failure {
                fingerprint: Some(secret),
            },
            now,
        )
    }

    fn secs(a: Answer) -> u64 {
        match a {
            Answer::After(d) => d.as_secs_f64().round() as u64,
            Answer::Close => u64::MAX,
        }
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let p = penalties();
        let mut now = Instant::now();
        let mut delays = Vec::new();
        for i in 0..6 {
            // One connection: each guess sent when the previous answer came.
            let a = fail(&p, "192.0.2.1", "alice", i, now);
            delays.push(secs(a));
            now += Duration::from_secs(secs(a));
        }
        assert_eq!(delays, [2, 4, 8, 15, 15, 15]);
    }

    #[test]
    fn parallel_failures_queue_per_account() {
        let p = penalties();
        let now = Instant::now();
        // Five failures for one account from five addresses at the same instant.
        let delays: Vec<u64> = (1..=5)
            .map(|i| secs(fail(&p, &format!("198.51.100.{i}"), "alice", i, now)))
            .collect();
        assert_eq!(delays, [2, 6, 14, 29, 44]);
    }

    #[test]
    fn parallel_attempts_from_one_address_wait_their_turn_or_are_closed() {
        let p = penalties();
        let now = Instant::now();
        // Ten guesses against ten accounts from one address at once: one verdict per delay,
        // up to the horizon (60 s); the rest are closed unanswered.
        let answers: Vec<u64> = (0..10)
            .map(|i| secs(fail(&p, "192.0.2.7", &format!("user{i}"), i, now)))
            .collect();
        assert_eq!(&answers[..6], [2, 6, 14, 29, 44, 59]);
        assert!(answers[6..].iter().all(|a| *a == u64::MAX), "{answers:?}");
        // A right password from that address also waits its turn, so its timing reveals
        // nothing sooner; from a clean address it is answered at once, even for an account
        // under attack.
        let late = p.conclude(ip("192.0.2.7"), Some("user3"), Outcome::Success, now);
        assert_eq!(
            secs(late),
            59,
            "in its turn, after the last failure's answer"
        );
        let later = now + Duration::from_secs(50);
        assert_eq!(
            secs(p.conclude(ip("192.0.2.7"), Some("user9"), Outcome::Success, later)),
            9
        );
        assert_eq!(
            p.conclude(ip("192.0.2.99"), Some("user2"), Outcome::Success, now),
            Answer::After(Duration::ZERO)
        );
    }

    #[test]
    fn fifty_parallel_guessers_get_a_few_verdicts_a_minute() {
        // Fifty connections from one address, each guessing again the moment it has an answer
        // (or reconnecting 50 ms after it is closed), for five minutes of simulated time.
        let p = penalties();
        let start = Instant::now();
        let mut next: Vec<Instant> = vec![start; 50];
        let (mut verdicts, mut closed, mut secret) = (0u32, 0u32, 0u64);
        loop {
            let (i, &at) = next.iter().enumerate().min_by_key(|(_, t)| **t).unwrap();
            if at >= start + Duration::from_secs(300) {
                break;
            }
            secret += 1;
            match fail(
                &p,
                "203.0.113.5",
                &format!("victim{}", secret % 7),
                secret,
                at,
            ) {
                Answer::After(d) => {
                    verdicts += 1;
                    next[i] = at + d;
                }
                Answer::Close => {
                    closed += 1;
                    next[i] = at + Duration::from_millis(50);
                }
            }
        }
        // The schedule allows one verdict per 15 s once at the cap: 20 in five minutes, plus
        // the first few while the delay grows.
        assert!(verdicts <= 26, "{verdicts} verdicts, {closed} closed");
        assert!(closed > 10_000, "the other attempts were refused: {closed}");
    }

    #[test]
    fn repeating_the_same_wrong_password_does_not_escalate() {
        let p = penalties();
        let mut now = Instant::now();
        let f = p.fingerprint("alice", b"old password");
        for _ in 0..10 {
            let a = fail(&p, "192.0.2.7", "alice", f, now);
            now += Duration::from_secs(secs(a));
        }
        assert_eq!(p.failures(ip("192.0.2.7"), "alice"), (1, 1));
        fail(
            &p,
            "192.0.2.7",
            "alice",
            p.fingerprint("alice", b"another"),
            now,
        );
        assert_eq!(p.failures(ip("192.0.2.7"), "alice"), (2, 2));
    }

    #[test]
    fn ipv6_counts_per_48_and_trusted_networks_are_exempt() {
        let p = penalties();
        let now = Instant::now();
        let anon = |from: &str, n: u64| {
            p.conclude(
                ip(from),
                None,
                Outcome::Failure {
                    fingerprint: Some(n),
                },
                now,
            )
        };
        anon("2001:db8:1:1::1", 1);
        anon("2001:db8:1:ffff::2", 2);
        assert_eq!(p.failures(ip("2001:db8:1::"), "x").0, 2);
        assert_eq!(p.failures(ip("2001:db8:2::"), "x").0, 0);
        assert_eq!(
            fail(&p, "10.1.2.3", "alice", 1, now),
            Answer::After(Duration::ZERO)
        );
        assert_eq!(p.failures(ip("10.1.2.3"), "alice"), (0, 0));
    }

    #[test]
    fn success_resets_the_account() {
        let p = penalties();
        let mut now = Instant::now();
        for i in 0..3 {
            now += Duration::from_secs(secs(fail(&p, "192.0.2.9", "alice", i, now)));
        }
        p.conclude(ip("192.0.2.9"), Some("alice"), Outcome::Success, now);
        assert_eq!(p.failures(ip("192.0.2.9"), "alice"), (3, 0));
    }

    #[test]
    fn quiet_periods_reset_and_memory_is_bounded() {
        let p = penalties();
        let now = Instant::now();
        fail(&p, "192.0.2.9", "alice", 1, now);
        fail(&p, "192.0.2.9", "alice", 2, now + Duration::from_secs(601));
        assert_eq!(p.failures(ip("192.0.2.9"), "alice"), (1, 1));
        for i in 0..(MAX_RECORDS as u32 + 10) {
            p.conclude(
                IpAddr::from(std::net::Ipv4Addr::from(0xc000_0000 | i)),
                None,
                Outcome::Failure { fingerprint: None },
                now,
            );
        }
        assert!(p.tables.lock().unwrap().addresses.len() <= MAX_RECORDS);
    }
}
