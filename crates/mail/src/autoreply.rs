//! The messages Sieve makes on a recipient's behalf: the vacation auto-reply (RFC 5230 section
//! 5, marked as RFC 3834 asks) and the disposition notification a `reject` sends back to the
//! sender (RFC 5429 section 2.1, an MDN of RFC 8098). Both are built here as bytes; queueing
//! them, and deciding whether to send them at all, is the mailbox service's business.

use base64::Engine as _;

use crate::{headers::field, now};

/// A header value: ASCII as is, anything else one RFC 2047 encoded word.
fn encode(value: &str) -> String {
    if value.is_ascii() {
        value.to_string()
    } else {
        format!("=?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(value))
    }
}

/// Line ends as CRLF, whatever the script used.
fn crlf(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\n', "\r\n")
}

/// A vacation reply.
#[derive(Debug, Clone)]
pub struct Vacation<'a> {
    /// The reply's From: the script's `:from`, or the recipient.
    pub from: &'a str,
    /// The original's envelope sender.
    pub to: &'a str,
    pub subject: &'a str,
    /// The text, or with `mime` a MIME entity (its own Content-Type and body).
    pub reason: &'a str,
    pub mime: bool,
    /// The original's Message-ID (with its angle brackets) and References.
    pub in_reply_to: Option<&'a str>,
    pub references: Option<&'a str>,
    /// The host name for the reply's own Message-ID.
    pub hostname: &'a str,
}

/// Builds the reply: `Auto-Submitted: auto-replied` so that other responders leave it alone
/// (RFC 3834 section 5), In-Reply-To and References to thread it under the original.
pub fn vacation(v: &Vacation<'_>) -> Vec<u8> {
    let t = now();
    let mut out = String::new();
    out.push_str(&field("From", v.from));
    out.push_str(&field("To", v.to));
    out.push_str(&format!("Subject: {}\r\n", encode(v.subject)));
    out.push_str(&format!("Date: {}\r\n", mail_parser::DateTime::from_timestamp(t).to_rfc822()));
    out.push_str(&format!("Message-ID: <vacation.{t}.{:x}@{}>\r\n", fnv(v.to) ^ fnv(v.reason), v.hostname));
    if let Some(id) = v.in_reply_to.filter(|i| !i.is_empty()) {
        out.push_str(&format!("In-Reply-To: {id}\r\n"));
        let refs = match v.references.filter(|r| !r.is_empty()) {
            Some(r) => format!("{r} {id}"),
            None => id.to_string(),
        };
        out.push_str(&field("References", &refs));
    }
    out.push_str("Auto-Submitted: auto-replied (vacation)\r\n");
    out.push_str("Precedence: bulk\r\n");
    out.push_str("MIME-Version: 1.0\r\n");
    if v.mime {
        // The reason is an entity: its headers continue ours.
        out.push_str(&crlf(v.reason.trim_start_matches(['\r', '\n'])));
    } else {
        out.push_str("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n");
        out.push_str(&crlf(v.reason));
    }
    if !out.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out.into_bytes()
}

/// A `reject`'s notification to the sender.
#[derive(Debug, Clone)]
pub struct Rejection<'a> {
    /// The host that reports (the mailbox service's host name).
    pub hostname: &'a str,
    /// The recipient whose script rejected the message.
    pub recipient: &'a str,
    /// The original's envelope sender, to whom the notification goes.
    pub to: &'a str,
    pub reason: &'a str,
    pub original: &'a [u8],
}

/// Builds the MDN of RFC 5429 section 2.1.1: a human-readable part with the reason, the
/// `message/disposition-notification` part with `Disposition:
/// automatic-action/MDN-sent-automatically; deleted`, and the original's header.
pub fn rejection(r: &Rejection<'_>) -> Vec<u8> {
    let t = now();
    let boundary = format!("tern-reject-{t}-{:x}", fnv(r.recipient));
    let parsed = mail_parser::MessageParser::default().parse_headers(r.original);
    let subject = parsed.as_ref().and_then(|m| m.subject()).unwrap_or("").to_string();
    let message_id = parsed.as_ref().and_then(|m| m.message_id()).map(|id| format!("<{id}>"));
    let mut out = String::new();
    out.push_str(&format!("From: Mail Delivery System <MAILER-DAEMON@{}>\r\n", r.hostname));
    out.push_str(&field("To", r.to));
    out.push_str(&format!("Subject: {}\r\n", encode(format!("Rejected: {subject}").trim_end())));
    out.push_str(&format!("Date: {}\r\n", mail_parser::DateTime::from_timestamp(t).to_rfc822()));
    out.push_str(&format!("Message-ID: <reject.{t}.{:x}@{}>\r\n", fnv(r.recipient) ^ fnv(r.to), r.hostname));
    if let Some(id) = &message_id {
        out.push_str(&format!("In-Reply-To: {id}\r\n"));
    }
    out.push_str("Auto-Submitted: auto-replied (rejected)\r\n");
    out.push_str("MIME-Version: 1.0\r\n");
    out.push_str(&format!(
        "Content-Type: multipart/report; report-type=disposition-notification;\r\n\tboundary=\"{boundary}\"\r\n\r\n"
    ));
    out.push_str("This is a MIME-encapsulated message.\r\n\r\n");
    out.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    ));
    out.push_str(&format!("Your message to <{}> was automatically rejected:\r\n\r\n", r.recipient));
    out.push_str(&crlf(r.reason.trim_end()));
    out.push_str("\r\n\r\n");
    out.push_str(&format!("--{boundary}\r\nContent-Type: message/disposition-notification\r\n\r\n"));
    out.push_str(&format!("Reporting-UA: {}; Tern\r\n", r.hostname));
    out.push_str(&format!("Final-Recipient: rfc822; {}\r\n", r.recipient));
    if let Some(id) = &message_id {
        out.push_str(&format!("Original-Message-ID: {id}\r\n"));
    }
    out.push_str("Disposition: automatic-action/MDN-sent-automatically; deleted\r\n\r\n");
    out.push_str(&format!("--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"));
    let mut bytes = out.into_bytes();
    let header_end = crate::headers::header_end(r.original);
    bytes.extend_from_slice(&r.original[..header_end]);
    if !bytes.ends_with(b"\r\n") {
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

/// A short, stable digest for the generated Message-IDs (they need to be unique per reply,
/// not secret).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vacation_reply_is_marked_and_threaded() {
        let bytes = vacation(&Vacation {
            from: "bob@example.com",
            to: "alice@example.org",
            subject: "Auto: Café",
            reason: "Away until Monday.\nBob",
            mime: false,
            in_reply_to: Some("<m1@example.org>"),
            references: None,
            hostname: "mx.example.com",
        });
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("Auto-Submitted: auto-replied"));
        assert!(text.contains("In-Reply-To: <m1@example.org>\r\n"));
        assert!(text.contains("\r\n\r\nAway until Monday.\r\nBob\r\n"));
        let parsed = mail_parser::MessageParser::default().parse(&bytes).unwrap();
        assert_eq!(parsed.subject(), Some("Auto: Café"));
        assert_eq!(
            parsed.body_text(0).unwrap().trim_end(),
            "Away until Monday.\r\nBob".replace("\r\n", "\n").replace('\n', "\r\n")
        );
    }

    #[test]
    fn rejection_is_a_disposition_notification() {
        let original = b"From: a@example.org\r\nSubject: Hi\r\nMessage-ID: <m2@example.org>\r\n\r\nbody\r\n";
        let bytes = rejection(&Rejection {
            hostname: "mx.example.com",
            recipient: "bob@example.com",
            to: "a@example.org",
            reason: "Not wanted.",
            original,
        });
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("report-type=disposition-notification"));
        assert!(text.contains("Disposition: automatic-action/MDN-sent-automatically; deleted\r\n"));
        assert!(text.contains("Original-Message-ID: <m2@example.org>\r\n"));
        assert!(text.contains("Not wanted."));
        assert!(!text.contains("body\r\n"), "only the original's header goes back");
        let parsed = mail_parser::MessageParser::default().parse(&bytes).unwrap();
        assert_eq!(parsed.subject(), Some("Rejected: Hi"));
    }
}
