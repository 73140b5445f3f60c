//! LOGOUT (RFC 5804 section 2.3): the server answers and closes the connection.

use super::{Flow, Session};
use crate::codec::Response;

impl Session {
    pub(crate) fn logout(&mut self) -> Flow {
        self.send(Response::ok("Logout completed"));
        Flow::Close
    }
}
