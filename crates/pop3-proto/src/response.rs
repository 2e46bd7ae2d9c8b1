//! Status lines and the extended response codes of RFC 2449 and RFC 3206.
//!
//! A response code tells the client *why* a command failed, so that it can act sensibly: ask
//! for a new password only on `[AUTH]`, retry later on `[SYS/TEMP]` or `[IN-USE]`, and wait
//! before logging in again on `[LOGIN-DELAY]`. Poplar uses them truthfully: a server-side fault
//! is never reported as `[AUTH]`.

use std::fmt;

/// An extended response code (RFC 2449 section 8, RFC 3206).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseCode {
    /// `[IN-USE]`: the maildrop is locked by another session (RFC 2449).
    InUse,
    /// `[LOGIN-DELAY]`: the user logged in too soon after the last login (RFC 2449).
    LoginDelay,
    /// `[SYS/TEMP]`: a temporary server-side problem; retry later (RFC 3206).
    SysTemp,
    /// `[SYS/PERM]`: a permanent server-side problem; an administrator must act (RFC 3206).
    SysPerm,
    /// `[AUTH]`: the credentials are at fault (RFC 3206).
    Auth,
}

impl ResponseCode {
    /// The code as it appears between brackets.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseCode::InUse => "IN-USE",
            ResponseCode::LoginDelay => "LOGIN-DELAY",
            ResponseCode::SysTemp => "SYS/TEMP",
            ResponseCode::SysPerm => "SYS/PERM",
            ResponseCode::Auth => "AUTH",
        }
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Writes `+OK text` CRLF (or `+OK` CRLF when `text` is empty).
pub(crate) fn ok(out: &mut Vec<u8>, text: impl fmt::Display) {
    status(out, "+OK", None, text);
}

/// Writes `-ERR [CODE] text` CRLF.
pub(crate) fn err(out: &mut Vec<u8>, code: Option<ResponseCode>, text: impl fmt::Display) {
    status(out, "-ERR", code, text);
}

fn status(out: &mut Vec<u8>, indicator: &str, code: Option<ResponseCode>, text: impl fmt::Display) {
    use std::io::Write;
    let start = out.len();
    out.extend_from_slice(indicator.as_bytes());
    if let Some(code) = code {
        out.extend_from_slice(b" [");
        out.extend_from_slice(code.as_str().as_bytes());
        out.push(b']');
    }
    let before_text = out.len();
    // Writing into a Vec cannot fail.
    let _ = write!(out, " {text}");
    if out.len() == before_text + 1 {
        out.truncate(before_text);
    }
    // RFC 2449 section 4: a status line is at most 512 octets including CRLF. Our texts are far
    // shorter, but a long user-supplied name must not push a line over the limit; the cut never
    // splits a UTF-8 character (RFC 6856 texts are UTF-8).
    if out.len() > start + 510 {
        let mut end = start + 510;
        while end > before_text && (out[end] & 0xC0) == 0x80 {
            end -= 1;
        }
        out.truncate(end);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let mut out = Vec::new();
        ok(&mut out, "2 320");
        ok(&mut out, "");
        err(&mut out, Some(ResponseCode::InUse), "Maildrop is locked");
        err(&mut out, None, "No such message");
        assert_eq!(
            out,
            b"+OK 2 320\r\n+OK\r\n-ERR [IN-USE] Maildrop is locked\r\n-ERR No such message\r\n"
        );
    }

    #[test]
    fn long_lines_are_cut_between_characters() {
        let mut out = Vec::new();
        err(&mut out, None, "я".repeat(600));
        assert!(out.len() <= 512);
        assert!(std::str::from_utf8(&out).is_ok());
        assert!(out.ends_with("я\r\n".as_bytes()));
    }

    #[test]
    fn long_lines_are_capped_at_512() {
        let mut out = Vec::new();
        err(&mut out, None, "x".repeat(2000));
        assert_eq!(out.len(), 512);
        assert!(out.ends_with(b"\r\n"));
    }
}
