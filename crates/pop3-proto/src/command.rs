//! POP3 commands, both ways: the server's parser (one line in, one typed [`Command`] or a
//! [`ParseError`] out) and the client's encoder ([`Command::encode`]), over one table of
//! keywords ([`Keyword`]), so that what a client sends is by construction what the server reads
//! (`parse_command(encode(c)) == c`, checked by a property test and the `command` fuzz target).
//!
//! Keywords are case-insensitive (RFC 1939 section 3). Arguments are separated by spaces; runs of
//! spaces and trailing spaces are tolerated because real clients send them, but every argument is
//! checked strictly: message numbers are decimal digits only and range-checked (a 20-digit number
//! is an error, never a wrapped value), names may not contain control characters, and a line
//! that contains NUL is refused whole so that `USER alice<NUL>bob` can never be read as
//! `USER alice`. `PASS` takes the rest of the line verbatim, spaces included (RFC 1939 section 7).

use crate::lang::{Language, Text};
use crate::secret::Secret;
use std::fmt;

/// A message number as the client wrote it (1-based, at least 1).
pub type MessageNumber = u32;

/// A client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `USER name`
    User(String),
    /// `PASS string`
    Pass(Secret<Vec<u8>>),
    /// `APOP name digest` (digest normalised to lower-case hex)
    Apop {
        /// The mailbox name.
        user: String,
        /// The 32-digit MD5 digest.
        digest: String,
    },
    /// `AUTH [mechanism [initial-response]]` (RFC 5034). Without a mechanism: list mechanisms.
    Auth {
        /// The SASL mechanism, upper-cased; `None` for the bare `AUTH` listing form.
        mechanism: Option<String>,
        /// The base64 initial response as sent (`=` stands for an empty one).
        initial_response: Option<Secret<Vec<u8>>>,
    },
    /// `CAPA` (RFC 2449)
    Capa,
    /// `STLS` (RFC 2595)
    Stls,
    /// `UTF8` (RFC 6856)
    Utf8,
    /// `LANG [language-range]` (RFC 6856 section 4). Without a range: list the languages.
    Lang(Option<String>),
    /// `QUIT`
    Quit,
    /// `STAT`
    Stat,
    /// `LIST [msg]`
    List(Option<MessageNumber>),
    /// `RETR msg`
    Retr(MessageNumber),
    /// `DELE msg`
    Dele(MessageNumber),
    /// `NOOP`
    Noop,
    /// `RSET`
    Rset,
    /// `TOP msg n`; a line count beyond `u64` saturates (it can only mean "the whole body").
    Top(MessageNumber, u64),
    /// `UIDL [msg]`
    Uidl(Option<MessageNumber>),
    /// `*ENV msg`: the message's envelope (Demon Internet's SDPS extension).
    Env(MessageNumber),
}

/// The keyword of each command: the one table the parser, the encoder and both sides' state
/// rules read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Keyword {
    /// `USER`
    User,
    /// `PASS`
    Pass,
    /// `APOP`
    Apop,
    /// `AUTH` (RFC 5034)
    Auth,
    /// `CAPA` (RFC 2449)
    Capa,
    /// `STLS` (RFC 2595)
    Stls,
    /// `UTF8` (RFC 6856)
    Utf8,
    /// `LANG` (RFC 6856)
    Lang,
    /// `QUIT`
    Quit,
    /// `STAT`
    Stat,
    /// `LIST`
    List,
    /// `UIDL`
    Uidl,
    /// `RETR`
    Retr,
    /// `DELE`
    Dele,
    /// `TOP`
    Top,
    /// `NOOP`
    Noop,
    /// `RSET`
    Rset,
    /// `*ENV` (SDPS)
    Env,
}

impl Keyword {
    /// Every keyword.
    pub const ALL: [Keyword; 18] = [
        Keyword::User,
        Keyword::Pass,
        Keyword::Apop,
        Keyword::Auth,
        Keyword::Capa,
        Keyword::Stls,
        Keyword::Utf8,
        Keyword::Lang,
        Keyword::Quit,
        Keyword::Stat,
        Keyword::List,
        Keyword::Uidl,
        Keyword::Retr,
        Keyword::Dele,
        Keyword::Top,
        Keyword::Noop,
        Keyword::Rset,
        Keyword::Env,
    ];

    /// As sent on the wire (upper case).
    pub fn as_str(self) -> &'static str {
        match self {
            Keyword::User => "USER",
            Keyword::Pass => "PASS",
            Keyword::Apop => "APOP",
            Keyword::Auth => "AUTH",
            Keyword::Capa => "CAPA",
            Keyword::Stls => "STLS",
            Keyword::Utf8 => "UTF8",
            Keyword::Lang => "LANG",
            Keyword::Quit => "QUIT",
            Keyword::Stat => "STAT",
            Keyword::List => "LIST",
            Keyword::Uidl => "UIDL",
            Keyword::Retr => "RETR",
            Keyword::Dele => "DELE",
            Keyword::Top => "TOP",
            Keyword::Noop => "NOOP",
            Keyword::Rset => "RSET",
            Keyword::Env => "*ENV",
        }
    }

    /// The keyword a word names, case-insensitively (RFC 1939 section 3).
    pub fn parse(word: &[u8]) -> Option<Keyword> {
        Keyword::ALL
            .into_iter()
            .find(|k| k.as_str().as_bytes().eq_ignore_ascii_case(word))
    }

    /// Valid in the AUTHORIZATION state (RFC 1939 section 4; CAPA, STLS, AUTH, UTF8 and LANG
    /// from their RFCs).
    pub fn before_login(self) -> bool {
        matches!(
            self,
            Keyword::User
                | Keyword::Pass
                | Keyword::Apop
                | Keyword::Auth
                | Keyword::Stls
                | Keyword::Utf8
                | Keyword::Lang
                | Keyword::Capa
                | Keyword::Quit
        )
    }

    /// Valid in the TRANSACTION state (RFC 1939 section 5; CAPA from RFC 2449, LANG from RFC
    /// 6856).
    pub fn after_login(self) -> bool {
        matches!(
            self,
            Keyword::Capa
                | Keyword::Lang
                | Keyword::Quit
                | Keyword::Stat
                | Keyword::List
                | Keyword::Uidl
                | Keyword::Retr
                | Keyword::Dele
                | Keyword::Top
                | Keyword::Noop
                | Keyword::Rset
                | Keyword::Env
        )
    }
}

impl fmt::Display for Keyword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Command {
    /// The command's keyword.
    pub fn keyword(&self) -> Keyword {
        match self {
            Command::User(_) => Keyword::User,
            Command::Pass(_) => Keyword::Pass,
            Command::Apop { .. } => Keyword::Apop,
            Command::Auth { .. } => Keyword::Auth,
            Command::Capa => Keyword::Capa,
            Command::Stls => Keyword::Stls,
            Command::Utf8 => Keyword::Utf8,
            Command::Lang(_) => Keyword::Lang,
            Command::Quit => Keyword::Quit,
            Command::Stat => Keyword::Stat,
            Command::List(_) => Keyword::List,
            Command::Retr(_) => Keyword::Retr,
            Command::Dele(_) => Keyword::Dele,
            Command::Noop => Keyword::Noop,
            Command::Rset => Keyword::Rset,
            Command::Top(..) => Keyword::Top,
            Command::Uidl(_) => Keyword::Uidl,
            Command::Env(_) => Keyword::Env,
        }
    }

    /// Writes the command line a client sends, CRLF included, appending to `out`. What the
    /// server's parser would not read back as this very command is refused and nothing is
    /// written: a line break, NUL or (in a one-word argument) space that would let an argument
    /// inject a command; a name with control characters; a mechanism name RFC 4422 does not
    /// allow (upper case only, as the parser normalises); an APOP digest other than 32
    /// lower-case hex digits; message number 0; an empty password; a line over RFC 2449's 255
    /// octets (AUTH excepted: an initial response may make it longer, RFC 5034 section 4).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let result = self.encode_unchecked(out);
        let too_long = out.len() - start > MAX_COMMAND_LINE && self.keyword() != Keyword::Auth;
        if result.is_err() || too_long {
            out.truncate(start);
        }
        result.and(if too_long {
            Err(EncodeError::TooLong)
        } else {
            Ok(())
        })
    }

    fn encode_unchecked(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(self.keyword().as_str().as_bytes());
        let mut arg = |bytes: &[u8]| {
            out.push(b' ');
            out.extend_from_slice(bytes);
        };
        match self {
            Command::User(name) => arg(encodable_name(name)?),
            Command::Pass(password) => {
                let password = password.expose();
                if password.is_empty() {
                    return Err(EncodeError::MissingArgument);
                }
                if password.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                    return Err(EncodeError::LineBreak);
                }
                arg(password);
            }
            Command::Apop { user, digest } => {
                let name = encodable_name(user)?;
                let valid = digest.len() == 32
                    && digest
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !valid {
                    return Err(EncodeError::InvalidDigest);
                }
                arg(name);
                arg(digest.as_bytes());
            }
            Command::Auth {
                mechanism,
                initial_response,
            } => match (mechanism, initial_response) {
                (None, None) => {}
                (None, Some(_)) => return Err(EncodeError::MissingArgument),
                (Some(m), ir) => {
                    if mechanism_arg(m.as_bytes()).ok().as_ref() != Some(m) {
                        return Err(EncodeError::InvalidMechanism);
                    }
                    arg(m.as_bytes());
                    if let Some(ir) = ir {
                        arg(encodable_word(ir.expose())?);
                    }
                }
            },
            Command::Lang(range) => {
                if let Some(range) = range {
                    arg(encodable_name(range)?);
                }
            }
            Command::List(n) | Command::Uidl(n) => {
                if let Some(n) = n {
                    arg(message_number_text(*n)?.as_bytes());
                }
            }
            Command::Retr(n) | Command::Dele(n) | Command::Env(n) => {
                arg(message_number_text(*n)?.as_bytes());
            }
            Command::Top(n, lines) => {
                arg(message_number_text(*n)?.as_bytes());
                arg(lines.to_string().as_bytes());
            }
            Command::Capa
            | Command::Stls
            | Command::Utf8
            | Command::Quit
            | Command::Stat
            | Command::Noop
            | Command::Rset => {}
        }
        out.extend_from_slice(b"\r\n");
        Ok(())
    }
}

/// The longest command line, CRLF included (RFC 2449 section 4).
pub const MAX_COMMAND_LINE: usize = 255;

/// Why a command cannot be sent as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// CR, LF or NUL inside an argument: it would end the line and inject a command.
    LineBreak,
    /// A space (or nothing at all) where the argument is one word.
    NotOneWord,
    /// A name with control characters.
    InvalidName,
    /// A SASL mechanism name RFC 4422 section 3.1 does not allow (or not in upper case).
    InvalidMechanism,
    /// An APOP digest that is not 32 lower-case hex digits.
    InvalidDigest,
    /// Message number 0.
    NoSuchMessage,
    /// An empty password, or an initial response without a mechanism.
    MissingArgument,
    /// Longer than [`MAX_COMMAND_LINE`].
    TooLong,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncodeError::LineBreak => {
                "CR, LF or NUL inside an argument would let it inject commands"
            }
            EncodeError::NotOneWord => "an argument that must be one word is empty or has spaces",
            EncodeError::InvalidName => "a name with control characters",
            EncodeError::InvalidMechanism => "not a SASL mechanism name (RFC 4422 section 3.1)",
            EncodeError::InvalidDigest => "an APOP digest is 32 lower-case hex digits",
            EncodeError::NoSuchMessage => "message numbers start at 1",
            EncodeError::MissingArgument => "a required argument is missing",
            EncodeError::TooLong => "longer than the 255 octets a command may have (RFC 2449)",
        })
    }
}

impl std::error::Error for EncodeError {}

/// One word: no space, CR, LF or NUL, not empty.
fn encodable_word(word: &[u8]) -> Result<&[u8], EncodeError> {
    if word.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(EncodeError::LineBreak);
    }
    if word.is_empty() || word.contains(&b' ') {
        return Err(EncodeError::NotOneWord);
    }
    Ok(word)
}

/// A user name the parser reads back unchanged.
fn encodable_name(name: &str) -> Result<&[u8], EncodeError> {
    let word = encodable_word(name.as_bytes())?;
    if name.chars().any(char::is_control) {
        return Err(EncodeError::InvalidName);
    }
    Ok(word)
}

fn message_number_text(n: MessageNumber) -> Result<String, EncodeError> {
    if n == 0 {
        return Err(EncodeError::NoSuchMessage);
    }
    Ok(n.to_string())
}

/// Why a line is not a valid command. Each becomes a `-ERR` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The line is empty.
    Empty,
    /// The line contains a NUL octet.
    ContainsNul,
    /// The keyword is not a command this server knows (e.g. the obsolete `LAST`).
    UnknownCommand,
    /// A required argument is missing.
    MissingArgument,
    /// More arguments than the command takes.
    TooManyArguments,
    /// A message number or count that is not plain decimal digits.
    InvalidNumber,
    /// A message number of 0 or one too large to be in any maildrop.
    NoSuchMessage,
    /// A name that is not UTF-8 or contains control characters.
    InvalidName,
    /// An APOP digest that is not 32 hex digits.
    InvalidDigest,
    /// A SASL mechanism name that does not follow RFC 4422 section 3.1.
    InvalidMechanism,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Language::English.text(Text::Invalid(*self)))
    }
}

/// Parses one command line (without its line terminator).
pub fn parse_command(line: &[u8]) -> Result<Command, ParseError> {
    if memchr::memchr(0, line).is_some() {
        return Err(ParseError::ContainsNul);
    }
    let (keyword, rest) = split_word(line);
    if keyword.is_empty() {
        return Err(ParseError::Empty);
    }
    let Some(keyword) = Keyword::parse(keyword) else {
        return Err(ParseError::UnknownCommand);
    };
    let args = Args(rest);
    match keyword {
        Keyword::User => {
            let name = args.one()?;
            Ok(Command::User(name_arg(name)?))
        }
        Keyword::Pass => {
            // The whole rest of the line: passwords may contain spaces.
            let password = rest.strip_prefix(b" ").unwrap_or(rest);
            if password.is_empty() {
                return Err(ParseError::MissingArgument);
            }
            Ok(Command::Pass(Secret::new(password.to_vec())))
        }
        Keyword::Apop => {
            let (user, digest) = args.two()?;
            let user = name_arg(user)?;
            if digest.len() != 32 || !digest.iter().all(u8::is_ascii_hexdigit) {
                return Err(ParseError::InvalidDigest);
            }
            let digest = String::from_utf8_lossy(digest).to_ascii_lowercase();
            Ok(Command::Apop { user, digest })
        }
        Keyword::Auth => {
            let mut words = args.words();
            let mechanism = match words.next() {
                None => None,
                Some(m) => Some(mechanism_arg(m)?),
            };
            let initial_response = words.next().map(|ir| Secret::new(ir.to_vec()));
            if words.next().is_some() {
                return Err(ParseError::TooManyArguments);
            }
            Ok(Command::Auth {
                mechanism,
                initial_response,
            })
        }
        Keyword::Capa => args.none().map(|()| Command::Capa),
        Keyword::Stls => args.none().map(|()| Command::Stls),
        Keyword::Utf8 => args.none().map(|()| Command::Utf8),
        Keyword::Lang => args
            .optional()?
            .map(name_arg)
            .transpose()
            .map(Command::Lang),
        Keyword::Quit => args.none().map(|()| Command::Quit),
        Keyword::Stat => args.none().map(|()| Command::Stat),
        Keyword::Noop => args.none().map(|()| Command::Noop),
        Keyword::Rset => args.none().map(|()| Command::Rset),
        Keyword::List => args
            .optional()?
            .map(message_number)
            .transpose()
            .map(Command::List),
        Keyword::Uidl => args
            .optional()?
            .map(message_number)
            .transpose()
            .map(Command::Uidl),
        Keyword::Retr => message_number(args.one()?).map(Command::Retr),
        Keyword::Dele => message_number(args.one()?).map(Command::Dele),
        Keyword::Env => message_number(args.one()?).map(Command::Env),
        Keyword::Top => {
            let (msg, lines) = args.two()?;
            Ok(Command::Top(message_number(msg)?, line_count(lines)?))
        }
    }
}

/// The keyword of a line that starts with a known command, upper-cased, whether or not its
/// arguments parse; the session uses it to answer a command given in the wrong state with a
/// state error rather than an argument error.
pub fn command_keyword(line: &[u8]) -> Option<Keyword> {
    Keyword::parse(split_word(line).0)
}

/// Splits off the first space-delimited word; leading spaces are skipped.
fn split_word(input: &[u8]) -> (&[u8], &[u8]) {
    let start = input.iter().position(|&b| b != b' ').unwrap_or(input.len());
    let input = &input[start..];
    let end = input.iter().position(|&b| b == b' ').unwrap_or(input.len());
    (&input[..end], &input[end..])
}

/// The argument part of a command line.
struct Args<'a>(&'a [u8]);

impl<'a> Args<'a> {
    fn words(&self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        self.0.split(|&b| b == b' ').filter(|w| !w.is_empty())
    }

    fn none(&self) -> Result<(), ParseError> {
        match self.words().next() {
            None => Ok(()),
            Some(_) => Err(ParseError::TooManyArguments),
        }
    }

    fn optional(&self) -> Result<Option<&'a [u8]>, ParseError> {
        let mut words = self.words();
        let first = words.next();
        match words.next() {
            None => Ok(first),
            Some(_) => Err(ParseError::TooManyArguments),
        }
    }

    fn one(&self) -> Result<&'a [u8], ParseError> {
        self.optional()?.ok_or(ParseError::MissingArgument)
    }

    fn two(&self) -> Result<(&'a [u8], &'a [u8]), ParseError> {
        let mut words = self.words();
        let (Some(a), Some(b)) = (words.next(), words.next()) else {
            return Err(ParseError::MissingArgument);
        };
        match words.next() {
            None => Ok((a, b)),
            Some(_) => Err(ParseError::TooManyArguments),
        }
    }
}

/// Parses decimal digits into a `u64`; `None` on overflow. Empty or non-digit input is invalid.
fn decimal(arg: &[u8]) -> Result<Option<u64>, ParseError> {
    if arg.is_empty() || !arg.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::InvalidNumber);
    }
    Ok(arg.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    }))
}

fn message_number(arg: &[u8]) -> Result<MessageNumber, ParseError> {
    match decimal(arg)? {
        Some(n) if n >= 1 => MessageNumber::try_from(n).map_err(|_| ParseError::NoSuchMessage),
        _ => Err(ParseError::NoSuchMessage),
    }
}

fn line_count(arg: &[u8]) -> Result<u64, ParseError> {
    Ok(decimal(arg)?.unwrap_or(u64::MAX))
}

/// A user name: UTF-8 (RFC 6856 allows it) without control characters.
fn name_arg(arg: &[u8]) -> Result<String, ParseError> {
    let name = std::str::from_utf8(arg).map_err(|_| ParseError::InvalidName)?;
    if name.chars().any(char::is_control) {
        return Err(ParseError::InvalidName);
    }
    Ok(name.to_owned())
}

/// RFC 4422 section 3.1: 1 to 20 characters from upper-case letters, digits, '-' and '_'.
fn mechanism_arg(arg: &[u8]) -> Result<String, ParseError> {
    let valid = (1..=20).contains(&arg.len())
        && arg
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(ParseError::InvalidMechanism);
    }
    Ok(String::from_utf8_lossy(arg).to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Any command, including ones the encoder must refuse.
    fn any_command() -> impl Strategy<Value = Command> {
        let text = || {
            proptest::string::string_regex("[ -~\u{80}-\u{10ffff}\r\n\u{0}\u{1}]{0,40}").unwrap()
        };
        let bytes = || proptest::collection::vec(any::<u8>(), 0..40);
        let number = || prop_oneof![Just(0u32), 1..10u32, Just(u32::MAX)];
        prop_oneof![
            text().prop_map(Command::User),
            bytes().prop_map(|p| Command::Pass(Secret::new(p))),
            (text(), "[0-9a-fA-Fx]{30,33}")
                .prop_map(|(user, digest)| Command::Apop { user, digest }),
            (
                proptest::option::of("[A-Za-z0-9_@-]{0,22}"),
                proptest::option::of(bytes())
            )
                .prop_map(|(mechanism, ir)| Command::Auth {
                    mechanism,
                    initial_response: ir.map(Secret::new),
                }),
            Just(Command::Capa),
            Just(Command::Stls),
            Just(Command::Utf8),
            proptest::option::of(text()).prop_map(Command::Lang),
            Just(Command::Quit),
            Just(Command::Stat),
            Just(Command::Noop),
            Just(Command::Rset),
            proptest::option::of(number()).prop_map(Command::List),
            proptest::option::of(number()).prop_map(Command::Uidl),
            number().prop_map(Command::Retr),
            number().prop_map(Command::Dele),
            number().prop_map(Command::Env),
            (number(), any::<u64>()).prop_map(|(n, l)| Command::Top(n, l)),
        ]
    }

    proptest! {
        /// What the client sends is what the server reads: a command the encoder accepts
        /// parses back to itself, as one line; a refused one writes nothing.
        #[test]
        fn encoding_round_trips(command in any_command()) {
            let mut out = b"before".to_vec();
            match command.encode(&mut out) {
                Ok(()) => {
                    let line = &out[6..];
                    prop_assert!(line.ends_with(b"\r\n"));
                    let body = &line[..line.len() - 2];
                    prop_assert!(!body.contains(&b'\n') && !body.contains(&b'\r'));
                    prop_assert_eq!(parse_command(body), Ok(command));
                }
                Err(_) => prop_assert_eq!(&out[..], b"before"),
            }
        }
    }

    #[test]
    fn encoding_as_rfc_1939_writes_it() {
        let line = |c: Command| {
            let mut out = Vec::new();
            c.encode(&mut out).map(|()| String::from_utf8(out).unwrap())
        };
        assert_eq!(
            line(Command::User("mrose".into())).unwrap(),
            "USER mrose\r\n"
        );
        assert_eq!(
            line(Command::Pass(Secret::new(b"two words".to_vec()))).unwrap(),
            "PASS two words\r\n"
        );
        assert_eq!(
            line(Command::Apop {
                user: "mrose".into(),
                digest: "c4c9334bac560ecc979e58001b3e22fb".into()
            })
            .unwrap(),
            "APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n"
        );
        assert_eq!(line(Command::Top(10, 0)).unwrap(), "TOP 10 0\r\n");
        assert_eq!(line(Command::List(None)).unwrap(), "LIST\r\n");
        assert_eq!(
            line(Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial_response: Some(Secret::new(b"AGEAYg==".to_vec()))
            })
            .unwrap(),
            "AUTH PLAIN AGEAYg==\r\n"
        );
        assert_eq!(
            line(Command::User("a b".into())),
            Err(EncodeError::NotOneWord)
        );
        assert_eq!(
            line(Command::User("a\rDELE 1".into())),
            Err(EncodeError::LineBreak)
        );
        assert_eq!(line(Command::Retr(0)), Err(EncodeError::NoSuchMessage));
        assert_eq!(
            line(Command::Auth {
                mechanism: Some("plain".into()),
                initial_response: None
            }),
            Err(EncodeError::InvalidMechanism)
        );
        assert_eq!(
            line(Command::User("u".repeat(250))),
            Err(EncodeError::TooLong)
        );
        // An initial response may make AUTH longer than a command line (RFC 5034).
        assert!(
            line(Command::Auth {
                mechanism: Some("XOAUTH2".into()),
                initial_response: Some(Secret::new(vec![b'A'; 2000]))
            })
            .is_ok()
        );
    }

    #[test]
    fn one_keyword_table() {
        for k in Keyword::ALL {
            assert_eq!(Keyword::parse(k.as_str().as_bytes()), Some(k));
            assert_eq!(
                Keyword::parse(k.as_str().to_lowercase().as_bytes()),
                Some(k)
            );
            assert!(k.before_login() || k.after_login(), "{k}");
        }
        assert_eq!(Keyword::parse(b"LAST"), None);
    }

    fn ok(line: &str) -> Command {
        parse_command(line.as_bytes()).unwrap_or_else(|e| panic!("{line:?}: {e:?}"))
    }

    fn err(line: &[u8]) -> ParseError {
        parse_command(line).expect_err(&String::from_utf8_lossy(line))
    }

    #[test]
    fn keywords_are_case_insensitive() {
        for kw in ["STAT", "stat", "Stat", "sTaT"] {
            assert_eq!(ok(kw), Command::Stat);
        }
        assert_eq!(ok("retr 3"), Command::Retr(3));
    }

    #[test]
    fn table() {
        let cases: &[(&str, Command)] = &[
            ("USER mrose", Command::User("mrose".into())),
            ("USER  mrose ", Command::User("mrose".into())),
            (
                "USER jürgen@example.org",
                Command::User("jürgen@example.org".into()),
            ),
            ("QUIT", Command::Quit),
            ("NOOP", Command::Noop),
            ("RSET", Command::Rset),
            ("CAPA", Command::Capa),
            ("STLS", Command::Stls),
            ("UTF8", Command::Utf8),
            ("LIST", Command::List(None)),
            ("LIST 2", Command::List(Some(2))),
            ("UIDL", Command::Uidl(None)),
            ("UIDL 7", Command::Uidl(Some(7))),
            ("DELE 1", Command::Dele(1)),
            ("TOP 1 10", Command::Top(1, 10)),
            ("TOP 1 0", Command::Top(1, 0)),
            ("TOP 1 99999999", Command::Top(1, 99_999_999)),
            ("TOP 1 99999999999999999999", Command::Top(1, u64::MAX)),
            ("RETR 007", Command::Retr(7)),
            ("RETR 4294967295", Command::Retr(u32::MAX)),
            (
                "APOP mrose c4c9334bac560ecc979e58001b3e22fb",
                Command::Apop {
                    user: "mrose".into(),
                    digest: "c4c9334bac560ecc979e58001b3e22fb".into(),
                },
            ),
            (
                "APOP mrose C4C9334BAC560ECC979E58001B3E22FB",
                Command::Apop {
                    user: "mrose".into(),
                    digest: "c4c9334bac560ecc979e58001b3e22fb".into(),
                },
            ),
            (
                "AUTH",
                Command::Auth {
                    mechanism: None,
                    initial_response: None,
                },
            ),
            (
                "auth plain",
                Command::Auth {
                    mechanism: Some("PLAIN".into()),
                    initial_response: None,
                },
            ),
            (
                "AUTH PLAIN AGFsaWNlAHNlY3JldA==",
                Command::Auth {
                    mechanism: Some("PLAIN".into()),
                    initial_response: Some(Secret::new(b"AGFsaWNlAHNlY3JldA==".to_vec())),
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(&ok(line), want, "{line}");
        }
    }

    #[test]
    fn pass_keeps_spaces_verbatim() {
        let Command::Pass(p) = ok("PASS  two words ") else {
            panic!()
        };
        assert_eq!(p.expose(), b" two words ");
        let Command::Pass(p) = ok("pass tanstaaf") else {
            panic!()
        };
        assert_eq!(p.expose(), b"tanstaaf");
        assert_eq!(err(b"PASS"), ParseError::MissingArgument);
        assert_eq!(err(b"PASS "), ParseError::MissingArgument);
    }

    #[test]
    fn errors() {
        let cases: &[(&[u8], ParseError)] = &[
            (b"", ParseError::Empty),
            (b"   ", ParseError::Empty),
            (b"LAST", ParseError::UnknownCommand),
            (b"XTND XMIT", ParseError::UnknownCommand),
            (b"STATUS", ParseError::UnknownCommand),
            (b"USER", ParseError::MissingArgument),
            (b"USER alice bob", ParseError::TooManyArguments),
            (b"USER alice\0bob", ParseError::ContainsNul),
            (b"PASS a\0b", ParseError::ContainsNul),
            (b"USER ali\x01ce", ParseError::InvalidName),
            (b"USER \xff\xfe", ParseError::InvalidName),
            (b"STAT 1", ParseError::TooManyArguments),
            (b"RETR", ParseError::MissingArgument),
            (b"RETR 0", ParseError::NoSuchMessage),
            (b"RETR -1", ParseError::InvalidNumber),
            (b"RETR +1", ParseError::InvalidNumber),
            (b"RETR 1a", ParseError::InvalidNumber),
            (b"RETR 4294967296", ParseError::NoSuchMessage),
            (b"RETR 99999999999999999999", ParseError::NoSuchMessage),
            (b"LIST 1 2", ParseError::TooManyArguments),
            (b"TOP 1", ParseError::MissingArgument),
            (b"TOP 1 -1", ParseError::InvalidNumber),
            (b"TOP 1 2 3", ParseError::TooManyArguments),
            (b"APOP mrose abc", ParseError::InvalidDigest),
            (b"AUTH PL@IN", ParseError::InvalidMechanism),
            (b"AUTH PLAIN a b", ParseError::TooManyArguments),
        ];
        for (line, want) in cases {
            assert_eq!(&err(line), want, "{:?}", String::from_utf8_lossy(line));
        }
    }
}
