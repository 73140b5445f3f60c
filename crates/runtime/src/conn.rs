//! A client connection with its input and output buffers, shared by the SMTP, POP3 and IMAP
//! sessions: reading with an idle timeout, writing out what a command produced, switching
//! to TLS in the middle (STARTTLS, STLS) without letting plain-text input reach the TLS session,
//! and compressing both directions with raw deflate once IMAP's COMPRESS (RFC 4978) is agreed.

use std::{sync::Arc, time::Duration};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::stream::Stream;

/// A short id for a session's log lines, unique within the process (the POP3, IMAP and
/// ManageSieve sessions' span field `id`).
pub fn session_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Room made before each read. It matters: an empty buffer
/// would be filled 64 bytes at a time, and input pipelined after STARTTLS would then still be
/// in the socket, where the TLS handshake would read it.
const READ_CHUNK: usize = 1024;

/// Past this, an output buffer is given back after a flush rather than kept for the session.
const KEEP_WRITE_BUFFER: usize = 1 << 20;

/// Raw deflate (RFC 1951, no zlib header) in both directions, as COMPRESS=DEFLATE wants. It
/// costs a few hundred KiB per connection, so it exists only on connections that asked for it.
struct Deflate {
    inflate: flate2::Decompress,
    deflate: flate2::Compress,
    /// Compressed input not inflated yet.
    raw: BytesMut,
    /// Compressed output, reused between flushes.
    out: Vec<u8>,
}

impl std::fmt::Debug for Deflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflate").field("raw", &self.raw.len()).finish_non_exhaustive()
    }
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("deflate: {e}"))
}

impl Deflate {
    /// Inflates what is in `raw` onto the end of `into`, all of it: when the room given fills
    /// up, zlib may hold more output of input it has already taken, so it is asked again,
    /// with no new input, until it produces less than the room. (Stopping when `raw` was
    /// empty left that output inside zlib, and a session waited for the client, which waited
    /// for the answers to commands already sent: mbsync's pipelined APPENDs hung.)
    fn inflate(&mut self, into: &mut BytesMut) -> std::io::Result<()> {
        const ROOM: usize = READ_CHUNK * 4;
        loop {
            let before = (self.inflate.total_in(), self.inflate.total_out());
            // flate2 writes into an initialised slice: room is made with zeroes and what was
            // not written is cut off again.
            let start = into.len();
            into.resize(start + ROOM, 0);
            let status = self
                .inflate
                .decompress(&self.raw, &mut into[start..], flate2::FlushDecompress::None)
                .map_err(invalid)?;
            let used = (self.inflate.total_in() - before.0) as usize;
            let produced = (self.inflate.total_out() - before.1) as usize;
            into.truncate(start + produced);
            bytes::Buf::advance(&mut self.raw, used);
            if status == flate2::Status::StreamEnd {
                return Err(invalid("the client ended the compressed stream"));
            }
            if used == 0 && produced == 0 {
                // A partial block: the rest comes with the next read.
                break;
            }
            if self.raw.is_empty() && produced < ROOM {
                break;
            }
        }
        Ok(())
    }

    /// Deflates `data` into `out`, ending with a sync flush so the client can read all of it.
    fn deflate(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.out.clear();
        let mut consumed = 0;
        loop {
            self.out.reserve(data.len() / 2 + 64);
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(&data[consumed..], &mut self.out, flate2::FlushCompress::Sync)
                .map_err(invalid)?;
            consumed += (self.deflate.total_in() - before) as usize;
            // The flush is complete when all input is taken and the output had room to spare.
            if consumed == data.len() && self.out.len() < self.out.capacity() {
                return Ok(());
            }
        }
    }
}

/// Acknowledges what was just read at once, rather than when the kernel's delayed-ACK timer
/// fires.
///
/// A session reads only when it needs more input, and the client may be holding that very
/// input back until what it sent last is acknowledged: with Nagle's algorithm, which is on
/// unless the client sets TCP_NODELAY, a small write stays in the client's kernel while earlier
/// data is unacknowledged. Python's imaplib, for one, sends a synchronising literal (or an
/// AUTHENTICATE response) and the CRLF that ends the command in two writes, so the CRLF waits
/// for the ACK of the literal; SMTP clients that write the message and the final dot, or a BDAT
/// line and its chunk, in two writes wait the same way. Linux delays that ACK by 40 ms or more
/// once it takes the connection for an interactive one, which it does as soon as the server
/// answers quickly (the "+" continuation, say): it expects to send the ACK along with the
/// reply, and here the reply cannot come before the rest of the command. Every such APPEND took
/// over 40 ms. TCP_QUICKACK sends the pending ACK now and leaves that interactive mode; the
/// kernel enters the mode again at the next quick answer. So the option is set whenever the
/// session reads again without having answered what it read before (the command is not
/// complete): then the client may be waiting for that ACK. After an answer there is no need,
/// since the answer carries the ACK; setting it after every read cost a system call per command,
/// about 2% of the IMAP front-end's CPU under load. Other systems than Linux have no such
/// option, and nothing is done there.
fn acknowledge_now(stream: &Stream) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // A failure costs only latency, as before; the read itself went through.
        let _ = socket2::SockRef::from(stream.tcp()).set_tcp_quickack(true);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = stream;
}

#[derive(Debug)]
pub struct Conn {
    stream: Option<Stream>,
    deflate: Option<Box<Deflate>>,
    /// Input received and not yet consumed.
    pub rbuf: BytesMut,
    /// Output produced and not yet written.
    pub wbuf: Vec<u8>,
    /// Input was read and nothing has been written since: a read now waits on a command that
    /// is not complete (see [`acknowledge_now`]).
    unanswered: bool,
}

impl Conn {
    /// `early` holds input that arrived before the session started (with a PROXY header).
    pub fn new(stream: Stream, early: BytesMut) -> Self {
        Self { stream: Some(stream), deflate: None, rbuf: early, wbuf: Vec::with_capacity(1024), unanswered: false }
    }

    pub fn is_tls(&self) -> bool {
        self.stream.as_ref().is_some_and(Stream::is_tls)
    }

    pub fn tls_description(&self) -> Option<String> {
        self.stream.as_ref().and_then(Stream::tls_description)
    }

    fn stream(&mut self) -> std::io::Result<&mut Stream> {
        self.stream.as_mut().ok_or_else(|| std::io::Error::other("the connection is closed"))
    }

    /// Writes out everything produced so far.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let stream = self.stream.as_mut().ok_or_else(|| std::io::Error::other("the connection is closed"))?;
        match self.deflate.as_mut() {
            Some(d) => {
                d.deflate(&self.wbuf)?;
                stream.write_all(&d.out).await?;
            }
            None => stream.write_all(&self.wbuf).await?,
        }
        stream.flush().await?;
        self.unanswered = false;
        self.wbuf.clear();
        if self.wbuf.capacity() > KEEP_WRITE_BUFFER {
            self.wbuf = Vec::with_capacity(1024);
        }
        Ok(())
    }

    /// Reads more input: true if some arrived, false at end of stream, an error of kind
    /// `TimedOut` when nothing came within `timeout`.
    pub async fn fill(&mut self, timeout: Duration) -> std::io::Result<bool> {
        let stream = self.stream.as_mut().ok_or_else(|| std::io::Error::other("the connection is closed"))?;
        let into = match self.deflate.as_mut() {
            Some(d) => &mut d.raw,
            None => &mut self.rbuf,
        };
        into.reserve(READ_CHUNK);
        if self.unanswered {
            acknowledge_now(stream);
        }
        let read = tokio::time::timeout(timeout, stream.read_buf(into)).await;
        if let Ok(Ok(n)) = &read
            && *n > 0
        {
            self.unanswered = true;
        }
        if let (Some(d), Ok(Ok(n))) = (self.deflate.as_mut(), &read)
            && *n > 0
        {
            d.inflate(&mut self.rbuf)?;
        }
        match read {
            Ok(Ok(0)) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "idle timeout")),
        }
    }

    /// Switches to TLS after the client was told to begin. Input the client pipelined after
    /// its STARTTLS was sent in plain text and is discarded, never executed.
    pub async fn start_tls(&mut self, config: Arc<rustls::ServerConfig>, timeout: Duration) -> std::io::Result<()> {
        self.flush().await?;
        self.rbuf.clear();
        let plain = self.stream.take().ok_or_else(|| std::io::Error::other("the connection is closed"))?;
        let secured = tokio::time::timeout(timeout, plain.upgrade(config))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timeout"))??;
        self.stream = Some(secured);
        Ok(())
    }

    /// Whether COMPRESS=DEFLATE is active.
    pub fn is_compressed(&self) -> bool {
        self.deflate.is_some()
    }

    /// Starts compressing both directions, after the answer that agreed to it was flushed.
    /// Input already buffered was sent after the client's COMPRESS command, so it is
    /// compressed too.
    pub fn start_deflate(&mut self) -> std::io::Result<()> {
        let mut d = Box::new(Deflate {
            inflate: flate2::Decompress::new(false),
            deflate: flate2::Compress::new(flate2::Compression::fast(), false),
            raw: std::mem::take(&mut self.rbuf),
            out: Vec::new(),
        });
        d.inflate(&mut self.rbuf)?;
        self.deflate = Some(d);
        Ok(())
    }

    /// Flushes what is pending and closes the connection.
    pub async fn close(&mut self) {
        let _ = self.flush().await;
        if let Ok(s) = self.stream() {
            let _ = s.shutdown().await;
        }
        self.stream = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many commands compressed into one small read inflate to far more than one round of
    /// room: every byte must come out of that read, not wait for the next.
    #[test]
    fn one_read_inflates_whole_however_much_it_holds() {
        let plain: Vec<u8> = (0..400)
            .flat_map(|i| format!("{i} APPEND \"INBOX\" {{4089+}}\r\n{}\r\n", "x".repeat(4089)).into_bytes())
            .collect();
        let mut client = flate2::Compress::new(flate2::Compression::fast(), false);
        let mut wire = Vec::with_capacity(plain.len());
        client.compress_vec(&plain, &mut wire, flate2::FlushCompress::Sync).unwrap();
        assert!(plain.len() > wire.len() * 10, "one read must hold many rounds of room");
        let mut d = Deflate {
            inflate: flate2::Decompress::new(false),
            deflate: flate2::Compress::new(flate2::Compression::fast(), false),
            raw: BytesMut::from(&wire[..]),
            out: Vec::new(),
        };
        let mut into = BytesMut::new();
        d.inflate(&mut into).unwrap();
        assert_eq!(into.len(), plain.len());
        assert!(into[..] == plain[..]);
    }
}
