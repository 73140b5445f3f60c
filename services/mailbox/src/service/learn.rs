//! Learning from users: a message moved (or copied) into an account's junk folder is spam, one
//! moved out of it (anywhere but Trash) is ham. Each becomes a task on the queue the relay
//! claims, so that rspamd is taught asynchronously, retried while it is down, and taught once
//! however many replicas there are; the IMAP command never waits for it.
//!
//! A junk folder is the one the account's settings name, or any folder marked `\Junk`.
//! Moving from Junk to Trash says nothing about the message and teaches nothing, as with
//! Dovecot's antispam plugin.

use tern_proto::v1::{FolderRef, LearnClass, QueuedMessage, QueuedRecipient, SpamScan};

use super::{MailboxService, now};
use crate::{
    Result,
    records::{FolderRecord, SpecialUse},
    store::CopyOutcome,
};

impl MailboxService {
    /// Queues what a COPY or MOVE from `source_folder_id` teaches, if anything. Failing to queue
    /// is logged and never fails the command: the messages were copied.
    pub(crate) async fn learn_from_copy(&self, account_id: u64, source_folder_id: u64, outcome: &CopyOutcome) {
        if !self.limits.learn_spam || outcome.destination_uids.is_empty() {
            return;
        }
        if let Err(e) = self.queue_learning(account_id, source_folder_id, outcome).await {
            tracing::warn!(account_id, error = %e, "could not queue learning for the spam filter");
        }
    }

    async fn queue_learning(&self, account_id: u64, source_folder_id: u64, outcome: &CopyOutcome) -> Result<()> {
        let Some(account) = self.store.account(account_id).await? else { return Ok(()) };
        let settings = self.resolve(&account.address).await?.spam;
        if settings.scan() == SpamScan::Off {
            return Ok(());
        }
        let is_junk = |f: &FolderRecord| f.special_use() == SpecialUse::Junk || f.name == settings.junk_folder;
        let source = self.store.folder(account_id, &FolderRef::id(source_folder_id)).await?;
        let destination = self.store.folder(account_id, &FolderRef::id(outcome.destination_folder_id)).await?;
        let class = match (is_junk(&source), is_junk(&destination)) {
            (false, true) => LearnClass::Spam,
            (true, false) if destination.special_use() != SpecialUse::Trash => LearnClass::Ham,
            _ => return Ok(()),
        };
        let max = self.limits.max_learn_per_command;
        let uids = &outcome.destination_uids[..outcome.destination_uids.len().min(max)];
        if uids.len() < outcome.destination_uids.len() {
            tracing::info!(
                account_id,
                learned = uids.len(),
                moved = outcome.destination_uids.len(),
                "only the first messages of a large move are learned"
            );
        }
        let messages = self.store.messages(account_id, outcome.destination_folder_id, uids, false).await?;
        let at = now();
        let entries: Vec<QueuedMessage> = messages
            .into_iter()
            .map(|(m, _)| QueuedMessage {
                recipients: vec![QueuedRecipient { address: account.address.clone(), ..Default::default() }],
                size: m.size,
                blob_id: m.blob_id,
                account_id,
                queued_at: at,
                next_attempt_at: at,
                learn: class as i32,
                ..Default::default()
            })
            .collect();
        let count = entries.len();
        self.store.enqueue(entries).await?;
        tracing::info!(account_id, class = ?class, messages = count, "queued for the spam filter to learn");
        Ok(())
    }
}
