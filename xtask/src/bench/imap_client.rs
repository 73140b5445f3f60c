//! The IMAP client of the benchmarks that drive many sessions (`imap`, `imap --peer`,
//! `distributed`, and the seeding of `pop3 --peer`): one buffered socket with TCP_NODELAY,
//! buffers reused between commands, literals skipped by their announced length without being
//! parsed, so that the servers, not the client, are the limit.
//!
//! `imap-append` keeps a client of its own on a blocking socket, because what it measures is
//! exactly how Python's imaplib writes (see `append.rs`).

use std::{fmt::Write as _, io::Write as _, time::Duration};

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream},
    net::TcpStream,
};

/// Read and write buffers of a session that runs a workload: a FETCH of every message's flags,
/// or a body, arrives in one or two reads, and an APPEND goes out in one or two writes.
const WORKLOAD_BUFFERS: (usize, usize) = (64 * 1024, 16 * 1024);

/// Read and write buffers of a session that only idles: the idle benchmark opens ten thousand
/// of them, and the client's memory must not crowd out the server's on a small machine.
const IDLE_BUFFERS: (usize, usize) = (4 * 1024, 4 * 1024);

/// The tagged end of a command's reply and what came before it.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub ok: bool,
    /// Untagged responses before the tagged one.
    pub untagged: usize,
    /// Octets of the literals in those responses.
    pub literal: usize,
    /// The UID of an APPEND's message, from its `[APPENDUID validity uid]`.
    pub appenduid: Option<u32>,
}

/// What a response was: the continuation request of a literal, or the tagged end.
enum Read {
    Continue,
    Done(Reply),
}

/// A lean IMAP client: one buffered socket with TCP_NODELAY, buffers reused between commands,
/// literals skipped by their announced length without being parsed.
pub struct ImapClient {
    stream: BufStream<TcpStream>,
    /// The last line read; after a failed command, its tagged reply.
    line: Vec<u8>,
    scratch: Vec<u8>,
    out: Vec<u8>,
    tag: String,
    next: u64,
}

impl ImapClient {
    /// Connects to `addr` with buffers for a workload and reads the greeting.
    pub async fn connect(addr: &str) -> anyhow::Result<Self> {
        Self::connect_with(addr, WORKLOAD_BUFFERS).await
    }

    /// Connects to `addr` with small buffers, for a session that will only idle.
    pub async fn connect_idle(addr: &str) -> anyhow::Result<Self> {
        Self::connect_with(addr, IDLE_BUFFERS).await
    }

    async fn connect_with(addr: &str, (read_buffer, write_buffer): (usize, usize)) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
        tcp.set_nodelay(true)?;
        let mut conn = Self {
            stream: BufStream::with_capacity(read_buffer, write_buffer, tcp),
            line: Vec::with_capacity(1024),
            scratch: Vec::new(),
            out: Vec::with_capacity(1024),
            tag: String::new(),
            next: 0,
        };
        conn.read_line().await?;
        if !conn.line.starts_with(b"* OK") {
            bail!("unexpected greeting from {addr}: {:?}", String::from_utf8_lossy(&conn.line));
        }
        Ok(conn)
    }

    /// The last line read, without its line end: after a failed command, its tagged reply.
    pub fn last_line(&self) -> String {
        String::from_utf8_lossy(&self.line).trim_end().to_string()
    }

    /// Starts IDLE and waits for the server's continuation request; what the server sends
    /// from then on is read from [`ImapClient::into_stream`].
    pub async fn idle(&mut self) -> anyhow::Result<()> {
        self.stream.write_all(b"i IDLE\r\n").await?;
        self.stream.flush().await?;
        self.read_line().await?;
        if !self.line.starts_with(b"+") {
            bail!("IDLE refused: {}", self.last_line());
        }
        Ok(())
    }

    /// The connection itself, with whatever the server sent that has not been read yet still
    /// in its buffer.
    pub fn into_stream(self) -> BufStream<TcpStream> {
        self.stream
    }

    /// [`ImapClient::command`], failing unless the reply is OK.
    pub async fn expect_ok(&mut self, command: &str, literal: Option<&[u8]>) -> anyhow::Result<Reply> {
        let reply = self.command(command, literal).await?;
        if !reply.ok {
            bail!("{command}: {}", self.last_line());
        }
        Ok(reply)
    }

    /// Sends `command` (with a synchronising literal after it when `literal` is given) and reads
    /// to its tagged reply, which may be NO or BAD; a closed connection, a BYE or 30 s without
    /// the reply are errors.
    pub async fn command(&mut self, command: &str, literal: Option<&[u8]>) -> anyhow::Result<Reply> {
        tokio::time::timeout(Duration::from_secs(30), self.exchange(command, literal))
            .await
            .context("no reply within 30 s")?
    }

    async fn exchange(&mut self, command: &str, literal: Option<&[u8]>) -> anyhow::Result<Reply> {
        self.next += 1;
        self.tag.clear();
        write!(self.tag, "t{}", self.next)?;
        self.out.clear();
        write!(self.out, "{} {command}", self.tag)?;
        if let Some(data) = literal {
            write!(self.out, " {{{}}}\r\n", data.len())?;
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await?;
            if let Read::Done(reply) = self.read_reply(true).await? {
                return Ok(reply);
            }
            self.stream.write_all(data).await?;
            self.stream.write_all(b"\r\n").await?;
        } else {
            self.out.extend_from_slice(b"\r\n");
            self.stream.write_all(&self.out).await?;
        }
        self.stream.flush().await?;
        match self.read_reply(false).await? {
            Read::Done(reply) => Ok(reply),
            Read::Continue => bail!("a continuation request where none was asked for"),
        }
    }

    async fn read_line(&mut self) -> anyhow::Result<()> {
        self.line.clear();
        if self.stream.read_until(b'\n', &mut self.line).await? == 0 {
            bail!("the server closed the connection");
        }
        Ok(())
    }

    /// Reads responses up to the tagged one (or, when `continuation`, a continuation request).
    async fn read_reply(&mut self, continuation: bool) -> anyhow::Result<Read> {
        let (mut untagged, mut literal) = (0, 0);
        loop {
            self.read_line().await?;
            if continuation && self.line.starts_with(b"+") {
                return Ok(Read::Continue);
            }
            let tag = self.tag.as_bytes();
            if self.line.starts_with(tag) && self.line.get(tag.len()) == Some(&b' ') {
                let rest = &self.line[tag.len() + 1..];
                return Ok(Read::Done(Reply {
                    ok: rest.starts_with(b"OK"),
                    untagged,
                    literal,
                    appenduid: appenduid(rest),
                }));
            }
            // BYE is the expected end of a LOGOUT only.
            if self.line.starts_with(b"* BYE") && !self.out.starts_with(format!("{} LOGOUT", self.tag).as_bytes()) {
                bail!("the server said {:?}", String::from_utf8_lossy(&self.line).trim_end());
            }
            untagged += 1;
            // A literal's octets, then the rest of the same response on the next line.
            while let Some(n) = literal_length(&self.line) {
                if self.scratch.len() < n {
                    self.scratch.resize(n, 0);
                }
                self.stream.read_exact(&mut self.scratch[..n]).await?;
                literal += n;
                self.read_line().await?;
            }
        }
    }
}

/// The length of the literal that ends `line` (`{n}` before the CRLF), if one does.
fn literal_length(line: &[u8]) -> Option<usize> {
    let line = line.strip_suffix(b"}\r\n")?;
    let open = line.iter().rposition(|b| *b == b'{')?;
    std::str::from_utf8(&line[open + 1..]).ok()?.parse().ok()
}

/// The UID of `[APPENDUID validity uid]` in a tagged reply's text.
fn appenduid(text: &[u8]) -> Option<u32> {
    const CODE: &[u8] = b"[APPENDUID ";
    let at = text.windows(CODE.len()).position(|w| w == CODE)? + CODE.len();
    let rest = std::str::from_utf8(&text[at..]).ok()?;
    rest.split([' ', ']']).nth(1)?.parse().ok()
}
