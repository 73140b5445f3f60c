//! CAPABILITY (RFC 5804 section 2.4), and the capability lines the greeting and a successful
//! STARTTLS also send.

use super::{Flow, Session};
use crate::{
    codec::{Response, encode_string},
    config::sieve_extensions,
};

impl Session {
    /// Queues the capability lines, without the OK that ends them.
    pub(crate) fn capabilities(&mut self) {
        let mut lines: Vec<(&str, Option<String>)> = vec![("IMPLEMENTATION", Some("Tern".into()))];
        // No mechanism is offered where AUTHENTICATE would be refused; the list may be empty
        // only when STARTTLS is offered (section 1.7), which is the case unless TLS is not
        // configured at all, where AUTHENTICATE explains itself with AUTH-TOO-WEAK.
        let sasl = if self.may_login() && self.account.is_none() { "PLAIN" } else { "" };
        lines.push(("SASL", Some(sasl.into())));
        lines.push(("SIEVE", Some(sieve_extensions())));
        if self.cfg.tls.is_some() && !self.is_tls() && self.account.is_none() {
            lines.push(("STARTTLS", None));
        }
        lines.push(("MAXREDIRECTS", Some(self.cfg.limits.max_redirects.to_string())));
        if let Some(account) = &self.account {
            lines.push(("OWNER", Some(account.address.clone())));
        }
        lines.push(("UNAUTHENTICATE", None));
        lines.push(("VERSION", Some("1.0".into())));
        for (name, value) in lines {
            let mut line = Vec::new();
            encode_string(name.as_bytes(), &mut line);
            if let Some(value) = value {
                line.push(b' ');
                encode_string(value.as_bytes(), &mut line);
            }
            line.extend_from_slice(b"\r\n");
            self.raw(&line);
        }
    }

    pub(crate) fn capability(&mut self) -> Flow {
        self.capabilities();
        self.send(Response::ok("Capability completed"));
        Flow::Continue
    }
}
