//! The commands that need no more than a reply: RSET, NOOP, QUIT, VRFY, EXPN, HELP.

use super::{Flow, Session, Transaction};
use crate::{backend::Backend, codec::Reply};

impl<B: Backend> Session<B> {
    pub(crate) fn rset(&mut self) -> Flow {
        self.txn = Transaction::default();
        self.reply(Reply::new(250, "2.0.0", "Flushed"));
        Flow::Continue
    }

    pub(crate) fn noop(&mut self) -> Flow {
        self.reply(Reply::new(250, "2.0.0", "OK"));
        Flow::Continue
    }

    pub(crate) fn quit(&mut self) -> Flow {
        self.reply(Reply::new(221, "2.0.0", format!("{} closing connection", self.cfg.hostname)));
        Flow::Close
    }

    /// VRFY is disabled: it would tell spammers which addresses exist (RFC 5321 section 7.3).
    pub(crate) fn vrfy(&mut self) -> Flow {
        self.reply(Reply::new(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery"));
        Flow::Continue
    }

    pub(crate) fn expn(&mut self) -> Flow {
        self.reply(Reply::new(502, "5.5.1", "EXPN is disabled"));
        Flow::Continue
    }

    pub(crate) fn help(&mut self) -> Flow {
        self.reply(Reply::new(
            214,
            "2.0.0",
            "See RFC 5321; commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY STARTTLS AUTH",
        ));
        Flow::Continue
    }
}
