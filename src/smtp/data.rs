//! Message data after DATA (RFC 5321 §4.5.2): removes dot-stuffing, finds the `<CRLF>.<CRLF>`
//! terminator and enforces the size limit. Pure: bytes in, message out.

/// Decoder for one message's data, fed in arbitrary chunks.
#[derive(Debug)]
pub struct DataDecoder {
    state: State,
    message: Vec<u8>,
    max_size: usize,
    /// Bytes of message content seen, including any beyond `max_size`.
    size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line; `crlf` tells whether the previous line ended with CRLF (or this is
    /// the first line). Only a `.` line after a CRLF ends the data: a bare LF never does.
    LineStart { crlf: bool },
    /// Saw a `.` at the start of a line.
    Dot { crlf: bool },
    /// Saw `.` CR at the start of a line.
    DotCr { crlf: bool },
    /// Inside a line.
    Text,
    /// Inside a line, just after a CR.
    Cr,
}

/// The decoded data of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The content, with dot-stuffing removed.
    Complete(Vec<u8>),
    /// The content was larger than the limit; it was read to the end and dropped.
    TooBig { size: u64 },
}

impl DataDecoder {
    pub fn new(max_size: usize) -> Self {
        Self {
            state: State::LineStart { crlf: true },
            message: Vec::new(),
            max_size,
            size: 0,
        }
    }

    /// Consumes bytes from `input`. Returns `None` when all of it was message data, or the
    /// number of bytes consumed, terminator included, once the terminator has been seen.
    /// Bytes after the terminator (pipelined commands) are left to the caller.
    pub fn feed(&mut self, input: &[u8]) -> Option<usize> {
        for (index, &byte) in input.iter().enumerate() {
            self.state = match self.state {
                State::LineStart { crlf } if byte == b'.' => State::Dot { crlf },
                State::LineStart { .. } => self.text(byte),
                State::Dot { crlf } if byte == b'\r' => State::DotCr { crlf },
                // A leading dot is removed: `..x` is `.x`.
                State::Dot { .. } => self.text(byte),
                State::DotCr { crlf: true } if byte == b'\n' => return Some(index + 1),
                State::DotCr { .. } => {
                    self.push(b'\r');
                    self.after_cr(byte)
                }
                State::Text => self.text(byte),
                State::Cr => self.after_cr(byte),
            };
        }
        None
    }

    /// The message, once [`feed`](Self::feed) has reported the terminator.
    pub fn finish(self) -> Message {
        if self.size > self.max_size as u64 {
            Message::TooBig { size: self.size }
        } else {
            Message::Complete(self.message)
        }
    }

    fn text(&mut self, byte: u8) -> State {
        self.push(byte);
        match byte {
            b'\r' => State::Cr,
            b'\n' => State::LineStart { crlf: false },
            _ => State::Text,
        }
    }

    fn after_cr(&mut self, byte: u8) -> State {
        if byte == b'\n' {
            self.push(byte);
            State::LineStart { crlf: true }
        } else {
            self.text(byte)
        }
    }

    fn push(&mut self, byte: u8) {
        self.size += 1;
        if self.size <= self.max_size as u64 {
            self.message.push(byte);
        }
    }
}

/// Dot-stuffs `message` for sending and appends the terminator: the inverse of [`DataDecoder`].
/// A message not ending in CRLF gets one before the terminator.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 5);
    let mut line_start = true;
    for &byte in message {
        if line_start && byte == b'.' {
            out.push(b'.');
        }
        out.push(byte);
        line_start = byte == b'\n';
    }
    if !message.is_empty() && !message.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8], max: usize) -> (Option<usize>, Message) {
        let mut decoder = DataDecoder::new(max);
        let consumed = decoder.feed(input);
        (consumed, decoder.finish())
    }

    #[test]
    fn plain_message() {
        let input = b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n";
        let (consumed, message) = decode(input, 1000);
        assert_eq!(consumed, Some(input.len() - 6));
        assert_eq!(
            message,
            Message::Complete(b"Subject: x\r\n\r\nhello\r\n".to_vec())
        );
    }

    #[test]
    fn empty_message() {
        assert_eq!(
            decode(b".\r\n", 10),
            (Some(3), Message::Complete(Vec::new()))
        );
    }

    #[test]
    fn dot_stuffing_is_removed() {
        let (_, message) = decode(b"..\r\n..hidden\r\n.x\r\n...\r\n.\r\n", 1000);
        assert_eq!(
            message,
            Message::Complete(b".\r\n.hidden\r\nx\r\n..\r\n".to_vec())
        );
    }

    #[test]
    fn terminator_split_across_chunks() {
        let mut decoder = DataDecoder::new(1000);
        for chunk in [&b"a\r"[..], b"\n", b".", b"\r"] {
            assert_eq!(decoder.feed(chunk), None);
        }
        assert_eq!(decoder.feed(b"\nRSET\r\n"), Some(1));
        assert_eq!(decoder.finish(), Message::Complete(b"a\r\n".to_vec()));
    }

    #[test]
    fn bare_lf_never_terminates() {
        // `<LF>.<CR><LF>` and `<CR><LF>.<LF>` are not the terminator (SMTP smuggling).
        let mut decoder = DataDecoder::new(1000);
        assert_eq!(decoder.feed(b"a\n.\r\nb\r\n.\nc\r\n"), None);
        assert_eq!(decoder.feed(b".\r\n"), Some(3));
        assert_eq!(
            decoder.finish(),
            Message::Complete(b"a\n\r\nb\r\n\nc\r\n".to_vec())
        );
    }

    #[test]
    fn dot_cr_inside_a_line() {
        let (_, message) = decode(b".\rx\r\n.\r\n", 1000);
        assert_eq!(message, Message::Complete(b"\rx\r\n".to_vec()));
    }

    #[test]
    fn size_limit() {
        assert_eq!(
            decode(b"12345678\r\n.\r\n", 10).1,
            Message::Complete(b"12345678\r\n".to_vec())
        );
        assert_eq!(
            decode(b"123456789\r\n.\r\n", 10).1,
            Message::TooBig { size: 11 }
        );
    }

    #[test]
    fn stuffing_round_trip() {
        let message = b".leading\r\n..two\r\n.\r\nmiddle\r\n.";
        let wire = dot_stuff(message);
        let (consumed, decoded) = decode(&wire, 1000);
        assert_eq!(consumed, Some(wire.len()));
        assert_eq!(
            decoded,
            Message::Complete(b".leading\r\n..two\r\n.\r\nmiddle\r\n.\r\n".to_vec())
        );
    }
}
