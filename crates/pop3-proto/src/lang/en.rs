//! English: every [`Text`] (the match has no catch-all, so a new key must be written here).

use super::Text;
use crate::command::ParseError;
use std::fmt::{self, Formatter};

fn messages(n: usize) -> &'static str {
    if n == 1 { "message" } else { "messages" }
}

pub(super) fn write(f: &mut Formatter<'_>, text: Text<'_>) -> fmt::Result {
    let s = match text {
        Text::Greeting => "Poplar POP3 server ready",
        Text::SigningOff => "Poplar POP3 server signing off",
        Text::SignedOff { left: 0 } => "Poplar POP3 server signing off (maildrop empty)",
        Text::SignedOff { left } => {
            return write!(
                f,
                "Poplar POP3 server signing off ({left} {} left)",
                messages(left)
            );
        }
        Text::CommitPartial => "Some deleted messages were not removed; they will be offered again",
        Text::SendPassword => "Send your password",
        Text::SendUserFirst => "Send USER first",
        Text::ApopDisabled => "APOP is not enabled on this server",
        Text::TlsAlreadyActive => "TLS is already active",
        Text::TlsUnavailable => "TLS is not available on this server",
        Text::BeginTls => "Begin TLS negotiation",
        Text::Utf8Enabled => "UTF8 enabled",
        Text::PlaintextDisallowed { stls_offered: true } => {
            "Plaintext authentication disallowed on non-secure connections; use STLS first"
        }
        Text::PlaintextDisallowed {
            stls_offered: false,
        } => "Plaintext authentication disallowed on non-secure connections",
        Text::MechanismsFollow => "Supported mechanisms follow",
        Text::UnsupportedMechanism => "Unsupported authentication mechanism",
        Text::InvalidInitialResponse => "Invalid base64 in the initial response",
        Text::AuthCancelled => "Authentication cancelled",
        Text::InvalidSaslResponse => "Invalid base64 in the SASL response",
        Text::AuthFailed => "Authentication failed",
        Text::LoginDelay => "Logged in too recently; wait before logging in again",
        Text::AuthTemporary => "Authentication is temporarily unavailable; try again later",
        Text::AuthProtocol => "Authentication exchange failed",
        Text::TooManyConnections => "Too many connections for this user; close some and try again",
        Text::TooManyFailures => "Too many failed logins from your address; try again later",
        Text::LoggedIn {
            messages: n,
            octets,
        } => {
            return write!(
                f,
                "Logged in, maildrop has {n} {} ({octets} octets)",
                messages(n)
            );
        }
        Text::Listing {
            messages: n,
            octets,
        } => {
            return write!(f, "{n} {} ({octets} octets)", messages(n));
        }
        Text::MaildropHas {
            messages: n,
            octets,
        } => {
            return write!(f, "Maildrop has {n} {} ({octets} octets)", messages(n));
        }
        Text::UidlFollows => "Unique-id listing follows",
        Text::CapaFollows => "Capability list follows",
        Text::Octets(n) => return write!(f, "{n} octets"),
        Text::TopFollows => "Top of message follows",
        Text::NoSuchMessage => "No such message",
        Text::NoSuchMessageOf { messages: n } => {
            return write!(f, "No such message, only {n} {} in maildrop", messages(n));
        }
        Text::MessageIsDeleted(n) => return write!(f, "Message {n} is deleted"),
        Text::MessageDeleted(n) => return write!(f, "Message {n} deleted"),
        Text::AlreadyDeleted(n) => return write!(f, "Message {n} already deleted"),
        Text::MessageUnreadable(n) => {
            return write!(f, "Message {n} could not be read; try again later");
        }
        Text::MaildropInUse => "Maildrop is locked by another POP3 session; try again later",
        Text::MaildropTemporary => "Maildrop is temporarily unavailable; try again later",
        Text::MaildropPermanent => "Maildrop is unavailable; contact your mail administrator",
        Text::Evicted => {
            "Server is at its connection limit and this connection has not logged in; try again shortly"
        }
        Text::ShuttingDown => "Server shutting down; try again shortly",
        Text::MaildropLost => {
            "Lost the lock on your maildrop (the message store failed); nothing was deleted. Log in again shortly"
        }
        Text::Kicked => "Your session was ended by the server's administrator; nothing was deleted",
        Text::AtAddressLimit => "Too many connections from your address; try again shortly",
        Text::AtConnectionLimit => "Server is at its connection limit; try again shortly",
        Text::TooManyBadCommands => "Too many invalid commands, closing connection",
        Text::LineTooLong => "Line too long",
        Text::WrongState { keyword, logged_in } => {
            let when = if logged_in { "after" } else { "before" };
            return write!(f, "{keyword} is not valid {when} login");
        }
        Text::Invalid(e) => match e {
            ParseError::Empty => "Empty command",
            ParseError::ContainsNul => "Command contains a NUL octet",
            ParseError::UnknownCommand => "Unknown command",
            ParseError::MissingArgument => "Missing argument",
            ParseError::TooManyArguments => "Too many arguments",
            ParseError::InvalidNumber => "Invalid number",
            ParseError::NoSuchMessage => "No such message",
            ParseError::InvalidName => "Invalid name",
            ParseError::InvalidDigest => "Invalid APOP digest",
            ParseError::InvalidMechanism => "Invalid SASL mechanism name",
        },
        Text::LanguagesFollow => "Language listing follows",
        Text::LanguageChanged => "Responses are now in English",
        Text::NoSuchLanguage(range) => {
            return write!(
                f,
                "No language matches {range}; LANG lists the languages available"
            );
        }
        Text::InvalidLanguageRange => "Not a language range; give a tag such as en or bg",
        Text::EnvelopeFollows => "Envelope follows",
        Text::NoEnvelope(n) => {
            return write!(f, "No envelope was recorded for message {n}");
        }
    };
    f.write_str(s)
}
