//! systemd's service notifications (sd_notify(3)), so that `Type=notify` units know when
//! Poplar is serving, what it is doing, that it is alive, and when it reloads or stops. Every
//! call does nothing outside systemd (no `NOTIFY_SOCKET`), and a failed notification is only
//! logged: serving mail matters more than telling systemd about it. Also socket activation
//! (sd_listen_fds(3)): the listening sockets `poplar.socket` hands over. And log lines the
//! journal files under their level's priority (`journalctl -p warning` works).

use sd_notify::NotifyState;
use std::time::Duration;

/// The sockets systemd passed (`LISTEN_FDS`, for this process: `LISTEN_PID`), as listeners;
/// none outside socket activation.
pub(crate) fn sockets() -> anyhow::Result<Vec<std::net::TcpListener>> {
    use anyhow::Context;
    let mut fds = listenfd::ListenFd::from_env();
    let mut sockets = Vec::new();
    for index in 0..fds.len() {
        let socket = fds
            .take_tcp_listener(index)
            .with_context(|| {
                format!("socket {index} from systemd is not a listening TCP socket: poplar.socket must use ListenStream=")
            })?
            .with_context(|| format!("socket {index} from systemd was already taken"))?;
        sockets.push(socket);
    }
    if !sockets.is_empty() {
        tracing::info!(
            "socket activation: {} listening socket(s) from systemd",
            sockets.len()
        );
    }
    Ok(sockets)
}

/// Whether standard error is connected to the journal: `JOURNAL_STREAM` (set by systemd for
/// a unit whose output goes there) names its device and inode (systemd.exec(5)).
pub(crate) fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    // Standard error's own device and inode, from /proc (no unsafe descriptor handling).
    std::fs::metadata("/proc/self/fd/2")
        .is_ok_and(|m| dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino()))
}

/// Prefixes each log line with its syslog priority as sd-daemon(3) defines it (`<3>` error,
/// `<4>` warning, `<6>` info, `<7>` debug), which journald strips and records as PRIORITY=.
pub(crate) struct JournalPriority<F>(pub(crate) F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalPriority<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            tracing::Level::DEBUG | tracing::Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

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
