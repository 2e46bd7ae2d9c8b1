//! Mapping a user name to a maildrop path without ever leaving the mail directory.
//!
//! `user@domain` lives in `<root>/<domain>/<user>/Maildir`, a name without a domain in
//! `<root>/_default_/<user>/Maildir`. Each component is checked on its own: no `/`, no NUL or
//! control characters, not `.`/`..`, no leading dot, bounded length. Names are already checked
//! when users are created; this is the second, independent line of defence, at the point where a
//! name becomes a path.

use crate::error::StoreError;
use std::path::{Path, PathBuf};

/// The domain directory for names without `@domain`.
pub const DEFAULT_DOMAIN: &str = "_default_";

/// A validated maildrop location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxPath {
    /// The domain directory name.
    pub domain: String,
    /// The user directory name.
    pub local: String,
}

impl MailboxPath {
    /// Splits and validates a user name.
    pub fn parse(user: &str) -> Result<Self, StoreError> {
        let (local, domain) = match user.rsplit_once('@') {
            // The internal domain is not a domain a name may give: `alice@_default_` would
            // otherwise be a second name for `alice`'s maildrop.
            Some((_, d)) if d.eq_ignore_ascii_case(DEFAULT_DOMAIN) => {
                return Err(StoreError::InvalidMailbox(
                    user.to_owned(),
                    "the domain _default_ is reserved for names without a domain",
                ));
            }
            Some((l, d)) => (l, d.to_ascii_lowercase()),
            None => (user, DEFAULT_DOMAIN.to_owned()),
        };
        check_component(user, local)?;
        check_component(user, &domain)?;
        Ok(Self {
            domain,
            local: local.to_owned(),
        })
    }

    /// `<root>/<domain>/<local>/Maildir`.
    pub fn maildir(&self, root: &Path) -> PathBuf {
        root.join(&self.domain).join(&self.local).join("Maildir")
    }
}

fn check_component(user: &str, part: &str) -> Result<(), StoreError> {
    let bad = |why| Err(StoreError::InvalidMailbox(user.to_owned(), why));
    if part.is_empty() {
        return bad("empty name part");
    }
    if part.len() > 255 {
        return bad("name part longer than 255 octets");
    }
    if part.starts_with('.') {
        return bad("name part starts with '.'");
    }
    if part
        .chars()
        .any(|c| c == '/' || c == '\\' || c == '@' || c.is_control())
    {
        return bad("name part contains '/', '\\', '@' or a control character");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_internal_domain_is_reserved() {
        for name in ["alice@_default_", "alice@_DEFAULT_"] {
            assert!(MailboxPath::parse(name).is_err(), "{name}");
        }
        assert!(MailboxPath::parse("alice@default").is_ok());
    }

    #[test]
    fn layout() {
        let root = Path::new("/data/mail");
        let p = MailboxPath::parse("bob@Example.ORG").unwrap();
        assert_eq!(
            p.maildir(root),
            Path::new("/data/mail/example.org/bob/Maildir")
        );
        let p = MailboxPath::parse("alice").unwrap();
        assert_eq!(
            p.maildir(root),
            Path::new("/data/mail/_default_/alice/Maildir")
        );
    }

    #[test]
    fn nothing_escapes_the_root() {
        for bad in [
            "",
            "..",
            ".",
            "../bob",
            "bob/../alice",
            "/etc/passwd",
            "alice\0",
            "a\nb",
            "@x",
            "x@",
            "x@..",
            "x@a/b",
            "a@b@c",
            ".hidden",
        ] {
            assert!(MailboxPath::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(MailboxPath::parse(&"a".repeat(256)).is_err());
    }
}
