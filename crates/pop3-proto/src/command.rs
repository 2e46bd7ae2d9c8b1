//! The POP3 command parser: one line in, one typed [`Command`] or a [`ParseError`] out.
//!
//! Keywords are case-insensitive (RFC 1939 section 3). Arguments are separated by spaces; runs of
//! spaces and trailing spaces are tolerated because real clients send them, but every argument is
//! checked strictly: message numbers are decimal digits only and range-checked (a 20-digit number
//! is an error, never a wrapped value), names may not contain control characters, and a line
//! that contains NUL is refused whole so that `USER alice<NUL>bob` can never be read as
//! `USER alice`. `PASS` takes the rest of the line verbatim, spaces included (RFC 1939 section 7).

use crate::secret::Secret;
use std::fmt;

/// A message number as the client wrote it (1-based, at least 1).
pub type MessageNumber = u32;

/// A parsed client command.
#[derive(Debug, PartialEq, Eq)]
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
}

impl Command {
    /// The command keyword, for logs.
    pub fn keyword(&self) -> &'static str {
        match self {
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Apop { .. } => "APOP",
            Command::Auth { .. } => "AUTH",
            Command::Capa => "CAPA",
            Command::Stls => "STLS",
            Command::Utf8 => "UTF8",
            Command::Quit => "QUIT",
            Command::Stat => "STAT",
            Command::List(_) => "LIST",
            Command::Retr(_) => "RETR",
            Command::Dele(_) => "DELE",
            Command::Noop => "NOOP",
            Command::Rset => "RSET",
            Command::Top(..) => "TOP",
            Command::Uidl(_) => "UIDL",
        }
    }
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
        f.write_str(match self {
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
        })
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
    let mut kw = [0u8; 4];
    if keyword.len() > kw.len() {
        return Err(ParseError::UnknownCommand);
    }
    for (dst, src) in kw.iter_mut().zip(keyword) {
        *dst = src.to_ascii_uppercase();
    }
    let args = Args(rest);
    match &kw[..keyword.len()] {
        b"USER" => {
            let name = args.one()?;
            Ok(Command::User(name_arg(name)?))
        }
        b"PASS" => {
            // The whole rest of the line: passwords may contain spaces.
            let password = rest.strip_prefix(b" ").unwrap_or(rest);
            if password.is_empty() {
                return Err(ParseError::MissingArgument);
            }
            Ok(Command::Pass(Secret::new(password.to_vec())))
        }
        b"APOP" => {
            let (user, digest) = args.two()?;
            let user = name_arg(user)?;
            if digest.len() != 32 || !digest.iter().all(u8::is_ascii_hexdigit) {
                return Err(ParseError::InvalidDigest);
            }
            let digest = String::from_utf8_lossy(digest).to_ascii_lowercase();
            Ok(Command::Apop { user, digest })
        }
        b"AUTH" => {
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
        b"CAPA" => args.none().map(|()| Command::Capa),
        b"STLS" => args.none().map(|()| Command::Stls),
        b"UTF8" => args.none().map(|()| Command::Utf8),
        b"QUIT" => args.none().map(|()| Command::Quit),
        b"STAT" => args.none().map(|()| Command::Stat),
        b"NOOP" => args.none().map(|()| Command::Noop),
        b"RSET" => args.none().map(|()| Command::Rset),
        b"LIST" => args
            .optional()?
            .map(message_number)
            .transpose()
            .map(Command::List),
        b"UIDL" => args
            .optional()?
            .map(message_number)
            .transpose()
            .map(Command::Uidl),
        b"RETR" => message_number(args.one()?).map(Command::Retr),
        b"DELE" => message_number(args.one()?).map(Command::Dele),
        b"TOP" => {
            let (msg, lines) = args.two()?;
            Ok(Command::Top(message_number(msg)?, line_count(lines)?))
        }
        _ => Err(ParseError::UnknownCommand),
    }
}

/// The keyword of a line that starts with a known command, upper-cased, whether or not its
/// arguments parse; the session uses it to answer a command given in the wrong state with a
/// state error rather than an argument error.
pub fn command_keyword(line: &[u8]) -> Option<&'static str> {
    const KEYWORDS: [&str; 16] = [
        "USER", "PASS", "APOP", "AUTH", "CAPA", "STLS", "UTF8", "QUIT", "STAT", "LIST", "UIDL",
        "RETR", "DELE", "TOP", "NOOP", "RSET",
    ];
    let (keyword, _) = split_word(line);
    KEYWORDS
        .into_iter()
        .find(|k| k.as_bytes().eq_ignore_ascii_case(keyword))
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
