//! What delivery needs besides storage: the trace header lines it may add before a message
//! (`Return-Path:`, `Delivered-To:`), and the quota a user's Dovecot quota rules give. Both
//! serve LMTP and `poplar deliver` alike, so they live here, next to the store they deliver to.

use crate::Quota;

/// The header lines delivery adds before a message. By default none: messages are stored byte
/// for byte as the MTA handed them over (Postfix already adds its `Received:` line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceHeaders {
    /// Prepend `Return-Path: <sender>` (the envelope sender), as local delivery agents do.
    pub return_path: bool,
    /// Prepend `Delivered-To: recipient` (the envelope recipient).
    pub delivered_to: bool,
}

impl TraceHeaders {
    /// Whether any line is added.
    pub fn any(&self) -> bool {
        self.return_path || self.delivered_to
    }

    /// The lines to put before a message from `sender` to `recipient`, each ending with `eol`
    /// (the message's own line ending). Control characters in the addresses are dropped, so
    /// an address cannot add header lines of its own.
    pub fn lines(&self, sender: Option<&str>, recipient: &str, eol: &str) -> String {
        let clean = |a: &str| a.chars().filter(|c| !c.is_control()).collect::<String>();
        let mut out = String::new();
        if self.return_path
            && let Some(sender) = sender
        {
            out.push_str(&format!("Return-Path: <{}>{eol}", clean(sender)));
        }
        if self.delivered_to {
            out.push_str(&format!("Delivered-To: {}{eol}", clean(recipient)));
        }
        out
    }
}

/// The quota a user's Dovecot quota rules give (`*:storage=1G`, `*:bytes=...`, `*:messages=N`,
/// several per rule or in several rules), `None` if they set none. Rules for other mailboxes
/// than `*` and relative ones (`+10%`) are ignored: a maildrop is one mailbox here.
pub fn dovecot_quota(rules: &[String]) -> Option<Quota> {
    let mut quota: Option<Quota> = None;
    for rule in rules {
        let Some(("*", settings)) = rule.split_once(':') else {
            continue;
        };
        for setting in settings.split(':') {
            let Some((key, value)) = setting.split_once('=') else {
                continue;
            };
            let limit = |n: u64| (n > 0).then_some(n);
            let q = quota.get_or_insert_with(Quota::default);
            match key.to_ascii_lowercase().as_str() {
                "storage" | "bytes" => {
                    if let Some(n) = poplar_util::units::parse_size(value) {
                        q.storage = limit(n);
                    }
                }
                "messages" => {
                    if let Ok(n) = value.parse() {
                        q.messages = limit(n);
                    }
                }
                _ => {}
            }
        }
    }
    quota
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_headers_drop_control_characters() {
        let all = TraceHeaders {
            return_path: true,
            delivered_to: true,
        };
        assert_eq!(
            all.lines(Some("a@b\r\nBcc: x@y"), "c@d", "\n"),
            "Return-Path: <a@bBcc: x@y>\nDelivered-To: c@d\n"
        );
        assert_eq!(all.lines(None, "c", "\r\n"), "Delivered-To: c\r\n");
        assert_eq!(TraceHeaders::default().lines(Some("a"), "c", "\n"), "");
    }

    #[test]
    fn dovecot_quota_rules() {
        let rules =
            |r: &[&str]| dovecot_quota(&r.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(rules(&[]), None);
        assert_eq!(rules(&["Trash:ignore"]), None);
        assert_eq!(
            rules(&["*:storage=1G", "*:messages=1000"]),
            Some(Quota {
                storage: Some(1 << 30),
                messages: Some(1000)
            })
        );
        assert_eq!(
            rules(&["*:bytes=512M:messages=0"]),
            Some(Quota {
                storage: Some(512 << 20),
                messages: None
            })
        );
        // A rule of 0 lifts the limit for that user.
        assert_eq!(rules(&["*:storage=0"]), Some(Quota::default()));
    }
}
