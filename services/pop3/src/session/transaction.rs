//! The TRANSACTION state (STAT, LIST, RETR, TOP, UIDL, DELE, RSET, NOOP, CAPA) and the UPDATE
//! state that QUIT enters. Message numbers index the snapshot taken at login.

use super::{Code, Flow, Session};
use crate::{
    backend::BackendError,
    codec::{
        Command,
        response::{encode_multiline, top},
    },
};

impl Session {
    /// The 0-based index of message `n`, unless it does not exist or is marked deleted.
    fn index(&self, n: u32) -> Option<usize> {
        let txn = self.txn.as_ref()?;
        let i = (n as usize).checked_sub(1)?;
        (i < txn.maildrop.messages.len() && !txn.deleted[i]).then_some(i)
    }

    fn no_such_message(&mut self) -> Flow {
        self.error(None, "No such message")
    }

    pub(crate) async fn transaction(&mut self, command: Command) -> std::io::Result<Flow> {
        let Some(txn) = self.txn.as_ref() else { return Ok(Flow::Close) };
        let live = || txn.maildrop.messages.iter().zip(&txn.deleted).enumerate().filter(|(_, (_, d))| !**d);
        match command {
            Command::Stat => {
                let (n, octets) = live().fold((0u64, 0u64), |(n, o), (_, (m, _))| (n + 1, o + m.size));
                self.ok(format!("{n} {octets}"));
            }
            Command::List(None) => {
                let lines: Vec<String> = live().map(|(i, (m, _))| format!("{} {}", i + 1, m.size)).collect();
                self.ok(format!("{} messages", lines.len()));
                for l in lines {
                    self.line(&l);
                }
                self.line(".");
            }
            Command::List(Some(n)) => match self.index(n) {
                Some(i) => {
                    let size = self.txn.as_ref().map(|t| t.maildrop.messages[i].size).unwrap_or(0);
                    self.ok(format!("{n} {size}"));
                }
                None => return Ok(self.no_such_message()),
            },
            Command::Uidl(None) => {
                let v = txn.maildrop.uidvalidity;
                let lines: Vec<String> = live().map(|(i, (m, _))| format!("{} {v}.{}", i + 1, m.uid)).collect();
                self.ok("Unique-ID listing follows");
                for l in lines {
                    self.line(&l);
                }
                self.line(".");
            }
            Command::Uidl(Some(n)) => match self.index(n) {
                Some(i) => {
                    let (v, uid) = self
                        .txn
                        .as_ref()
                        .map(|t| (t.maildrop.uidvalidity, t.maildrop.messages[i].uid))
                        .unwrap_or_default();
                    self.ok(format!("{n} {v}.{uid}"));
                }
                None => return Ok(self.no_such_message()),
            },
            Command::Retr(n) => return self.send(n, None).await,
            Command::Top { msg, lines } => return self.send(msg, Some(lines as usize)).await,
            Command::Dele(n) => match self.index(n) {
                Some(i) => {
                    if let Some(t) = self.txn.as_mut() {
                        t.deleted[i] = true;
                    }
                    self.ok(format!("Message {n} deleted"));
                }
                None => return Ok(self.no_such_message()),
            },
            Command::Rset => {
                let n = txn.maildrop.messages.len();
                if let Some(t) = self.txn.as_mut() {
                    t.deleted = vec![false; n];
                }
                self.ok(format!("Maildrop has {n} messages"));
            }
            Command::Noop => self.ok(""),
            Command::Capa => self.capabilities(),
            Command::Quit => return Ok(self.update().await),
            _ => return Ok(self.error(None, "Not allowed after login")),
        }
        Ok(Flow::Continue)
    }

    /// RETR (whole message) or TOP (header and `lines` body lines), dot-stuffed.
    async fn send(&mut self, n: u32, lines: Option<usize>) -> std::io::Result<Flow> {
        let Some(i) = self.index(n) else { return Ok(self.no_such_message()) };
        let Some((account, folder, uid)) =
            self.txn.as_ref().map(|t| (t.account.id, t.maildrop.folder_id, t.maildrop.messages[i].uid))
        else {
            return Ok(Flow::Close);
        };
        match self.backend.body(account, folder, uid).await {
            Ok(body) => {
                let part = match lines {
                    Some(l) => top(&body, l),
                    None => &body[..],
                };
                self.ok(format!("{} octets", body.len()));
                let mut out = Vec::with_capacity(part.len() + part.len() / 50 + 8);
                encode_multiline(part, &mut out);
                self.raw(&out);
                Ok(Flow::Continue)
            }
            Err(BackendError::Gone) => Ok(self.error(Some(Code::SysPerm), "Message was deleted by another session")),
            Err(e) => {
                tracing::warn!(error = %e, "reading a message failed");
                self.err(Some(Code::SysTemp), "Temporary failure reading the message");
                Ok(Flow::Continue)
            }
        }
    }

    /// The UPDATE state: removes what DELE marked, in one durable change, then says goodbye.
    async fn update(&mut self) -> Flow {
        let Some(txn) = self.txn.as_ref() else { return Flow::Close };
        let uids: Vec<u32> =
            txn.maildrop.messages.iter().zip(&txn.deleted).filter(|(_, d)| **d).map(|(m, _)| m.uid).collect();
        let count = uids.len();
        match self.backend.delete(&txn.account, txn.maildrop.folder_id, uids).await {
            Ok(()) => self.ok(format!("{} signing off ({count} messages deleted)", self.cfg.hostname)),
            Err(e) => {
                tracing::warn!(error = %e, "UPDATE failed; nothing was deleted");
                self.err(Some(Code::SysTemp), "Some deleted messages not removed; try again later");
            }
        }
        Flow::Close
    }
}
