//! What a remote server offers, read from its reply to EHLO (RFC 5321 section 4.1.1.1). The
//! relay uses it to decide whether to pipeline, start TLS, announce 8BITMIME or SMTPUTF8, ask
//! for DSNs, and whether a message is too large to try at all.

use super::reply::Reply;

/// The extensions a server announced. The default is a server that announced nothing, which is
/// also what a server that only speaks HELO offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// PIPELINING (RFC 2920): commands may be sent without waiting for each reply.
    pub pipelining: bool,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// 8BITMIME (RFC 6152): message data may contain bytes of 0x80 and above.
    pub eight_bit_mime: bool,
    /// SMTPUTF8 (RFC 6531): addresses and headers may be UTF-8.
    pub smtputf8: bool,
    /// The largest message the server accepts, from SIZE (RFC 1870). `None` when SIZE is absent,
    /// has no parameter, or says 0, all of which mean no stated limit.
    pub size: Option<u64>,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhanced_status_codes: bool,
    /// DSN (RFC 3461): NOTIFY, RET and ENVID parameters are understood.
    pub dsn: bool,
    /// CHUNKING (RFC 3030): BDAT may be used instead of DATA.
    pub chunking: bool,
    /// The SASL mechanisms from AUTH (RFC 4954), upper-cased, without duplicates.
    pub auth: Vec<String>,
}

impl Capabilities {
    /// Reads the capabilities from an EHLO reply. Keywords are matched case-insensitively and
    /// unknown ones ignored. The first line is the server's greeting (its domain), not a
    /// keyword, so it is skipped. A reply other than 2xx means EHLO failed, and yields the
    /// default: the server offers nothing, and the caller may fall back to HELO.
    pub fn from_ehlo(reply: &Reply) -> Capabilities {
        let mut caps = Capabilities::default();
        if !reply.is_positive_completion() {
            return caps;
        }
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else { continue };
            // Some old servers write `AUTH=LOGIN PLAIN`, for clients that predate RFC 4954;
            // its mechanisms are the same, so it is read as if it were `AUTH LOGIN PLAIN`.
            let (keyword, first_param) = match keyword.split_once('=') {
                Some((k, p)) => (k, Some(p).filter(|p| !p.is_empty())),
                None => (keyword, None),
            };
            let mut params = first_param.into_iter().chain(words);
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "STARTTLS" => caps.starttls = true,
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "SIZE" => caps.size = params.next().and_then(|p| p.parse().ok()).filter(|n| *n > 0),
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "DSN" => caps.dsn = true,
                "CHUNKING" => caps.chunking = true,
                "AUTH" => {
                    for mechanism in params {
                        let mechanism = mechanism.to_ascii_uppercase();
                        if !caps.auth.contains(&mechanism) {
                            caps.auth.push(mechanism);
                        }
                    }
                }
                _ => {}
            }
        }
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::reply::parse_reply;

    fn caps(input: &[u8]) -> Capabilities {
        let (reply, _) = parse_reply(input).expect("valid reply").expect("complete reply");
        Capabilities::from_ehlo(&reply)
    }

    #[test]
    fn typical_reply() {
        let c = caps(
            b"250-mx.example.org at your service\r\n250-SIZE 35882577\r\n250-8BITMIME\r\n\
              250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n250-CHUNKING\r\n\
              250-AUTH LOGIN PLAIN XOAUTH2\r\n250-DSN\r\n250 SMTPUTF8\r\n",
        );
        let expected = Capabilities {
            pipelining: true,
            starttls: true,
            eight_bit_mime: true,
            smtputf8: true,
            size: Some(35_882_577),
            enhanced_status_codes: true,
            dsn: true,
            chunking: true,
            auth: vec!["LOGIN".into(), "PLAIN".into(), "XOAUTH2".into()],
        };
        assert_eq!(c, expected);
    }

    #[test]
    fn case_old_auth_and_size_forms() {
        let c = caps(b"250-host\r\n250-pipelining\r\n250-Auth=login\r\n250-auth LOGIN cram-md5\r\n250 size\r\n");
        assert!(c.pipelining);
        assert_eq!(c.auth, ["LOGIN", "CRAM-MD5"]);
        assert_eq!(c.size, None);
        assert_eq!(caps(b"250-host\r\n250 SIZE 0\r\n").size, None);
        assert_eq!(caps(b"250-host\r\n250 SIZE lots\r\n").size, None);
    }

    #[test]
    fn greeting_line_and_failures_offer_nothing() {
        // The greeting domain could be any word, including one that looks like a keyword.
        assert_eq!(caps(b"250 STARTTLS\r\n"), Capabilities::default());
        assert_eq!(caps(b"502-5.5.1 no\r\n502 STARTTLS\r\n"), Capabilities::default());
        assert_eq!(caps(b"250-host\r\n250-\r\n250 X-UNKNOWN thing\r\n"), Capabilities::default());
    }
}
