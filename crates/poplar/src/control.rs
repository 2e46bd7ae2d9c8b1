//! The control socket, `DATA/control` (mode 0600, the service user's): how `poplar who`,
//! `kick`, `reload` and `stats` reach a running `poplar serve` on this machine. A client sends
//! one line, `who`, `who USER`, `kick USER`, `reload` or `stats`, and reads JSON lines back: one
//! session each for `who`, `{"kicked": N}`, `{"reloaded": "what"}`, `{"metrics": "text"}`, or
//! `{"error": "..."}`. Only root and the service user can open it.

use anyhow::{Context, Result, bail};
use pop3_server::{Config, SessionInfo, Sessions};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// The socket's path.
pub(crate) fn path(config: &Config) -> PathBuf {
    config.data_dir.join("control")
}

/// Listens on the control socket until the server stops (after privileges were given up,
/// so the socket is the service user's).
/// What the control socket answers from.
#[derive(Clone)]
pub(crate) struct Served {
    pub(crate) sessions: Sessions,
    pub(crate) reloader: Option<Arc<pop3_server::TlsReloader>>,
    pub(crate) metrics: crate::metrics::Metrics,
}

pub(crate) fn listen(config: &Config, served: Served) -> Result<()> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let path = path(config);
    // A socket left by an earlier run is replaced; anything else in its place is not.
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        if !meta.file_type().is_socket() {
            bail!("{} exists and is not a socket: remove it", path.display());
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    tracing::info!(
        "control socket on {} (poplar who, kick, reload, stats)",
        path.display()
    );
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let served = served.clone();
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, &served).await {
                            tracing::debug!(error = %e, "control connection failed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(())
}

/// Longest request line read.
const MAX_REQUEST: u64 = 1024;

async fn answer(stream: tokio::net::UnixStream, served: &Served) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::io::BufReader::new(read.take(MAX_REQUEST)).read_line(&mut line),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request"))??;
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut reply = String::new();
    let push = |reply: &mut String, value: serde_json::Value| {
        reply.push_str(&value.to_string());
        reply.push('\n');
    };
    match words.as_slice() {
        ["who"] | ["who", _] => {
            for session in served.sessions.list(words.get(1).copied()) {
                push(&mut reply, serde_json::json!(session));
            }
        }
        ["kick", user] => {
            let kicked = served.sessions.kick(user);
            tracing::info!(user, sessions = kicked, "poplar kick");
            push(&mut reply, serde_json::json!({ "kicked": kicked }));
        }
        ["reload"] => match crate::serve::reload("poplar reload", served.reloader.as_deref()) {
            Ok(done) => push(&mut reply, serde_json::json!({ "reloaded": done })),
            Err(e) => push(&mut reply, serde_json::json!({ "error": e })),
        },
        ["stats"] => push(
            &mut reply,
            serde_json::json!({ "metrics": served.metrics.render() }),
        ),
        _ => push(
            &mut reply,
            serde_json::json!({ "error": "unknown request: send who, who USER, kick USER, reload or stats" }),
        ),
    }
    write.write_all(reply.as_bytes()).await?;
    write.shutdown().await
}

/// Sends one request to the running server and returns its answer lines.
fn ask(config: &Config, request: &str) -> Result<Vec<serde_json::Value>> {
    let path = path(config);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).with_context(|| {
        format!(
            "cannot reach a running poplar serve through {} (is it running with this configuration and data directory? run as root or the service user)",
            path.display()
        )
    })?;
    stream.write_all(format!("{request}\n").as_bytes())?;
    let mut answers = Vec::new();
    for line in BufReader::new(stream).lines() {
        let value: serde_json::Value =
            serde_json::from_str(&line?).context("the server's answer is not JSON")?;
        if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
            bail!("the server refused: {error}");
        }
        answers.push(value);
    }
    Ok(answers)
}

/// `poplar who [USER] [--json]`.
pub(crate) fn who(config: &Config, user: Option<&str>, json: bool) -> Result<ExitCode> {
    let request = match user {
        Some(user) => format!("who {user}"),
        None => "who".to_owned(),
    };
    let answers = ask(config, &request)?;
    if json {
        for value in &answers {
            crate::say(value)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let sessions: Vec<SessionInfo> = answers
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()
        .context("the server's answer is not a session")?;
    crate::say(&format!(
        "{:<24} {:<40} {:<8} {:<4} {:<20} {:>8}",
        "USER", "ADDRESS", "LISTENER", "TLS", "SINCE", "COMMANDS"
    ))?;
    for s in &sessions {
        crate::say(&format!(
            "{:<24} {:<40} {:<8} {:<4} {:<20} {:>8}",
            s.user.as_deref().unwrap_or("(logging in)"),
            s.peer.to_string(),
            s.listener,
            if s.tls { "yes" } else { "no" },
            poplar_util::clock::utc(i64::try_from(s.since).unwrap_or(0)),
            s.commands
        ))?;
    }
    crate::say(&format!("{} session(s)", sessions.len()))?;
    Ok(ExitCode::SUCCESS)
}

/// `poplar reload`: what SIGHUP does, with the outcome shown (a refused certificate's reason
/// included) and the exit status set by it.
pub(crate) fn reload(config: &Config) -> Result<ExitCode> {
    let answers = ask(config, "reload")?;
    let done = answers
        .first()
        .and_then(|v| v.get("reloaded"))
        .and_then(serde_json::Value::as_str)
        .context("the server's answer says nothing about the reload")?;
    crate::say(&done)?;
    Ok(ExitCode::SUCCESS)
}

/// `poplar stats [--prometheus]`.
pub(crate) fn stats(config: &Config, prometheus: bool) -> Result<ExitCode> {
    let answers = ask(config, "stats")?;
    let text = answers
        .first()
        .and_then(|v| v.get("metrics"))
        .and_then(serde_json::Value::as_str)
        .context("the server's answer holds no metrics")?;
    if prometheus {
        crate::say(&text.trim_end())?;
    } else {
        for line in crate::metrics::in_words(text) {
            crate::say(&line)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `poplar kick USER`.
pub(crate) fn kick(config: &Config, user: &str) -> Result<ExitCode> {
    let answers = ask(config, &format!("kick {user}"))?;
    let kicked = answers
        .first()
        .and_then(|v| v.get("kicked"))
        .and_then(serde_json::Value::as_u64)
        .context("the server's answer says nothing about the kick")?;
    println!("ended {kicked} session(s) of {user}; nothing they deleted was applied");
    Ok(ExitCode::SUCCESS)
}
