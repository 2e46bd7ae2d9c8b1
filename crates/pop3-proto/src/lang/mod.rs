//! The languages of the human-readable text in responses (RFC 6856 section 4, `LANG`).
//!
//! Every response text the server writes is a [`Text`]: a key with the numbers or names it
//! mentions, never a finished string. Each language renders every key in its own module
//! ([`en`], [`bg`]) through one `match` without a catch-all arm, so a key added here and
//! forgotten in a language is a compile error, not an English sentence in a Bulgarian session.
//! Response codes (`[AUTH]`, `[IN-USE]`) and protocol data (sizes after `+OK` for STAT, LIST,
//! UIDL) are not text and never change with the language.
//!
//! Choosing a language follows RFC 4647: `LANG` names a basic language range; a range selects
//! the first language it matches by basic filtering (`bg` matches `bg`), and failing that, by
//! lookup (`bg-BG` falls back to `bg`). `*` selects the server's default.

mod bg;
mod en;

use crate::command::ParseError;
use std::fmt;

/// A language Poplar can answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Language {
    /// English, the default.
    #[default]
    English,
    /// Bulgarian.
    Bulgarian,
}

/// A language range that is not `*` and not RFC 4647's `1*8ALPHA *("-" 1*8alphanum)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidRange;

impl fmt::Display for InvalidRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a language range (RFC 4647): a tag such as en or bg, or *")
    }
}

impl std::error::Error for InvalidRange {}

impl Language {
    /// Every language, in the order `LANG` lists them.
    pub const ALL: [Language; 2] = [Language::English, Language::Bulgarian];

    /// The language tag (RFC 5646).
    pub fn tag(self) -> &'static str {
        match self {
            Language::English => "en",
            Language::Bulgarian => "bg",
        }
    }

    /// The language's name in itself, as `LANG` lists it.
    pub fn name(self) -> &'static str {
        match self {
            Language::English => "English",
            Language::Bulgarian => "Български",
        }
    }

    /// The language with this exact tag, compared case-insensitively (configuration).
    pub fn from_tag(tag: &str) -> Option<Language> {
        Language::ALL
            .into_iter()
            .find(|l| l.tag().eq_ignore_ascii_case(tag))
    }

    /// The language a basic language range selects: by basic filtering, then by lookup
    /// (RFC 4647 sections 3.3.1 and 3.4). `Ok(None)`: valid, but nothing matches. `*` is the
    /// caller's to map to its default.
    pub fn matching(range: &str) -> Result<Option<Language>, InvalidRange> {
        if !is_language_range(range) {
            return Err(InvalidRange);
        }
        let mut range = range;
        loop {
            let found = Language::ALL.into_iter().find(|l| {
                let tag = l.tag();
                tag.eq_ignore_ascii_case(range)
                    || (tag.len() > range.len()
                        && tag.as_bytes()[range.len()] == b'-'
                        && tag[..range.len()].eq_ignore_ascii_case(range))
            });
            if found.is_some() {
                return Ok(found);
            }
            // Lookup: drop the last subtag, and a single-letter subtag left dangling before it.
            let Some(cut) = range.rfind('-') else {
                return Ok(None);
            };
            range = &range[..cut];
            if range.len() >= 2 && range.as_bytes()[range.len() - 2] == b'-' {
                range = &range[..range.len() - 2];
            }
        }
    }

    /// `text` in this language, ready to be written after `+OK ` or `-ERR [CODE] `.
    pub fn text(self, text: Text<'_>) -> impl fmt::Display + '_ {
        Rendered(self, text)
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}

impl std::str::FromStr for Language {
    type Err = String;

    fn from_str(tag: &str) -> Result<Self, String> {
        Language::from_tag(tag).ok_or_else(|| {
            let known: Vec<&str> = Language::ALL.iter().map(|l| l.tag()).collect();
            format!(
                "unknown language {tag:?}; Poplar speaks {}",
                known.join(", ")
            )
        })
    }
}

/// RFC 4647 section 2.1: `language-range = (1*8ALPHA *("-" 1*8alphanum)) / "*"`, without the
/// `*`.
fn is_language_range(range: &str) -> bool {
    let mut subtags = range.split('-');
    let primary = subtags.next().unwrap_or_default();
    let ok = |s: &str, f: fn(&u8) -> bool| (1..=8).contains(&s.len()) && s.bytes().all(|b| f(&b));
    ok(primary, u8::is_ascii_alphabetic) && subtags.all(|s| ok(s, u8::is_ascii_alphanumeric))
}

/// Every human-readable text a response carries, with what it mentions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Text<'a> {
    /// The greeting (the APOP timestamp, if any, follows it).
    Greeting,
    /// QUIT before login.
    SigningOff,
    /// QUIT after login, once UPDATE succeeded; `left` messages remain.
    SignedOff {
        /// Messages left in the maildrop.
        left: usize,
    },
    /// UPDATE could not remove every deleted message.
    CommitPartial,
    /// USER accepted.
    SendPassword,
    /// PASS without USER.
    SendUserFirst,
    /// APOP on a server without it.
    ApopDisabled,
    /// STLS on an encrypted connection.
    TlsAlreadyActive,
    /// STLS without TLS configured.
    TlsUnavailable,
    /// STLS accepted.
    BeginTls,
    /// UTF8 accepted.
    Utf8Enabled,
    /// A plaintext login on an unencrypted connection.
    PlaintextDisallowed {
        /// STLS is offered, so the client can fix it.
        stls_offered: bool,
    },
    /// Bare AUTH: the mechanisms follow.
    MechanismsFollow,
    /// AUTH with a mechanism not offered.
    UnsupportedMechanism,
    /// AUTH's initial response is not base64.
    InvalidInitialResponse,
    /// The client cancelled a SASL exchange with `*`.
    AuthCancelled,
    /// A SASL response line is not base64.
    InvalidSaslResponse,
    /// `[AUTH]`: wrong credentials.
    AuthFailed,
    /// `[LOGIN-DELAY]`.
    LoginDelay,
    /// `[SYS/TEMP]`: credentials could not be checked.
    AuthTemporary,
    /// A malformed SASL exchange.
    AuthProtocol,
    /// `[IN-USE]`: the user's connection limit.
    TooManyConnections,
    /// The address failed too often.
    TooManyFailures,
    /// Logged in.
    LoggedIn {
        /// Messages in the maildrop.
        messages: usize,
        /// Their total size.
        octets: u64,
    },
    /// LIST without argument: the scan listing follows.
    Listing {
        /// Messages not deleted.
        messages: usize,
        /// Their total size.
        octets: u64,
    },
    /// RSET.
    MaildropHas {
        /// Messages in the maildrop.
        messages: usize,
        /// Their total size.
        octets: u64,
    },
    /// UIDL without argument.
    UidlFollows,
    /// CAPA.
    CapaFollows,
    /// RETR: the message's size.
    Octets(u64),
    /// TOP.
    TopFollows,
    /// A message number beyond the maildrop (unknown count).
    NoSuchMessage,
    /// A message number beyond the maildrop.
    NoSuchMessageOf {
        /// Messages in the maildrop.
        messages: usize,
    },
    /// RETR, TOP, LIST, UIDL of a deleted message.
    MessageIsDeleted(u32),
    /// DELE accepted.
    MessageDeleted(u32),
    /// DELE of a deleted message.
    AlreadyDeleted(u32),
    /// RETR/TOP: the store could not read the message.
    MessageUnreadable(usize),
    /// `[IN-USE]`: another session holds the maildrop.
    MaildropInUse,
    /// `[SYS/TEMP]`: the maildrop could not be opened this time.
    MaildropTemporary,
    /// `[SYS/PERM]`: the maildrop needs an administrator.
    MaildropPermanent,
    /// At the connection limit, this connection goes.
    Evicted,
    /// The server is stopping.
    ShuttingDown,
    /// The store lost the maildrop lock.
    MaildropLost,
    /// An administrator ended the session.
    Kicked,
    /// Refused at accept: the address's connection limit.
    AtAddressLimit,
    /// Refused at accept: the server's connection limit.
    AtConnectionLimit,
    /// The bad-command limit was reached.
    TooManyBadCommands,
    /// A command line over 255 octets.
    LineTooLong,
    /// A command in the wrong state.
    WrongState {
        /// The command's keyword.
        keyword: &'a str,
        /// Whether the session is logged in.
        logged_in: bool,
    },
    /// A command line that does not parse.
    Invalid(ParseError),
    /// LANG without argument.
    LanguagesFollow,
    /// LANG accepted (after the selected tag).
    LanguageChanged,
    /// LANG with a range no language matches.
    NoSuchLanguage(&'a str),
    /// LANG with something that is not a language range.
    InvalidLanguageRange,
    /// `*ENV n`: the envelope follows.
    EnvelopeFollows,
    /// `*ENV n` for a message without a recorded envelope.
    NoEnvelope(u32),
}

struct Rendered<'a>(Language, Text<'a>);

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Language::English => en::write(f, self.1),
            Language::Bulgarian => bg::write(f, self.1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_select_by_filtering_then_lookup() {
        assert_eq!(Language::matching("bg"), Ok(Some(Language::Bulgarian)));
        assert_eq!(Language::matching("BG"), Ok(Some(Language::Bulgarian)));
        assert_eq!(Language::matching("bg-BG"), Ok(Some(Language::Bulgarian)));
        assert_eq!(Language::matching("en-GB-x-a"), Ok(Some(Language::English)));
        assert_eq!(
            Language::matching("en-x-twain"),
            Ok(Some(Language::English))
        );
        assert_eq!(Language::matching("de"), Ok(None));
        assert_eq!(Language::matching("e"), Ok(None));
        for bad in [
            "",
            "*",
            "-",
            "bg-",
            "toolongtag",
            "b g",
            "bg_BG",
            "1a",
            "ен",
        ] {
            assert_eq!(Language::matching(bad), Err(InvalidRange), "{bad:?}");
        }
    }

    #[test]
    fn configuration_tags_are_exact() {
        assert_eq!("BG".parse::<Language>(), Ok(Language::Bulgarian));
        assert!("bg-BG".parse::<Language>().is_err());
    }

    /// Every language renders every text, each in its own words, with what it mentions.
    #[test]
    fn every_text_is_translated() {
        for text in every_text() {
            let en = Language::English.text(text).to_string();
            let bg = Language::Bulgarian.text(text).to_string();
            assert!(!en.is_empty() && !bg.is_empty(), "{text:?}");
            assert_ne!(en, bg, "{text:?} is not translated");
            assert!(
                bg.len() < 480,
                "{text:?} leaves no room in a 512-octet line"
            );
            for number in ["7", "1234", "PASS"] {
                assert_eq!(
                    en.contains(number),
                    bg.contains(number),
                    "{text:?}: {number}"
                );
            }
        }
    }

    #[test]
    fn plurals_agree_with_their_numbers() {
        let bg = |t| Language::Bulgarian.text(t).to_string();
        let en = |t| Language::English.text(t).to_string();
        let one = Text::LoggedIn {
            messages: 1,
            octets: 1,
        };
        let two = Text::LoggedIn {
            messages: 2,
            octets: 320,
        };
        assert_eq!(en(one), "Logged in, maildrop has 1 message (1 octets)");
        assert_eq!(en(two), "Logged in, maildrop has 2 messages (320 octets)");
        assert_eq!(
            bg(one),
            "Влязохте, в пощенската кутия има 1 съобщение (1 октет)"
        );
        assert_eq!(
            bg(two),
            "Влязохте, в пощенската кутия има 2 съобщения (320 октета)"
        );
    }

    pub(crate) fn every_text() -> Vec<Text<'static>> {
        use ParseError as P;
        let mut texts = vec![
            Text::Greeting,
            Text::SigningOff,
            Text::SignedOff { left: 0 },
            Text::SignedOff { left: 7 },
            Text::CommitPartial,
            Text::SendPassword,
            Text::SendUserFirst,
            Text::ApopDisabled,
            Text::TlsAlreadyActive,
            Text::TlsUnavailable,
            Text::BeginTls,
            Text::Utf8Enabled,
            Text::PlaintextDisallowed { stls_offered: true },
            Text::PlaintextDisallowed {
                stls_offered: false,
            },
            Text::MechanismsFollow,
            Text::UnsupportedMechanism,
            Text::InvalidInitialResponse,
            Text::AuthCancelled,
            Text::InvalidSaslResponse,
            Text::AuthFailed,
            Text::LoginDelay,
            Text::AuthTemporary,
            Text::AuthProtocol,
            Text::TooManyConnections,
            Text::TooManyFailures,
            Text::LoggedIn {
                messages: 7,
                octets: 1234,
            },
            Text::Listing {
                messages: 7,
                octets: 1234,
            },
            Text::MaildropHas {
                messages: 7,
                octets: 1234,
            },
            Text::UidlFollows,
            Text::CapaFollows,
            Text::Octets(1234),
            Text::TopFollows,
            Text::NoSuchMessage,
            Text::NoSuchMessageOf { messages: 7 },
            Text::MessageIsDeleted(7),
            Text::MessageDeleted(7),
            Text::AlreadyDeleted(7),
            Text::MessageUnreadable(7),
            Text::MaildropInUse,
            Text::MaildropTemporary,
            Text::MaildropPermanent,
            Text::Evicted,
            Text::ShuttingDown,
            Text::MaildropLost,
            Text::Kicked,
            Text::AtAddressLimit,
            Text::AtConnectionLimit,
            Text::TooManyBadCommands,
            Text::LineTooLong,
            Text::WrongState {
                keyword: "PASS",
                logged_in: true,
            },
            Text::WrongState {
                keyword: "PASS",
                logged_in: false,
            },
            Text::LanguagesFollow,
            Text::LanguageChanged,
            Text::NoSuchLanguage("PASS"),
            Text::InvalidLanguageRange,
            Text::EnvelopeFollows,
            Text::NoEnvelope(7),
        ];
        texts.extend(
            [
                P::Empty,
                P::ContainsNul,
                P::UnknownCommand,
                P::MissingArgument,
                P::TooManyArguments,
                P::InvalidNumber,
                P::NoSuchMessage,
                P::InvalidName,
                P::InvalidDigest,
                P::InvalidMechanism,
            ]
            .map(Text::Invalid),
        );
        texts
    }
}
