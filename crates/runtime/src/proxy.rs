//! PROXY protocol version 2 (the binary header a load balancer puts before the client's
//! bytes), so that the client's address survives a Kubernetes load balancer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proxy {
    /// The header is complete: the client's address (None for a LOCAL health check or an
    /// unknown family), and the header length to skip.
    Done(Option<SocketAddr>, usize),
    NeedMore,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("not a PROXY protocol v2 header")]
    Signature,
    #[error("unsupported PROXY protocol version or command")]
    Version,
    #[error("PROXY header too short for its address family")]
    Short,
}

/// Parses a PROXY v2 header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Proxy, ProxyError> {
    let have = buf.len().min(SIGNATURE.len());
    if buf[..have] != SIGNATURE[..have] {
        return Err(ProxyError::Signature);
    }
    if buf.len() < 16 {
        return Ok(Proxy::NeedMore);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 || ver_cmd & 0x0f > 1 {
        return Err(ProxyError::Version);
    }
    let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if buf.len() < 16 + len {
        return Ok(Proxy::NeedMore);
    }
    let body = &buf[16..16 + len];
    let local = ver_cmd & 0x0f == 0;
    let addr = match (local, buf[13] >> 4) {
        (true, _) => None,
        (false, 1) => {
            if body.len() < 12 {
                return Err(ProxyError::Short);
            }
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([body[8], body[9]])))
        }
        (false, 2) => {
            if body.len() < 36 {
                return Err(ProxyError::Short);
            }
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), u16::from_be_bytes([body[32], body[33]])))
        }
        _ => None,
    };
    Ok(Proxy::Done(addr, 16 + len))
}

/// Builds a PROXY v2 header for `src` -> `dst` (tests and load generators use it).
pub fn encode(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.push(0x21);
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        _ => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(src).octets());
            out.extend_from_slice(&v6(dst).octets());
            out.extend_from_slice(&src.port().to_be_bytes());
            out.extend_from_slice(&dst.port().to_be_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_every_split() {
        let src: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let dst: SocketAddr = "10.0.0.1:25".parse().unwrap();
        let mut h = encode(src, dst);
        h.extend_from_slice(b"EHLO x\r\n");
        for cut in 0..28 {
            assert_eq!(parse(&h[..cut]), Ok(Proxy::NeedMore), "cut {cut}");
        }
        assert_eq!(parse(&h), Ok(Proxy::Done(Some(src), 28)));
        let v6: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        let h6 = encode(v6, "[2001:db8::2]:25".parse().unwrap());
        assert_eq!(parse(&h6), Ok(Proxy::Done(Some(v6), 52)));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse(b"EHLO x\r\n"), Err(ProxyError::Signature));
        let mut h = encode("1.2.3.4:1".parse().unwrap(), "5.6.7.8:2".parse().unwrap());
        h[12] = 0x31;
        assert_eq!(parse(&h), Err(ProxyError::Version));
        let mut short = SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert_eq!(parse(&short), Err(ProxyError::Short));
    }
}
