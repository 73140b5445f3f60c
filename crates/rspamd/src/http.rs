//! One HTTP/1.1 exchange with rspamd: a new TCP connection, the request in one write, and the
//! answer read until rspamd closes the connection. rspamd's workers answer every request with
//! `Connection: close` (3.4 keeps no connection alive), so a client with a connection pool
//! would only add work per message; this is all the HTTP rspamd's protocol needs. rspamd is
//! reached over plain HTTP, as it is inside a cluster or on the same host.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The largest answer read; a scan's JSON is a few kilobytes.
const MAX_RESPONSE: usize = 4 << 20;

/// Where a worker listens, from its URL (`http://host:port`, an optional path prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `host:port`, for connecting and for the Host header.
    pub authority: String,
    /// The path prefix, without a trailing slash (empty for none).
    pub prefix: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(format!("{url:?} names no host"));
        }
        let authority = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Endpoint { authority, prefix: path.trim_end_matches('/').to_string() })
    }
}

/// What came back: the status code and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Whether a header value can be sent as it is: no control characters (CR and LF above all).
pub(crate) fn valid_value(value: &str) -> bool {
    !value.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f)
}

/// Sends `method path` with `headers` (already checked with [`valid_value`]) and `body` to
/// `endpoint`, and reads the answer; the whole exchange within `timeout`.
pub(crate) async fn exchange(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<Response> {
    let run = async {
        let mut stream = TcpStream::connect(&endpoint.authority).await?;
        stream.set_nodelay(true)?;
        let mut request = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            endpoint.prefix,
            endpoint.authority,
            body.len()
        );
        for (name, value) in headers {
            request.push_str(name);
            request.push_str(": ");
            request.push_str(value);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        let mut out = request.into_bytes();
        out.extend_from_slice(body);
        stream.write_all(&out).await?;
        let mut answer = Vec::with_capacity(8192);
        loop {
            if answer.len() > MAX_RESPONSE {
                return Err(std::io::Error::other("the answer is larger than 4 MiB"));
            }
            if stream.read_buf(&mut answer).await? == 0 {
                break;
            }
            // An answer with a length is complete once that much has come, closed or not.
            if let Ok(Some(response)) = parse_response(&answer, false) {
                return Ok(response);
            }
        }
        parse_response(&answer, true)
            .map_err(std::io::Error::other)?
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the answer ended early"))
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer within {timeout:?}")))?
}

/// Reads a whole response from `buf`: `Ok(None)` while more is needed. `closed` says the
/// connection has ended, which completes a body without a length.
pub(crate) fn parse_response(buf: &[u8], closed: bool) -> Result<Option<Response>, String> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if closed { Err("the answer has no complete header".into()) } else { Ok(None) };
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "the answer's header is not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP status line: {status_line:?}"))?;
    let (mut length, mut chunked) = (None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| format!("bad Content-Length {value:?}"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let rest = &buf[head_end + 4..];
    if chunked {
        return dechunk(rest)
            .map(|b| b.map(|body| Response { status, body }))
            .or_else(|e| if closed { Err(e) } else { Ok(None) });
    }
    match length {
        Some(n) if rest.len() >= n => Ok(Some(Response { status, body: rest[..n].to_vec() })),
        Some(_) if closed => Err("the answer ended before its Content-Length".into()),
        Some(_) => Ok(None),
        None if closed => Ok(Some(Response { status, body: rest.to_vec() })),
        None => Ok(None),
    }
}

/// The body of a chunked transfer; `Ok(None)` until the last chunk has come.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| "a bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| format!("a bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_host_port_and_prefix() {
        let e = Endpoint::parse("http://rspamd:11333").unwrap();
        assert_eq!((e.authority.as_str(), e.prefix.as_str()), ("rspamd:11333", ""));
        let e = Endpoint::parse("http://127.0.0.1/rspamd/").unwrap();
        assert_eq!((e.authority.as_str(), e.prefix.as_str()), ("127.0.0.1:80", "/rspamd"));
        assert!(Endpoint::parse("https://rspamd:11333").is_err());
        assert!(Endpoint::parse("http:///x").is_err());
    }

    #[test]
    fn responses_are_read_whole_however_they_arrive() {
        let full = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..full.len() {
            assert_eq!(parse_response(&full[..cut], false), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse_response(full, false), Ok(Some(Response { status: 200, body: b"hello".to_vec() })));
        let unsized_body = b"HTTP/1.0 208 Already\r\n\r\n{\"error\":1}";
        assert_eq!(parse_response(unsized_body, false), Ok(None));
        assert_eq!(parse_response(unsized_body, true).unwrap().unwrap().status, 208);
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked, false).unwrap().unwrap().body, b"abcde");
        assert_eq!(parse_response(&chunked[..chunked.len() - 5], false), Ok(None));
        assert!(parse_response(b"SMTP 220 hi\r\n\r\n", true).is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", true).is_err());
    }

    #[test]
    fn control_characters_are_refused_in_values() {
        assert!(valid_value("mx.example.org"));
        assert!(!valid_value("evil\r\nX-Injected: 1"));
        assert!(!valid_value("nul\0"));
    }
}
