//! DELETESCRIPT (RFC 5804 section 2.10): the active script is refused with ACTIVE.

use super::{Flow, Session};
use crate::codec::Response;

impl Session {
    pub(crate) async fn deletescript(&mut self, name: String) -> Flow {
        match self.backend.delete(self.account_id(), &name).await {
            Ok(()) => self.send(Response::ok("Deletescript completed")),
            Err(e) => self.failed(e),
        }
        Flow::Continue
    }
}
