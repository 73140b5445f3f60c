//! RCPT TO (RFC 5321 section 4.1.1.3): who gets the message. Local recipients are checked
//! with the mailbox service now (unknown user, suspended, over quota), so that the sender
//! learns about each one here rather than from a bounce. Non-local recipients are relayed, and
//! only for authenticated senders: Tern is never an open relay.

use super::{Flow, Recipient, Session};
use crate::{
    backend::{Backend, BackendError, Resolved},
    codec::{Path, RcptParams, Reply},
};

impl<B: Backend> Session<B> {
    pub(crate) async fn rcpt(&mut self, path: Path, params: RcptParams) -> Flow {
        if self.txn.from.is_none() {
            return self.error(Reply::new(503, "5.5.1", "Need MAIL before RCPT"));
        }
        if self.txn.recipients.len() >= self.cfg.limits.max_recipients {
            // 452 (not 5xx): the client sends the rest in another transaction (RFC 5321 4.5.3.1.10).
            self.reply(Reply::new(452, "4.5.3", "Too many recipients"));
            return Flow::Continue;
        }
        let Some(address) = path.address().map(str::to_string) else {
            return self.error(Reply::new(501, "5.1.3", "Bad recipient address"));
        };
        if !address.is_ascii() && !self.txn.params.smtputf8 {
            return self.error(Reply::new(553, "5.6.7", "Non-ASCII address requires SMTPUTF8"));
        }
        // RCPT TO:<postmaster> must always work; it means the postmaster of this host.
        let lookup = if address.eq_ignore_ascii_case("postmaster") {
            format!("postmaster@{}", self.cfg.hostname)
        } else {
            address.clone()
        };
        let local = match self.backend.resolve(&lookup).await {
            Ok(Resolved::Local { quota_bytes, used_bytes, spam, .. }) => {
                let size = self.txn.params.size.unwrap_or(0);
                if quota_bytes > 0 && used_bytes.saturating_add(size) > quota_bytes {
                    self.reply(Reply::new(452, "4.2.2", format!("<{address}>: mailbox full")));
                    return Flow::Continue;
                }
                Some(spam)
            }
            Ok(Resolved::NotLocal) => {
                if self.account.is_none() {
                    return self.error(Reply::new(550, "5.7.1", format!("<{address}>: relay access denied")));
                }
                None
            }
            Ok(Resolved::UnknownUser) | Err(BackendError::Permanent(_)) => {
                return self.error(Reply::new(550, "5.1.1", format!("<{address}>: no such user here")));
            }
            Ok(Resolved::Suspended) => {
                return self.error(Reply::new(550, "5.2.1", format!("<{address}>: mailbox disabled")));
            }
            Err(e) => {
                tracing::warn!(error = %e, "recipient lookup failed");
                self.reply(Reply::new(451, "4.4.3", "Temporary lookup failure, try again later"));
                return Flow::Continue;
            }
        };
        let spam = local.clone().unwrap_or_default();
        self.txn.recipients.push(Recipient { path: Path(Some(lookup)), params, local: local.is_some(), spam });
        self.reply(Reply::new(250, "2.1.5", "Recipient OK"));
        Flow::Continue
    }
}
