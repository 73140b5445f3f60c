//! RENAMESCRIPT (RFC 5804 section 2.11.1): a taken new name is refused with ALREADYEXISTS; the
//! active script stays active under its new name.

use super::{Flow, Session};
use crate::codec::Response;

impl Session {
    pub(crate) async fn renamescript(&mut self, old: String, new: String) -> Flow {
        match self.backend.rename(self.account_id(), &old, &new).await {
            Ok(()) => self.send(Response::ok("Renamescript completed")),
            Err(e) => self.failed(e),
        }
        Flow::Continue
    }
}
