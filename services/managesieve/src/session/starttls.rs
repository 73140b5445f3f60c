//! STARTTLS (RFC 5804 section 2.2): TLS before authentication, then the capabilities again,
//! since those sent in plain text may have been tampered with and some change under TLS.

use super::{Flow, Session};
use crate::codec::Response;

impl Session {
    pub(crate) async fn starttls(&mut self) -> std::io::Result<Flow> {
        let Some(tls) = self.cfg.tls.clone() else {
            return Ok(self.error(Response::no("TLS not available")));
        };
        if self.is_tls() {
            return Ok(self.error(Response::no("TLS already active")));
        }
        if self.account.is_some() {
            return Ok(self.error(Response::no("STARTTLS is only allowed before authentication")));
        }
        self.send(Response::ok("Begin TLS negotiation now"));
        // Anything pipelined after STARTTLS was sent in plain text; it must not reach the TLS
        // session (Conn::start_tls drops it).
        self.conn.start_tls(tls, self.cfg.limits.idle_timeout).await?;
        self.capabilities();
        self.send(Response::ok("TLS negotiation successful"));
        Ok(Flow::Continue)
    }
}
