//! The canonical form of a message and the multi-line encoder that sends it.
//!
//! RFC 1939 sends a message as CRLF-terminated lines, dot-stuffed, ended by `.` CRLF, and
//! reports its size as "the exact size of the message" in octets. Messages are stored as they
//! arrived (bare LF, no final newline, lines starting with '.'), so what RETR sends is the
//! *canonical form*: every bare LF becomes CRLF and a message that does not end with a line
//! terminator gets one. The size that STAT/LIST/RETR report is the length of that canonical form,
//! which is exactly what a client holds after undoing the dot-stuffing.
//!
//! Both the size and the bytes come from one state machine, [`MessageEncoder`]: the store counts
//! sizes with it (writing nowhere) and the server encodes with it (writing to the socket buffer),
//! so the two can never disagree. It works on arbitrary chunks and never needs the whole message.

use memchr::memchr;

/// Where encoded bytes go. Counting uses a sink that drops them.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

struct Discard;

impl Sink for Discard {
    #[inline]
    fn put(&mut self, _: &[u8]) {}
}

/// Whether the encoder wants more input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Feed the next chunk (or call `finish` at end of message).
    More,
    /// The `TOP` line limit was reached; the rest of the message must not be fed.
    Done,
}

#[derive(Debug, Clone, Copy)]
enum Limit {
    /// RETR: the whole message.
    Whole,
    /// TOP: still in the header.
    Header { body_lines: u64 },
    /// TOP: in the body, with this many lines still to send.
    Body { left: u64 },
    /// TOP: the limit was reached.
    Reached,
}

/// Streams a message as a POP3 multi-line response body (RFC 1939 section 3).
///
/// Feed chunks with [`encode`](Self::encode), then call [`finish`](Self::finish), which ends a
/// final unterminated line and appends the `.` CRLF terminator.
#[derive(Debug, Clone)]
pub struct MessageEncoder {
    at_line_start: bool,
    prev_cr: bool,
    /// Octets of the current line seen so far (saturating); used to find the blank line that
    /// ends the header for TOP.
    line_len: u64,
    limit: Limit,
    /// Canonical octets produced so far (dot-stuffing excluded).
    octets: u64,
}

impl Default for MessageEncoder {
    fn default() -> Self {
        Self::retr()
    }
}

impl MessageEncoder {
    /// An encoder for RETR: the whole message.
    pub fn retr() -> Self {
        Self::with_limit(Limit::Whole)
    }

    /// An encoder for `TOP n lines`: the header, the blank line, then `lines` body lines.
    pub fn top(lines: u64) -> Self {
        Self::with_limit(Limit::Header { body_lines: lines })
    }

    fn with_limit(limit: Limit) -> Self {
        Self {
            at_line_start: true,
            prev_cr: false,
            line_len: 0,
            limit,
            octets: 0,
        }
    }

    /// Canonical octets produced so far, dot-stuffing excluded.
    pub fn octets(&self) -> u64 {
        self.octets
    }

    /// Encodes a chunk of the stored message into `out`.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Progress {
        self.run(input, out)
    }

    /// For RETR: if `input` goes on the wire unchanged (CRLF line ends, no line starting with
    /// '.'), counts it as sent and returns true, so the caller can send `input` itself instead
    /// of a copy. Otherwise (or for TOP) changes nothing and returns false: use
    /// [`encode`](Self::encode).
    pub fn pass_through(&mut self, input: &[u8]) -> bool {
        if !matches!(self.limit, Limit::Whole) || !self.unchanged(input) {
            return false;
        }
        if let Some(&last) = input.last() {
            self.octets += input.len() as u64;
            self.at_line_start = last == b'\n';
            self.prev_cr = last == b'\r';
        }
        true
    }

    /// For RETR, at the start of the message: counts as sent `octets` that the caller sent
    /// itself (from a file, by the kernel) because the store knows them to be a whole message
    /// that goes on the wire unchanged and ends with CRLF (see [`SizeCounter::verbatim`]).
    /// Returns false, changing nothing, for TOP or once anything else was sent: use
    /// [`encode`](Self::encode).
    pub fn sent_verbatim(&mut self, octets: u64) -> bool {
        if !matches!(self.limit, Limit::Whole) || self.octets != 0 || !self.at_line_start {
            return false;
        }
        self.octets = octets;
        true
    }

    /// Whether `input`, coming next, needs no change on the wire: every LF has its CR and no
    /// line starts with '.'.
    fn unchanged(&self, input: &[u8]) -> bool {
        if input.is_empty() {
            return true;
        }
        if self.at_line_start && input[0] == b'.' {
            return false;
        }
        memchr::memchr_iter(b'\n', input).all(|lf| {
            let cr_before = match lf.checked_sub(1) {
                Some(before) => input[before] == b'\r',
                None => self.prev_cr,
            };
            cr_before && input.get(lf + 1) != Some(&b'.')
        })
    }

    /// Ends the message: terminates a final unterminated line, then writes `.` CRLF.
    /// Returns the canonical octet count (what the client holds after un-stuffing).
    pub fn finish(mut self, out: &mut Vec<u8>) -> u64 {
        self.end_line(out);
        out.extend_from_slice(b".\r\n");
        self.octets
    }

    /// Terminates a final unterminated line, as if a LF had arrived.
    fn end_line<S: Sink>(&mut self, out: &mut S) {
        if !self.at_line_start && !matches!(self.limit, Limit::Reached) {
            self.run(b"\n", out);
        }
    }

    fn run<S: Sink>(&mut self, input: &[u8], out: &mut S) -> Progress {
        if matches!(self.limit, Limit::Whole) {
            self.run_whole(input, out);
            return Progress::More;
        }
        let mut i = 0;
        while i < input.len() {
            if matches!(self.limit, Limit::Reached) {
                return Progress::Done;
            }
            if self.at_line_start && input[i] == b'.' {
                out.put(b".");
            }
            let Some(off) = memchr(b'\n', &input[i..]) else {
                let rest = &input[i..];
                out.put(rest);
                self.octets += rest.len() as u64;
                self.line_len = self.line_len.saturating_add(rest.len() as u64);
                self.prev_cr = rest.last() == Some(&b'\r');
                self.at_line_start = false;
                break;
            };
            let lf = i + off;
            let content = &input[i..lf];
            let cr_before = match content.last() {
                Some(&b) => b == b'\r',
                None => self.prev_cr,
            };
            out.put(content);
            if cr_before {
                out.put(b"\n");
                self.octets += content.len() as u64 + 1;
            } else {
                out.put(b"\r\n");
                self.octets += content.len() as u64 + 2;
            }
            let line_len = self.line_len.saturating_add(content.len() as u64);
            let blank = line_len == 0 || (line_len == 1 && cr_before);
            self.line_done(blank);
            i = lf + 1;
        }
        if matches!(self.limit, Limit::Reached) {
            Progress::Done
        } else {
            Progress::More
        }
    }

    /// RETR's path. The output equals the input except at the rare places that need a change
    /// (a bare LF gets its CR, a line starting with '.' gets stuffed), so the unchanged spans
    /// between them are copied whole instead of line by line. Lines are not counted: only TOP
    /// needs them.
    fn run_whole<S: Sink>(&mut self, input: &[u8], out: &mut S) {
        let Some(&last) = input.last() else {
            return;
        };
        if self.at_line_start && input[0] == b'.' {
            out.put(b".");
        }
        // Start of the input not yet written.
        let mut span = 0;
        for lf in memchr::memchr_iter(b'\n', input) {
            let cr_before = match lf.checked_sub(1) {
                Some(before) => input[before] == b'\r',
                None => self.prev_cr,
            };
            if !cr_before {
                out.put(&input[span..lf]);
                out.put(b"\r");
                self.octets += 1;
                span = lf;
            }
            if input.get(lf + 1) == Some(&b'.') {
                out.put(&input[span..=lf]);
                out.put(b".");
                span = lf + 1;
            }
        }
        out.put(&input[span..]);
        self.octets += input.len() as u64;
        self.at_line_start = last == b'\n';
        self.prev_cr = last == b'\r';
    }

    fn line_done(&mut self, blank: bool) {
        self.at_line_start = true;
        self.prev_cr = false;
        self.line_len = 0;
        self.limit = match self.limit {
            Limit::Header { body_lines: 0 } if blank => Limit::Reached,
            Limit::Header { body_lines } if blank => Limit::Body { left: body_lines },
            Limit::Body { left: 1 } => Limit::Reached,
            Limit::Body { left } => Limit::Body { left: left - 1 },
            other => other,
        };
    }
}

/// Counts the canonical size of a message fed in chunks, without producing output.
///
/// Besides the canonical size it reports the "virtual size" Dovecot stores in `,W=` (CRLF
/// conversion of bare LFs only, no terminator added for an unterminated last line), and whether
/// the message is *verbatim*: sent on the wire exactly as stored, so that RETR can hand the
/// stored octets to the socket unread.
#[derive(Debug, Clone)]
pub struct SizeCounter {
    encoder: MessageEncoder,
    /// No octet so far needs a change on the wire.
    unchanged: bool,
}

impl Default for SizeCounter {
    fn default() -> Self {
        Self {
            encoder: MessageEncoder::retr(),
            unchanged: true,
        }
    }
}

impl SizeCounter {
    /// A counter at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts a chunk.
    pub fn update(&mut self, input: &[u8]) {
        if self.unchanged {
            self.unchanged = self.encoder.unchanged(input);
        }
        self.encoder.run(input, &mut Discard);
    }

    /// The virtual size so far: bare LFs counted as CRLF, nothing appended.
    pub fn virtual_size(&self) -> u64 {
        self.encoder.octets
    }

    /// Whether the message counted so far goes on the wire exactly as it was fed: every line
    /// ends with CRLF (the last one included), none starts with '.', and it is not empty. Its
    /// canonical size is then the number of octets fed, and RETR sends them followed by the
    /// terminator alone.
    pub fn verbatim(&self) -> bool {
        self.unchanged && self.encoder.octets > 0 && self.encoder.at_line_start
    }

    /// The canonical size: what RETR sends before dot-stuffing.
    pub fn canonical_size(mut self) -> u64 {
        self.encoder.end_line(&mut Discard);
        self.encoder.octets
    }
}

/// The canonical size of a whole message held in memory.
pub fn canonical_size(message: &[u8]) -> u64 {
    let mut c = SizeCounter::new();
    c.update(message);
    c.canonical_size()
}

/// The canonical size from a known virtual size and the message's last octet (`None` when empty):
/// an unterminated last line gains CRLF, or only LF when it already ends in CR.
pub fn canonical_size_from_virtual(virtual_size: u64, last_octet: Option<u8>) -> u64 {
    match last_octet {
        None | Some(b'\n') => virtual_size,
        Some(b'\r') => virtual_size + 1,
        Some(_) => virtual_size + 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn retr(msg: &[u8], chunk: usize) -> (Vec<u8>, u64) {
        let mut enc = MessageEncoder::retr();
        let mut out = Vec::new();
        for piece in msg.chunks(chunk.max(1)) {
            enc.encode(piece, &mut out);
        }
        let n = enc.finish(&mut out);
        (out, n)
    }

    fn top(msg: &[u8], lines: u64, chunk: usize) -> Vec<u8> {
        let mut enc = MessageEncoder::top(lines);
        let mut out = Vec::new();
        for piece in msg.chunks(chunk.max(1)) {
            if enc.encode(piece, &mut out) == Progress::Done {
                break;
            }
        }
        enc.finish(&mut out);
        out
    }

    /// What a client does with a multi-line response: split lines, drop the terminator,
    /// undo the dot-stuffing.
    fn unstuff(wire: &[u8]) -> Vec<u8> {
        assert!(
            wire.ends_with(b".\r\n"),
            "no terminator: {:?}",
            String::from_utf8_lossy(wire)
        );
        let body = &wire[..wire.len() - 3];
        assert!(body.is_empty() || body.ends_with(b"\r\n"));
        let mut out = Vec::new();
        for line in body.split_inclusive(|&b| b == b'\n') {
            assert!(line.ends_with(b"\r\n"), "bare LF on the wire");
            assert_ne!(line, b".\r\n", "unstuffed terminator inside the body");
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }

    #[test]
    fn examples() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
            (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
            (b"no newline", b"no newline\r\n.\r\n"),
            (b".", b"..\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b"a\r\n.\r\nb", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"..x\n", b"...x\r\n.\r\n"),
            (b"x.\n.y", b"x.\r\n..y\r\n.\r\n"),
            (b"cr\r", b"cr\r\n.\r\n"),
            (b"bare\rcr\n", b"bare\rcr\r\n.\r\n"),
            (b"\n\n", b"\r\n\r\n.\r\n"),
        ];
        for (msg, wire) in cases {
            for chunk in [1, 2, 3, 64] {
                let (out, n) = retr(msg, chunk);
                assert_eq!(
                    out,
                    *wire,
                    "{:?} chunk {chunk}",
                    String::from_utf8_lossy(msg)
                );
                assert_eq!(n, canonical_size(msg));
                assert_eq!(n, unstuff(&out).len() as u64);
            }
        }
    }

    #[test]
    fn only_unchanged_chunks_pass_through() {
        let mut enc = MessageEncoder::retr();
        assert!(enc.pass_through(b"a\r\nb"));
        assert!(enc.pass_through(b"c\r"));
        assert!(!enc.pass_through(b"\n.d\r\n"), "a line starting with '.'");
        assert!(enc.pass_through(b"\nd\r\n"));
        assert!(!enc.pass_through(b".e\r\n"), "'.' at the start of a line");
        assert!(!enc.pass_through(b"f\ng\r\n"), "a bare LF");
        assert!(
            !MessageEncoder::top(5).pass_through(b"a\r\n"),
            "TOP counts lines"
        );
        let mut out = Vec::new();
        assert_eq!(enc.finish(&mut out), 10);
        assert_eq!(out, b".\r\n");
    }

    #[test]
    fn only_a_fresh_retr_takes_a_verbatim_message() {
        assert!(
            !MessageEncoder::top(5).sent_verbatim(10),
            "TOP counts lines"
        );
        let mut enc = MessageEncoder::retr();
        enc.encode(b"a", &mut Vec::new());
        assert!(!enc.sent_verbatim(10), "something was sent already");
        let mut c = SizeCounter::new();
        c.update(b"a\r\nb");
        assert!(!c.verbatim(), "the last line is unterminated");
        c.update(b"\r\n");
        assert!(c.verbatim());
        c.update(b".\r\n");
        assert!(!c.verbatim(), "a line starts with '.'");
        assert!(!SizeCounter::new().verbatim(), "an empty message");
    }

    #[test]
    fn top_sends_header_blank_line_and_n_body_lines() {
        let msg = b"From: a\r\nSubject: b\r\n\r\nline1\r\n.line2\r\nline3\r\n";
        assert_eq!(top(msg, 0, 512), b"From: a\r\nSubject: b\r\n\r\n.\r\n");
        assert_eq!(
            top(msg, 1, 512),
            b"From: a\r\nSubject: b\r\n\r\nline1\r\n.\r\n"
        );
        assert_eq!(
            top(msg, 2, 3),
            b"From: a\r\nSubject: b\r\n\r\nline1\r\n..line2\r\n.\r\n"
        );
        assert_eq!(top(msg, 99_999_999, 1), retr(msg, 512).0);
        assert_eq!(top(msg, u64::MAX, 7), retr(msg, 512).0);
    }

    #[test]
    fn top_with_bare_lf_and_no_body() {
        assert_eq!(top(b"A: b\n\nbody\n", 0, 1), b"A: b\r\n\r\n.\r\n");
        assert_eq!(top(b"A: b\nC: d", 5, 2), b"A: b\r\nC: d\r\n.\r\n");
        // A CR alone on a line is the blank line too.
        assert_eq!(
            top(b"A: b\r\n\r\nx\r\ny\r\n", 1, 1),
            b"A: b\r\n\r\nx\r\n.\r\n"
        );
    }

    #[test]
    fn virtual_size_matches_dovecot_definition() {
        let mut c = SizeCounter::new();
        c.update(b"a\nb");
        assert_eq!(c.virtual_size(), 4);
        assert_eq!(c.canonical_size(), 6);
        assert_eq!(canonical_size_from_virtual(4, Some(b'b')), 6);
        assert_eq!(canonical_size_from_virtual(4, Some(b'\n')), 4);
        assert_eq!(canonical_size_from_virtual(4, Some(b'\r')), 5);
        assert_eq!(canonical_size_from_virtual(0, None), 0);
    }

    proptest! {
        #[test]
        fn size_equals_unstuffed_octets(
            msg in proptest::collection::vec(prop_oneof![
                Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a'), any::<u8>()
            ], 0..400),
            chunk in 1usize..70,
        ) {
            let (wire, n) = retr(&msg, chunk);
            let client = unstuff(&wire);
            prop_assert_eq!(client.len() as u64, n);
            prop_assert_eq!(n, canonical_size(&msg));
            let mut c = SizeCounter::new();
            c.update(&msg);
            let last = msg.last().copied();
            prop_assert_eq!(canonical_size_from_virtual(c.virtual_size(), last), n);
            // Chunking never changes the bytes.
            prop_assert_eq!(&wire, &retr(&msg, msg.len().max(1)).0);
            // RETR's span-copying path agrees with the line-by-line path TOP takes.
            prop_assert_eq!(&wire, &top(&msg, u64::MAX, chunk));
            // Passing unchanged chunks through produces the same bytes.
            let mut enc = MessageEncoder::retr();
            let mut out = Vec::new();
            for piece in msg.chunks(chunk) {
                if enc.pass_through(piece) {
                    out.extend_from_slice(piece);
                } else {
                    enc.encode(piece, &mut out);
                }
            }
            prop_assert_eq!(enc.finish(&mut out), n);
            prop_assert_eq!(out, wire);
        }

        #[test]
        fn verbatim_means_the_wire_is_the_message_and_the_terminator(
            msg in proptest::collection::vec(prop_oneof![
                Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a')
            ], 0..200),
            crlf in any::<bool>(),
            chunk in 1usize..40,
        ) {
            // Half the cases in the shape a CRLF-storing delivery writes.
            let msg = if crlf {
                let (wire, _) = retr(&msg, 512);
                unstuff(&wire)
            } else {
                msg
            };
            let mut c = SizeCounter::new();
            for piece in msg.chunks(chunk) {
                c.update(piece);
            }
            let (wire, n) = retr(&msg, chunk);
            let mut expected = msg.clone();
            expected.extend_from_slice(b".\r\n");
            prop_assert_eq!(c.verbatim(), !msg.is_empty() && wire == expected);
            if c.verbatim() {
                prop_assert_eq!(n, msg.len() as u64);
                let mut enc = MessageEncoder::retr();
                prop_assert!(enc.sent_verbatim(msg.len() as u64));
                let mut out = Vec::new();
                prop_assert_eq!(enc.finish(&mut out), n);
                prop_assert_eq!(out, b".\r\n");
            }
        }

        #[test]
        fn top_is_a_prefix_of_retr(
            msg in proptest::collection::vec(prop_oneof![
                Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a')
            ], 0..300),
            lines in 0u64..6,
            chunk in 1usize..40,
        ) {
            let whole = unstuff(&retr(&msg, 512).0);
            let part = unstuff(&top(&msg, lines, chunk));
            prop_assert!(whole.starts_with(&part));
        }
    }
}
