//! The greeting (RFC 5321 section 4.3.1), after the connection-time checks of MX clients (see
//! `crate::screen`): a client in a DNS blocklist is refused with 554 instead of a greeting, and
//! with pregreet detection on, the greeting is sent in two parts, the first line at once and
//! the last after a wait, and a client that talks in between is refused with 521. A real MTA
//! waits for the whole greeting before it speaks; a spam bot often does not.

use super::{Flow, Session};
use crate::{
    backend::Backend,
    codec::Reply,
    config::ListenerKind,
    screen::{ScreenMetrics, ZoneLabel},
};

impl<B: Backend> Session<B> {
    pub(crate) async fn greet(&mut self) -> std::io::Result<Flow> {
        let mx = self.kind == ListenerKind::Mx;
        if let (true, Some(dnsbl)) = (mx, &self.cfg.dnsbl) {
            let ip = self.peer.ip();
            if let Some(listing) = dnsbl.check(ip).await {
                ScreenMetrics::global().dnsbl.get_or_create(&ZoneLabel { zone: listing.zone.clone() }).inc();
                tracing::info!(%ip, zone = %listing.zone, answer = %listing.answer, "client refused: DNS blocklist");
                let why = if listing.meaning.is_empty() { String::new() } else { format!(": {}", listing.meaning) };
                self.reply(Reply::new(
                    554,
                    "5.7.1",
                    format!("Service unavailable; client [{ip}] blocked using {}{why}", listing.zone),
                ));
                return Ok(Flow::Close);
            }
        }
        let wait = self.cfg.limits.pregreet_wait;
        let text = format!("{} ESMTP Tern", self.cfg.hostname);
        if mx && !wait.is_zero() {
            self.conn.wbuf.extend_from_slice(format!("220-{text}\r\n").as_bytes());
            self.flush().await?;
            // Input that came with the connection (after a PROXY header) counts as well.
            let talked = !self.conn.rbuf.is_empty()
                || match self.fill(wait).await {
                    Ok(more) => more,
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => false,
                    Err(e) => return Err(e),
                };
            if talked {
                ScreenMetrics::global().pregreet.inc();
                tracing::info!(ip = %self.peer.ip(), "client refused: it talked before the greeting");
                self.reply(Reply::new(521, "5.5.1", "Protocol error: talking before the greeting"));
                return Ok(Flow::Close);
            }
        }
        self.reply(Reply::new(220, "", text));
        Ok(Flow::Continue)
    }
}
