//! PUTSCRIPT (RFC 5804 section 2.6): stores a script under a name, replacing one of the same
//! name. The mailbox service checks it (syntax, name, quotas) and refuses it whole, a syntax
//! error answered with NO and where it is ("line L, column C: ...").

use super::{Flow, Session, script_text};
use crate::codec::Response;

impl Session {
    pub(crate) async fn putscript(&mut self, name: String, script: Vec<u8>) -> Flow {
        let Some(script) = script_text(script) else {
            return self.error(Response::no("The script is not UTF-8"));
        };
        match self.backend.put(self.account_id(), &name, &script).await {
            Ok(()) => self.send(Response::ok("Putscript completed")),
            Err(e) => self.failed(e),
        }
        Flow::Continue
    }
}
