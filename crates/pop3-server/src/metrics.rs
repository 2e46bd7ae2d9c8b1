//! What the server counts, for Prometheus: one list of metric names ([`METRICS`]) and one
//! function per event that records it.
//!
//! The server records into the `metrics` facade; the binary installs the Prometheus recorder
//! and serves `/metrics` (without one installed, as in library tests, recording costs a
//! branch). Labels are low-cardinality by construction: listeners, mechanisms the server
//! offered, fixed result and operation names; never a user or an address. Counts that a
//! session accumulates (commands, octets) are added once, when it ends, so a session costs a
//! handful of recorder calls however many commands it sends.

use crate::Kind;
use pop3_proto::SessionStats;
use std::time::Duration;

/// What a metric is, for `# TYPE` and for `poplar stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// A value now.
    Gauge,
    /// A distribution (seconds).
    Histogram,
}

/// One metric the server exports.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Its Prometheus name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// Its `# HELP` text (and `poplar stats`' wording).
    pub help: &'static str,
}

macro_rules! metrics_list {
    ($($id:ident = $name:literal, $kind:ident, $help:literal;)*) => {
        $(#[doc = $help] pub const $id: &str = $name;)*
        /// Every metric the server exports, in the order `poplar stats` shows them.
        pub const METRICS: &[Metric] = &[$(Metric { name: $name, kind: MetricKind::$kind, help: $help }),*];
    };
}

metrics_list! {
    BUILD_INFO = "poplar_build_info", Gauge, "Always 1; the labels say which Poplar is running.";
    CONNECTIONS = "poplar_connections_total", Counter, "Connections accepted, by listener.";
    CONNECTIONS_OPEN = "poplar_connections_open", Gauge, "Connections open now.";
    LOGGED_IN = "poplar_sessions_logged_in", Gauge, "Sessions logged in now.";
    TLS_HANDSHAKES = "poplar_tls_handshakes_total", Counter, "TLS handshakes completed (POP3S, STLS), by listener and TLS version.";
    TLS_FAILURES = "poplar_tls_handshake_failures_total", Counter, "TLS handshakes that failed or timed out, by listener.";
    LOGINS = "poplar_logins_total", Counter, "Login attempts, by mechanism and result.";
    SESSIONS = "poplar_sessions_total", Counter, "Sessions ended, by listener, TLS and how they ended.";
    SESSION_SECONDS = "poplar_session_duration_seconds", Histogram, "Session lengths, by listener.";
    COMMANDS = "poplar_commands_total", Counter, "POP3 commands received.";
    BAD_COMMANDS = "poplar_bad_commands_total", Counter, "POP3 commands refused as unknown, malformed or out of state.";
    MESSAGES_RETRIEVED = "poplar_messages_retrieved_total", Counter, "Messages sent, by command (RETR, TOP).";
    OCTETS_RETRIEVED = "poplar_retrieved_octets_total", Counter, "Octets of messages sent, by command (RETR, TOP).";
    SEND_SECONDS = "poplar_message_send_seconds", Histogram, "Time to send one message, by command (RETR, TOP).";
    ZERO_COPY = "poplar_messages_sent_zero_copy_total", Counter, "RETR responses whose message the kernel sent from the page cache (sendfile), unread by the server.";
    MESSAGES_DELETED = "poplar_messages_deleted_total", Counter, "Messages removed at QUIT.";
    CACHE_HITS = "poplar_credential_cache_hits_total", Counter, "Password checks answered from the credential cache (auth.cache_ttl) instead of the password hash.";
    CACHE_ENTRIES = "poplar_credential_cache_entries", Gauge, "Verified logins the credential cache holds now.";
    OCTETS_DELETED = "poplar_deleted_octets_total", Counter, "Octets of messages removed at QUIT.";
    PENALTIES = "poplar_penalties_in_force", Gauge, "Addresses and accounts whose logins are delayed now after failed attempts.";
    EVICTED = "poplar_connections_evicted_total", Counter, "Connections closed before login to make room at a connection limit, by listener.";
    REFUSED = "poplar_connections_refused_total", Counter, "Connections refused at a connection limit, by listener.";
    LMTP_DELIVERIES = "poplar_lmtp_deliveries_total", Counter, "LMTP deliveries per recipient, by result.";
    QUOTA_REFUSALS = "poplar_quota_refusals_total", Counter, "Deliveries refused because the maildrop was full.";
    EXPIRED = "poplar_expire_removed_total", Counter, "Messages removed by the retention period (EXPIRE).";
    STORE_ERRORS = "poplar_store_errors_total", Counter, "Store operations that failed, by operation.";
}

/// How a login attempt ended, as the `result` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoginResult {
    Ok,
    BadPassword,
    UnknownUser,
    /// Closed unanswered: too many failures from the address.
    Penalty,
    InUse,
    LoginDelay,
    TooManyConnections,
    /// `[SYS/TEMP]`: the server could not decide or open the maildrop.
    Temporary,
    /// The client broke the mechanism's syntax or abandoned it.
    Protocol,
}

impl LoginResult {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::BadPassword => "bad_password",
            Self::UnknownUser => "unknown_user",
            Self::Penalty => "penalty",
            Self::InUse => "in_use",
            Self::LoginDelay => "login_delay",
            Self::TooManyConnections => "too_many_connections",
            Self::Temporary => "temporary",
            Self::Protocol => "protocol",
        }
    }
}

fn listener(kind: Kind) -> &'static str {
    match kind {
        Kind::Pop3 => "pop3",
        Kind::Pop3s => "pop3s",
        Kind::Kpop => "kpop",
    }
}

pub(crate) fn connection_accepted(kind: Kind) {
    metrics::counter!(CONNECTIONS, "listener" => listener(kind)).increment(1);
}

pub(crate) fn connection_refused(kind: Kind) {
    metrics::counter!(REFUSED, "listener" => listener(kind)).increment(1);
}

pub(crate) fn evicted(kind: Kind) {
    metrics::counter!(EVICTED, "listener" => listener(kind)).increment(1);
}

pub(crate) fn tls_handshake(kind: Kind, version: Option<&'static str>) {
    match version {
        Some(version) => {
            metrics::counter!(TLS_HANDSHAKES, "listener" => listener(kind), "version" => version)
                .increment(1);
        }
        None => metrics::counter!(TLS_FAILURES, "listener" => listener(kind)).increment(1),
    }
}

/// `mechanism` is `USER`, `APOP` or a SASL mechanism the server offered.
pub(crate) fn login(mechanism: &str, result: LoginResult) {
    metrics::counter!(LOGINS, "mechanism" => mechanism.to_owned(), "result" => result.label())
        .increment(1);
}

pub(crate) fn message_sent(top: bool, took: Duration) {
    let command = if top { "TOP" } else { "RETR" };
    metrics::histogram!(SEND_SECONDS, "command" => command).record(took.as_secs_f64());
}

pub(crate) fn sent_zero_copy() {
    metrics::counter!(ZERO_COPY).increment(1);
}

/// A session's totals, once it has ended (`end` as in the summary line's vocabulary).
pub(crate) fn session_ended(
    kind: Kind,
    tls: bool,
    end: &'static str,
    stats: &SessionStats,
    took: Duration,
) {
    let kind = listener(kind);
    let tls = if tls { "yes" } else { "no" };
    metrics::counter!(SESSIONS, "listener" => kind, "tls" => tls, "end" => end).increment(1);
    metrics::histogram!(SESSION_SECONDS, "listener" => kind).record(took.as_secs_f64());
    metrics::counter!(COMMANDS).increment(stats.commands.into());
    if stats.bad_commands > 0 {
        metrics::counter!(BAD_COMMANDS).increment(stats.bad_commands.into());
    }
    for (command, messages, octets) in [
        ("RETR", stats.retr, stats.retr_octets),
        ("TOP", stats.top, stats.top_octets),
    ] {
        if messages > 0 {
            metrics::counter!(MESSAGES_RETRIEVED, "command" => command).increment(messages.into());
            metrics::counter!(OCTETS_RETRIEVED, "command" => command).increment(octets);
        }
    }
    if stats.committed && stats.deleted > 0 {
        metrics::counter!(MESSAGES_DELETED).increment(stats.deleted.into());
        metrics::counter!(OCTETS_DELETED).increment(stats.deleted_octets);
    }
}

/// One LMTP recipient's result: `delivered`, `over_quota`, `too_large`, `no_mailbox`,
/// `temporary`.
pub(crate) fn lmtp_delivery(result: &'static str) {
    metrics::counter!(LMTP_DELIVERIES, "result" => result).increment(1);
    if result == "over_quota" {
        metrics::counter!(QUOTA_REFUSALS).increment(1);
    }
}

pub(crate) fn expired(messages: usize) {
    metrics::counter!(EXPIRED).increment(u64::try_from(messages).unwrap_or(u64::MAX));
}

/// A store operation failed: `open`, `read`, `commit`, `mark_seen`, `note_retrieved`,
/// `login_delay`, `deliver`, `expire`.
pub(crate) fn store_error(operation: &'static str) {
    metrics::counter!(STORE_ERRORS, "operation" => operation).increment(1);
}

/// Sets the gauges that describe the server now, and the build's; the exporter calls this
/// before each rendering.
pub fn set_gauges(status: &crate::Status) {
    metrics::gauge!(CONNECTIONS_OPEN).set(status.connections() as f64);
    metrics::gauge!(LOGGED_IN).set(status.logged_in() as f64);
    metrics::gauge!(PENALTIES).set(status.penalties_in_force() as f64);
    let (hits, entries) = status.credential_cache();
    metrics::counter!(CACHE_HITS).absolute(hits);
    metrics::gauge!(CACHE_ENTRIES).set(entries as f64);
}

/// Names each metric's help text for the recorder, and records the build.
pub fn describe(version: &'static str, store: &'static str) {
    for m in METRICS {
        match m.kind {
            MetricKind::Counter => metrics::describe_counter!(m.name, m.help),
            MetricKind::Gauge => metrics::describe_gauge!(m.name, m.help),
            MetricKind::Histogram => {
                metrics::describe_histogram!(m.name, metrics::Unit::Seconds, m.help);
            }
        }
    }
    metrics::gauge!(BUILD_INFO, "version" => version, "store" => store).set(1.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for m in METRICS {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(m.name.starts_with("poplar_"), "{}", m.name);
            assert!(
                m.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()),
                "{}",
                m.name
            );
            // Counters end in _total, histograms in their unit; gauges in neither.
            match m.kind {
                MetricKind::Counter => assert!(m.name.ends_with("_total"), "{}", m.name),
                MetricKind::Histogram => assert!(m.name.ends_with("_seconds"), "{}", m.name),
                MetricKind::Gauge => assert!(!m.name.ends_with("_total"), "{}", m.name),
            }
        }
    }
}
