//! What the controllers' watches may see, and how their failures show.
//!
//! - [`SecretScope`]: the namespaces the operator may read Secrets in. The Helm chart grants
//!   Secrets either cluster-wide or through a Role in the release namespace only; with the
//!   latter, a cluster-wide Secret watch is refused (403) forever, so the operator watches
//!   Secrets in exactly the namespaces it is told, and says so on the objects elsewhere
//!   (`SecretNamespaceNotWatched`) instead of failing on them.
//! - [`Health`]: the watches that are failing. A failing watch is retried with backoff; it is
//!   logged at WARN when it starts failing and then at most once a minute, counted in
//!   `tern_operator_watch_errors_total{resource}`, and makes the process not ready (`/readyz`)
//!   until it works again, so that an operator that cannot see what it manages does not look
//!   healthy.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::{counter::Counter, family::Family};

/// Where the operator may read (and create) Secrets: the password Secrets of Mailboxes and the
/// DKIM Secrets of Domains, which are in the namespace of the resource that uses them. The
/// ConfigMaps holding Mailboxes' Sieve scripts are read and watched in the same namespaces
/// (the chart grants them beside the Secrets): a Mailbox elsewhere is not reconciled at all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SecretScope {
    /// Every namespace: the operator's ClusterRole grants Secrets.
    #[default]
    Cluster,
    /// Only these namespaces (never empty): a Role in each grants Secrets.
    Namespaces(BTreeSet<String>),
}

impl SecretScope {
    /// The scope of a list of namespaces (from `--secret-namespace` or
    /// `TERN_OPERATOR_SECRET_NAMESPACES`); empty names are ignored, and no name at all is
    /// every namespace.
    pub fn from_namespaces<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let names: BTreeSet<String> =
            names.into_iter().map(|n| n.as_ref().trim().to_string()).filter(|n| !n.is_empty()).collect();
        if names.is_empty() { SecretScope::Cluster } else { SecretScope::Namespaces(names) }
    }

    /// Whether the operator may read Secrets in `namespace`.
    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            SecretScope::Cluster => true,
            SecretScope::Namespaces(names) => names.contains(namespace),
        }
    }

    /// The namespaces for people: `every namespace`, or `a, b`.
    pub fn describe(&self) -> String {
        match self {
            SecretScope::Cluster => "every namespace".to_string(),
            SecretScope::Namespaces(names) => names.iter().cloned().collect::<Vec<_>>().join(", "),
        }
    }
}

/// The labels of the watch error counter: the resource watched (`domains`, `mailboxes`,
/// `secrets`, `configmaps`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct WatchLabels {
    pub resource: String,
}

/// `tern_operator_watch_errors_total{resource}`: failed list or watch requests of the
/// controllers' watches. Registered, with each resource's series at zero, by its first call;
/// `main` calls it at start-up, so that the family is on `/metrics` before any watch runs (or
/// when the API server cannot be reached).
pub fn watch_errors() -> &'static Family<WatchLabels, Counter> {
    static WATCH_ERRORS: OnceLock<Family<WatchLabels, Counter>> = OnceLock::new();
    WATCH_ERRORS.get_or_init(|| {
        let family = Family::<WatchLabels, Counter>::default();
        // Every series at zero from the start (see `controller::reconciles`).
        for resource in ["domains", "mailboxes", "secrets", "configmaps"] {
            drop(family.get_or_create(&WatchLabels { resource: resource.to_string() }));
        }
        tern_runtime::metrics::Metrics::global().register(
            "operator_watch_errors",
            "Failed list or watch requests of the operator's watches, by resource",
            family.clone(),
        );
        family
    })
}

/// One watch: the resource and where (`None`: every namespace).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WatchTarget {
    pub resource: &'static str,
    pub namespace: Option<String>,
}

impl std::fmt::Display for WatchTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            None => write!(f, "{} in every namespace", self.resource),
            Some(ns) => write!(f, "{} in namespace {ns}", self.resource),
        }
    }
}

/// A watch that is failing.
#[derive(Debug)]
struct Failing {
    since: Instant,
    warned: Instant,
    errors: u64,
    last: String,
}

/// How often a watch that keeps failing is logged at WARN.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The watches that are failing, shared by the controllers and the readiness of the process.
#[derive(Debug, Clone, Default)]
pub struct Health {
    failing: Arc<Mutex<BTreeMap<WatchTarget, Failing>>>,
    /// Told whenever the set of failing watches changes (the process's `/readyz`).
    readiness: Option<tern_runtime::http::Readiness>,
}

impl Health {
    /// A health that also sets `readiness`: not ready while a watch fails, ready when none
    /// does.
    pub fn with_readiness(readiness: tern_runtime::http::Readiness) -> Self {
        Health { failing: Arc::default(), readiness: Some(readiness) }
    }

    fn failing(&self) -> std::sync::MutexGuard<'_, BTreeMap<WatchTarget, Failing>> {
        self.failing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a failed list or watch request of `target`.
    pub fn failed(&self, target: &WatchTarget, error: &dyn std::fmt::Display) {
        watch_errors().get_or_create(&WatchLabels { resource: target.resource.to_string() }).inc();
        let now = Instant::now();
        let newly = {
            let mut failing = self.failing();
            let newly = failing.is_empty();
            match failing.get_mut(target) {
                None => {
                    tracing::warn!(watch = %target, %error, "watch failed; retrying with backoff, not ready until it works");
                    failing.insert(
                        target.clone(),
                        Failing { since: now, warned: now, errors: 1, last: error.to_string() },
                    );
                }
                Some(state) => {
                    state.errors += 1;
                    state.last = error.to_string();
                    if now.duration_since(state.warned) >= WARN_EVERY {
                        state.warned = now;
                        tracing::warn!(
                            watch = %target, %error, failing_for = ?now.duration_since(state.since),
                            errors = state.errors, "watch still failing"
                        );
                    } else {
                        tracing::debug!(watch = %target, %error, "watch failed again");
                    }
                }
            }
            newly
        };
        if newly && let Some(readiness) = &self.readiness {
            readiness.set(false);
        }
    }

    /// Records a working list or watch of `target` (an event received).
    pub fn works(&self, target: &WatchTarget) {
        let now_healthy = {
            let mut failing = self.failing();
            match failing.remove(target) {
                None => false,
                Some(state) => {
                    tracing::info!(watch = %target, failed_for = ?state.since.elapsed(), "watch works again");
                    failing.is_empty()
                }
            }
        };
        if now_healthy && let Some(readiness) = &self.readiness {
            readiness.set(true);
        }
    }

    /// Why the process is not ready: one line per failing watch; empty when every watch works.
    pub fn problems(&self) -> Vec<String> {
        self.failing()
            .iter()
            .map(|(target, state)| {
                format!(
                    "watch of {target} failing for {}s ({} errors): {}",
                    state.since.elapsed().as_secs(),
                    state.errors,
                    state.last
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_namespace_is_every_namespace() {
        assert_eq!(SecretScope::from_namespaces(Vec::<String>::new()), SecretScope::Cluster);
        assert_eq!(SecretScope::from_namespaces(["", " "]), SecretScope::Cluster);
        let scope = SecretScope::from_namespaces(["mail", " team ", "mail"]);
        assert_eq!(scope, SecretScope::Namespaces(["mail".to_string(), "team".to_string()].into()));
        assert!(scope.allows("team") && !scope.allows("other"));
        assert_eq!(scope.describe(), "mail, team");
        assert!(SecretScope::Cluster.allows("anything"));
    }

    #[test]
    fn a_failing_watch_makes_the_process_not_ready_until_it_works() {
        let readiness = tern_runtime::http::Readiness::default();
        readiness.set(true);
        let health = Health::with_readiness(readiness.clone());
        let secrets = WatchTarget { resource: "secrets", namespace: None };
        let domains = WatchTarget { resource: "domains", namespace: None };
        health.failed(&secrets, &"403 Forbidden");
        health.failed(&secrets, &"403 Forbidden");
        health.failed(&domains, &"connection refused");
        assert!(!readiness.get());
        let problems = health.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[1].contains("secrets in every namespace") && problems[1].contains("2 errors"), "{problems:?}");
        health.works(&secrets);
        assert!(!readiness.get(), "domains still fail");
        health.works(&domains);
        assert!(readiness.get());
        assert!(health.problems().is_empty());
        let metrics = tern_runtime::metrics::Metrics::global().encode();
        assert!(metrics.contains(r#"tern_operator_watch_errors_total{resource="secrets"} 2"#), "{metrics}");
    }
}
