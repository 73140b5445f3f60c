//! LISTSCRIPTS (RFC 5804 section 2.7): one line per script, its name as a string and `ACTIVE`
//! after the active one.

use super::{Flow, Session};
use crate::codec::{Response, encode_string};

impl Session {
    pub(crate) async fn listscripts(&mut self) -> Flow {
        match self.backend.list(self.account_id()).await {
            Ok(scripts) => {
                let mut out = Vec::new();
                for s in scripts {
                    encode_string(s.name.as_bytes(), &mut out);
                    if s.active {
                        out.extend_from_slice(b" ACTIVE");
                    }
                    out.extend_from_slice(b"\r\n");
                }
                self.raw(&out);
                self.send(Response::ok("Listscripts completed"));
            }
            Err(e) => self.failed(e),
        }
        Flow::Continue
    }
}
