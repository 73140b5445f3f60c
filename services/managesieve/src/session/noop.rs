//! NOOP (RFC 5804 section 2.13): nothing, with the client's tag echoed in the TAG response code,
//! which clients use to find the end of what the server sent before (sieve-connect does after
//! STARTTLS).

use super::{Flow, Session};
use crate::codec::{Code, Response};

impl Session {
    pub(crate) fn noop(&mut self, tag: Option<String>) -> Flow {
        self.send(Response::Ok(tag.map(Code::Tag), "Done".into()));
        Flow::Continue
    }
}
