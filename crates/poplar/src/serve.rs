//! `poplar serve`.

use crate::{ServeArgs, init_logging, welcome};
use anyhow::{Context, Result};
use pop3_server::Server;
use pop3_store::MaildirStore;
use std::process::ExitCode;

pub(crate) fn run(args: ServeArgs) -> Result<ExitCode> {
    let mut config = args.common.load()?;
    if !args.pop3.is_empty() || !args.pop3s.is_empty() {
        config.listen.pop3 = args.pop3;
        config.listen.pop3s = args.pop3s;
    }
    init_logging(config.log_level);
    create_private_dir(&config.data_dir)?;
    let demo_password = if args.common.embedded() {
        welcome::ensure_demo_user(&config)?
    } else {
        None
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let store = MaildirStore::new(config.mail_root(), config.hostname());
        let server = Server::bind(&config, store).await?;
        for (kind, addr) in server.local_addrs() {
            let how = match kind {
                pop3_server::Kind::Pop3 if config.tls.enabled => " (STLS available)",
                _ => "",
            };
            tracing::info!("listening for {kind} on {addr}{how}");
        }
        let first_pop3 = server
            .local_addrs()
            .into_iter()
            .find(|(k, _)| *k == pop3_server::Kind::Pop3);
        if let (Some(password), Some((_, addr))) = (&demo_password, first_pop3) {
            welcome::print_hint(password, addr);
        }
        server.serve(shutdown_signal()).await;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
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

fn create_private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))
}
