//! The sessions running now, for an administrator's `poplar who` and `poplar kick`: each
//! connection registers itself while it lives (address, listener, TLS, user once logged in,
//! commands so far) and can be told to end. A kicked session ends as a dropped connection
//! would: `-ERR [SYS/TEMP]`, nothing deleted, the maildrop released.

use crate::Kind;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

/// Every live connection.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Arc<Entry>>>,
}

/// One connection's public state.
#[derive(Debug)]
pub(crate) struct Entry {
    id: u64,
    peer: SocketAddr,
    listener: Kind,
    since: SystemTime,
    tls: AtomicBool,
    user: Mutex<Option<String>>,
    commands: AtomicU32,
    /// Told when an administrator ends the session (the permit waits if it is busy).
    pub(crate) kick: tokio::sync::Notify,
}

/// A connection's place in the registry, given up when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<Registry>,
    pub(crate) entry: Arc<Entry>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.entry.id);
    }
}

impl Registration {
    /// The connection's number, in every log line of its session.
    pub(crate) fn id(&self) -> u64 {
        self.entry.id
    }

    /// The connection is encrypted now.
    pub(crate) fn set_tls(&self) {
        self.entry.tls.store(true, Ordering::Relaxed);
    }

    /// The session logged in as `user`.
    pub(crate) fn set_user(&self, user: &str) {
        *self
            .entry
            .user
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(user.to_owned());
    }

    /// Commands received so far.
    pub(crate) fn set_commands(&self, commands: u32) {
        self.entry.commands.store(commands, Ordering::Relaxed);
    }
}

/// A session as `poplar who` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionInfo {
    /// The connection's number on this server.
    pub id: u64,
    /// The user, once logged in.
    pub user: Option<String>,
    /// The client's address and port (from the PROXY header behind a balancer).
    pub peer: SocketAddr,
    /// `POP3` or `POP3S`.
    pub listener: String,
    /// Encrypted (POP3S, or after STLS).
    pub tls: bool,
    /// When the connection arrived, Unix seconds.
    pub since: u64,
    /// Commands received.
    pub commands: u32,
}

impl Registry {
    /// Registers a new connection.
    pub(crate) fn register(self: &Arc<Self>, peer: SocketAddr, listener: Kind) -> Registration {
        let entry = Arc::new(Entry {
            id: self.next.fetch_add(1, Ordering::Relaxed) + 1,
            peer,
            listener,
            since: SystemTime::now(),
            tls: AtomicBool::new(listener == Kind::Pop3s),
            user: Mutex::new(None),
            commands: AtomicU32::new(0),
            kick: tokio::sync::Notify::new(),
        });
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(entry.id, Arc::clone(&entry));
        Registration {
            registry: Arc::clone(self),
            entry,
        }
    }

    /// The sessions now, oldest first; only `user`'s when given.
    pub(crate) fn list(&self, user: Option<&str>) -> Vec<SessionInfo> {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let mut sessions: Vec<SessionInfo> = live
            .values()
            .map(|e| SessionInfo {
                id: e.id,
                user: e
                    .user
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
                peer: e.peer,
                listener: e.listener.to_string(),
                tls: e.tls.load(Ordering::Relaxed),
                since: e
                    .since
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                commands: e.commands.load(Ordering::Relaxed),
            })
            .filter(|s| user.is_none_or(|u| s.user.as_deref() == Some(u)))
            .collect();
        sessions.sort_by_key(|s| s.id);
        sessions
    }

    /// Tells every session of `user` to end; returns how many.
    pub(crate) fn kick(&self, user: &str) -> usize {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let mut kicked = 0;
        for entry in live.values() {
            let theirs = entry
                .user
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_deref()
                == Some(user);
            if theirs {
                entry.kick.notify_one();
                kicked += 1;
            }
        }
        kicked
    }
}

/// What an administrator can see and do while the server runs ([`crate::Server::sessions`]).
#[derive(Debug, Clone)]
pub struct Sessions(pub(crate) Arc<Registry>);

impl Sessions {
    /// The sessions now, oldest first; only `user`'s when given.
    pub fn list(&self, user: Option<&str>) -> Vec<SessionInfo> {
        self.0.list(user)
    }

    /// Ends every session of `user` without applying its deletions; returns how many.
    pub fn kick(&self, user: &str) -> usize {
        self.0.kick(user)
    }
}
