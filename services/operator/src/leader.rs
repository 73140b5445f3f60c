//! Leader election over a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it,
//! so that two operator replicas never reconcile at once: one holds the Lease and renews it;
//! the others wait and take it over once it has not been renewed for its duration.
//!
//! What a replica does with the Lease it read is decided by [`step`], a pure function. Every
//! write carries the `resourceVersion` it read, so two replicas taking over one expired Lease
//! cannot both succeed: the API server refuses the second with a conflict.
//!
//! A leader that cannot renew within the Lease's duration stops leading (the caller exits, and
//! Kubernetes restarts it as a follower) before another replica may take over; on a graceful
//! shutdown it gives the Lease up at once, so a rolling update fails over in seconds.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;

/// How a replica takes part in the election.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    /// The Lease's name, in the operator's namespace.
    pub lease_name: String,
    /// This replica's identity (its pod name): unique among the replicas.
    pub identity: String,
    /// How long a Lease holds without renewal.
    pub lease_duration: Duration,
    /// How often the leader renews, and a follower looks again.
    pub retry_period: Duration,
}

impl ElectionConfig {
    pub fn new(identity: String) -> Self {
        Self {
            lease_name: "tern-operator".into(),
            identity,
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What to do with the Lease as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// There is no Lease: create it, held by us.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Its holder let it expire, or gave it up: take it over.
    TakeOver,
    /// Someone else holds it.
    Follow { holder: String },
}

/// Decides what `identity` does with `lease` (None: there is none) at `now`.
pub fn step(lease: Option<&LeaseSpec>, identity: &str, now: Timestamp, default_duration: Duration) -> Step {
    let Some(spec) = lease else { return Step::Create };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == identity {
        return Step::Renew;
    }
    if holder.is_empty() {
        return Step::TakeOver;
    }
    let duration =
        spec.lease_duration_seconds.and_then(|s| u64::try_from(s).ok()).map_or(default_duration, Duration::from_secs);
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map(|t| t.0);
    let expired = match renewed {
        Some(at) => at.checked_add(duration).is_ok_and(|end| end <= now),
        None => true,
    };
    if expired { Step::TakeOver } else { Step::Follow { holder: holder.to_string() } }
}

#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error("cannot read or write the Lease {name}: {source}")]
    Api {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("lost the Lease {0}: it was not renewed within its duration")]
    Lost(String),
}

/// One replica's side of the election.
#[derive(Debug, Clone)]
pub struct Elector {
    api: Api<Lease>,
    cfg: ElectionConfig,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl Elector {
    pub fn new(api: Api<Lease>, cfg: ElectionConfig) -> Self {
        Self { api, cfg }
    }

    fn err(&self) -> impl Fn(kube::Error) -> ElectionError + '_ {
        |source| ElectionError::Api { name: self.cfg.lease_name.clone(), source }
    }

    /// One round: reads the Lease and creates, renews or takes it over when [`step`] says so.
    /// True when this replica holds the Lease afterwards; a conflict (another replica wrote
    /// first) is false, not an error.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, ElectionError> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.cfg.lease_name).await.map_err(self.err())?;
        let seconds = i32::try_from(self.cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let result = match step(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.cfg.identity,
            now,
            self.cfg.lease_duration,
        ) {
            Step::Follow { holder } => {
                tracing::debug!(%holder, "another replica leads");
                return Ok(false);
            }
            Step::Create => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(self.cfg.lease_name.clone()), ..Default::default() },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.cfg.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await.map(|_| ())
            }
            step @ (Step::Renew | Step::TakeOver) => {
                // `current` is Some here: Renew and TakeOver are decided on a Lease.
                let mut lease = current.unwrap_or_default();
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if step == Step::TakeOver {
                    spec.holder_identity = Some(self.cfg.identity.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                    tracing::info!(lease = %self.cfg.lease_name, "taking over the expired Lease");
                }
                spec.lease_duration_seconds = Some(seconds);
                spec.renew_time = Some(MicroTime(now));
                // The resourceVersion read is kept: a replace of a changed Lease is a conflict.
                self.api.replace(&self.cfg.lease_name, &PostParams::default(), &lease).await.map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(e) if is_conflict(&e) || matches!(&e, kube::Error::Api(s) if s.code == 404) => Ok(false),
            Err(e) => Err(self.err()(e)),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(identity = %self.cfg.identity, lease = %self.cfg.lease_name, "became the leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election failed; trying again"),
            }
            tokio::time::sleep(self.cfg.retry_period).await;
        }
    }

    /// Renews the Lease every retry period; returns when leadership is lost, that is when no
    /// renewal succeeded for two thirds of the Lease's duration (before any other replica may
    /// take over), or another replica holds it.
    pub async fn keep(&self) -> ElectionError {
        let deadline = self.cfg.lease_duration * 2 / 3;
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.cfg.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last = tokio::time::Instant::now(),
                Ok(false) => return ElectionError::Lost(self.cfg.lease_name.clone()),
                Err(e) => tracing::warn!(error = %e, "cannot renew the Lease"),
            }
            if last.elapsed() >= deadline {
                return ElectionError::Lost(self.cfg.lease_name.clone());
            }
        }
    }

    /// Gives the Lease up, so that another replica takes over at once (a graceful shutdown).
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.lease_name).await else { return };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self.api.replace(&self.cfg.lease_name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(lease = %self.cfg.lease_name, "gave the Lease up"),
            Err(e) => tracing::warn!(error = %e, "cannot give the Lease up; it expires by itself"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn held_by(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            ..Default::default()
        }
    }

    #[test]
    fn no_lease_is_created_and_our_own_is_renewed() {
        assert_eq!(step(None, "a", at(0), D), Step::Create);
        assert_eq!(step(Some(&held_by("a", 0)), "a", at(100), D), Step::Renew);
    }

    #[test]
    fn another_holder_is_followed_until_its_lease_expires() {
        let lease = held_by("b", 0);
        assert_eq!(step(Some(&lease), "a", at(14), D), Step::Follow { holder: "b".into() });
        assert_eq!(step(Some(&lease), "a", at(15), D), Step::TakeOver);
    }

    #[test]
    fn a_released_or_timeless_lease_is_taken_over() {
        let released = LeaseSpec { holder_identity: None, ..held_by("b", 0) };
        assert_eq!(step(Some(&released), "a", at(1), D), Step::TakeOver);
        let timeless = LeaseSpec { renew_time: None, acquire_time: None, ..held_by("b", 0) };
        assert_eq!(step(Some(&timeless), "a", at(1), D), Step::TakeOver);
    }
}
