//! A client connection with its input and output buffers, shared by the SMTP, POP3 and IMAP
//! sessions: reading with an idle timeout, writing out what a command produced, and switching
//! to TLS in the middle (STARTTLS, STLS) without letting plain-text input reach the TLS session.

use std::{sync::Arc, time::Duration};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::stream::Stream;

/// Room made before each read. It matters: an empty buffer
/// would be filled 64 bytes at a time, and input pipelined after STARTTLS would then still be
/// in the socket, where the TLS handshake would read it.
const READ_CHUNK: usize = 1024;

/// Past this, an output buffer is given back after a flush rather than kept for the session.
const KEEP_WRITE_BUFFER: usize = 1 << 20;

#[derive(Debug)]
pub struct Conn {
    stream: Option<Stream>,
    /// Input received and not yet consumed.
    pub rbuf: BytesMut,
    /// Output produced and not yet written.
    pub wbuf: Vec<u8>,
}

impl Conn {
    /// `early` holds input that arrived before the session started (with a PROXY header).
    pub fn new(stream: Stream, early: BytesMut) -> Self {
        Self { stream: Some(stream), rbuf: early, wbuf: Vec::with_capacity(1024) }
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
        stream.write_all(&self.wbuf).await?;
        stream.flush().await?;
        self.wbuf.clear();
        if self.wbuf.capacity() > KEEP_WRITE_BUFFER {
            self.wbuf = Vec::with_capacity(1024);
        }
        Ok(())
    }

    /// Reads more input: true if some arrived, false at end of stream, an error of kind
    /// `TimedOut` when nothing came within `timeout`.
    pub async fn fill(&mut self, timeout: Duration) -> std::io::Result<bool> {
        self.rbuf.reserve(READ_CHUNK);
        let stream = self.stream.as_mut().ok_or_else(|| std::io::Error::other("the connection is closed"))?;
        match tokio::time::timeout(timeout, stream.read_buf(&mut self.rbuf)).await {
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

    /// Flushes what is pending and closes the connection.
    pub async fn close(&mut self) {
        let _ = self.flush().await;
        if let Ok(s) = self.stream() {
            let _ = s.shutdown().await;
        }
        self.stream = None;
    }
}
