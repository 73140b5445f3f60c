//! CHECKSCRIPT (RFC 5804 section 2.12): the check of PUTSCRIPT without storing anything.

use super::{Flow, Session, script_text};
use crate::codec::Response;

impl Session {
    pub(crate) async fn checkscript(&mut self, script: Vec<u8>) -> Flow {
        let Some(script) = script_text(script) else {
            return self.error(Response::no("The script is not UTF-8"));
        };
        match self.backend.check(&script).await {
            Ok(()) => self.send(Response::ok("Script is valid")),
            Err(e) => self.failed(e),
        }
        Flow::Continue
    }
}
