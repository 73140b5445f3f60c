//! HAVESPACE (RFC 5804 section 2.5): whether a script of a size could be stored under a name.
//! Larger than a script may be is answered here, as the literal limit would refuse it; the
//! account's quotas are the mailbox service's.

use super::{Flow, Session};
use crate::codec::{Code, Response};

impl Session {
    pub(crate) async fn havespace(&mut self, name: String, size: u64) -> Flow {
        let max = self.cfg.limits.max_script_bytes;
        if size > max {
            self.send(Response::no_code(Code::QuotaMaxSize, format!("Script too large: at most {max} octets")));
            return Flow::Continue;
        }
        match self.backend.have_space(self.account_id(), &name, size).await {
            Ok(()) => self.send(Response::ok("Putscript would succeed")),
            Err(e) => self.failed(e),
        }
        Flow::Continue
    }
}
