//! Delivery status notifications (RFC 3464): the bounce a sender gets for recipients that
//! accepted a message at RCPT but could not store it at the end of data.

use crate::backend::Outcome;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Builds a multipart/report message to `to` about `failed` recipients of `original`.
/// `headers_only` follows the sender's RET=HDRS.
pub fn failure_report(
    hostname: &str,
    to: &str,
    failed: &[(String, Outcome)],
    original: &[u8],
    headers_only: bool,
) -> Vec<u8> {
    let date = mail_parser::DateTime::from_timestamp(now()).to_rfc822();
    let boundary = format!("tern-dsn-{}", now());
    let mut human = String::from("Your message could not be delivered to these recipients:\r\n\r\n");
    let mut machine = format!("Reporting-MTA: dns; {hostname}\r\nArrival-Date: {date}\r\n");
    for (rcpt, outcome) in failed {
        let (status, diag) = match outcome {
            Outcome::OverQuota => ("5.2.2", "552 5.2.2 Mailbox full".to_string()),
            Outcome::Failed(why) => ("5.0.0", format!("550 5.0.0 {why}")),
            Outcome::Delivered => continue,
        };
        human.push_str(&format!("  <{rcpt}>: {diag}\r\n"));
        machine.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: {status}\r\nDiagnostic-Code: smtp; {diag}\r\n"
        ));
    }
    let returned: &[u8] = if headers_only {
        let end = original.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4).unwrap_or(original.len());
        &original[..end]
    } else {
        original
    };
    let returned_type = if headers_only { "text/rfc822-headers" } else { "message/rfc822" };
    let mut out = format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\nTo: <{to}>\r\nSubject: Undelivered Mail Returned to Sender\r\n\
         Date: {date}\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{human}\r\n\
         --{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n{machine}\r\n\
         --{boundary}\r\nContent-Type: {returned_type}\r\n\r\n"
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
    fn report_names_each_failed_recipient() {
        let original = b"Subject: hi\r\n\r\nbody\r\n";
        let r = failure_report("mx.test", "a@b.c", &[("x@mx.test".into(), Outcome::OverQuota)], original, true);
        let text = String::from_utf8(r).unwrap();
        assert!(text.contains("report-type=delivery-status"));
        assert!(text.contains("Final-Recipient: rfc822; x@mx.test"));
        assert!(text.contains("Status: 5.2.2"));
        assert!(text.contains("text/rfc822-headers"));
        assert!(!text.contains("body\r\n\r\n--"), "RET=HDRS must not return the body");
    }
}
