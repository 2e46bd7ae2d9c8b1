//! The retention purge: RFC 2449 `EXPIRE n` carried out.
//!
//! Why it exists: advertising `EXPIRE 30` is a promise to clients that leave mail on the server
//! that it will be gone 30 days after they retrieved it, and an ISP's disks depend on that promise
//! being kept. The purge walks every maildrop whose user has a period in days and removes the
//! messages first retrieved at least that long ago (see `pop3_store::maildir::retention` for how
//! retrieval is recorded). A maildrop in use by a POP3 session is skipped and tried at the next
//! run. `poplar serve` runs it at start and every [`INTERVAL`]; `poplar expire` runs it once.

use crate::config::ExpirePolicy;
use pop3_proto::Expire;
use pop3_store::{Retention, StoreError};
use std::time::Duration;

/// How often the server purges. Retention is counted in days; an hour's lateness is immaterial,
/// and a walk of the maildrops costs one directory listing per user.
pub const INTERVAL: Duration = Duration::from_secs(3600);

/// What one purge did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Maildrops looked at (users with a period in days).
    pub maildrops: usize,
    /// Messages removed (or due, in a dry run).
    pub messages: usize,
    /// Their octets.
    pub octets: u64,
    /// Users skipped because a session held their maildrop.
    pub busy: Vec<String>,
    /// Users whose maildrop could not be purged, with the reason.
    pub failed: Vec<(String, String)>,
}

/// Purges every maildrop as of `now` (Unix seconds), logging each message removed; with
/// `dry_run` only logs and counts what is due. Any store that keeps retrieval times: a
/// Maildir, or the PostgreSQL store (where every node runs it; a maildrop another node is
/// purging is in use and skipped).
pub async fn purge<S: Retention>(
    store: &S,
    policy: &ExpirePolicy,
    now: u64,
    dry_run: bool,
) -> PurgeReport {
    let mut report = PurgeReport::default();
    let users = match store.retaining_users().await {
        Ok(u) => u,
        Err(e) => {
            crate::metrics::store_error("expire");
            report.failed.push(("*".into(), e.to_string()));
            tracing::error!(error = %e, "retention purge: cannot list the maildrops");
            return report;
        }
    };
    for user in users {
        let Expire::Days(days) = policy.for_user(&user) else {
            continue;
        };
        if days == 0 {
            continue;
        }
        report.maildrops += 1;
        match store.expire(&user, days, now, dry_run).await {
            Ok(expired) => {
                for m in &expired {
                    tracing::info!(
                        user,
                        uidl = m.uidl,
                        size = m.size,
                        retrieved_at = m.retrieved_at,
                        days,
                        dry_run,
                        "expired: retrieved {days}+ days ago"
                    );
                    report.octets += m.size;
                }
                report.messages += expired.len();
                if !dry_run {
                    crate::metrics::expired(expired.len());
                }
            }
            Err(StoreError::InUse) => report.busy.push(user),
            Err(e) => {
                crate::metrics::store_error("expire");
                tracing::warn!(user, error = %e, "retention purge failed for this maildrop");
                report.failed.push((user, e.to_string()));
            }
        }
    }
    tracing::info!(
        maildrops = report.maildrops,
        messages = report.messages,
        octets = report.octets,
        busy = report.busy.len(),
        failed = report.failed.len(),
        dry_run,
        "retention purge done"
    );
    report
}

/// Runs [`purge`] now and then every [`INTERVAL`], forever (the server aborts it at shutdown).
pub async fn run_periodically<S: Retention>(store: S, policy: ExpirePolicy) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        purge(&store, &policy, poplar_util::clock::unix_now(), false).await;
    }
}
