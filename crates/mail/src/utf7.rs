//! Modified UTF-7 for mailbox names (RFC 3501 section 5.1.3), the form IMAP4rev1 clients use.
//! IMAP4rev2 clients and those that enable UTF8=ACCEPT use UTF-8 instead.

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};

/// Encodes a UTF-8 mailbox name in modified UTF-7.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&STANDARD_NO_PAD.encode(bytes).replace('/', ","));
        out.push('-');
        pending.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// Decodes modified UTF-7; None if the input is not valid modified UTF-7.
pub fn decode(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after.find('-')?;
        let chunk = &after[..end];
        if chunk.is_empty() {
            out.push('&');
        } else {
            let bytes = STANDARD_NO_PAD.decode(chunk.replace(',', "/")).ok()?;
            if bytes.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = bytes.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            out.push_str(&String::from_utf16(&units).ok()?);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Decodes a name a client sent: modified UTF-7 where it is valid, and the name as it stands
/// where it is not. An `&` that does not start a valid encoded run (`Tom & Jerry`, `a&'b`) is
/// then an ordinary character, as Dovecot takes it, so that such a name can be created and
/// selected rather than refused as a syntax error.
pub fn decode_lenient(name: &str) -> String {
    decode(name).unwrap_or_else(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_decoding_keeps_what_is_not_modified_utf7() {
        assert_eq!(decode_lenient("!#$&'+,-.0123456789:;<=>?@^_`|[}"), "!#$&'+,-.0123456789:;<=>?@^_`|[}");
        assert_eq!(decode_lenient("Tom & Jerry"), "Tom & Jerry");
        assert_eq!(decode_lenient("Entw&APw-rfe"), "Entwürfe");
        assert_eq!(decode_lenient("a&-b"), "a&b");
    }

    #[test]
    fn round_trips_rfc_examples() {
        assert_eq!(encode("~peter/mail/台北/日本語"), "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
        assert_eq!(decode("~peter/mail/&U,BTFw-/&ZeVnLIqe-").unwrap(), "~peter/mail/台北/日本語");
        assert_eq!(encode("Tom & Jerry"), "Tom &- Jerry");
        assert_eq!(decode("Tom &- Jerry").unwrap(), "Tom & Jerry");
        assert_eq!(encode("Entwürfe"), "Entw&APw-rfe");
        for s in ["INBOX", "a/b", "Ünïcödé/😀", "&&", ""] {
            assert_eq!(decode(&encode(s)).unwrap(), s);
        }
    }

    #[test]
    fn rejects_broken_input() {
        for bad in ["&", "&abc", "&A-", "&2D3-"] {
            assert!(decode(bad).is_none(), "{bad:?}");
        }
    }
}
