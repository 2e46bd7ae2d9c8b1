//! systemd's service notifications (sd_notify(3)), so that `Type=notify` units know when
//! Poplar is serving, what it is doing, that it is alive, and when it reloads or stops. Every
//! call does nothing outside systemd (no `NOTIFY_SOCKET`), and a failed notification is only
//! logged: serving mail matters more than telling systemd about it.

use sd_notify::NotifyState;
use std::time::Duration;

/// How often STATUS= is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(5);

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

fn status_line(status: &pop3_server::Status) -> String {
    format!(
        "serving: {} connections, {} logged in",
        status.connections(),
        status.logged_in()
    )
}

/// Listeners are bound and privileges dropped: READY=1, then STATUS= every few seconds and,
/// when the unit sets `WatchdogSec=`, WATCHDOG=1 at half that period, from the same runtime
/// that serves sessions (a stalled runtime stops them, and systemd restarts the service).
pub(crate) fn serving(status: pop3_server::Status) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let line = status_line(&status);
    send(&[NotifyState::Ready, NotifyState::Status(&line)]);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(STATUS_EVERY);
        loop {
            tick.tick().await;
            send(&[NotifyState::Status(&status_line(&status))]);
        }
    });
    if let Some(timeout) = watchdog() {
        let period = (timeout / 2).max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                send(&[NotifyState::Watchdog]);
            }
        });
    }
}

/// The watchdog timeout systemd set for this process, as sd_watchdog_enabled(3) reads it:
/// `WATCHDOG_USEC`, when `WATCHDOG_PID` names this process or is unset. (sd_notify's own
/// `watchdog_enabled` insists on `WATCHDOG_PID`, which the manual page does not.)
fn watchdog() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    match std::env::var("WATCHDOG_PID") {
        Ok(pid) if pid.parse::<u32>().ok() != Some(std::process::id()) => None,
        _ => (usec > 0).then(|| Duration::from_micros(usec)),
    }
}

/// A SIGHUP reload begins (RELOADING=1 with the monotonic time, as `Type=notify-reload`
/// wants).
pub(crate) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// The reload is over (whatever its outcome, which the log says).
pub(crate) fn reloaded() {
    send(&[NotifyState::Ready]);
}

/// Shutdown begins: sessions are finishing.
pub(crate) fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: letting sessions finish"),
    ]);
}
