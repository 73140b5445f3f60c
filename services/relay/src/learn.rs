//! The spam filter's learner: the queue entries that are learning tasks rather than outbound
//! mail (`QueuedMessage.learn`, queued by the mailbox service when a user moves a message into
//! or out of Junk). Each is sent to rspamd's controller as spam or ham for its account, and
//! finished; while rspamd is unavailable it is retried on the relay's schedule, for at most the
//! relay's message lifetime. Because the entries are claimed with leases like outbound mail,
//! any number of relay replicas learn each message once (rspamd also refuses to learn one
//! message twice, answering 208, which counts as done).

use std::sync::OnceLock;

use prometheus_client::metrics::{counter::Counter, family::Family};
use tern_proto::v1::{DeliveryAttempt, FinishQueuedRequest, LearnClass, QueuedMessage};
use tern_rspamd::{Learn, Learned};

use crate::worker::Relay;

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct LearnLabels {
    class: &'static str,
    result: &'static str,
}

/// Learning tasks by class (spam, ham) and result (learned, already learned, retried, dropped).
fn learns() -> &'static Family<LearnLabels, Counter> {
    static LEARNS: OnceLock<Family<LearnLabels, Counter>> = OnceLock::new();
    LEARNS.get_or_init(|| {
        let f = Family::<LearnLabels, Counter>::default();
        for class in ["spam", "ham"] {
            for result in ["learned", "already learned", "retried", "dropped"] {
                let _ = f.get_or_create(&LearnLabels { class, result });
            }
        }
        tern_runtime::metrics::Metrics::global().register(
            "spam_learns",
            "Messages taught to the spam filter, by class (spam, ham) and result",
            f.clone(),
        );
        f
    })
}

/// Creates the learning metrics' zero samples.
pub fn declare() {
    let _ = learns();
}

impl Relay {
    /// Processes one learning task, start to finish. Never fails: what goes wrong is retried or
    /// dropped with a log line.
    pub(crate) async fn learn(&self, entry: QueuedMessage) {
        let class = match entry.learn() {
            LearnClass::Spam => Learn::Spam,
            LearnClass::Ham => Learn::Ham,
            LearnClass::None => return,
        };
        let user = entry.recipients.first().map(|r| r.address.clone()).unwrap_or_default();
        let result = match self.learner() {
            None => Err((true, "no rspamd controller is configured ([spam] controller_url)".to_string())),
            Some(client) => match self.body(&entry.queue_id).await {
                Err(e) => Err((true, format!("cannot read the message: {}", e.message()))),
                Ok(body) => match client.learn(class, &user, body).await {
                    Ok(l) => Ok(l),
                    Err(e @ tern_rspamd::Error::Unavailable { .. }) => Err((true, e.to_string())),
                    Err(e) => Err((false, e.to_string())),
                },
            },
        };
        let now = crate::worker::now();
        let cfg = self.config();
        let (label, retry) = match result {
            Ok(Learned::Learned) => ("learned", None),
            Ok(Learned::AlreadyLearned) => ("already learned", None),
            Err((true, why)) if now - entry.queued_at < cfg.lifetime_secs as i64 => {
                tracing::warn!(queue_id = %entry.queue_id, user = %user, class = class.as_str(), error = %why, "learning deferred");
                let attempts = entry.attempts + 1;
                let mut history = entry.history.clone();
                history.push(DeliveryAttempt { at: now, host: String::new(), result: why });
                history.drain(..history.len().saturating_sub(crate::worker::MAX_HISTORY));
                let next_attempt_at = now + cfg.backoff(attempts).as_secs() as i64;
                ("retried", Some(QueuedMessage { attempts, history, next_attempt_at, ..entry.clone() }))
            }
            Err((_, why)) => {
                tracing::warn!(queue_id = %entry.queue_id, user = %user, class = class.as_str(), error = %why, "learning dropped");
                ("dropped", None)
            }
        };
        learns().get_or_create(&LearnLabels { class: class.as_str(), result: label }).inc();
        tracing::info!(queue_id = %entry.queue_id, user = %user, class = class.as_str(), result = label, "spam filter learning");
        let request =
            FinishQueuedRequest { queue_id: entry.queue_id.clone(), holder: self.holder().to_string(), retry };
        if let Err(e) = self.client().finish_queued(request).await {
            tracing::warn!(queue_id = %entry.queue_id, error = %e.message(), "cannot report the learning; it is retried when its lease runs out");
        }
    }
}
