//! The SMTP front-end's own delivery status notification: the bounce for local recipients that
//! were accepted at RCPT but could not store the message after all (a mailbox that filled up in
//! between, for one). The report itself is written by [`tern_mail::dsn`].

use tern_mail::dsn::{Action, RecipientStatus, Report, build};

use crate::backend::Outcome;

/// The report for local recipients that accepted a message at RCPT but could not store it.
pub fn failure_report(
    hostname: &str,
    to: &str,
    failed: &[(String, Outcome)],
    original: &[u8],
    headers_only: bool,
) -> Vec<u8> {
    let recipients = failed
        .iter()
        .filter_map(|(rcpt, outcome)| {
            let (status, diagnostic) = match outcome {
                Outcome::OverQuota => ("5.2.2", "552 5.2.2 Mailbox full".to_string()),
                Outcome::Failed(why) => ("5.0.0", format!("550 5.0.0 {why}")),
                // A rejection is told with its own notification (RFC 5429), not a DSN.
                Outcome::Rejected(_) => return None,
                Outcome::Delivered => return None,
            };
            Some(RecipientStatus {
                recipient: rcpt.clone(),
                original_recipient: None,
                action: Action::Failed,
                status: status.into(),
                diagnostic,
                remote_mta: None,
            })
        })
        .collect();
    // The message arrived just now: this report is written at the end of its DATA.
    let arrival_date =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    build(&Report { reporting_mta: hostname, to, envid: None, arrival_date, recipients, original, headers_only })
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
