//! DATA (RFC 5321 section 4.1.1.4), and the end of every transaction, shared with BDAT:
//! the Received: trace header, the sender check of submissions, delivery to local mailboxes,
//! the outbound queue for the rest, and the one reply that says whether all of it is durable.

use std::net::IpAddr;

use bytes::Bytes;

use super::{Flow, Session, Transaction};
use crate::{
    backend::{Backend, BackendError, Outbound, OutboundRecipient, Outcome},
    codec::{DataDecoder, DataEnd, Reply, command::Ret},
    config::ListenerKind,
    dsn,
};

impl<B: Backend> Session<B> {
    /// Checks that a transaction may send its data; the reply to send otherwise.
    pub(crate) fn data_precheck(&self) -> Option<Reply> {
        if self.txn.from.is_none() {
            return Some(Reply::new(503, "5.5.1", "Need MAIL before DATA"));
        }
        if self.txn.recipients.is_empty() {
            return Some(Reply::new(554, "5.5.1", "No valid recipients"));
        }
        None
    }

    pub(crate) async fn data(&mut self) -> std::io::Result<Flow> {
        if self.txn.chunks.is_some() {
            return Ok(self.error(Reply::new(503, "5.5.1", "DATA cannot follow BDAT")));
        }
        if let Some(r) = self.data_precheck() {
            return Ok(self.error(r));
        }
        self.reply(Reply::new(354, "", "End data with <CR><LF>.<CR><LF>"));
        self.flush().await?;
        let mut decoder = DataDecoder::new(self.cfg.limits.max_message_bytes);
        let deadline = tokio::time::Instant::now() + self.cfg.limits.data_timeout;
        loop {
            let (used, end) = decoder.feed(self.input());
            bytes::Buf::advance(self.input(), used);
            if end == DataEnd::Complete {
                break;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !self.fill(left).await? {
                // The client went away inside DATA: nothing was acknowledged, nothing is kept.
                return Ok(Flow::Close);
            }
        }
        if decoder.bare_newlines() > 0 {
            tracing::info!(count = decoder.bare_newlines(), "normalised bare CR/LF in message data");
        }
        if decoder.too_large() {
            self.txn = Transaction::default();
            self.reply(Reply::new(552, "5.3.4", "Message too big"));
            return Ok(Flow::Continue);
        }
        let message = decoder.into_message();
        self.finish(message).await;
        Ok(Flow::Continue)
    }

    fn received_header(&self, txn: &Transaction) -> String {
        let proto = match (self.esmtp, txn.params.smtputf8, self.is_tls(), self.account.is_some()) {
            (false, _, _, _) => "SMTP",
            (true, false, false, false) => "ESMTP",
            (true, false, true, false) => "ESMTPS",
            (true, false, false, true) => "ESMTPA",
            (true, false, true, true) => "ESMTPSA",
            (true, true, false, false) => "UTF8SMTP",
            (true, true, true, false) => "UTF8SMTPS",
            (true, true, false, true) => "UTF8SMTPA",
            (true, true, true, true) => "UTF8SMTPSA",
        };
        let helo = self.helo.as_deref().unwrap_or("unknown");
        let ip = self.peer.ip();
        let tls = self.tls_description().map(|t| format!("\r\n\t(using {t})")).unwrap_or_default();
        let for_clause = match txn.recipients.as_slice() {
            [one] => format!("\r\n\tfor {}", one.path),
            _ => String::new(),
        };
        let date = mail_parser::DateTime::from_timestamp(now()).to_rfc822();
        format!(
            "Received: from {helo} ([{ip}]){tls}\r\n\tby {} (Tern) with {proto} id {}{for_clause};\r\n\t{date}\r\n",
            self.cfg.hostname, self.id
        )
    }

    /// Completes a transaction with its message: stores it for every local recipient and
    /// queues it for the others, then answers once. The transaction is reset either way. Its
    /// span, inside the connection's, holds the calls to the mailbox service for this message.
    #[tracing::instrument(name = "smtp.message", skip_all, fields(size = body.len(), recipients = self.txn.recipients.len()))]
    pub(crate) async fn finish(&mut self, body: Vec<u8>) {
        let txn = std::mem::take(&mut self.txn);
        if let Some(account) = &self.account
            && let Err(reply) = check_from_header(&body, |a| account.owns(a))
        {
            self.reply(reply);
            return;
        }
        let from = txn.from.as_ref().and_then(|p| p.address()).unwrap_or("").to_string();
        let mut trace = self.received_header(&txn).into_bytes();
        let mut body = body;
        if let (Some(verifier), ListenerKind::Mx) = (&self.cfg.verifier, self.kind) {
            body = crate::verify::strip_forged_results(&body, &self.cfg.hostname);
            let helo = self.helo.clone().unwrap_or_default();
            let results =
                verifier.authentication_results(&self.cfg.hostname, self.peer.ip(), &helo, &from, &body).await;
            trace.extend_from_slice(results.as_bytes());
        }
        // The size limit bounds what the client sent (RFC 1870), checked by DATA and BDAT; the
        // headers added here do not count against it.
        let ip = self.peer.ip();
        let (message, local_message, junk, spam) = match self.filter(&txn, &from, trace, body).await {
            Ok(filtered) => filtered,
            Err(reply) => {
                self.reply(reply);
                return;
            }
        };
        match self.store(&txn, &from, message.clone(), (local_message, &junk, spam), ip).await {
            Ok((failed, queue_id)) => {
                // A Sieve reject of the transaction's only recipient is refused right here,
                // which tells the sender without a message of ours (RFC 5429 sections 2.1 and
                // 2.2); with other recipients the message is accepted and the rejecting ones
                // answer with a notification.
                if let ([(_, Outcome::Rejected(reason))], 1) = (failed.as_slice(), txn.recipients.len()) {
                    self.reply(Reply::new(550, "5.7.1", format!("Rejected: {}", one_line(reason))));
                    return;
                }
                let (rejected, failed): (Vec<_>, Vec<_>) =
                    failed.into_iter().partition(|(_, o)| matches!(o, Outcome::Rejected(_)));
                for (rcpt, outcome) in &rejected {
                    if let Outcome::Rejected(reason) = outcome {
                        self.notify_rejection(&from, rcpt, reason, &message, ip).await;
                    }
                }
                if !failed.is_empty() {
                    self.bounce(&txn, &from, &failed, &message, ip).await;
                }
                let id = queue_id.unwrap_or_else(|| self.id.clone());
                tern_runtime::metrics::Metrics::global().messages_received.inc();
                self.reply(Reply::new(250, "2.0.0", format!("OK queued as {id}")));
            }
            Err(BackendError::TooLarge(why)) => self.reply(Reply::new(552, "5.3.4", format!("Message refused: {why}"))),
            Err(e) => {
                tracing::warn!(error = %e, "storing the message failed; the sender will retry");
                self.reply(Reply::new(451, "4.3.0", "Temporary failure storing the message, try again later"));
            }
        }
    }

    /// Delivers locally (the filter's local copy, into the junk folder for its junk
    /// recipients) and queues the rest (`message`). Returns the local recipients that failed
    /// after RCPT accepted them (they get a bounce or a rejection notice) and the queue id, if
    /// anything was queued.
    async fn store(
        &self,
        txn: &Transaction,
        from: &str,
        message: Bytes,
        local: (Bytes, &[String], Option<u32>),
        ip: IpAddr,
    ) -> Result<(Vec<(String, Outcome)>, Option<String>), BackendError> {
        let (local_message, junk, spam) = local;
        let local_rcpts: Vec<String> =
            txn.recipients.iter().filter(|r| r.local).filter_map(|r| r.path.address().map(str::to_string)).collect();
        let remote: Vec<OutboundRecipient> = txn
            .recipients
            .iter()
            .filter(|r| !r.local)
            .filter_map(|r| {
                Some(OutboundRecipient {
                    address: r.path.address()?.to_string(),
                    notify: r.params.notify.clone(),
                    orcpt: r.params.orcpt.clone(),
                })
            })
            .collect();
        // The queue first: if it fails, nothing was delivered and the client retries the
        // whole message, without duplicating local copies.
        let queue_id = if remote.is_empty() {
            None
        } else {
            let outbound = Outbound {
                mail_from: from.to_string(),
                recipients: remote,
                account_id: self.account.as_ref().map(|a| a.id).unwrap_or(0),
                ret: txn.params.ret.map(|r| if r == Ret::Full { "FULL" } else { "HDRS" }.to_string()),
                envid: txn.params.envid.clone(),
            };
            Some(self.backend.enqueue(outbound, message).await?)
        };
        let mut failed = Vec::new();
        if !local_rcpts.is_empty() {
            let outcomes = self.backend.deliver(from, &local_rcpts, junk, spam, local_message, ip).await?;
            for (rcpt, outcome) in local_rcpts.into_iter().zip(outcomes) {
                if outcome != Outcome::Delivered {
                    tracing::info!(recipient = %rcpt, ?outcome, "local delivery failed after RCPT");
                    failed.push((rcpt, outcome));
                }
            }
        }
        Ok((failed, queue_id))
    }

    /// Tells the sender that a recipient's script rejected the message, with the disposition
    /// notification of RFC 5429 section 2.1.1. Never to the null sender (a notification must
    /// not answer a notification).
    async fn notify_rejection(&self, from: &str, rcpt: &str, reason: &str, message: &Bytes, ip: IpAddr) {
        if from.is_empty() {
            return;
        }
        let report = tern_mail::autoreply::rejection(&tern_mail::autoreply::Rejection {
            hostname: &self.cfg.hostname,
            recipient: rcpt,
            to: from,
            reason,
            original: message,
        });
        let result = crate::backend::send_report(self.backend.as_ref(), from, Bytes::from(report), ip).await;
        if let Err(e) = result {
            tracing::warn!(error = %e, sender = %from, "could not send the rejection notice");
        }
    }

    /// Tells the sender, with a delivery status notification, about recipients that could not
    /// take the message after all (a mailbox filled up between RCPT and the end of data).
    async fn bounce(&self, txn: &Transaction, from: &str, failed: &[(String, Outcome)], message: &Bytes, ip: IpAddr) {
        if from.is_empty() {
            // Never bounce a bounce (RFC 5321 section 6.1).
            return;
        }
        let report = dsn::failure_report(&self.cfg.hostname, from, failed, message, txn.params.ret == Some(Ret::Hdrs));
        let result = crate::backend::send_report(self.backend.as_ref(), from, Bytes::from(report), ip).await;
        if let Err(e) = result {
            tracing::warn!(error = %e, sender = %from, "could not send the delivery status notification");
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A reason as one line of an SMTP reply: line breaks and other controls become spaces, and a
/// long reason is cut (RFC 5321 section 4.5.3.1.5 bounds a reply line).
fn one_line(reason: &str) -> String {
    let text: String = reason.trim().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match text.char_indices().nth(400) {
        Some((at, _)) => text[..at].to_string(),
        None => text,
    }
}

/// On submission, every address in From: must belong to the authenticated account.
fn check_from_header(body: &[u8], owns: impl Fn(&str) -> bool) -> Result<(), Reply> {
    let parsed = mail_parser::MessageParser::default().parse_headers(body);
    let addresses: Vec<String> = parsed
        .as_ref()
        .and_then(|m| m.from())
        .map(|a| a.iter().filter_map(|x| x.address.as_deref().map(str::to_string)).collect())
        .unwrap_or_default();
    if addresses.is_empty() {
        return Err(Reply::new(550, "5.6.0", "The message has no From: address"));
    }
    if let Some(bad) = addresses.iter().find(|a| !owns(a)) {
        return Err(Reply::new(553, "5.7.1", format!("From: {bad} is not owned by the authenticated user")));
    }
    Ok(())
}
