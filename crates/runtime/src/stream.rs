//! A client connection that starts in plain text and may switch to TLS (STARTTLS, STLS), or
//! starts in TLS (ports 465, 993, 995), with the PROXY protocol header read off first when the
//! listener sits behind a load balancer.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::BytesMut;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::proxy::{self, Proxy};

#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Performs the TLS handshake on a plain connection.
    pub async fn upgrade(self, config: Arc<rustls::ServerConfig>) -> io::Result<Stream> {
        match self {
            Stream::Plain(tcp) => Ok(Stream::Tls(Box::new(TlsAcceptor::from(config).accept(tcp).await?))),
            Stream::Tls(_) => Err(io::Error::other("TLS is already active")),
        }
    }

    /// The TCP connection underneath, plain or under TLS.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(s) => s.get_ref().0,
        }
    }

    /// The negotiated TLS version and cipher suite, for Received: headers and logs.
    pub fn tls_description(&self) -> Option<String> {
        match self {
            Stream::Tls(s) => {
                let (_, conn) = s.get_ref();
                Some(format!("{:?} {:?}", conn.protocol_version()?, conn.negotiated_cipher_suite().map(|c| c.suite())?))
            }
            Stream::Plain(_) => None,
        }
    }
}

/// Reads a PROXY v2 header from a new connection and returns the client's real address (none
/// for a LOCAL header, such as a load balancer's health check).
pub async fn read_proxy_header(tcp: &mut TcpStream, timeout: Duration) -> io::Result<Option<SocketAddr>> {
    // Exactly the header's bytes are read, never more: on an implicit-TLS port the client's
    // ClientHello often arrives in the same segment as the header (load balancers send them
    // together), and bytes read past the header would be lost to the TLS handshake, which
    // reads the socket itself.
    let mut buf = BytesMut::with_capacity(256);
    let read = async {
        loop {
            match proxy::parse(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))? {
                Proxy::Done(addr, _) => return Ok(addr),
                Proxy::NeedMore => {
                    let want = if buf.len() < 16 { 16 } else { 16 + u16::from_be_bytes([buf[14], buf[15]]) as usize };
                    if want > 4096 {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "PROXY header longer than 4096 bytes"));
                    }
                    // One read at a time, each up to the bytes still missing: whatever
                    // arrived is parsed at once, so a client that sends no header at all
                    // ("EHLO ...") is refused on its first bytes, not after the timeout.
                    let have = buf.len();
                    buf.resize(want, 0);
                    let n = tcp.read(&mut buf[have..]).await?;
                    buf.truncate(have + n);
                    if n == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed in PROXY header"));
                    }
                }
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "PROXY header timeout"))?
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
