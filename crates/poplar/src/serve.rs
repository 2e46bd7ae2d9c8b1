//! `poplar serve`.

use crate::{ServeArgs, create_private_dir, init_logging, privileges, welcome};
use anyhow::{Context, Result};
use pop3_server::config::StoreBackend;
use pop3_server::{Config, Server};
use pop3_store::MailStore;
use std::process::ExitCode;
use std::sync::Arc;

pub(crate) fn run(args: ServeArgs) -> Result<ExitCode> {
    let mut config = args.common.load()?;
    if !args.pop3.is_empty() || !args.pop3s.is_empty() {
        config.listen.pop3 = args.pop3;
        config.listen.pop3s = args.pop3s;
    }
    if !args.lmtp.is_empty() {
        config.listen.lmtp = args.lmtp;
    }
    if !args.kpop.is_empty() {
        config.listen.kpop = args.kpop;
    }
    use_keytab(&config)?;
    init_logging(&config);
    tracing::info!(
        "configuration: {}; data directory: {}",
        args.common.source(),
        config.data_dir.display()
    );
    // Everything is checked before anything is created: a wrong setting must not leave a
    // data directory, a certificate or a demo user behind.
    let mut errors = Vec::new();
    for problem in config.problems(true) {
        match problem.severity {
            pop3_server::config::Severity::Error => errors.push(problem.message),
            pop3_server::config::Severity::Warning => tracing::warn!("{}", problem.message),
        }
    }
    if !errors.is_empty() {
        return Err(crate::ConfigProblem(format!(
            "the configuration has {} error(s), nothing was started or created:\n  {}",
            errors.len(),
            errors.join("\n  ")
        ))
        .into());
    }
    raise_descriptor_limit(config.limits.max_connections);
    create_private_dir(&config.data_dir)?;
    let demo_password = if config.demo_user {
        welcome::ensure_demo_user(&config)?
    } else {
        None
    };
    let sockets = crate::systemd::sockets()?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let store = match config.store.backend {
            StoreBackend::Maildir => "maildir",
            StoreBackend::Postgres => "postgres",
        };
        // Before anything counts: the retention purge at start, the first connections.
        let metrics = crate::metrics::Metrics::install_recorder(store)?;
        match config.store.backend {
            StoreBackend::Maildir => {
                // One users file, parsed once, for logins and per-user quota rules.
                let users = config.users_source();
                let store = config.maildir_store_with_users(&users);
                let server =
                    Server::bind_with_sockets(&config, store.clone(), users, sockets).await?;
                let policy = config.expire_policy();
                if policy.purges() {
                    tokio::spawn(pop3_server::expire::run_periodically(store, policy));
                }
                run_bound(&config, server, demo_password.as_deref(), metrics).await
            }
            StoreBackend::Postgres => {
                let (store, users) = crate::db::connect_following_patiently(&config).await?;
                let server =
                    Server::bind_with_sockets(&config, store.clone(), users, sockets).await?;
                let policy = config.expire_policy();
                if policy.purges() {
                    tokio::spawn(pop3_server::expire::run_periodically(store, policy));
                }
                run_bound(&config, server, demo_password.as_deref(), metrics).await
            }
        }
    })
}

/// MIT Kerberos reads the acceptor's keytab from `KRB5_KTNAME`; a process can only set its
/// own environment safely before it has threads, which is before this point in no Rust
/// program that may have started one. So when `auth.gssapi.keytab` names a keytab the
/// environment does not, `serve` runs itself again with it set (the same process, by exec:
/// the PID, the descriptors systemd passed and `NOTIFY_SOCKET` stay valid).
fn use_keytab(config: &Config) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let Some(keytab) = config.auth.gssapi.as_ref().and_then(|g| g.keytab.as_ref()) else {
        return Ok(());
    };
    let wanted = format!("FILE:{}", keytab.display());
    if std::env::var_os("KRB5_KTNAME").is_some_and(|v| v == wanted.as_str()) {
        return Ok(());
    }
    let exe = std::env::current_exe().context("cannot find the poplar binary to run it again")?;
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("KRB5_KTNAME", &wanted)
        .exec();
    Err(error).context("cannot run poplar again with the keytab of auth.gssapi.keytab")
}

/// Serves from bound listeners until SIGTERM or SIGINT, whatever the store.
async fn run_bound<S: MailStore>(
    config: &Config,
    server: Server<S>,
    demo_password: Option<&str>,
    recorder: metrics_exporter_prometheus::PrometheusHandle,
) -> Result<ExitCode> {
    // Ports are bound and the TLS key is loaded: root is no longer needed.
    privileges::become_configured_user(config, true)?;
    if let Some(password) = demo_password {
        welcome::deliver_welcome(config, &server.local_addrs())?;
        let first_pop3 = server
            .local_addrs()
            .into_iter()
            .find(|(k, _)| *k == pop3_server::Kind::Pop3);
        if let Some((_, addr)) = first_pop3 {
            welcome::print_hint(password, addr);
        }
    }
    let reloader = server.tls_reloader(config).map(Arc::new);
    tokio::spawn(reload_on_sighup(reloader.clone()));
    let metrics = crate::metrics::Metrics::new(recorder, server.status());
    if let Some(addr) = config.metrics.listen {
        let bound = metrics
            .listen(addr, config.metrics.allow_from.clone())
            .await?;
        tracing::info!("metrics on http://{bound}/metrics, health check on http://{bound}/healthz");
    }
    if let Some(addr) = config.autoconfig.listen {
        let ports = |kind| {
            let addrs = server.local_addrs().into_iter();
            addrs
                .filter(|(k, _)| *k == kind)
                .map(|(_, a)| a.port())
                .collect()
        };
        let bound = (
            ports(pop3_server::Kind::Pop3),
            ports(pop3_server::Kind::Pop3s),
        );
        let endpoints = crate::autoconfig::Endpoints::of(config, Some(bound));
        let autoconfig = crate::autoconfig::Autoconfig::new(
            Arc::new(config.clone()),
            endpoints,
            config.users_source(),
        )?;
        let bound = autoconfig.listen(addr).await?;
        tracing::info!(
            "client autoconfiguration for {} on http://{bound}/ (Thunderbird, Autodiscover, Apple profiles)",
            config.autoconfig.domains.join(", ")
        );
    }
    let served = crate::control::Served {
        sessions: server.sessions(),
        reloader,
        metrics,
    };
    if let Err(e) = crate::control::listen(config, served) {
        tracing::warn!(
            "{e:#}; `poplar who`, `kick`, `reload` and `stats` cannot reach this server"
        );
    }
    // Said last, once the control socket and the metrics listener are up too: whoever waits
    // for these lines (an administrator, a test) can use all of them.
    for (kind, addr) in server.local_addrs() {
        let how = match kind {
            pop3_server::Kind::Pop3 if config.tls.enabled => " (STLS available)",
            _ => "",
        };
        tracing::info!("listening for {kind} on {addr}{how}");
        tracing::info!("{kind} on {addr}: {}", pop3_server::retr_path(kind));
    }
    for addr in server.lmtp_addrs() {
        tracing::info!("listening for LMTP on {addr}");
    }
    crate::systemd::serving(server.status());
    server
        .serve(async {
            shutdown_signal().await;
            crate::systemd::stopping();
        })
        .await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Reloads what can change while the server runs: the TLS certificate and key (users need
/// nothing: they are re-read as they change). Tells systemd around it. Returns what happened,
/// for the log and for `poplar reload`.
/// `trigger` (`SIGHUP`, `poplar reload`) starts each log line.
pub(crate) fn reload(
    trigger: &str,
    reloader: Option<&pop3_server::TlsReloader>,
) -> Result<String, String> {
    crate::systemd::reloading();
    let outcome = match reloader {
        None => Ok("nothing to reload (TLS is off; users are re-read when they change)".to_owned()),
        Some(reloader) => reloader
            .reload()
            .map(|()| "reloaded the TLS certificate and key".to_owned())
            .map_err(|e| {
                format!(
                    "{e}; still using the previous certificate. Fix the files (after giving up \
                     root, the configured user must be able to read them) and reload again"
                )
            }),
    };
    crate::systemd::reloaded();
    match &outcome {
        Ok(done) => tracing::info!("{trigger}: {done}"),
        Err(e) => tracing::error!("{trigger}: {e}"),
    }
    outcome
}

/// Reloads on every SIGHUP (after a certificate renewal), without touching running sessions.
async fn reload_on_sighup(reloader: Option<Arc<pop3_server::TlsReloader>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGHUP; reloads need `poplar reload` or a restart");
            return;
        }
    };
    while hup.recv().await.is_some() {
        let _ = reload("SIGHUP", reloader.as_deref());
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; stop with SIGINT");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// Each connection needs a descriptor (two while a maildrop is open), and the usual soft limit
/// of 1024 would make `accept` fail long before `limits.max_connections`. Raises the soft limit
/// to the hard one, and says so when even that is too low.
fn raise_descriptor_limit(max_connections: usize) {
    let limit = poplar_util::host::raise_nofile_limit();
    // Descriptors for the listeners, logs, index files and headroom.
    let needed = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_mul(2)
        + 64;
    if limit < needed {
        tracing::warn!(
            "only {limit} file descriptors are available but limits.max_connections = \
             {max_connections} may need {needed}: raise the limit (LimitNOFILE= in the systemd \
             unit, or ulimit -n) or lower limits.max_connections"
        );
    }
}
