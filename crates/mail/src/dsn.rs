//! Delivery status notifications (RFC 3464): the multipart/report a sender gets about
//! recipients that failed, are delayed, or (when asked with NOTIFY=SUCCESS) were delivered.
//! The SMTP front-end writes them for recipients that could not store a message after all; the
//! relay for remote servers' refusals, expiry and delays. Sending one is the caller's business.

use crate::now;

/// What happened to a recipient (RFC 3464 section 2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    /// Passed on to a server that does not support DSN, which will not report delivery.
    Relayed,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
        }
    }
}

/// One recipient's part of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    pub recipient: String,
    /// The ORCPT the sender gave (RFC 3461), as `type;address`.
    pub original_recipient: Option<String>,
    pub action: Action,
    /// The enhanced status code, e.g. `5.1.1`.
    pub status: String,
    /// What the remote server (or Tern) said, e.g. `550 5.1.1 No such user`.
    pub diagnostic: String,
    /// The server that said it.
    pub remote_mta: Option<String>,
}

/// A whole report.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    pub reporting_mta: &'a str,
    pub to: &'a str,
    /// The sender's ENVID (RFC 3461).
    pub envid: Option<&'a str>,
    pub arrival_date: i64,
    pub recipients: Vec<RecipientStatus>,
    pub original: &'a [u8],
    /// RET=HDRS: return only the headers of the original.
    pub headers_only: bool,
}

/// The enhanced status code in a reply text like `550 5.1.1 ...`, or the class's generic one.
pub fn status_of(diagnostic: &str) -> String {
    let mut words = diagnostic.split_whitespace();
    let code = words.next().unwrap_or("");
    if let Some(e) = words.next()
        && e.split('.').count() == 3
        && e.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && e.starts_with(['2', '4', '5'])
    {
        return e.to_string();
    }
    match code.as_bytes().first() {
        Some(b'2') => "2.0.0".into(),
        Some(b'4') => "4.0.0".into(),
        _ => "5.0.0".into(),
    }
}

/// Builds the report message: a human-readable part, the machine-readable
/// message/delivery-status part, and the original (or its headers).
pub fn build(report: &Report<'_>) -> Vec<u8> {
    let hostname = report.reporting_mta;
    let date = mail_parser::DateTime::from_timestamp(now()).to_rfc822();
    let arrival = mail_parser::DateTime::from_timestamp(report.arrival_date).to_rfc822();
    let boundary = format!("tern-dsn-{}-{}", now(), report.original.len());
    let worst = if report.recipients.iter().any(|r| r.action == Action::Failed) {
        Action::Failed
    } else if report.recipients.iter().any(|r| r.action == Action::Delayed) {
        Action::Delayed
    } else {
        Action::Delivered
    };
    let (subject, intro) = match worst {
        Action::Failed => {
            ("Undelivered Mail Returned to Sender", "Your message could not be delivered to these recipients:")
        }
        Action::Delayed => (
            "Delayed Mail (still being retried)",
            "Your message has not been delivered yet to these recipients. Delivery will be retried; you do not need to send it again.",
        ),
        Action::Delivered | Action::Relayed => (
            "Successful Mail Delivery Report",
            "Your message was delivered to these recipients, or passed on to servers that will not report further:",
        ),
    };
    let mut human = format!("This is the mail system at {hostname}.\r\n\r\n{intro}\r\n\r\n");
    let mut machine = format!("Reporting-MTA: dns; {hostname}\r\n");
    if let Some(envid) = report.envid.filter(|e| !e.is_empty()) {
        machine.push_str(&format!("Original-Envelope-Id: {envid}\r\n"));
    }
    machine.push_str(&format!("Arrival-Date: {arrival}\r\n"));
    for r in &report.recipients {
        human.push_str(&format!("  <{}>: {}\r\n", r.recipient, r.diagnostic));
        machine.push_str("\r\n");
        if let Some(o) = r.original_recipient.as_deref().filter(|o| !o.is_empty()) {
            machine.push_str(&format!("Original-Recipient: {o}\r\n"));
        }
        machine.push_str(&format!(
            "Final-Recipient: rfc822; {}\r\nAction: {}\r\nStatus: {}\r\n",
            r.recipient,
            r.action.as_str(),
            r.status
        ));
        if let Some(mta) = &r.remote_mta {
            machine.push_str(&format!("Remote-MTA: dns; {mta}\r\n"));
        }
        if !r.diagnostic.is_empty() {
            machine.push_str(&format!("Diagnostic-Code: smtp; {}\r\n", r.diagnostic));
        }
        if r.action == Action::Failed || r.action == Action::Delayed {
            machine.push_str(&format!("Last-Attempt-Date: {date}\r\n"));
        }
    }
    let original = report.original;
    let returned: &[u8] = if report.headers_only {
        let end = original.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4).unwrap_or(original.len());
        &original[..end]
    } else {
        original
    };
    let returned_type = if report.headers_only { "text/rfc822-headers" } else { "message/rfc822" };
    let mut out = format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\
         Date: {date}\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{human}\r\n\
         --{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n{machine}\r\n\
         --{boundary}\r\nContent-Type: {returned_type}\r\n\r\n",
        to = report.to
    )
    .into_bytes();
    out.extend_from_slice(returned);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_report_says_so_and_keeps_the_envelope_id() {
        let r = build(&Report {
            reporting_mta: "relay.test",
            to: "a@b.c",
            envid: Some("ENV1"),
            arrival_date: 0,
            recipients: vec![RecipientStatus {
                recipient: "x@far.test".into(),
                original_recipient: Some("rfc822;X@far.test".into()),
                action: Action::Delayed,
                status: "4.4.1".into(),
                diagnostic: "connection refused".into(),
                remote_mta: Some("mx.far.test".into()),
            }],
            original: b"Subject: hi\r\n\r\nbody\r\n",
            headers_only: false,
        });
        let text = String::from_utf8(r).unwrap();
        assert!(text.contains("Subject: Delayed Mail"));
        assert!(text.contains("Action: delayed\r\nStatus: 4.4.1\r\nRemote-MTA: dns; mx.far.test"));
        assert!(text.contains("Original-Envelope-Id: ENV1"));
        assert!(text.contains("Original-Recipient: rfc822;X@far.test"));
        assert!(text.contains("message/rfc822"));
    }

    #[test]
    fn the_status_comes_from_the_reply() {
        assert_eq!(status_of("550 5.1.1 No such user"), "5.1.1");
        assert_eq!(status_of("451 Try later"), "4.0.0");
        assert_eq!(status_of("connection refused"), "5.0.0");
    }
}
