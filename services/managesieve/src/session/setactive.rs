//! SETACTIVE (RFC 5804 section 2.8): makes a script the one that runs at delivery, or none
//! with the empty name.

use super::{Flow, Session};
use crate::codec::Response;

impl Session {
    pub(crate) async fn setactive(&mut self, name: String) -> Flow {
        match self.backend.set_active(self.account_id(), &name).await {
            Ok(()) if name.is_empty() => self.send(Response::ok("No script is active")),
            Ok(()) => self.send(Response::ok("Setactive completed")),
            Err(e) => self.failed(e),
        }
        Flow::Continue
    }
}
