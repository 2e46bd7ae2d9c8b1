//! Least privilege: a private umask for every file Poplar creates, and the switch from root to
//! the configured `user`/`group`.
//!
//! `poplar serve` needs root only to bind ports below 1024 and perhaps to read a TLS key that
//! only root may read. So, when started as root with `user` set, it does those first, makes the
//! data directory that user's, and then gives up root for good (supplementary groups, group,
//! then user, and checks that root cannot be regained) before it accepts a connection. `deliver`
//! and `user` switch before they touch a file, so everything in the data directory belongs to
//! the one user the server runs as. Started as root without `user`, everything keeps working
//! (a container where everything is root must still run the embedded default) but a warning
//! says how to stop running as root.

use anyhow::{Context, Result, bail};
use nix::unistd::{Gid, Group, Uid, User};
use pop3_server::Config;
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Files 0600 and directories 0700, whatever the caller's umask: mail and password hashes are
/// nobody else's business.
pub(crate) fn private_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// The configured account, resolved.
struct Account {
    name: String,
    uid: Uid,
    gid: Gid,
    group: String,
}

fn account(config: &Config) -> Result<Option<Account>> {
    let Some(name) = &config.user else {
        return Ok(None);
    };
    let user = User::from_name(name)
        .with_context(|| format!("cannot look up user {name:?}"))?
        .with_context(|| {
            format!("user = {name:?}: no such user. Create it (e.g. `useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin {name}`) or fix the setting")
        })?;
    let (gid, group) = match &config.group {
        Some(g) => {
            let group = Group::from_name(g)
                .with_context(|| format!("cannot look up group {g:?}"))?
                .with_context(|| format!("group = {g:?}: no such group"))?;
            (group.gid, g.clone())
        }
        None => {
            let name = Group::from_gid(user.gid)
                .ok()
                .flatten()
                .map_or_else(|| user.gid.to_string(), |g| g.name);
            (user.gid, name)
        }
    };
    Ok(Some(Account {
        name: name.clone(),
        uid: user.uid,
        gid,
        group,
    }))
}

/// Becomes the configured user if running as root: `serve` calls this after binding, the other
/// commands before touching a file. `serve` also warns when it runs as root with no user
/// configured.
pub(crate) fn become_configured_user(config: &Config, serving: bool) -> Result<()> {
    let account = account(config)?;
    let euid = nix::unistd::geteuid();
    match (account, euid.is_root()) {
        (None, true) if serving => {
            tracing::warn!(
                "running as root: set user = \"poplar\" (an unprivileged system user) in the \
                 configuration so that Poplar gives up root after binding its ports"
            );
            Ok(())
        }
        (None, _) => Ok(()),
        (Some(a), false) if a.uid == euid => Ok(()),
        (Some(a), false) => bail!(
            "user = {:?} is set, but this process runs as uid {euid} and cannot switch to it: \
             start it as root (it switches after binding) or as {:?}",
            a.name,
            a.name
        ),
        (Some(a), true) => {
            crate::create_private_dir(&config.data_dir)?;
            take_ownership(&config.data_dir, a.uid, a.gid)?;
            switch(&a)?;
            tracing::info!(
                user = %a.name,
                uid = %a.uid,
                group = %a.group,
                gid = %a.gid,
                "gave up root privileges"
            );
            Ok(())
        }
    }
}

fn switch(a: &Account) -> Result<()> {
    let name = CString::new(a.name.as_bytes()).context("user name contains NUL")?;
    // Supplementary groups first (they give access to e.g. a TLS key readable by group
    // ssl-cert), then the group, then the user: after setuid nothing else may be changed.
    nix::unistd::initgroups(&name, a.gid)
        .with_context(|| format!("cannot set the supplementary groups of {:?}", a.name))?;
    nix::unistd::setgid(a.gid).with_context(|| format!("cannot switch to gid {}", a.gid))?;
    nix::unistd::setuid(a.uid).with_context(|| format!("cannot switch to uid {}", a.uid))?;
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() || nix::unistd::getegid().as_raw() == 0 {
        bail!("root privileges could not be given up; refusing to continue");
    }
    Ok(())
}

/// Makes the data directory belong to the account, readable by nobody else. The first time (the directory is owned by
/// someone else) the whole tree is changed; later only the directory's own files and `tls/`,
/// which commands run as root before the switch may have created, so a large mail tree is not
/// walked at every start.
fn take_ownership(dir: &Path, uid: Uid, gid: Gid) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir)
        .with_context(|| format!("cannot inspect the data directory {}", dir.display()))?;
    let whole = meta.uid() != uid.as_raw();
    if whole {
        tracing::info!(dir = %dir.display(), uid = %uid, gid = %gid, "giving the data directory to the configured user");
    }
    chown_tree(dir, uid, gid, if whole { usize::MAX } else { 1 })
}

fn chown_tree(path: &Path, uid: Uid, gid: Gid, depth: usize) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("cannot inspect {}", path.display()))?;
    if meta.uid() != uid.as_raw() || meta.gid() != gid.as_raw() {
        std::os::unix::fs::lchown(path, Some(uid.as_raw()), Some(gid.as_raw()))
            .with_context(|| format!("cannot change the owner of {}", path.display()))?;
    }
    // What others could read (made under a looser umask, or copied in) becomes private too.
    let mode = meta.permissions().mode();
    if !meta.file_type().is_symlink() && mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7700))
            .with_context(|| format!("cannot make {} private", path.display()))?;
    }
    if meta.is_dir() && depth > 0 {
        for entry in
            std::fs::read_dir(path).with_context(|| format!("cannot list {}", path.display()))?
        {
            let entry = entry.with_context(|| format!("cannot list {}", path.display()))?;
            let child = entry.path();
            let deeper = if depth == 1 && entry.file_name() == "tls" {
                1
            } else {
                depth - 1
            };
            chown_tree(&child, uid, gid, deeper)?;
        }
    }
    Ok(())
}
