//! The relay worker: claims due queue entries, attempts each, and reports back.
//!
//! One attempt of one entry: fetch the body, sign it, find the domain's hosts, and try them in
//! order until one gives every recipient an answer. Then [`decide`] (pure) turns the answers into
//! what goes back to the queue (the recipients to retry, with the next attempt after the
//! configured backoff) and the notifications the sender gets (failures, a delay warning, and
//! successes when asked). Notifications are sent before the entry is finished: a crash between
//! the two can repeat a notification, never lose one.
//!
//! An attempt ends before its lease does ([`RelayConfig::attempt_deadline`]), so no other worker
//! can claim an entry while it is being sent; a worker that dies leaves its leases to run out.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures::StreamExt;
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use tern_mail::dsn::{self, Action, RecipientStatus};
use tern_proto::v1::{
    ClaimQueueRequest, DeliveryAttempt, FetchQueuedBodyRequest, FinishQueuedRequest, ListQueueRequest, QueuedMessage,
    QueuedRecipient, mailbox_client::MailboxClient,
};
use tern_runtime::rpc::Channel;
use tokio::{sync::Semaphore, task::JoinSet};

use crate::{
    config::RelayConfig,
    dkim::Signer,
    report::send_report,
    route::{RouteError, Router},
    send::{self, Envelope, RcptOutcome, Sent, Settings},
};

/// Attempts kept in an entry's history.
pub(crate) const MAX_HISTORY: usize = 10;

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("invalid relay configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Resolver(#[from] tern_mail::dns::ResolverError),
    #[error("cannot set up verified TLS: {0}")]
    Tls(String),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The relay's metrics: what happened to recipients, and the queue as the worker last saw it.
#[derive(Debug, Clone, Default)]
struct RelayMetrics {
    recipients: Family<ResultLabel, Counter>,
    attempts: Counter,
    queue_depth: Gauge,
    oldest_age: Gauge,
}

impl RelayMetrics {
    /// The process's relay metrics, registered once however many workers it runs.
    fn global() -> Self {
        static METRICS: std::sync::OnceLock<RelayMetrics> = std::sync::OnceLock::new();
        METRICS.get_or_init(Self::register).clone()
    }

    fn register() -> Self {
        let m = Self::default();
        let global = tern_runtime::metrics::Metrics::global();
        global.register(
            "relay_recipients",
            "Recipients by result of an attempt (delivered, deferred, failed)",
            m.recipients.clone(),
        );
        global.register("relay_attempts", "Delivery attempts made", m.attempts.clone());
        global.register("relay_queue_depth", "Entries on the outbound queue", m.queue_depth.clone());
        global.register(
            "relay_queue_oldest_seconds",
            "Age of the oldest entry on the outbound queue",
            m.oldest_age.clone(),
        );
        // A family with no series is not listed at all: every result starts at zero, so that
        // the dashboard and the failure-ratio alert see the relay from its first scrape.
        for result in ["delivered", "deferred", "failed"] {
            let _ = m.recipients.get_or_create(&ResultLabel { result });
        }
        m
    }
}

/// A relay worker. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

struct Inner {
    client: MailboxClient<Channel>,
    cfg: RelayConfig,
    router: Router,
    signer: Signer,
    /// Verified TLS, for MTA-STS `enforce` destinations.
    verifying: Arc<rustls::ClientConfig>,
    mta_sts: crate::mta_sts::Fetcher,
    holder: String,
    domains: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// When the next delivery to a domain may start, under `per_domain_rate`.
    pacing: Mutex<HashMap<String, tokio::time::Instant>>,
    metrics: RelayMetrics,
    /// rspamd's controller, for the queue's learning tasks.
    learner: Option<tern_rspamd::Client>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("holder", &self.inner.holder).finish_non_exhaustive()
    }
}

impl Relay {
    /// A worker named `holder` (unique per process: its leases carry the name) speaking to the
    /// mailbox service over `channel`.
    pub fn new(channel: Channel, cfg: RelayConfig, holder: String) -> Result<Self, RelayError> {
        cfg.validate().map_err(RelayError::Config)?;
        let dns = Arc::new(tern_mail::dns::resolver(cfg.dns_server)?);
        let client = MailboxClient::new(channel.clone()).max_decoding_message_size(256 << 20);
        let verifying = send::verifying_config(cfg.extra_ca_file.as_deref()).map_err(RelayError::Tls)?;
        let mta_sts =
            crate::mta_sts::Fetcher::new(dns.clone(), verifying.clone(), cfg.mta_sts_port).map_err(RelayError::Tls)?;
        Ok(Self {
            inner: Arc::new(Inner {
                signer: Signer::new(client.clone()),
                client,
                router: Router::new(dns),
                verifying: Arc::new(verifying),
                mta_sts,
                holder,
                domains: Mutex::default(),
                pacing: Mutex::default(),
                metrics: RelayMetrics::global(),
                learner: None,
                cfg,
            }),
        })
    }

    /// Teaches rspamd through `client` the learning tasks this worker claims.
    pub fn with_learner(mut self, client: tern_rspamd::Client) -> Self {
        crate::learn::declare();
        Arc::get_mut(&mut self.inner).expect("called before the worker is shared").learner = Some(client);
        self
    }

    pub(crate) fn learner(&self) -> Option<&tern_rspamd::Client> {
        self.inner.learner.as_ref()
    }

    pub(crate) fn config(&self) -> &RelayConfig {
        &self.inner.cfg
    }

    pub(crate) fn holder(&self) -> &str {
        &self.inner.holder
    }

    pub(crate) fn client(&self) -> MailboxClient<Channel> {
        self.inner.client.clone()
    }

    /// Runs until `stop` completes, then lets the attempts in flight finish (for at most
    /// `grace`; what is cut short is retried after its lease runs out).
    pub async fn run(self, stop: impl std::future::Future<Output = ()>, grace: Duration) {
        let cfg = &self.inner.cfg;
        let slots = Arc::new(Semaphore::new(cfg.concurrency));
        let mut tasks = JoinSet::new();
        let poll = Duration::from_millis(cfg.poll_interval_ms.max(10));
        tokio::pin!(stop);
        let mut next_stats = tokio::time::Instant::now();
        tracing::info!(holder = %self.inner.holder, concurrency = cfg.concurrency, "relay worker started");
        loop {
            while tasks.try_join_next().is_some() {}
            if tokio::time::Instant::now() >= next_stats {
                next_stats += Duration::from_secs(15);
                self.refresh_queue_metrics().await;
            }
            let free = slots.available_permits();
            let claimed = if free == 0 { Ok(vec![]) } else { self.claim(free).await };
            let idle = match claimed {
                Ok(entries) if !entries.is_empty() => {
                    for entry in entries {
                        let permit = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
                        let relay = self.clone();
                        tasks.spawn(async move {
                            relay.process(entry).await;
                            drop(permit);
                        });
                    }
                    false
                }
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim queue entries");
                    true
                }
            };
            if idle || free == 0 {
                // Wake up early when an attempt ends: its slot may take the next entry.
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tokio::time::sleep(poll) => {}
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                }
            } else if futures::poll!(&mut stop).is_ready() {
                break;
            }
        }
        tracing::info!(in_flight = tasks.len(), "relay worker stopping");
        let _ = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        tasks.abort_all();
    }

    async fn claim(&self, max: usize) -> Result<Vec<QueuedMessage>, tonic::Status> {
        let request = ClaimQueueRequest {
            holder: self.inner.holder.clone(),
            max: max.min(256) as u32,
            lease_seconds: self.inner.cfg.lease_secs,
        };
        Ok(self.inner.client.clone().claim_queue(request).await?.into_inner().messages)
    }

    async fn refresh_queue_metrics(&self) {
        if let Ok(list) = self.inner.client.clone().list_queue(ListQueueRequest {}).await {
            let list = list.into_inner().messages;
            let oldest = list.iter().map(|m| m.queued_at).min().map(|t| (now() - t).max(0)).unwrap_or(0);
            self.inner.metrics.queue_depth.set(list.len() as i64);
            self.inner.metrics.oldest_age.set(oldest);
        }
    }

    /// One attempt of one entry, start to finish. Never fails: whatever goes wrong becomes the
    /// recipients' outcome, and a failure to report back leaves the lease to run out.
    pub async fn process(&self, entry: QueuedMessage) {
        if entry.learn() != tern_proto::v1::LearnClass::None {
            return self.learn(entry).await;
        }
        let cfg = &self.inner.cfg;
        let started = now();
        let (sent, host, original) = match tokio::time::timeout(cfg.attempt_deadline(), self.attempt(&entry)).await {
            Ok(result) => result,
            Err(_) => (
                Sent {
                    outcomes: entry
                        .recipients
                        .iter()
                        .map(|_| RcptOutcome::Transient("the attempt timed out".into()))
                        .collect(),
                    dsn: false,
                },
                None,
                Bytes::new(),
            ),
        };
        let outcomes = &sent.outcomes;
        self.inner.metrics.attempts.inc();
        for o in outcomes {
            let result = match o {
                RcptOutcome::Delivered(_) => "delivered",
                RcptOutcome::Transient(_) => "deferred",
                RcptOutcome::Permanent(_) => "failed",
            };
            self.inner.metrics.recipients.get_or_create(&ResultLabel { result }).inc();
        }
        let decision = decide(&entry, &sent, host.as_deref(), now(), cfg);
        tracing::info!(
            queue_id = %entry.queue_id,
            domain = %entry.domain,
            attempt = entry.attempts + 1,
            host = host.as_deref().unwrap_or("-"),
            delivered = outcomes.iter().filter(|o| matches!(o, RcptOutcome::Delivered(_))).count(),
            deferred = decision.retry.as_ref().map_or(0, |r| r.recipients.len()),
            failed = decision.failed.len(),
            seconds = now() - started,
            "delivery attempt"
        );
        for (statuses, what) in
            [(&decision.failed, "failure"), (&decision.delayed, "delay"), (&decision.delivered, "success")]
        {
            if !statuses.is_empty() && !entry.mail_from.is_empty() {
                self.notify(&entry, statuses.clone(), &original, what).await;
            }
        }
        let request = FinishQueuedRequest {
            queue_id: entry.queue_id.clone(),
            holder: self.inner.holder.clone(),
            retry: decision.retry,
        };
        if let Err(e) = self.inner.client.clone().finish_queued(request).await {
            tracing::warn!(queue_id = %entry.queue_id, error = %e.message(), "cannot report the attempt; the entry is retried when its lease runs out");
        }
    }

    /// Delivers to the domain's hosts: what the server answered, the host that answered, and
    /// the message as sent (for the notifications).
    async fn attempt(&self, entry: &QueuedMessage) -> (Sent, Option<String>, Bytes) {
        let all = |o: RcptOutcome| Sent { outcomes: entry.recipients.iter().map(|_| o.clone()).collect(), dsn: false };
        let cfg = &self.inner.cfg;
        let _slot = match self.domain_slot(&entry.domain).await {
            Some(s) => s,
            None => {
                return (
                    all(RcptOutcome::Transient("too many deliveries to this domain at once".into())),
                    None,
                    Bytes::new(),
                );
            }
        };
        if !self.pace(&entry.domain).await {
            return (all(RcptOutcome::Transient("rate limit for this domain reached".into())), None, Bytes::new());
        }
        let body = match self.body(&entry.queue_id).await {
            Ok(b) => b,
            Err(e) => {
                return (
                    all(RcptOutcome::Transient(format!("cannot read the message: {}", e.message()))),
                    None,
                    Bytes::new(),
                );
            }
        };
        let message = if cfg.dkim {
            match self.inner.signer.sign(body.to_vec(), &entry.mail_from).await {
                Ok(signed) => Bytes::from(signed),
                Err(e) => return (all(RcptOutcome::Transient(e.to_string())), None, body),
            }
        } else {
            body.clone()
        };
        let mut hosts = match self.inner.router.route(&entry.domain, cfg.max_hosts_per_attempt).await {
            Ok(h) => h,
            Err(RouteError::Permanent(m)) => return (all(RcptOutcome::Permanent(m)), None, body),
            Err(RouteError::Transient(m)) => return (all(RcptOutcome::Transient(m)), None, body),
        };
        let mut settings = Settings {
            hostname: cfg.hostname.clone(),
            port: cfg.port,
            tls: cfg.tls_for(&entry.domain),
            connect_timeout: Duration::from_secs(cfg.connect_timeout_secs),
            command_timeout: Duration::from_secs(cfg.command_timeout_secs),
            verify: None,
        };
        if cfg.mta_sts
            && let Some(policy) = self.inner.mta_sts.policy(&entry.domain).await
        {
            match policy.mode {
                crate::mta_sts::Mode::Enforce => {
                    hosts.retain(|h| policy.allows(&h.name));
                    if hosts.is_empty() {
                        let why = format!("no MX host of {} is one its MTA-STS policy names", entry.domain);
                        return (all(RcptOutcome::Transient(why)), None, body);
                    }
                    settings.verify = Some(self.inner.verifying.clone());
                }
                crate::mta_sts::Mode::Testing => {
                    tracing::debug!(domain = %entry.domain, "MTA-STS policy in testing mode: delivering as usual");
                }
                crate::mta_sts::Mode::None => {}
            }
        }
        let recipients: Vec<String> = entry.recipients.iter().map(|r| r.address.clone()).collect();
        let dsn = send::Dsn {
            ret: entry.ret.clone(),
            envid: entry.envid.clone(),
            notify: entry.recipients.iter().map(|r| r.notify.clone()).collect(),
            orcpt: entry.recipients.iter().map(|r| r.orcpt.clone()).collect(),
        };
        let envelope =
            Envelope { mail_from: &entry.mail_from, recipients: &recipients, message: &message, dsn: Some(&dsn) };
        let mut last = String::from("no host to try");
        for host in &hosts {
            match send::send(host, &settings, envelope).await {
                Ok(sent) => return (sent, Some(host.to_string()), body),
                Err(f) if f.permanent => return (all(RcptOutcome::Permanent(f.message)), Some(host.to_string()), body),
                Err(f) => {
                    tracing::debug!(queue_id = %entry.queue_id, %host, error = %f, "host failed; trying the next");
                    last = f.message;
                }
            }
        }
        (all(RcptOutcome::Transient(last)), None, body)
    }

    pub(crate) async fn body(&self, queue_id: &str) -> Result<Bytes, tonic::Status> {
        let mut stream = self
            .inner
            .client
            .clone()
            .fetch_queued_body(FetchQueuedBodyRequest { queue_id: queue_id.into() })
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?.chunk);
        }
        Ok(Bytes::from(out))
    }

    /// A place among the deliveries to one domain; `None` when none frees up within a quarter
    /// of the lease (the entry is then retried soon, without counting an attempt against it).
    async fn domain_slot(&self, domain: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let sem = {
            let mut map = self.inner.domains.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() > 10_000 {
                map.retain(|_, s| Arc::strong_count(s) > 1);
            }
            map.entry(domain.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.inner.cfg.per_domain_concurrency)))
                .clone()
        };
        let wait = Duration::from_secs(u64::from(self.inner.cfg.lease_secs) / 4);
        tokio::time::timeout(wait, sem.acquire_owned()).await.ok()?.ok()
    }

    /// Waits for the domain's next start under `per_domain_rate`; false when that is more than
    /// a quarter of the lease away (the entry is then retried later).
    async fn pace(&self, domain: &str) -> bool {
        let rate = self.inner.cfg.per_domain_rate;
        if rate <= 0.0 {
            return true;
        }
        let start = {
            let mut map = self.inner.pacing.lock().unwrap_or_else(|e| e.into_inner());
            let now = tokio::time::Instant::now();
            if map.len() > 10_000 {
                map.retain(|_, at| *at > now);
            }
            let slot = map.entry(domain.to_string()).or_insert(now);
            let start = (*slot).max(now);
            *slot = start + Duration::from_secs_f64(1.0 / rate);
            start
        };
        if start.saturating_duration_since(tokio::time::Instant::now())
            > Duration::from_secs(u64::from(self.inner.cfg.lease_secs) / 4)
        {
            return false;
        }
        tokio::time::sleep_until(start).await;
        true
    }

    async fn notify(&self, entry: &QueuedMessage, recipients: Vec<RecipientStatus>, original: &[u8], what: &str) {
        let report = dsn::build(&dsn::Report {
            reporting_mta: &self.inner.cfg.hostname,
            to: &entry.mail_from,
            envid: Some(entry.envid.as_str()),
            arrival_date: entry.queued_at,
            recipients,
            original,
            headers_only: entry.ret.eq_ignore_ascii_case("HDRS"),
        });
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        match send_report(&self.inner.client, &entry.mail_from, Bytes::from(report), ip).await {
            Ok(()) => {
                tracing::info!(queue_id = %entry.queue_id, to = %entry.mail_from, what, "delivery status notification sent")
            }
            Err(e) => {
                tracing::warn!(queue_id = %entry.queue_id, to = %entry.mail_from, error = %e, "cannot send the delivery status notification")
            }
        }
    }
}

/// What an attempt comes to.
#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    /// The entry as it goes back on the queue; `None` when it is done.
    pub retry: Option<QueuedMessage>,
    pub failed: Vec<RecipientStatus>,
    pub delayed: Vec<RecipientStatus>,
    /// Delivered recipients that asked for NOTIFY=SUCCESS, when the server that took them does
    /// not report delivery itself (Action: relayed).
    pub delivered: Vec<RecipientStatus>,
}

/// Whether the sender asked to hear of `kind` (FAILURE, DELAY, SUCCESS) for `r` (RFC 3461:
/// without NOTIFY, failures and delays).
fn wants(r: &QueuedRecipient, kind: &str) -> bool {
    if r.notify.is_empty() {
        return kind != "SUCCESS";
    }
    r.notify.iter().any(|n| n.eq_ignore_ascii_case(kind))
}

/// Turns an attempt's outcomes (one per recipient of `entry`, in order) into the queue update
/// and the notifications. Pure, so every rule is tested without a network.
pub fn decide(entry: &QueuedMessage, sent: &Sent, host: Option<&str>, now: i64, cfg: &RelayConfig) -> Decision {
    let outcomes = &sent.outcomes;
    let mut d = Decision::default();
    let expired = now >= entry.queued_at.saturating_add(cfg.lifetime_secs as i64);
    let mut remaining = Vec::new();
    let status = |r: &QueuedRecipient, action, diagnostic: &str| RecipientStatus {
        recipient: r.address.clone(),
        original_recipient: Some(r.orcpt.clone()).filter(|o| !o.is_empty()),
        action,
        status: dsn::status_of(diagnostic),
        diagnostic: diagnostic.to_string(),
        remote_mta: host.map(|h| h.split(' ').next().unwrap_or(h).to_string()),
    };
    let mut summary = Vec::new();
    for (r, o) in entry.recipients.iter().zip(outcomes) {
        match o {
            RcptOutcome::Delivered(reply) => {
                // A server that took the DSN parameters reports delivery itself (RFC 3461
                // section 6.2.1); to one that did not, the message was relayed.
                if wants(r, "SUCCESS") && !sent.dsn {
                    d.delivered.push(status(r, Action::Relayed, reply));
                }
            }
            RcptOutcome::Permanent(why) => {
                summary.push(format!("{}: {why}", r.address));
                if wants(r, "FAILURE") {
                    d.failed.push(status(r, Action::Failed, why));
                }
            }
            RcptOutcome::Transient(why) if expired => {
                summary.push(format!("{}: {why}", r.address));
                if wants(r, "FAILURE") {
                    let mut s = status(r, Action::Failed, why);
                    // The recipient was only ever deferred: say it expired (RFC 3463 4.4.7).
                    s.status = "4.4.7".into();
                    s.diagnostic = format!("{why} (gave up after {} attempts)", entry.attempts + 1);
                    d.failed.push(s);
                }
            }
            RcptOutcome::Transient(why) => {
                summary.push(format!("{}: {why}", r.address));
                remaining.push((r.clone(), why.clone()));
            }
        }
    }
    if remaining.is_empty() {
        return d;
    }
    let mut delay_warned = entry.delay_warned;
    if !delay_warned && cfg.delay_warning_secs > 0 && now - entry.queued_at >= cfg.delay_warning_secs as i64 {
        delay_warned = true;
        d.delayed = remaining
            .iter()
            .filter(|(r, _)| wants(r, "DELAY"))
            .map(|(r, why)| status(r, Action::Delayed, why))
            .collect();
    }
    let attempts = entry.attempts + 1;
    let mut history = entry.history.clone();
    history.push(DeliveryAttempt { at: now, host: host.unwrap_or_default().to_string(), result: summary.join("; ") });
    if history.len() > MAX_HISTORY {
        history.drain(..history.len() - MAX_HISTORY);
    }
    d.retry = Some(QueuedMessage {
        recipients: remaining.into_iter().map(|(r, _)| r).collect(),
        attempts,
        history,
        next_attempt_at: now + cfg.backoff(attempts).as_secs() as i64,
        delay_warned,
        ..entry.clone()
    });
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(recipients: &[&str]) -> QueuedMessage {
        QueuedMessage {
            queue_id: "Q1".into(),
            mail_from: "ann@here.test".into(),
            domain: "far.test".into(),
            recipients: recipients
                .iter()
                .map(|a| QueuedRecipient { address: a.to_string(), ..Default::default() })
                .collect(),
            queued_at: 1000,
            ..Default::default()
        }
    }

    fn sent(outcomes: &[RcptOutcome]) -> Sent {
        Sent { outcomes: outcomes.to_vec(), dsn: false }
    }

    fn cfg() -> RelayConfig {
        RelayConfig {
            retry_schedule_secs: vec![60, 600],
            lifetime_secs: 3600,
            delay_warning_secs: 1800,
            ..Default::default()
        }
    }

    #[test]
    fn delivered_and_refused_recipients_are_done_and_deferred_ones_retried() {
        let e = entry(&["a@far.test", "b@far.test", "c@far.test"]);
        let outcomes = [
            RcptOutcome::Delivered("250 ok".into()),
            RcptOutcome::Permanent("550 5.1.1 No such user".into()),
            RcptOutcome::Transient("451 4.3.0 Later".into()),
        ];
        let d = decide(&e, &sent(&outcomes), Some("mx.far.test [127.0.0.2]"), 1010, &cfg());
        assert_eq!(d.failed.len(), 1);
        assert_eq!(d.failed[0].status, "5.1.1");
        assert_eq!(d.failed[0].remote_mta.as_deref(), Some("mx.far.test"));
        assert!(d.delivered.is_empty(), "no NOTIFY=SUCCESS was asked for");
        let retry = d.retry.unwrap();
        assert_eq!(retry.recipients.len(), 1);
        assert_eq!(retry.recipients[0].address, "c@far.test");
        assert_eq!(retry.attempts, 1);
        assert_eq!(retry.next_attempt_at, 1070);
        assert_eq!(retry.history.len(), 1);
        assert!(retry.history[0].result.contains("451 4.3.0"));
    }

    #[test]
    fn backoff_follows_the_schedule() {
        let mut e = entry(&["a@far.test"]);
        e.attempts = 1;
        let d = decide(&e, &sent(&[RcptOutcome::Transient("x".into())]), None, 2000, &cfg());
        assert_eq!(d.retry.unwrap().next_attempt_at, 2600);
    }

    #[test]
    fn deferred_recipients_fail_once_the_lifetime_is_over() {
        let e = entry(&["a@far.test"]);
        let d = decide(&e, &sent(&[RcptOutcome::Transient("421 busy".into())]), None, 1000 + 3600, &cfg());
        assert!(d.retry.is_none());
        assert_eq!(d.failed.len(), 1);
        assert_eq!(d.failed[0].status, "4.4.7");
    }

    #[test]
    fn the_sender_is_warned_of_a_delay_once() {
        let e = entry(&["a@far.test"]);
        let d = decide(&e, &sent(&[RcptOutcome::Transient("451 later".into())]), None, 1000 + 1800, &cfg());
        assert_eq!(d.delayed.len(), 1);
        let again =
            decide(&d.retry.unwrap(), &sent(&[RcptOutcome::Transient("451 later".into())]), None, 1000 + 2000, &cfg());
        assert!(again.delayed.is_empty());
    }

    #[test]
    fn notify_never_and_success_are_honoured() {
        let mut e = entry(&["a@far.test", "b@far.test"]);
        e.recipients[0].notify = vec!["NEVER".into()];
        e.recipients[1].notify = vec!["SUCCESS".into()];
        let outcomes = [RcptOutcome::Permanent("550 no".into()), RcptOutcome::Delivered("250 ok".into())];
        let d = decide(&e, &sent(&outcomes), None, 1001, &cfg());
        assert!(d.failed.is_empty());
        assert_eq!(d.delivered.len(), 1);
        assert_eq!(d.delivered[0].action, Action::Relayed);
        assert!(d.retry.is_none());
        // A server that took NOTIFY reports success itself.
        let d = decide(&e, &Sent { outcomes: outcomes.to_vec(), dsn: true }, None, 1001, &cfg());
        assert!(d.delivered.is_empty());
    }
}
