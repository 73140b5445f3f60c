//! STARTTLS (RFC 3207). Anything the client pipelined after the command is discarded before
//! the handshake, so that plain-text input cannot be injected into the TLS session, and the
//! session starts over (no HELO, no transaction, no AUTH).

use super::{Flow, Session, Transaction};
use crate::{backend::Backend, codec::Reply};

impl<B: Backend> Session<B> {
    pub(crate) async fn starttls(&mut self) -> std::io::Result<Flow> {
        let Some(tls) = self.cfg.tls.clone() else {
            return Ok(self.error(Reply::new(454, "4.7.0", "TLS not available")));
        };
        if self.is_tls() {
            return Ok(self.error(Reply::new(503, "5.5.1", "TLS already active")));
        }
        self.reply(Reply::new(220, "2.0.0", "Ready to start TLS"));
        self.start_tls(tls).await?;
        self.helo = None;
        self.esmtp = false;
        self.account = None;
        self.txn = Transaction::default();
        Ok(Flow::Continue)
    }
}
