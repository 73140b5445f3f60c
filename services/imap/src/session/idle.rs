//! IDLE (RFC 2177, RFC 9051 section 6.3.13): other sessions' changes are pushed as they are
//! committed, with a keepalive so NAT boxes keep the connection, until the client says DONE.

use bytes::Buf;
use imap_codec::{
    IdleDoneCodec,
    decode::{Decoder, IdleDoneDecodeError},
    imap_types::core::Tag,
};

use super::{Flow, Session, Update, response::Response};

/// How long IDLE waits before it tries again to follow the account's changes after that failed.
const RESUBSCRIBE: std::time::Duration = std::time::Duration::from_secs(1);

impl Session {
    pub(crate) async fn idle(&mut self, tag: &Tag<'static>) -> std::io::Result<Flow> {
        self.sync_updates(true).await;
        self.send(Response::Continue("idling"));
        self.flush().await?;
        let mut keepalive = tokio::time::interval(self.cfg.limits.idle_keepalive);
        keepalive.tick().await;
        let mut shutdown = self.shutdown.clone();
        loop {
            // A DONE (or anything else) may already be buffered.
            let input_len = self.input().len();
            let decoded = IdleDoneCodec::default().decode(self.input()).map(|(rest, _)| input_len - rest.len());
            match decoded {
                Ok(used) => {
                    self.input().advance(used);
                    self.sync_updates(true).await;
                    self.ok(tag, "IDLE terminated");
                    return Ok(Flow::Continue);
                }
                Err(IdleDoneDecodeError::Failed) => {
                    // The rest of the line, arrived or not, goes with it.
                    let flow = self.bad(tag, "Expected DONE");
                    if flow == Flow::Close || !self.skip_line().await? {
                        return Ok(Flow::Close);
                    }
                    return Ok(flow);
                }
                Err(IdleDoneDecodeError::Incomplete) => {}
            }
            let mut rx = self.updates.take();
            let event = async {
                match rx.as_mut() {
                    Some(rx) => Some(rx.next().await),
                    // No feed (following the account failed, say while the store was away):
                    // try again in a moment rather than idle deaf until DONE.
                    None => {
                        tokio::time::sleep(RESUBSCRIBE).await;
                        None
                    }
                }
            };
            tokio::select! {
                update = event => {
                    self.updates = rx;
                    match update {
                        Some(Update::Event(e)) => {
                            self.apply(&e);
                            self.notify_other(&e).await;
                            self.announce_expunges(true);
                            // The change goes out before the claim of new messages as
                            // recent, which is a write and may take a moment.
                            self.flush().await?;
                            self.claim_new_recent().await;
                        }
                        // The feed broke or ended: resynchronise, then carry on.
                        Some(Update::Resync) | None => self.sync_updates(true).await,
                    }
                    self.flush().await?;
                }
                more = self.fill() => {
                    self.updates = rx;
                    match more {
                        Ok(true) => {}
                        Ok(false) => return Ok(Flow::Close),
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                            self.send(Response::bye(None, "Autologout: idle for too long"));
                            return Ok(Flow::Close);
                        }
                        Err(e) => return Err(e),
                    }
                }
                _ = keepalive.tick() => {
                    self.updates = rx;
                    self.send(Response::ok(None, "Still here"));
                    self.flush().await?;
                }
                () = tern_runtime::listener::stopped(&mut shutdown) => {
                    self.updates = rx;
                    self.send(Response::bye(None, "Server shutting down, reconnect later"));
                    return Ok(Flow::Close);
                }
            }
        }
    }
}
