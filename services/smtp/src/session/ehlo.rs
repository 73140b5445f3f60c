//! EHLO and HELO (RFC 5321 section 4.1.1.1): greet, reset the transaction, list extensions.

use super::{Flow, Session, Transaction};
use crate::{backend::Backend, codec::Reply};

impl<B: Backend> Session<B> {
    pub(crate) fn ehlo(&mut self, host: String, extended: bool) -> Flow {
        self.helo = Some(host.clone());
        self.esmtp = extended;
        self.txn = Transaction::default();
        if !extended {
            self.reply(Reply::new(250, "", format!("{} greets {host}", self.cfg.hostname)));
            return Flow::Continue;
        }
        let mut lines = vec![
            format!("{} greets {host}", self.cfg.hostname),
            "PIPELINING".into(),
            format!("SIZE {}", self.cfg.limits.max_message_bytes),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "CHUNKING".into(),
            "DSN".into(),
        ];
        if self.cfg.tls.is_some() && !self.is_tls() {
            lines.push("STARTTLS".into());
        }
        // AUTH is offered where it is used (submission) and only once it cannot leak the
        // password: after TLS.
        if self.kind.is_submission() && (self.is_tls() || self.cfg.allow_plaintext_auth) && self.account.is_none() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        self.reply(Reply::multi(250, "", lines));
        Flow::Continue
    }
}
