//! Line framing: the first thing every received byte goes through.
//!
//! POP3 is line based. The framer cuts the input stream into lines with a hard length cap so
//! that a client can never make the server buffer more than one line (RFC 2449 section 4 caps
//! command lines at 255 octets including CRLF; SASL responses get a larger, configured cap). A
//! line over the cap is reported once, as soon as it is detected, and the rest of it is
//! discarded up to the next LF: the session recovers on the next line instead of dropping the
//! connection. Both CRLF and a bare LF end a line (real clients and test scripts send either).

use memchr::memchr;

/// One framed unit of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line, without its CRLF or LF terminator.
    Line(&'a [u8]),
    /// A line longer than the cap was seen; its bytes were discarded.
    TooLong,
}

/// Splits a byte stream into bounded lines.
#[derive(Debug, Default)]
pub struct LineFramer {
    buf: Vec<u8>,
    /// Offset of the first unconsumed byte in `buf`.
    start: usize,
    /// Inside an over-long line that has been reported; drop bytes until the next LF.
    discarding: bool,
}

/// Buffers larger than this are released once empty, so an idle session holds little memory.
const KEEP_CAPACITY: usize = 4096;

impl LineFramer {
    /// Creates an empty framer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(data);
    }

    /// Number of buffered bytes not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Drops everything buffered (used when STLS switches the transport: plaintext that was
    /// pipelined after STLS must never be executed inside TLS).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.discarding = false;
        self.release();
    }

    /// Returns the next frame, or `None` when no complete line is buffered.
    ///
    /// `max_len` is the largest accepted line *including* its terminator.
    pub fn next_line(&mut self, max_len: usize) -> Option<Frame<'_>> {
        loop {
            let data = &self.buf[self.start..];
            let Some(lf) = memchr(b'\n', data) else {
                if self.discarding || data.len() >= max_len {
                    // No terminator within the cap: drop what we have and keep dropping.
                    let report = !self.discarding;
                    self.discarding = true;
                    self.start = self.buf.len();
                    self.compact();
                    return report.then_some(Frame::TooLong);
                }
                return None;
            };
            let total = lf + 1;
            let begin = self.start;
            self.start += total;
            if self.discarding {
                // The tail of a line already reported as too long.
                self.discarding = false;
                continue;
            }
            if total > max_len {
                return Some(Frame::TooLong);
            }
            let mut line = &self.buf[begin..begin + lf];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            return Some(Frame::Line(line));
        }
    }

    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        if self.start == self.buf.len() {
            self.buf.clear();
            self.release();
        } else {
            self.buf.drain(..self.start);
        }
        self.start = 0;
    }

    fn release(&mut self) {
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8], chunk: usize, max: usize) -> Vec<Option<Vec<u8>>> {
        let mut f = LineFramer::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            f.push(piece);
            while let Some(frame) = f.next_line(max) {
                out.push(match frame {
                    Frame::Line(l) => Some(l.to_vec()),
                    Frame::TooLong => None,
                });
            }
        }
        out
    }

    #[test]
    fn crlf_and_bare_lf_both_end_lines() {
        let got = frames(b"STAT\r\nLIST\nNOOP\r\n", 512, 255);
        assert_eq!(
            got,
            vec![
                Some(b"STAT".to_vec()),
                Some(b"LIST".to_vec()),
                Some(b"NOOP".to_vec())
            ]
        );
    }

    #[test]
    fn incomplete_line_waits() {
        let mut f = LineFramer::new();
        f.push(b"STA");
        assert_eq!(f.next_line(255), None);
        f.push(b"T\r\n");
        assert_eq!(f.next_line(255), Some(Frame::Line(b"STAT")));
    }

    #[test]
    fn cap_counts_the_terminator() {
        let ok = [vec![b'a'; 253], b"\r\n".to_vec()].concat();
        assert_eq!(frames(&ok, 512, 255), vec![Some(vec![b'a'; 253])]);
        let long = [vec![b'a'; 254], b"\r\n".to_vec()].concat();
        assert_eq!(frames(&long, 512, 255), vec![None]);
    }

    #[test]
    fn overlong_line_is_reported_once_and_framing_recovers() {
        let mut input = vec![b'x'; 1 << 20];
        input.extend_from_slice(b"\r\nNOOP\r\n");
        for chunk in [1, 7, 255, 256, 4096, 1 << 21] {
            if chunk == 1 && input.len() > 100_000 {
                // Byte-at-a-time over 1 MiB is slow in debug builds; a shorter line suffices.
                let mut small = vec![b'x'; 1000];
                small.extend_from_slice(b"\r\nNOOP\r\n");
                assert_eq!(frames(&small, 1, 255), vec![None, Some(b"NOOP".to_vec())]);
                continue;
            }
            assert_eq!(
                frames(&input, chunk, 255),
                vec![None, Some(b"NOOP".to_vec())],
                "{chunk}"
            );
        }
    }

    #[test]
    fn memory_stays_bounded_while_discarding() {
        let mut f = LineFramer::new();
        for _ in 0..1000 {
            f.push(&[b'x'; 1024]);
            let _ = f.next_line(255);
            assert!(f.buffered() < 2048);
        }
    }

    #[test]
    fn clear_drops_pipelined_input() {
        let mut f = LineFramer::new();
        f.push(b"STLS\r\nCAPA\r\n");
        assert_eq!(f.next_line(255), Some(Frame::Line(b"STLS")));
        f.clear();
        assert_eq!(f.next_line(255), None);
    }

    #[test]
    fn rechunking_gives_identical_frames() {
        let mut input = Vec::new();
        for i in 0..200 {
            input.extend_from_slice(format!("CMD{i} arg\r\n").as_bytes());
            if i % 17 == 0 {
                input.extend_from_slice(&vec![b'z'; 300]);
                input.extend_from_slice(b"\n");
            }
        }
        let reference = frames(&input, input.len(), 255);
        let mut size = 1;
        while size <= 512 {
            assert_eq!(frames(&input, size, 255), reference, "chunk size {size}");
            size *= 2;
        }
    }
}
