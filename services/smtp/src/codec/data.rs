//! The DATA phase: removes dot-stuffing, finds the end of data, and bounds the size.
//!
//! Only `CRLF . CRLF` ends the data. A bare LF or bare CR is never a line end here, so the
//! SMTP smuggling variants (`LF . LF`, `CR . CR`, `LF . CRLF`, `CRLF . LF`, ...) are plain
//! content, and the message that is stored has every bare CR and bare LF turned into CRLF, so
//! that nothing downstream (an IMAP client, the relay to another server) can read a hidden end
//! of data into it either.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (after CRLF, or at the very beginning).
    LineStart,
    /// A `.` at the start of a line.
    Dot,
    /// `.` then CR at the start of a line.
    DotCr,
    /// Inside a line.
    Text,
    /// A CR inside a line.
    Cr,
}

/// Whether the data is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataEnd {
    /// The end-of-data line was seen; more input belongs to the next command.
    Complete,
    /// Everything given was consumed and more data is needed.
    NeedMore,
}

#[derive(Debug)]
pub struct DataDecoder {
    state: State,
    max: u64,
    out: Vec<u8>,
    /// Bytes of message seen, including those dropped after the limit.
    size: u64,
    bare_newlines: u64,
}

impl DataDecoder {
    /// `max` bounds the stored message; data past it is read and discarded so that the
    /// session stays in sync, and [`DataDecoder::too_large`] reports it.
    pub fn new(max: u64) -> Self {
        Self { state: State::LineStart, max, out: Vec::new(), size: 0, bare_newlines: 0 }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        if self.size <= self.max {
            self.out.extend_from_slice(bytes);
        }
    }

    /// Consumes input; returns how many bytes were used and whether the data is complete.
    pub fn feed(&mut self, input: &[u8]) -> (usize, DataEnd) {
        for (i, &b) in input.iter().enumerate() {
            self.state = match (self.state, b) {
                (State::LineStart, b'.') => State::Dot,
                (State::Dot, b'\r') => State::DotCr,
                (State::DotCr, b'\n') => return (i + 1, DataEnd::Complete),
                // `.` CR and something else: the dot was stuffing, the CR is bare.
                (State::DotCr, _) => {
                    self.bare_newlines += 1;
                    self.push(b"\r\n");
                    self.text(b)
                }
                // A dot-stuffed line: drop the first dot.
                (State::Dot, _) => self.text(b),
                (State::Cr, b'\n') => {
                    self.push(b"\r\n");
                    State::LineStart
                }
                (State::Cr, _) => {
                    self.bare_newlines += 1;
                    self.push(b"\r\n");
                    self.text(b)
                }
                (State::LineStart | State::Text, _) => self.text(b),
            };
        }
        (input.len(), DataEnd::NeedMore)
    }

    /// A byte inside a line. A bare LF becomes CRLF but does not start a line, so a dot after
    /// it can never end the data.
    fn text(&mut self, b: u8) -> State {
        match b {
            b'\r' => State::Cr,
            b'\n' => {
                self.bare_newlines += 1;
                self.push(b"\r\n");
                State::Text
            }
            _ => {
                self.push(&[b]);
                State::Text
            }
        }
    }

    pub fn too_large(&self) -> bool {
        self.size > self.max
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// How many bare CRs and LFs were turned into CRLF.
    pub fn bare_newlines(&self) -> u64 {
        self.bare_newlines
    }

    pub fn into_message(self) -> Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Option<(Vec<u8>, usize)> {
        let mut d = DataDecoder::new(1 << 20);
        match d.feed(input) {
            (n, DataEnd::Complete) => Some((d.into_message(), n)),
            (_, DataEnd::NeedMore) => None,
        }
    }

    #[test]
    fn unstuffs_and_ends() {
        let (m, n) = decode_all(b"Subject: x\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n").unwrap();
        assert_eq!(m, b"Subject: x\r\n\r\n.leading dot\r\n");
        assert_eq!(n, 32);
        let (m, _) = decode_all(b".\r\n").unwrap();
        assert!(m.is_empty());
    }

    #[test]
    fn split_at_every_byte_gives_the_same_message() {
        let input: &[u8] = b"A: b\r\n\r\n.x\r\n..\r\nline\r\n.\r\n";
        let (whole, _) = decode_all(input).unwrap();
        for cut in 0..input.len() {
            let mut d = DataDecoder::new(1 << 20);
            let (n, end) = d.feed(&input[..cut]);
            assert_eq!((n, end), (cut, DataEnd::NeedMore), "ended early at {cut}");
            let (_, end) = d.feed(&input[cut..]);
            assert_eq!(end, DataEnd::Complete);
            assert_eq!(d.into_message(), whole);
        }
    }

    #[test]
    fn smuggling_variants_are_not_end_of_data() {
        // The published variants: a lone LF or CR around the dot must not end the data.
        for smuggle in [
            &b"\n.\n"[..],
            b"\n.\r\n",
            b"\r\n.\n",
            b"\r.\r",
            b"\r\n.\r",
            b"\r.\r\n",
            b"\n.\r",
            b"\r.\n",
            b"\r\n\x00.\r\n",
        ] {
            let mut input = b"Subject: hi\r\n\r\nbody".to_vec();
            input.extend_from_slice(smuggle);
            input.extend_from_slice(b"MAIL FROM:<evil@example.com>\r\n");
            let mut d = DataDecoder::new(1 << 20);
            assert_eq!(d.feed(&input).1, DataEnd::NeedMore, "{smuggle:?} ended the data");
            let (_, end) = d.feed(b"\r\n.\r\n");
            assert_eq!(end, DataEnd::Complete);
            let m = d.into_message();
            // Nothing stored can be read as an end of data by a lax reader downstream.
            assert!(!m.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'), "bare LF stored for {smuggle:?}");
            assert!(!m.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n'), "bare CR stored for {smuggle:?}");
        }
    }

    #[test]
    fn enforces_the_limit_but_stays_in_sync() {
        let mut d = DataDecoder::new(10);
        let (n, end) = d.feed(b"0123456789abcdef\r\n.\r\nNOOP\r\n");
        assert_eq!(end, DataEnd::Complete);
        assert_eq!(n, 21);
        assert!(d.too_large());
    }
}
