//! GETSCRIPT (RFC 5804 section 2.9): the script as a literal, then OK.

use super::{Flow, Session};
use crate::codec::Response;

impl Session {
    pub(crate) async fn getscript(&mut self, name: String) -> Flow {
        match self.backend.get(self.account_id(), &name).await {
            Ok(script) => {
                // Always a literal: a script has line ends, which a quoted string cannot hold,
                // and clients read either.
                let mut out = format!("{{{}}}\r\n", script.len()).into_bytes();
                out.extend_from_slice(script.as_bytes());
                out.extend_from_slice(b"\r\n");
                self.raw(&out);
                self.send(Response::ok("Getscript completed"));
            }
            Err(e) => self.failed(e),
        }
        Flow::Continue
    }
}
