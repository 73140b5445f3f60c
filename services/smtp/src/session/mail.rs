//! MAIL FROM (RFC 5321 section 4.1.1.2): starts a transaction.

use super::{Flow, Session, Transaction};
use crate::{
    backend::Backend,
    codec::{MailParams, Path, Reply, command::Body},
};

impl<B: Backend> Session<B> {
    pub(crate) fn mail(&mut self, path: Path, params: MailParams) -> Flow {
        if self.helo.is_none() {
            return self.error(Reply::new(503, "5.5.1", "Say EHLO first"));
        }
        if self.txn.from.is_some() {
            return self.error(Reply::new(503, "5.5.1", "Nested MAIL command"));
        }
        if self.kind.is_submission() && self.account.is_none() {
            return self.error(Reply::new(530, "5.7.0", "Authentication required"));
        }
        if !self.esmtp && (params != MailParams::default()) {
            return self.error(Reply::new(555, "5.5.4", "Parameters need EHLO"));
        }
        if params.body == Body::BinaryMime {
            return self.error(Reply::new(555, "5.5.4", "BINARYMIME is not supported"));
        }
        if let Some(size) = params.size
            && size > self.cfg.limits.max_message_bytes
        {
            return self.error(Reply::new(
                552,
                "5.3.4",
                format!("Message size exceeds the limit of {} bytes", self.cfg.limits.max_message_bytes),
            ));
        }
        if let Some(addr) = path.address()
            && !params.smtputf8
            && !addr.is_ascii()
        {
            return self.error(Reply::new(553, "5.6.7", "Non-ASCII address requires SMTPUTF8"));
        }
        // A submitter sends as itself: its address or one of its aliases, never as anyone else.
        if let Some(account) = &self.account {
            match path.address() {
                Some(addr) if account.owns(addr) => {}
                Some(_) => {
                    return self.error(Reply::new(
                        553,
                        "5.7.1",
                        "Sender address is not owned by the authenticated user",
                    ));
                }
                None => return self.error(Reply::new(553, "5.7.1", "The null sender is not allowed for submission")),
            }
        }
        self.txn = Transaction { from: Some(path), params, ..Default::default() };
        self.reply(Reply::new(250, "2.1.0", "Sender OK"));
        Flow::Continue
    }
}
