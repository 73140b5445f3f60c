//! UNAUTHENTICATE (RFC 5804 section 2.14.1): back to the non-authenticated state, TLS kept, so
//! that the client can log in as someone else without a new connection.

use super::{Flow, Session};
use crate::codec::Response;

impl Session {
    pub(crate) fn unauthenticate(&mut self) -> Flow {
        if let Some(account) = self.account.take() {
            tracing::info!(user = %account.address, "unauthenticated");
        }
        self.send(Response::ok("Unauthenticated"));
        Flow::Continue
    }
}
