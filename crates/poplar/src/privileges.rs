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
use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag};
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

/// Gives `path`'s tree (to `depth` levels, and `tls/` one more) to the account and makes it
/// private, through open descriptors: each entry is opened relative to its already opened
/// directory with `O_NOFOLLOW`, and changed through that descriptor. Root does this in a tree
/// the service user owns, so an entry swapped for a symbolic link between looking at it and
/// changing it would otherwise make root change whatever the link points at.
fn chown_tree(path: &Path, uid: Uid, gid: Gid, depth: usize) -> Result<()> {
    let dir = nix::fcntl::open(path, NOFOLLOW | OFlag::O_DIRECTORY, Mode::empty())
        .with_context(|| format!("cannot open the data directory {}", path.display()))?;
    make_private(&dir, path, uid, gid)?;
    walk(dir, path, uid, gid, depth)
}

/// Opens without following a link, without blocking on a FIFO, without leaking into children.
const NOFOLLOW: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_CLOEXEC);

fn walk(dir: std::os::fd::OwnedFd, path: &Path, uid: Uid, gid: Gid, depth: usize) -> Result<()> {
    use std::os::fd::AsFd;
    use std::os::unix::ffi::OsStrExt;
    if depth == 0 {
        return Ok(());
    }
    let mut dir =
        nix::dir::Dir::from_fd(dir).with_context(|| format!("cannot list {}", path.display()))?;
    let names: Vec<std::ffi::CString> = dir
        .iter()
        .filter_map(std::result::Result::ok)
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    for name in names {
        let child_path = path.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
        match nix::fcntl::openat(dir.as_fd(), name.as_c_str(), NOFOLLOW, Mode::empty()) {
            Ok(child) => {
                let is_dir = make_private(&child, &child_path, uid, gid)?;
                if is_dir {
                    let deeper = if depth == 1 && name.as_bytes() == b"tls" {
                        1
                    } else {
                        depth - 1
                    };
                    walk(child, &child_path, uid, gid, deeper)?;
                }
            }
            // A symbolic link (or a socket, which cannot be opened): its own owner changes,
            // never what a link points at.
            Err(_) => nix::unistd::fchownat(
                dir.as_fd(),
                name.as_c_str(),
                Some(uid),
                Some(gid),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .with_context(|| format!("cannot change the owner of {}", child_path.display()))?,
        }
    }
    Ok(())
}

/// Gives an open file to the account and takes away what others could read (made under a
/// looser umask, or copied in); returns whether it is a directory.
fn make_private(fd: &std::os::fd::OwnedFd, path: &Path, uid: Uid, gid: Gid) -> Result<bool> {
    let st =
        nix::sys::stat::fstat(fd).with_context(|| format!("cannot inspect {}", path.display()))?;
    if st.st_uid != uid.as_raw() || st.st_gid != gid.as_raw() {
        nix::unistd::fchown(fd, Some(uid), Some(gid))
            .with_context(|| format!("cannot change the owner of {}", path.display()))?;
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o077 != 0 {
        nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(mode & 0o7700))
            .with_context(|| format!("cannot make {} private", path.display()))?;
    }
    Ok(SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
}
