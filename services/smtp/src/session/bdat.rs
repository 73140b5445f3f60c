//! BDAT (RFC 3030 CHUNKING): the message in counted chunks, with no dot-stuffing. A chunk is
//! always read off the connection, even when it is refused, so the session stays in sync.

use super::{Flow, Session, Transaction};
use crate::{backend::Backend, codec::Reply};

impl<B: Backend> Session<B> {
    pub(crate) async fn bdat(&mut self, size: u64, last: bool) -> std::io::Result<Flow> {
        let refusal = self.data_precheck();
        if let Some(reply) = refusal {
            self.read_exact_into(size, None).await?;
            self.txn = Transaction { from: self.txn.from.take(), ..Default::default() };
            return Ok(self.error(reply));
        }
        let max = self.cfg.limits.max_message_bytes;
        let mut chunks = self.txn.chunks.take().unwrap_or_default();
        let fits = !self.txn.chunks_too_large && (chunks.len() as u64).saturating_add(size) <= max;
        if fits {
            let mut buf = std::mem::take(&mut chunks);
            self.read_exact_into(size, Some(&mut buf)).await?;
            chunks = buf;
        } else {
            self.read_exact_into(size, None).await?;
            self.txn.chunks_too_large = true;
            chunks.clear();
        }
        if !last {
            self.txn.chunks = Some(chunks);
            if self.txn.chunks_too_large {
                self.reply(Reply::new(552, "5.3.4", "Message too big"));
            } else {
                self.reply(Reply::new(250, "2.0.0", format!("{size} octets received")));
            }
            return Ok(Flow::Continue);
        }
        if self.txn.chunks_too_large {
            self.txn = Transaction::default();
            self.reply(Reply::new(552, "5.3.4", "Message too big"));
            return Ok(Flow::Continue);
        }
        self.finish(chunks).await;
        Ok(Flow::Continue)
    }
}
