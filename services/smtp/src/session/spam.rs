//! The spam scan of a finished transaction: asking rspamd once per message (not once per
//! recipient), applying [`crate::spam::decide`], and writing the verdict's headers into the
//! copies delivered here. See `crate::spam` for the rules.

use bytes::Bytes;
use tern_mail::headers;
use tern_rspamd::{Action, Envelope};

use super::{Session, Transaction};
use crate::{
    backend::Backend,
    codec::Reply,
    spam::{FailurePolicy, RecipientSpam, SpamMetrics, decide, is_spam_header, verdict_headers},
};

/// What the filter makes of a message: the copy for the outbound queue, the copy for local
/// recipients, and the local recipients whose copy goes to their junk folder.
/// The message as queued, the copy for local recipients, the local recipients whose copy goes
/// to their junk folder, and the verdict in percent (for Sieve's spamtest) when there was a
/// scan.
pub(crate) type Filtered = (Bytes, Bytes, Vec<String>, Option<u32>);

impl<B: Backend> Session<B> {
    /// Scans the message (`trace` is the header block this server adds on top of the client's
    /// `body`) when a spam filter is configured and someone wants it: every submission, and
    /// mail for a local recipient with scanning on who does not allow the sender (a message
    /// every recipient is exempt from costs rspamd nothing). A refusal is the reply to send
    /// instead.
    pub(crate) async fn filter(
        &self,
        txn: &Transaction,
        from: &str,
        trace: Vec<u8>,
        body: Vec<u8>,
    ) -> Result<Filtered, Reply> {
        let local: Vec<(&str, &RecipientSpam)> =
            txn.recipients.iter().filter(|r| r.local).filter_map(|r| Some((r.path.address()?, &r.spam))).collect();
        let settings: Vec<&RecipientSpam> = local.iter().map(|(_, s)| *s).collect();
        // The senders matter only to recipients with lists; parsing the header costs the rest.
        let lists = settings.iter().any(|s| !s.allow.is_empty() || !s.block.is_empty());
        let senders = if lists { senders(from, &body) } else { Vec::new() };
        let junk_of = |indices: Vec<usize>| indices.into_iter().map(|i| local[i].0.to_string()).collect::<Vec<_>>();
        let submission = self.kind.is_submission();
        let wanted = submission || settings.iter().any(|s| s.scan && !s.allows(&senders));
        // Delivered without a verdict: the same copy for everyone, Junk only for blocked senders.
        let unscanned = |message: Bytes| -> Filtered {
            let junk = junk_of(decide(None, submission, &settings, &senders).junk);
            (message.clone(), message, junk, None)
        };
        let filter = match &self.cfg.spam {
            Some(f) if wanted => f,
            _ => return Ok(unscanned(join(&trace, &body))),
        };
        let metrics = SpamMetrics::global();
        // What a sender wrote in the filter's own headers is not to be believed by anyone
        // reading the delivered copy, so it is gone before the scan.
        let body = headers::remove_fields(&body, |name, _| is_spam_header(name));
        let message = join(&trace, &body);
        if message.len() as u64 > filter.max_scan_bytes {
            metrics.result("too large");
            return Ok(unscanned(message));
        }
        let rcpts: Vec<String> = txn.recipients.iter().filter_map(|r| r.path.address().map(str::to_string)).collect();
        let envelope = Envelope {
            ip: Some(self.peer.ip()),
            helo: self.helo.as_deref().unwrap_or(""),
            from,
            rcpts: &rcpts,
            user: self.account.as_ref().map(|a| a.address.as_str()),
            queue_id: &self.id,
            // With one local recipient its statistics and settings are the ones to use.
            deliver_to: match local.as_slice() {
                [(only, _)] => Some(*only),
                _ => None,
            },
            mta_name: &self.cfg.hostname,
            tls: None,
            settings: None,
        };
        let started = std::time::Instant::now();
        let verdict = match filter.client.check(&envelope, message.clone()).await {
            Ok(v) => {
                metrics.latency.observe(started.elapsed().as_secs_f64());
                metrics.result(v.action.as_str());
                v
            }
            Err(e) => {
                metrics.result("unavailable");
                return match filter.on_failure {
                    FailurePolicy::Tempfail => {
                        tracing::warn!(error = %e, "spam filter unavailable; the sender will retry");
                        Err(Reply::new(451, "4.7.1", "Spam filter unavailable, try again later"))
                    }
                    FailurePolicy::Accept => {
                        tracing::warn!(error = %e, "spam filter unavailable; delivering unscanned");
                        metrics.unscanned.inc();
                        Ok(unscanned(message))
                    }
                };
            }
        };
        let decision = decide(Some(&verdict), submission, &settings, &senders);
        tracing::info!(
            action = verdict.action.as_str(),
            score = verdict.score,
            junk = decision.junk.len(),
            refused = decision.refuse.is_some(),
            "spam scan"
        );
        if let Some(reply) = decision.refuse {
            return Err(reply);
        }
        // The local copies carry the verdict; the outbound copy leaves as the sender wrote it.
        let mut local_body = headers::remove_fields(&body, |name, _| {
            verdict.remove_headers.iter().any(|r| r.eq_ignore_ascii_case(name))
        });
        if let (Action::RewriteSubject, Some(subject)) = (verdict.action, &verdict.subject) {
            let rest = headers::remove_fields(&local_body, |name, _| name.eq_ignore_ascii_case("subject"));
            local_body = headers::field("Subject", subject).into_bytes();
            local_body.extend_from_slice(&rest);
        }
        let mut local_message = trace;
        local_message.extend_from_slice(verdict_headers(&verdict).as_bytes());
        local_message.extend_from_slice(&local_body);
        Ok((message, Bytes::from(local_message), junk_of(decision.junk), Some(spam_percent(&verdict))))
    }
}

/// The verdict as RFC 5235's percentage: the score against rspamd's reject score, so that 100
/// is "would be rejected" and 0 is no spam signal at all.
fn spam_percent(v: &tern_rspamd::Verdict) -> u32 {
    if v.required_score <= 0.0 {
        return if v.score > 0.0 { 100 } else { 0 };
    }
    (v.score / v.required_score * 100.0).clamp(0.0, 100.0).round() as u32
}

fn join(a: &[u8], b: &[u8]) -> Bytes {
    let mut m = Vec::with_capacity(a.len() + b.len());
    m.extend_from_slice(a);
    m.extend_from_slice(b);
    Bytes::from(m)
}

/// The senders a recipient's allow and block lists are compared with, lower-case: the envelope
/// sender and the From: addresses. Both can be forged, as with every such list; an allow entry
/// exempts mail from the verdict, never from SPF, DKIM or DMARC.
fn senders(from: &str, body: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if !from.is_empty() {
        out.push(from.to_lowercase());
    }
    if let Some(h) = mail_parser::MessageParser::default().parse_headers(body)
        && let Some(list) = h.from()
    {
        out.extend(list.iter().filter_map(|a| a.address.as_deref().map(str::to_lowercase)));
    }
    out.sort();
    out.dedup();
    out
}
