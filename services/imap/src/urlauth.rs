//! URLAUTH (RFC 4467) and URL-PARTIAL (RFC 5550) without I/O: the commands GENURLAUTH,
//! URLFETCH and RESETKEY, which imap-codec does not parse, and authorized IMAP URLs taken apart
//! (`imap://user@host/INBOX;UIDVALIDITY=1/;UID=2/;PARTIAL=0.100;EXPIRE=...;URLAUTH=
//! anonymous:INTERNAL:token`).
//!
//! The session (see `session::urlauth`) checks access and reads the messages; the mailbox
//! service holds the keys and makes and checks the tokens.

use imap_codec::imap_types::core::Tag;

use crate::append::{ImapUrl, UrlError, parse_url, percent_decode};

/// A URLAUTH command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlAuthCommand {
    /// RESETKEY: of one mailbox (as the client sent its name) or, without one, of all.
    ResetKey { tag: Tag<'static>, mailbox: Option<Vec<u8>>, mechanisms: Vec<String> },
    /// GENURLAUTH: URL rumps, each with the mechanism to authorize it by.
    GenUrlAuth { tag: Tag<'static>, urls: Vec<(String, String)> },
    /// URLFETCH: authorized URLs to read.
    UrlFetch { tag: Tag<'static>, urls: Vec<String> },
}

impl UrlAuthCommand {
    pub fn tag(&self) -> &Tag<'static> {
        match self {
            UrlAuthCommand::ResetKey { tag, .. }
            | UrlAuthCommand::GenUrlAuth { tag, .. }
            | UrlAuthCommand::UrlFetch { tag, .. } => tag,
        }
    }
}

/// Who may use an authorized URL (RFC 4467 section 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone, even without logging in (`anonymous`).
    Anonymous,
    /// Any logged-in user (`authuser`).
    AuthUser,
    /// One user (`user+name`).
    User(String),
    /// A submission server acting for one user (`submit+name`), which an IMAP session is not.
    Submit(String),
}

/// An IMAP URL with URLAUTH's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedUrl {
    /// The message (or part) the URL names; its user is the mailbox's owner.
    pub url: ImapUrl,
    /// Everything up to and including `;URLAUTH=access`: what the token authorizes.
    pub rump: String,
    pub access: Access,
    /// The mechanism and token, which a rump (as GENURLAUTH takes it) has not.
    pub mechanism: Option<String>,
    pub token: Option<String>,
    /// `;EXPIRE=`: the URL is not valid after this moment, in seconds since the Unix epoch.
    pub expire: Option<i64>,
}

/// Takes an authorized URL (or a rump) apart. It must be absolute and name its user.
pub fn parse_authorized(url: &str) -> Result<AuthorizedUrl, UrlError> {
    let upper = url.to_ascii_uppercase();
    let at = upper.find(";URLAUTH=").ok_or(UrlError::Malformed)?;
    let after = &url[at + 9..];
    let mut parts = after.splitn(3, ':');
    let access_text = parts.next().unwrap_or_default();
    let mechanism = parts.next().map(str::to_string);
    let token = parts.next().map(str::to_string);
    if mechanism.is_some() != token.is_some() || token.as_deref().is_some_and(|t| t.is_empty()) {
        return Err(UrlError::Malformed);
    }
    let lower = access_text.to_ascii_lowercase();
    let access = if lower == "anonymous" {
        Access::Anonymous
    } else if lower == "authuser" {
        Access::AuthUser
    } else if let Some(name) = lower.strip_prefix("user+").map(|_| &access_text[5..]) {
        Access::User(percent_decode(name)?)
    } else if let Some(name) = lower.strip_prefix("submit+").map(|_| &access_text[7..]) {
        Access::Submit(percent_decode(name)?)
    } else {
        return Err(UrlError::Malformed);
    };
    let rump = url[..at + 9 + access_text.len()].to_string();
    let mut base = &url[..at];
    let mut expire = None;
    if let Some(e) = base.to_ascii_uppercase().find(";EXPIRE=") {
        let when = chrono::DateTime::parse_from_rfc3339(&base[e + 8..]).map_err(|_| UrlError::Malformed)?;
        expire = Some(when.timestamp());
        base = &base[..e];
    }
    if !upper.starts_with("IMAP://") {
        return Err(UrlError::Malformed);
    }
    let url = parse_url(base)?;
    if url.user.is_none() || url.mailbox.is_none() {
        return Err(UrlError::Malformed);
    }
    Ok(AuthorizedUrl { url, rump, access, mechanism, token, expire })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorized_urls_and_rumps() {
        let url = "imap://joe%40example.com@example.com/INBOX;UIDVALIDITY=385759045/;UID=20/;SECTION=1.2;EXPIRE=2026-12-31T23:59:59Z;URLAUTH=user+fred%40example.com:INTERNAL:91354a473744909de610943775f92038";
        let a = parse_authorized(url).unwrap();
        assert_eq!(a.url.user.as_deref(), Some("joe@example.com"));
        assert_eq!((a.url.mailbox.as_deref(), a.url.uid, a.url.section.as_deref()), (Some("INBOX"), 20, Some("1.2")));
        assert_eq!(a.access, Access::User("fred@example.com".into()));
        assert_eq!(a.mechanism.as_deref(), Some("INTERNAL"));
        assert_eq!(a.token.as_deref(), Some("91354a473744909de610943775f92038"));
        assert_eq!(a.expire, Some(1_798_761_599));
        assert!(a.rump.ends_with(";URLAUTH=user+fred%40example.com"));
        assert!(url.starts_with(&a.rump));

        let rump = parse_authorized("imap://a@h/INBOX/;UID=1/;PARTIAL=0.10;urlauth=anonymous").unwrap();
        assert_eq!((rump.access, rump.mechanism, rump.url.partial), (Access::Anonymous, None, Some((0, Some(10)))));
        assert_eq!(parse_authorized("imap://a@h/INBOX/;UID=1;URLAUTH=authuser").unwrap().access, Access::AuthUser);
        assert_eq!(
            parse_authorized("imap://a@h/INBOX/;UID=1;URLAUTH=submit+a").unwrap().access,
            Access::Submit("a".into())
        );
    }

    #[test]
    fn urls_that_are_not_authorized_ones() {
        for url in [
            "imap://a@h/INBOX/;UID=1",
            "/INBOX/;UID=1;URLAUTH=anonymous",
            "imap://h/INBOX/;UID=1;URLAUTH=anonymous",
            "imap://a@h/INBOX/;UID=1;URLAUTH=everyone",
            "imap://a@h/INBOX/;UID=1;URLAUTH=anonymous:INTERNAL",
            "imap://a@h/INBOX/;UID=1;URLAUTH=anonymous:INTERNAL:",
            "imap://a@h/INBOX/;UID=1;EXPIRE=tomorrow;URLAUTH=anonymous",
        ] {
            assert_eq!(parse_authorized(url), Err(UrlError::Malformed), "{url}");
        }
    }
}
