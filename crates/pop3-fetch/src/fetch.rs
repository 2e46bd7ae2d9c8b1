//! One run for one account: log in, find what is new, deliver it exactly once, delete what the
//! policy says, QUIT.
//!
//! The order is what makes a kill at any instant harmless: a message is delivered and fsynced,
//! then recorded in the journal, and only then may it be marked with DELE; deletions take effect
//! only with QUIT (RFC 1939). Killed before the journal record, the next run finds the intent
//! and asks the destination; killed before QUIT, the server still has every message and the
//! journal says which were delivered (they are deleted then).

use crate::FetchError;
use crate::conn::{Conn, Dialer, require_ok};
use crate::dest::{Destination, MessageWriter};
use crate::journal::Journal;
use pop3_proto::Command;
use pop3_proto::Expire;
use pop3_proto::client::ServerCapabilities;
use std::collections::HashSet;

/// How to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// The strongest mechanism the server offers (see [`choose_mechanism`]).
    Auto,
    /// This mechanism (`USER`, `APOP`, `PLAIN`, `LOGIN`, `CRAM-MD5`, `SCRAM-SHA-1`,
    /// `SCRAM-SHA-256`).
    Named(String),
}

/// An account to fetch from.
#[derive(Clone)]
pub struct Account {
    /// Where and how to connect.
    pub dialer: Dialer,
    /// The user name at the server.
    pub user: String,
    /// The password (or token).
    pub password: String,
    /// How to log in.
    pub auth: Auth,
    /// The connection is encrypted (TLS or STLS): plaintext logins are acceptable.
    pub encrypted: bool,
    /// The user accepts weaker protection (`--allow-insecure`): a SCRAM server may ask for
    /// fewer than 4096 iterations.
    pub allow_insecure: bool,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("addr", &self.dialer.addr)
            .field("user", &self.user)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// What to fetch and what to leave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Leave messages on the server (tracked by UIDL) instead of deleting them once delivered.
    pub keep: bool,
    /// With `keep`: delete from the server messages first delivered this many days ago.
    pub delete_after_days: Option<u32>,
    /// Skip messages larger than this many octets (they stay on the server, unless
    /// `delete_too_large`); `None` is [`DEFAULT_MAX_SIZE`].
    pub max_size: Option<u64>,
    /// Delete from the server, without downloading, messages larger than `max_size`.
    pub delete_too_large: bool,
    /// On the first run for an account (an empty journal), download nothing: record what the
    /// server holds as already fetched, so only mail arriving from now on is fetched.
    pub only_new: bool,
    /// Fetch at most this many messages per run.
    pub max_messages: Option<usize>,
    /// Fetch at most this many octets per run (a message that would exceed it waits).
    pub max_bytes: Option<u64>,
    /// Go on although the server seems to have changed every UIDL (see [`detect_uidl_reset`]).
    pub accept_uidl_reset: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Messages on the server.
    pub listed: usize,
    /// Messages delivered in this run.
    pub fetched: usize,
    /// Listed messages that earlier runs of this account delivered (the journal knows them).
    pub already: usize,
    /// Their octets.
    pub octets: u64,
    /// Messages deleted from the server by this run's QUIT.
    pub deleted: usize,
    /// Messages skipped (or deleted unread, with `delete_too_large`) for their size.
    pub too_large: usize,
    /// Messages recorded as fetched without downloading them (`only_new`'s first run).
    pub skipped_old: usize,
    /// New messages left for a later run by `max_messages`/`max_bytes`.
    pub deferred: usize,
    /// Deliveries of an interrupted run found complete (recorded now) or absent (fetched again).
    pub recovered: usize,
    /// The server's retention policy, as advertised after login.
    pub expire: Option<Expire>,
    /// The server's minimum time between logins, in seconds.
    pub login_delay: Option<u32>,
    /// Warnings for the user (policy conflicts).
    pub warnings: Vec<String>,
}

/// Progress while fetching: called after each delivered message with (messages, octets) done
/// so far and the totals planned.
pub type ProgressFn<'a> = dyn FnMut(usize, u64, usize, u64) + Send + 'a;

/// The largest message fetched unless configured otherwise (256 MiB): more than any mail
/// system sends (Poplar's own server takes 64 MiB, most take 25 to 50), and a bound on the disk
/// a hostile or broken server can make the client fill with one message.
pub const DEFAULT_MAX_SIZE: u64 = 256 << 20;

/// Messages per batch: one journal fsync before and one after each batch.
const BATCH: usize = 64;

/// The strongest login a server offers, on this connection: SCRAM-SHA-256-PLUS (bound to this
/// TLS 1.3 connection, so a man in the middle cannot relay it), SCRAM-SHA-256, SCRAM-SHA-1,
/// CRAM-MD5 and APOP never reveal the password; PLAIN, LOGIN and USER only under TLS.
/// Mechanisms in `tried` are passed over.
pub fn choose_mechanism(
    caps: &ServerCapabilities,
    greeting: &str,
    encrypted: bool,
    can_bind: bool,
    tried: &[String],
) -> Result<String, FetchError> {
    let offered = |m: &str| caps.sasl.iter().any(|s| s == m) && !tried.iter().any(|t| t == m);
    if can_bind && offered("SCRAM-SHA-256-PLUS") {
        return Ok("SCRAM-SHA-256-PLUS".to_owned());
    }
    for m in ["SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5"] {
        if offered(m) {
            return Ok(m.to_owned());
        }
    }
    if apop_timestamp(greeting).is_some() && !tried.iter().any(|t| t == "APOP") {
        return Ok("APOP".to_owned());
    }
    if !encrypted {
        return Err(FetchError::Unsupported(
            "the server offers no login that protects the password, and the connection is not encrypted; use TLS".into(),
        ));
    }
    if offered("PLAIN") {
        return Ok("PLAIN".to_owned());
    }
    if tried.iter().any(|t| t == "USER") {
        return Err(FetchError::Unsupported(
            "no other login mechanism is left to try".into(),
        ));
    }
    Ok("USER".to_owned())
}

/// The one mechanism tried after `refused` (a challenge-response mechanism) was refused: on an
/// encrypted connection PLAIN or USER, which every stored password scheme can check; on a
/// plain one the next challenge-response mechanism that needs another stored secret (a -PLUS
/// variant and its plain twin use the same one).
fn fallback(
    caps: &ServerCapabilities,
    greeting: &str,
    encrypted: bool,
    refused: &str,
) -> Result<String, FetchError> {
    if encrypted {
        let plain = caps.sasl.iter().any(|s| s == "PLAIN");
        return Ok(if plain { "PLAIN" } else { "USER" }.to_owned());
    }
    let family = refused.trim_end_matches("-PLUS");
    let tried = [family.to_owned(), format!("{family}-PLUS")];
    choose_mechanism(caps, greeting, false, false, &tried)
}

/// Whether a mechanism answers a challenge with a proof made from a stored form of the
/// password (SCRAM, CRAM-MD5, APOP): a server may offer it while holding no such form for
/// this user, and then refuses a right password.
fn challenge_response(mechanism: &str) -> bool {
    mechanism.starts_with("SCRAM-") || mechanism == "CRAM-MD5" || mechanism == "APOP"
}

/// The `<...>` timestamp of a greeting, which APOP needs.
fn apop_timestamp(greeting: &str) -> Option<&str> {
    let start = greeting.find('<')?;
    let end = greeting[start..].find('>')? + start;
    Some(&greeting[start..=end])
}

/// RFC 1939 suggests nothing, but a server that answers UIDL with mostly unknown ids where the
/// journal knew many is far more likely to have been migrated without keeping UIDLs than to have
/// received as much new mail as it lost old: fetching would download everything again. True
/// when at least 10 known UIDLs exist, fewer than half of them are still listed, and the unknown
/// ones number at least half of the known.
pub fn detect_uidl_reset(known: usize, still_listed: usize, unknown: usize) -> bool {
    known >= 10 && still_listed * 2 < known && unknown * 2 >= known
}

/// A logged-in connection.
pub struct LoggedIn {
    /// The connection, in the TRANSACTION state.
    pub conn: Conn,
    /// The capabilities the server listed before login.
    pub caps: ServerCapabilities,
    /// The mechanism that succeeded.
    pub mechanism: String,
    /// What the user should know about the login (a fallback to another mechanism).
    pub notes: Vec<String>,
}

/// Connects, logs in with the mechanism `account.auth` says (the strongest offered for
/// [`Auth::Auto`]), and returns the connection with the capabilities the server listed before
/// login. A plaintext password is never sent over an unencrypted connection.
///
/// With [`Auth::Auto`], an `[AUTH]` refusal (or a refusal without a response code) of a
/// challenge-response mechanism is tried once more with the next mechanism this connection
/// offers: servers advertise SCRAM or CRAM-MD5 when some of their users can use them, and
/// such a refusal may only mean this user has no stored form for it. The fallback is reported
/// in [`LoggedIn::notes`].
pub async fn log_in(account: &Account) -> Result<LoggedIn, FetchError> {
    let (mut conn, greeting) = account.dialer.connect().await?;
    conn.allow_weak_scram(account.allow_insecure);
    let caps = conn.capabilities().await?;
    let can_bind = conn.tls_exporter().is_some();
    let choose = |tried: &[String]| match &account.auth {
        Auth::Auto => choose_mechanism(&caps, &greeting, account.encrypted, can_bind, tried),
        Auth::Named(m) => Ok(m.to_ascii_uppercase()),
    };
    let mut mechanism = choose(&[])?;
    let mut notes = Vec::new();
    let ts = apop_timestamp(&greeting).unwrap_or("");
    loop {
        if !account.encrypted && matches!(mechanism.as_str(), "USER" | "PLAIN" | "LOGIN") {
            return Err(FetchError::Unsupported(format!(
                "{mechanism} would send the password in clear over an unencrypted connection"
            )));
        }
        match conn
            .log_in(&mechanism, &account.user, &account.password, ts)
            .await
        {
            Ok(()) => {
                return Ok(LoggedIn {
                    conn,
                    caps,
                    mechanism,
                    notes,
                });
            }
            Err(FetchError::Refused { command, status })
                if account.auth == Auth::Auto
                    && notes.is_empty()
                    && challenge_response(&mechanism)
                    && matches!(status.code.as_deref(), None | Some("AUTH")) =>
            {
                let Ok(next) = fallback(&caps, &greeting, account.encrypted, &mechanism) else {
                    return Err(FetchError::Refused { command, status });
                };
                notes.push(format!(
                    "the server refused {mechanism} ({status}); logged in with {next} instead. \
                     It offers {mechanism} but may hold no {mechanism} secret for this user: \
                     ask its administrator, or set --auth {next} (auth = \"{next}\")"
                ));
                mechanism = next;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs one fetch for `account` into `dest`, recording deliveries in `journal`; `now` is the
/// current Unix time (passed in, so retention can be tested).
pub async fn fetch(
    account: &Account,
    policy: &Policy,
    journal: &mut Journal,
    dest: &mut dyn Destination,
    now: u64,
    progress: &mut ProgressFn<'_>,
) -> Result<Summary, FetchError> {
    let mut summary = Summary::default();
    let LoggedIn {
        mut conn,
        caps,
        notes,
        ..
    } = log_in(account).await?;
    summary.warnings.extend(notes);
    // RFC 2449: after login, CAPA states the user's own EXPIRE and LOGIN-DELAY.
    let after = conn.capabilities().await?;
    summary.expire = after.expire.or(caps.expire).map(|(e, _)| e);
    summary.login_delay = after.login_delay.or(caps.login_delay).map(|(d, _)| d);
    if policy.keep && summary.expire == Some(Expire::Days(0)) {
        summary.warnings.push(
            "the server says EXPIRE 0: it removes every message retrieved, so keep has no effect"
                .into(),
        );
    }
    let listing = list(&mut conn).await?;
    summary.listed = listing.len();

    recover(journal, dest, &mut summary, now)?;

    let known = journal.len();
    let still = listing
        .iter()
        .filter(|m| journal.delivered(&m.uidl).is_some())
        .count();
    let unknown = listing.len() - still;
    summary.already = still;
    if !policy.accept_uidl_reset && detect_uidl_reset(known, still, unknown) {
        let _ = conn.command(&Command::Quit).await;
        return Err(FetchError::Unsupported(format!(
            "the server lists {unknown} unknown messages and only {still} of the {known} already fetched: it has probably changed every UIDL (a server migration). Fetching would download them all again. If that is really wanted, run with --accept-uidl-reset"
        )));
    }

    if policy.only_new && journal.is_empty() && journal.pending().is_empty() {
        journal.done(listing.iter().map(|m| m.uidl.as_str()), now)?;
        summary.skipped_old = listing.len();
    }

    // Plan.
    let mut todo = Vec::new();
    let mut oversized = Vec::new();
    let (mut planned_octets, mut deferred) = (0u64, 0usize);
    let max_size = policy.max_size.unwrap_or(DEFAULT_MAX_SIZE);
    for m in &listing {
        if journal.delivered(&m.uidl).is_some() {
            continue;
        }
        if m.size > max_size {
            summary.too_large += 1;
            if policy.delete_too_large {
                oversized.push(m);
            }
            continue;
        }
        let over_count = policy.max_messages.is_some_and(|max| todo.len() >= max);
        let over_bytes = policy
            .max_bytes
            .is_some_and(|max| planned_octets + m.size > max && !todo.is_empty());
        if over_count || over_bytes {
            deferred += 1;
            continue;
        }
        planned_octets += m.size;
        todo.push(m.clone());
    }
    summary.deferred = deferred;

    // Deliver, batch by batch.
    let pipelining = caps.pipelining || after.pipelining;
    for batch in todo.chunks(BATCH) {
        let tokens: Vec<(String, String)> = batch
            .iter()
            .map(|m| (m.uidl.clone(), dest.token()))
            .collect();
        journal.begin(&tokens)?;
        if pipelining {
            let retrs: Vec<Command> = batch.iter().map(|m| Command::Retr(m.number)).collect();
            conn.send_all(&retrs).await?;
        }
        for (m, (_, token)) in batch.iter().zip(&tokens) {
            let status = if pipelining {
                conn.status().await?
            } else {
                conn.command(&Command::Retr(m.number)).await?
            };
            if !status.ok {
                return Err(FetchError::Refused {
                    command: format!("RETR {}", m.number),
                    status,
                });
            }
            let writer = dest.open(token)?;
            let octets = receive(&mut conn, writer, body_limit(m.size, max_size)).await?;
            summary.fetched += 1;
            summary.octets += octets;
            progress(summary.fetched, summary.octets, todo.len(), planned_octets);
        }
        dest.sync()?;
        journal.done(batch.iter().map(|m| m.uidl.as_str()), now)?;
    }

    // Delete what was delivered (now or before) and is due, and what is too large if asked to.
    let mut due: Vec<&Listed> = listing
        .iter()
        .filter(|m| {
            journal.delivered(&m.uidl).is_some_and(|first| {
                !policy.keep
                    || policy
                        .delete_after_days
                        .is_some_and(|days| now.saturating_sub(first) >= u64::from(days) * 86_400)
            })
        })
        .collect();
    due.extend(oversized);
    if !due.is_empty() {
        let deles: Vec<Command> = due.iter().map(|m| Command::Dele(m.number)).collect();
        let refused = |m: &Listed| format!("DELE {}", m.number);
        if pipelining {
            conn.send_all(&deles).await?;
            for m in &due {
                require_ok(conn.status().await?, &refused(m))?;
            }
        } else {
            for (d, m) in deles.iter().zip(&due) {
                require_ok(conn.command(d).await?, &refused(m))?;
            }
        }
    }
    // QUIT commits the deletions (RFC 1939 UPDATE state).
    require_ok(conn.command(&Command::Quit).await?, "QUIT")?;
    summary.deleted = due.len();
    let gone: HashSet<&str> = due.iter().map(|m| m.uidl.as_str()).collect();
    let listed: HashSet<&str> = listing.iter().map(|m| m.uidl.as_str()).collect();
    journal.compact(|u| listed.contains(u) && !gone.contains(u))?;
    Ok(summary)
}

/// A message in the server's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its message number in this session.
    pub number: u32,
    /// Its UIDL.
    pub uidl: String,
    /// Its size as LIST gives it.
    pub size: u64,
}

/// UIDL and LIST, joined by message number; a server without UIDL is refused.
pub async fn list(conn: &mut Conn) -> Result<Vec<Listed>, FetchError> {
    let uidl = conn.command(&Command::Uidl(None)).await?;
    if !uidl.ok {
        return Err(FetchError::Unsupported(format!(
            "the server does not support UIDL ({uidl}); without it messages cannot be told apart between runs"
        )));
    }
    let uidls = conn.lines().await?;
    conn.cmd(&Command::List(None)).await?;
    let sizes: std::collections::HashMap<u32, u64> = conn
        .lines()
        .await?
        .iter()
        .filter_map(|l| {
            let (n, s) = l.split_once(' ')?;
            Some((n.parse().ok()?, s.trim().parse().ok()?))
        })
        .collect();
    let mut out = Vec::with_capacity(uidls.len());
    for line in uidls {
        let Some((n, uidl)) = line.split_once(' ') else {
            return Err(FetchError::Protocol(format!("bad UIDL line {line:?}")));
        };
        let number: u32 = n
            .parse()
            .map_err(|_| FetchError::Protocol(format!("bad UIDL line {line:?}")))?;
        let uidl = uidl.trim();
        if uidl.is_empty() || uidl.contains(char::is_whitespace) {
            return Err(FetchError::Protocol(format!("bad UIDL line {line:?}")));
        }
        out.push(Listed {
            number,
            uidl: uidl.to_owned(),
            size: sizes.get(&number).copied().unwrap_or(0),
        });
    }
    Ok(out)
}

/// Settles the intents of an interrupted run: deliveries the destination holds are recorded,
/// the others forgotten (their messages are fetched again, once).
fn recover(
    journal: &mut Journal,
    dest: &mut dyn Destination,
    summary: &mut Summary,
    now: u64,
) -> Result<(), FetchError> {
    let pending = journal.pending();
    if pending.is_empty() {
        return Ok(());
    }
    let tokens: Vec<String> = pending.iter().map(|(_, t)| t.clone()).collect();
    let held = dest.holds(&tokens)?;
    for (uidl, token) in &pending {
        if held.contains(token) {
            journal.done([uidl.as_str()], now)?;
        } else {
            journal.abandon(uidl)?;
        }
        summary.recovered += 1;
    }
    Ok(())
}

/// The most octets accepted for a message LIST announced as `listed`: twice that and a MiB, and
/// never more than `max_size`. Servers miscount a little (Dovecot by two octets for a message
/// without a final newline); one that sends far more than it announced is broken or hostile,
/// and must not fill the disk.
fn body_limit(listed: u64, max_size: u64) -> u64 {
    listed
        .saturating_mul(2)
        .saturating_add(1 << 20)
        .min(max_size)
}

/// Streams a RETR body into `writer`; returns its octets.
async fn receive(
    conn: &mut Conn,
    mut writer: Box<dyn MessageWriter>,
    limit: u64,
) -> Result<u64, FetchError> {
    let mut failed: Option<std::io::Error> = None;
    let received = conn
        .body_into(limit, |chunk| {
            if failed.is_none()
                && let Err(e) = writer.write(chunk)
            {
                failed = Some(e);
            }
        })
        .await;
    match (received, failed) {
        (Ok(octets), None) => {
            writer.finish()?;
            Ok(octets)
        }
        (Err(e), _) => {
            writer.discard();
            Err(e)
        }
        (Ok(_), Some(e)) => {
            writer.discard();
            Err(FetchError::io("storing a message")(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uidl_reset_needs_many_known_and_mostly_gone() {
        assert!(!detect_uidl_reset(5, 0, 5));
        assert!(detect_uidl_reset(100, 3, 100));
        assert!(!detect_uidl_reset(100, 60, 100));
        assert!(
            !detect_uidl_reset(100, 10, 20),
            "mail was deleted elsewhere, little arrived"
        );
    }

    #[test]
    fn mechanisms_protect_the_password_without_tls() {
        let caps = ServerCapabilities::parse(["SASL PLAIN CRAM-MD5 SCRAM-SHA-1"]);
        assert_eq!(
            choose_mechanism(&caps, "", false, false, &[]).unwrap(),
            "SCRAM-SHA-1"
        );
        let plus = ServerCapabilities::parse(["SASL SCRAM-SHA-256 SCRAM-SHA-256-PLUS"]);
        assert_eq!(
            choose_mechanism(&plus, "", true, true, &[]).unwrap(),
            "SCRAM-SHA-256-PLUS"
        );
        assert_eq!(
            choose_mechanism(&plus, "", true, false, &[]).unwrap(),
            "SCRAM-SHA-256"
        );
        let plain = ServerCapabilities::parse(["SASL PLAIN", "USER"]);
        assert_eq!(
            choose_mechanism(&plain, "", true, false, &[]).unwrap(),
            "PLAIN"
        );
        assert!(choose_mechanism(&plain, "", false, false, &[]).is_err());
        assert_eq!(
            choose_mechanism(&plain, "POP3 ready <1.2@host>", false, false, &[]).unwrap(),
            "APOP"
        );
        assert_eq!(
            choose_mechanism(&ServerCapabilities::default(), "", true, false, &[]).unwrap(),
            "USER"
        );
    }

    #[test]
    fn a_refused_mechanism_is_passed_over_once() {
        let caps = ServerCapabilities::parse(["SASL PLAIN CRAM-MD5 SCRAM-SHA-256", "USER"]);
        let tried = ["SCRAM-SHA-256".to_owned()];
        assert_eq!(
            choose_mechanism(&caps, "", true, false, &tried).unwrap(),
            "CRAM-MD5"
        );
        let tried = ["CRAM-MD5".to_owned()];
        let only_cram = ServerCapabilities::parse(["SASL CRAM-MD5", "USER"]);
        assert_eq!(
            choose_mechanism(&only_cram, "", true, false, &tried).unwrap(),
            "USER"
        );
        assert!(
            choose_mechanism(&only_cram, "", false, false, &tried).is_err(),
            "no plaintext fallback without TLS"
        );
        let apop = ["APOP".to_owned()];
        assert!(
            choose_mechanism(
                &ServerCapabilities::default(),
                "hi <1@h>",
                false,
                false,
                &apop
            )
            .is_err()
        );
        assert!(challenge_response("SCRAM-SHA-1-PLUS") && challenge_response("APOP"));
        let all = ServerCapabilities::parse([
            "SASL SCRAM-SHA-256-PLUS SCRAM-SHA-256 SCRAM-SHA-1 CRAM-MD5",
        ]);
        assert_eq!(
            fallback(&all, "", false, "SCRAM-SHA-256-PLUS").unwrap(),
            "SCRAM-SHA-1"
        );
        assert_eq!(
            fallback(&all, "", true, "SCRAM-SHA-256-PLUS").unwrap(),
            "USER"
        );
        let plain = ServerCapabilities::parse(["SASL SCRAM-SHA-256 PLAIN"]);
        assert_eq!(
            fallback(&plain, "", true, "SCRAM-SHA-256").unwrap(),
            "PLAIN"
        );
        assert!(!challenge_response("PLAIN") && !challenge_response("USER"));
    }
}
