//! SASL PLAIN (RFC 4616), the one mechanism every front-end offers: splitting the decoded
//! response into the login and the password. The protocols differ in how the response
//! travels (an SMTP or POP3 line, an IMAP literal, a ManageSieve string) and in how they answer
//! a malformed one, so they decode the base64 themselves and share only this.

use secrecy::SecretString;

/// Why a PLAIN response was refused. The texts are what clients are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PlainError {
    #[error("PLAIN needs authzid NUL authcid NUL password")]
    Shape,
    #[error("credentials must be UTF-8")]
    NotUtf8,
    /// Acting for someone else (an authorisation identity other than oneself) is not offered.
    #[error("authorisation identity must be empty or equal to the login")]
    OtherIdentity,
}

impl PlainError {
    /// The reason as a static text, for replies that keep one.
    pub fn as_str(self) -> &'static str {
        match self {
            PlainError::Shape => "PLAIN needs authzid NUL authcid NUL password",
            PlainError::NotUtf8 => "credentials must be UTF-8",
            PlainError::OtherIdentity => "authorisation identity must be empty or equal to the login",
        }
    }
}

/// Splits a decoded PLAIN response, `authzid NUL authcid NUL password`, into the login
/// (authcid) and the password. The authorisation identity must be empty or the login itself
/// (compared without regard to ASCII case).
pub fn plain(bytes: &[u8]) -> Result<(String, SecretString), PlainError> {
    let mut parts = bytes.split(|b| *b == 0);
    let (Some(authz), Some(authc), Some(pass), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(PlainError::Shape);
    };
    let (Ok(authz), Ok(authc), Ok(pass)) =
        (std::str::from_utf8(authz), std::str::from_utf8(authc), std::str::from_utf8(pass))
    else {
        return Err(PlainError::NotUtf8);
    };
    if !authz.is_empty() && !authz.eq_ignore_ascii_case(authc) {
        return Err(PlainError::OtherIdentity);
    }
    Ok((authc.to_string(), SecretString::from(pass.to_string())))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn splits_the_three_parts() {
        let (user, pass) = plain(b"\0alice@example.com\0s3cret").unwrap();
        assert_eq!((user.as_str(), pass.expose_secret()), ("alice@example.com", "s3cret"));
        let (user, _) = plain(b"ALICE@example.com\0alice@example.com\0pw").unwrap();
        assert_eq!(user, "alice@example.com");
        // An empty password is the mailbox service's to refuse, not the syntax's.
        assert!(plain(b"\0bob\0").is_ok());
    }

    #[test]
    fn refuses_malformed_responses() {
        assert_eq!(plain(b"").unwrap_err(), PlainError::Shape);
        assert_eq!(plain(b"\0alice").unwrap_err(), PlainError::Shape);
        assert_eq!(plain(b"\0a\0b\0c").unwrap_err(), PlainError::Shape);
        assert_eq!(plain(b"\0a\xff\0b").unwrap_err(), PlainError::NotUtf8);
        assert_eq!(plain(b"bob\0alice\0pw").unwrap_err(), PlainError::OtherIdentity);
        for e in [PlainError::Shape, PlainError::NotUtf8, PlainError::OtherIdentity] {
            assert_eq!(e.to_string(), e.as_str());
        }
    }
}
