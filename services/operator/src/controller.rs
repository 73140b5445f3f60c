//! The kube-runtime controllers: they read the objects and the Secrets they refer to, run
//! [`crate::reconcile`], write the status, publish Events, and apply `reclaimPolicy` through
//! the finalizer `mail.tern.dev/cleanup`.
//!
//! A Domain without a referenced DKIM Secret gets one generated: `<domain object>-dkim` in its
//! namespace, owned by the Domain (garbage-collected with it), never regenerated while it
//! exists. Either way the key is also set in the mailbox service, where the relay reads it to
//! sign the domain's outbound mail.
//!
//! A Mailbox's Sieve script may be kept in a ConfigMap (`spec.sieve.configMapKeyRef`), read at
//! each reconcile of the Mailbox; an edit of the ConfigMap reconciles the Mailboxes naming it.
//!
//! Secrets and ConfigMaps are watched metadata-only (their data is never cached), cluster-wide
//! or in the namespaces of [`SecretScope`]; Domains and Mailboxes elsewhere get the `Ready`
//! reason `SecretNamespaceNotWatched`. Every watch reports to [`Health`]: failures are logged, counted
//! and make the process not ready (see [`crate::watch`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use prometheus_client::metrics::{counter::Counter, family::Family};
use secrecy::SecretString;
use serde::Serialize;

use crate::admin::{AdminApi, ApiError};
use crate::crd::{Condition, Domain, FINALIZER, HasConditions, Mailbox};
use crate::dkim;
use crate::reconcile::{self, ConfigMapInput, DkimInput, Next, Outcome, PasswordInput, PasswordMissing};
use crate::watch::{Health, SecretScope, WatchTarget};

/// The field manager of the status patches and the controller name of Events.
pub const MANAGER: &str = "tern-operator";

/// The labels of the reconcile counter: the kind and how the reconcile ended (`ready`,
/// `waiting`, `error`, `deleted`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ReconcileLabels {
    pub kind: String,
    pub result: String,
}

/// `tern_operator_reconciles_total{kind, result}`, registered in the process's registry (served
/// on `/metrics`) by its first call, which `main` makes at start-up (with
/// [`crate::watch::watch_errors`]) so that the families are there before any reconcile.
pub fn reconciles() -> &'static Family<ReconcileLabels, Counter> {
    static RECONCILES: OnceLock<Family<ReconcileLabels, Counter>> = OnceLock::new();
    RECONCILES.get_or_init(|| {
        let family = Family::<ReconcileLabels, Counter>::default();
        // Every series at zero from the start: the encoder writes nothing of an empty family,
        // and a counter that appears only at its first increment hides that increase from
        // `rate()`.
        for kind in [Domain::kind(&()), Mailbox::kind(&())] {
            for result in ["ready", "waiting", "error", "deleted"] {
                drop(family.get_or_create(&ReconcileLabels { kind: kind.to_string(), result: result.to_string() }));
            }
        }
        tern_runtime::metrics::Metrics::global().register(
            "operator_reconciles",
            "Reconciles of Domains and Mailboxes, by how they ended",
            family.clone(),
        );
        family
    })
}

fn count<K: Resource<DynamicType = ()>>(result: &str) {
    let labels = ReconcileLabels { kind: K::kind(&()).to_string(), result: result.to_string() };
    reconciles().get_or_create(&labels).inc();
}

/// Why a reconcile failed; the object is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("mailbox service: {0}")]
    Api(#[from] ApiError),
    #[error("not converged: {0}")]
    NotConverged(String),
    #[error("DKIM key: {0}")]
    Dkim(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

/// What the reconcilers share.
pub struct Context {
    pub client: Client,
    pub admin: Arc<dyn AdminApi>,
    pub reporter: Reporter,
    /// Consecutive failures per object, for the backoff; reset by a success.
    failures: Mutex<HashMap<String, u32>>,
    /// Every Domain resource, as the Domain controller's watch sees them (set by [`run`]), to
    /// find which of several Domains naming one mail domain owns it.
    domains: OnceLock<kube::runtime::reflector::Store<Domain>>,
    /// Where the operator may read Secrets; objects elsewhere are not reconciled.
    secrets: SecretScope,
    /// Where the watches report their failures.
    health: Health,
    /// What the Domains' DNS records publish besides their mail host.
    dns: reconcile::DnsSettings,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("reporter", &self.reporter).finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(client: Client, admin: Arc<dyn AdminApi>, instance: Option<String>) -> Self {
        let reporter = Reporter { controller: MANAGER.to_string(), instance };
        Context {
            client,
            admin,
            reporter,
            failures: Mutex::default(),
            domains: OnceLock::new(),
            secrets: SecretScope::Cluster,
            health: Health::default(),
            dns: reconcile::DnsSettings::default(),
        }
    }

    /// Publishes `dns` in the Domains' DNS records (the SRV ports, the discovery CNAMEs, the
    /// MTA-STS policy, the TLS reports' address).
    pub fn with_dns(mut self, dns: reconcile::DnsSettings) -> Self {
        self.dns = dns;
        self
    }

    /// Restricts the Secrets the operator reads, and watches, to `scope` (every namespace by
    /// default).
    pub fn with_secret_scope(mut self, scope: SecretScope) -> Self {
        self.secrets = scope;
        self
    }

    /// Reports the watches' failures to `health` (the process's readiness).
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = health;
        self
    }

    /// Where the operator may read Secrets.
    pub fn secret_scope(&self) -> &SecretScope {
        &self.secrets
    }

    /// Whether the Secrets of `object`'s namespace may be read.
    fn may_read_secrets<K: Resource>(&self, object: &K) -> bool {
        self.secrets.allows(&object.namespace().unwrap_or_default())
    }

    /// The Domain resource owning `domain`'s mail domain when it is another one (see
    /// [`reconcile::domain_owner`]); None without a watch (reconciles driven by tests).
    fn domain_owner(&self, domain: &Domain) -> Option<String> {
        let store = self.domains.get()?;
        let all = store.state();
        reconcile::domain_owner(domain, all.iter().map(|d| d.as_ref()))
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The delay before the next try of `key` after a failure: 5 s doubling up to 5 min.
    fn backoff(&self, key: String) -> Duration {
        let mut failures = self.failures();
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n)
    }

    fn succeeded(&self, key: &str) {
        self.failures().remove(key);
    }

    /// Publishes one Event. kube's recorder folds Events of one object with the same type and
    /// reason into a series of the first, keeping the first note; so each publication has a
    /// recorder of its own (a reconcile publishes at most one Event of each type, with
    /// everything it did in the note), and repeated Warnings are avoided by [`finish`].
    async fn publish<K: Resource<DynamicType = ()>>(&self, object: &K, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(truncate(note, 1024)),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(e) = recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(error = %e, "cannot publish an event");
        }
    }
}

/// Cuts `text` to at most `max` bytes, on a character boundary, marking the cut with `...`.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max - 3;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// 5 s after the first failure, doubling, at most 5 minutes.
pub fn backoff_delay(failures: u32) -> Duration {
    let secs = 5u64.saturating_mul(1 << failures.saturating_sub(1).min(6));
    Duration::from_secs(secs.min(300))
}

fn key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!("{}/{}/{}", K::kind(&()), object.namespace().unwrap_or_default(), object.name_any())
}

async fn patch_status<K, S>(api: &Api<K>, object: &K, status: &S) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let patch = serde_json::json!({ "status": status });
    api.patch_status(&object.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Turns a reconcile outcome into the controller's action, after writing the status and the
/// Events.
///
/// Events: one Normal `Reconciled` Event listing the changes, if any; one Warning Event for
/// each condition (`Ready`, `SieveReady`) that stops being True or is not True for a new reason
/// (not at every retry). `previous` are the conditions the object had.
async fn finish<K, S>(
    ctx: &Context,
    api: &Api<K>,
    object: &K,
    previous: &[Condition],
    outcome: Outcome<S>,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: Serialize + HasConditions,
{
    if !outcome.changes.is_empty() {
        ctx.publish(object, EventType::Normal, "Reconciled", outcome.changes.join("; ")).await;
    }
    for now in outcome.status.conditions().iter().filter(|c| c.status != "True") {
        let before = reconcile::condition(previous, &now.type_);
        if before.is_none_or(|p| (p.status.as_str(), p.reason.as_str()) != (now.status.as_str(), now.reason.as_str())) {
            ctx.publish(object, EventType::Warning, &now.reason, now.message.clone()).await;
        }
    }
    patch_status(api, object, &outcome.status).await?;
    match outcome.next {
        Next::Resync => {
            count::<K>("ready");
            ctx.succeeded(&key(object));
            Ok(Action::requeue(reconcile::RESYNC))
        }
        Next::Soon => {
            count::<K>("waiting");
            Ok(Action::requeue(reconcile::RETRY_SOON))
        }
        Next::Backoff => Err(Error::NotConverged(format!("{} is not converged", key(object)))),
    }
}

/// Reads the password of a Mailbox from its Secret.
pub async fn read_password(
    client: &Client,
    mailbox: &Mailbox,
) -> Result<Result<PasswordInput, PasswordMissing>, kube::Error> {
    let reference = &mailbox.spec.password_secret_ref;
    let namespace = mailbox.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let Some(secret) = secrets.get_opt(&reference.name).await? else {
        return Ok(Err(PasswordMissing(format!("password Secret {namespace}/{} does not exist", reference.name))));
    };
    let value = secret.data.as_ref().and_then(|data| data.get(&reference.key)).map(|v| String::from_utf8(v.0.clone()));
    Ok(match value {
        Some(Ok(value)) => {
            let version =
                format!("{}/{}", secret.uid().unwrap_or_default(), secret.resource_version().unwrap_or_default());
            Ok(PasswordInput { value: SecretString::from(value), version })
        }
        Some(Err(_)) => {
            Err(PasswordMissing(format!("password Secret {}: key {} is not UTF-8", reference.name, reference.key)))
        }
        None => Err(PasswordMissing(format!("password Secret {} has no key {}", reference.name, reference.key))),
    })
}

/// Reads the Sieve script of a Mailbox from the ConfigMap its `spec.sieve.configMapKeyRef`
/// names: [`ConfigMapInput::Unknown`] when it names none (no `spec.sieve`, or an inline
/// script).
pub async fn read_sieve_config_map(client: &Client, mailbox: &Mailbox) -> Result<ConfigMapInput, kube::Error> {
    let Some(reference) = mailbox.spec.sieve.as_ref().and_then(|s| s.config_map_key_ref.as_ref()) else {
        return Ok(ConfigMapInput::Unknown);
    };
    let namespace = mailbox.namespace().unwrap_or_default();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let Some(config_map) = config_maps.get_opt(&reference.name).await? else {
        return Ok(ConfigMapInput::Missing {
            reason: reconcile::reason::CONFIG_MAP_NOT_FOUND,
            message: format!("Sieve ConfigMap {namespace}/{} does not exist", reference.name),
        });
    };
    let what = format!("Sieve ConfigMap {namespace}/{}", reference.name);
    if let Some(text) = config_map.data.as_ref().and_then(|data| data.get(&reference.key)) {
        return Ok(ConfigMapInput::Text(text.clone()));
    }
    // `kubectl create configmap --from-file` puts a file that is not UTF-8 under binaryData.
    let binary = config_map.binary_data.as_ref().and_then(|data| data.get(&reference.key));
    Ok(match binary.map(|b| String::from_utf8(b.0.clone())) {
        Some(Ok(text)) => ConfigMapInput::Text(text),
        Some(Err(_)) => ConfigMapInput::Missing {
            reason: reconcile::reason::KEY_NOT_FOUND,
            message: format!("{what}: key {} is not UTF-8 text", reference.key),
        },
        None => ConfigMapInput::Missing {
            reason: reconcile::reason::KEY_NOT_FOUND,
            message: format!("{what} has no key {}", reference.key),
        },
    })
}

/// The name of the Secret the operator generates a Domain's DKIM key into.
pub fn dkim_secret_name(domain: &Domain) -> String {
    format!("{}-dkim", domain.name_any())
}

/// The DKIM key of a Domain: read from the Secret `spec.dkim.secretRef` names, or from the
/// generated Secret, which is created (with a new key) when it does not exist. Returns the key
/// and, when a Secret was created, a line for the Event.
pub async fn dkim_key(client: &Client, domain: &Domain) -> Result<(DkimInput, Option<String>), Error> {
    let namespace = domain.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let selector = domain.spec.dkim.as_ref().map_or(dkim::DEFAULT_SELECTOR, |d| d.selector.as_str()).to_string();
    let key_of = |pem: &str, what: &str| match dkim::txt_value(pem) {
        Ok(txt_value) => DkimInput::Key {
            selector: selector.clone(),
            txt_value,
            private_key_pem: SecretString::from(pem.to_string()),
        },
        Err(e) => DkimInput::Invalid(format!("{what}: {e}")),
    };
    let pem_in = |secret: &Secret, key: &str| {
        secret.data.as_ref().and_then(|data| data.get(key)).map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };

    if let Some(reference) = domain.spec.dkim.as_ref().and_then(|d| d.secret_ref.as_ref()) {
        let what = format!("Secret {namespace}/{} key {}", reference.name, reference.key);
        let input = match secrets.get_opt(&reference.name).await? {
            None => DkimInput::Invalid(format!("Secret {namespace}/{} does not exist", reference.name)),
            Some(secret) => match pem_in(&secret, &reference.key) {
                None => DkimInput::Invalid(format!("{what} does not exist")),
                Some(pem) => key_of(&pem, &what),
            },
        };
        return Ok((input, None));
    }

    let name = dkim_secret_name(domain);
    let what = format!("Secret {namespace}/{name} key {}", dkim::PRIVATE_KEY);
    if let Some(secret) = secrets.get_opt(&name).await? {
        // Never replaced: a key already published in DNS must stay.
        let input = match pem_in(&secret, dkim::PRIVATE_KEY) {
            None => DkimInput::Invalid(format!("{what} does not exist")),
            Some(pem) => key_of(&pem, &what),
        };
        return Ok((input, None));
    }

    let pem = tokio::task::spawn_blocking(dkim::generate_private_key_pem)
        .await
        .map_err(|e| Error::Dkim(e.to_string()))?
        .map_err(|e| Error::Dkim(e.to_string()))?;
    let mut secret = Secret::default();
    secret.metadata.name = Some(name.clone());
    secret.metadata.namespace = Some(namespace.clone());
    secret.metadata.labels = Some([("app.kubernetes.io/managed-by".to_string(), MANAGER.to_string())].into());
    secret.metadata.owner_references = domain.controller_owner_ref(&()).map(|owner| vec![owner]);
    secret.type_ = Some("Opaque".to_string());
    secret.data = Some(
        [
            (dkim::PRIVATE_KEY.to_string(), ByteString(pem.clone().into_bytes())),
            (dkim::SELECTOR_KEY.to_string(), ByteString(selector.clone().into_bytes())),
        ]
        .into(),
    );
    secrets.create(&PostParams { field_manager: Some(MANAGER.to_string()), ..Default::default() }, &secret).await?;
    let change = format!("generated a DKIM key (selector {selector}) into Secret {name}");
    Ok((key_of(&pem, &what), Some(change)))
}

/// Reconciles one Mailbox: the finalizer first, then [`reconcile::reconcile_mailbox_with_sieve`]
/// with the password from its Secret and the Sieve script from its ConfigMap (if it names one),
/// or [`reconcile::cleanup_mailbox`] once it is being deleted.
pub async fn reconcile_mailbox(mailbox: Arc<Mailbox>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<Mailbox> = Api::namespaced(ctx.client.clone(), &mailbox.namespace().unwrap_or_default());
    finalizer(&api, FINALIZER, mailbox, |event| async {
        match event {
            Finalizer::Apply(mailbox) if !ctx.may_read_secrets(mailbox.as_ref()) => {
                let previous = previous_conditions(mailbox.status.as_ref());
                let outcome = reconcile::mailbox_secret_namespace_not_watched(&mailbox, &ctx.secrets.describe());
                finish(&ctx, &api, mailbox.as_ref(), previous, outcome).await
            }
            Finalizer::Apply(mailbox) => {
                let password = read_password(&ctx.client, &mailbox).await?;
                let sieve = read_sieve_config_map(&ctx.client, &mailbox).await?;
                let outcome =
                    reconcile::reconcile_mailbox_with_sieve(ctx.admin.as_ref(), &mailbox, password, &sieve).await;
                let previous = previous_conditions(mailbox.status.as_ref());
                finish(&ctx, &api, mailbox.as_ref(), previous, outcome).await
            }
            Finalizer::Cleanup(mailbox) => {
                let changes = reconcile::cleanup_mailbox(ctx.admin.as_ref(), &mailbox).await?;
                if !changes.is_empty() {
                    ctx.publish(mailbox.as_ref(), EventType::Normal, "Deleted", changes.join("; ")).await;
                }
                count::<Mailbox>("deleted");
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(e.to_string()))
}

/// Reconciles one Domain: the finalizer first, then [`reconcile::reconcile_domain_with_dkim`]
/// with its DKIM key from [`dkim_key`], or [`reconcile::cleanup_domain`] once it is being
/// deleted.
pub async fn reconcile_domain(domain: Arc<Domain>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<Domain> = Api::namespaced(ctx.client.clone(), &domain.namespace().unwrap_or_default());
    finalizer(&api, FINALIZER, domain, |event| async {
        match event {
            Finalizer::Apply(domain) => {
                if let Some(owner) = ctx.domain_owner(&domain) {
                    let previous = previous_conditions(domain.status.as_ref());
                    let outcome = reconcile::domain_conflict(&domain, &owner);
                    return finish(&ctx, &api, domain.as_ref(), previous, outcome).await;
                }
                if !ctx.may_read_secrets(domain.as_ref()) {
                    let previous = previous_conditions(domain.status.as_ref());
                    let outcome = reconcile::domain_secret_namespace_not_watched(&domain, &ctx.secrets.describe());
                    return finish(&ctx, &api, domain.as_ref(), previous, outcome).await;
                }
                let (dkim, generated) = dkim_key(&ctx.client, &domain).await?;
                let mut outcome =
                    reconcile::reconcile_domain_with_dkim(ctx.admin.as_ref(), &domain, &dkim, &ctx.dns).await;
                outcome.changes.splice(0..0, generated);
                let previous = previous_conditions(domain.status.as_ref());
                finish(&ctx, &api, domain.as_ref(), previous, outcome).await
            }
            Finalizer::Cleanup(domain) => {
                // A Domain that never owned its mail domain leaves it to the one that does.
                let changes = if ctx.domain_owner(&domain).is_some() {
                    vec![]
                } else {
                    reconcile::cleanup_domain(ctx.admin.as_ref(), &domain).await?
                };
                if !changes.is_empty() {
                    ctx.publish(domain.as_ref(), EventType::Normal, "Deleted", changes.join("; ")).await;
                }
                count::<Domain>("deleted");
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(e.to_string()))
}

/// The conditions of an object's status (none without a status).
fn previous_conditions<S: HasConditions>(status: Option<&S>) -> &[Condition] {
    status.map(HasConditions::conditions).unwrap_or_default()
}

/// The action after a failed reconcile: a retry after [`backoff_delay`] of the object's
/// consecutive failures.
pub fn error_policy<K: Resource<DynamicType = ()>>(object: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    count::<K>("error");
    let delay = ctx.backoff(key(object.as_ref()));
    tracing::warn!(object = %key(object.as_ref()), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The APIs the controllers watch, in a configuration: [`run`] watches exactly these (and the
/// tests list the requests they make from the same function).
#[derive(Clone)]
pub struct Watches {
    /// Mailboxes, in every namespace.
    pub mailboxes: Api<Mailbox>,
    /// Domains, in every namespace.
    pub domains: Api<Domain>,
    /// Secrets, metadata only (an API of `PartialObjectMeta` asks for metadata alone), with
    /// where: one API for every namespace, or one per namespace the operator may read Secrets
    /// in.
    pub secrets: Vec<(Api<PartialObjectMeta<Secret>>, WatchTarget)>,
    /// ConfigMaps (of Sieve scripts), metadata only, where Secrets are: a Mailbox elsewhere is
    /// not reconciled, so its ConfigMap is never read.
    pub config_maps: Vec<(Api<PartialObjectMeta<ConfigMap>>, WatchTarget)>,
}

impl std::fmt::Debug for Watches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watches")
            .field("mailboxes", &self.mailboxes.resource_url())
            .field("domains", &self.domains.resource_url())
            .field("secrets", &self.secrets.iter().map(|(api, _)| api.resource_url()).collect::<Vec<_>>())
            .field("config_maps", &self.config_maps.iter().map(|(api, _)| api.resource_url()).collect::<Vec<_>>())
            .finish()
    }
}

/// The [`Watches`] of `client` with Secrets and ConfigMaps in `scope`.
pub fn watches(client: &Client, scope: &SecretScope) -> Watches {
    Watches {
        mailboxes: Api::all(client.clone()),
        domains: Api::all(client.clone()),
        secrets: scoped(client, scope, "secrets"),
        config_maps: scoped(client, scope, "configmaps"),
    }
}

/// The metadata APIs of `resource` in `scope`: one for every namespace, or one per namespace.
fn scoped<K>(client: &Client, scope: &SecretScope, resource: &'static str) -> Vec<(Api<K>, WatchTarget)>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match scope {
        SecretScope::Cluster => vec![(Api::all(client.clone()), WatchTarget { resource, namespace: None })],
        SecretScope::Namespaces(names) => names
            .iter()
            .map(|ns| (Api::namespaced(client.clone(), ns), WatchTarget { resource, namespace: Some(ns.clone()) }))
            .collect(),
    }
}

/// A watch stream with backoff that reports to `health` and then drops its errors: a failing
/// watch is retried on its own (after 0.8 s, doubling to 30 s), is logged and counted by
/// [`Health`], and never reaches the controller, whose own backoff would also pause the other
/// watches.
fn observed<T, S>(
    stream: S,
    health: Health,
    target: WatchTarget,
) -> impl Stream<Item = watcher::Event<T>> + Send + 'static
where
    T: Send + 'static,
    S: Stream<Item = Result<watcher::Event<T>, watcher::Error>> + Send + 'static,
{
    stream.default_backoff().filter_map(move |result| {
        let event = match result {
            Ok(event) => {
                health.works(&target);
                Some(event)
            }
            Err(e) => {
                health.failed(&target, &e);
                None
            }
        };
        std::future::ready(event)
    })
}

/// The objects an event touched (as `touched_objects`), as the controllers take them.
fn touched<T: Send + 'static>(
    events: impl Stream<Item = watcher::Event<T>> + Send + 'static,
) -> impl Stream<Item = Result<T, watcher::Error>> + Send + 'static {
    events.flat_map(|event| {
        let objects: Vec<T> = match event {
            watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o) => vec![o],
            watcher::Event::Init | watcher::Event::InitDone => vec![],
        };
        futures::stream::iter(objects.into_iter().map(Ok))
    })
}

/// The objects an event applied (as `applied_objects`: not the deleted ones), for the main
/// watch of a controller.
fn applied<T: Send + 'static>(
    events: impl Stream<Item = watcher::Event<T>> + Send + 'static,
) -> impl Stream<Item = Result<T, watcher::Error>> + Send + 'static {
    events.flat_map(|event| {
        let objects: Vec<T> = match event {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => vec![o],
            watcher::Event::Delete(_) | watcher::Event::Init | watcher::Event::InitDone => vec![],
        };
        futures::stream::iter(objects.into_iter().map(Ok))
    })
}

/// Runs the Domain and Mailbox controllers until a shutdown signal. A change of a Secret
/// reconciles the Mailboxes whose password it holds and the Domains whose DKIM key it holds (or
/// that own it: the generated key), a change of a ConfigMap the Mailboxes whose Sieve script it
/// holds, a change of a Domain the Mailboxes in it. The Secret and ConfigMap watches are
/// metadata-only: a change is a trigger, and the reconcile reads the object.
pub async fn run(ctx: Arc<Context>) {
    let Watches { mailboxes, domains, secrets, config_maps } = watches(&ctx.client, &ctx.secrets);
    let health = ctx.health.clone();
    let all = |resource: &'static str| WatchTarget { resource, namespace: None };
    let secret_triggers = |secrets: &[(Api<PartialObjectMeta<Secret>>, WatchTarget)]| {
        secrets
            .iter()
            .map(|(api, target)| {
                touched(observed(watcher(api.clone(), watcher::Config::default()), health.clone(), target.clone()))
            })
            .collect::<Vec<_>>()
    };

    let (mailbox_store, writer) = reflector::store::<Mailbox>();
    let mailbox_events =
        observed(watcher(mailboxes, watcher::Config::default()).reflect(writer), health.clone(), all("mailboxes"));
    let in_domain = mailbox_store.clone();
    let mut mailbox_controller = Controller::for_stream(applied(mailbox_events), mailbox_store.clone())
        // A Domain that appears (or changes) reconciles the Mailboxes in it (domains are global
        // in the mailbox service, so of any namespace) without waiting for their retry.
        .watches_stream(
            touched(observed(watcher(domains.clone(), watcher::Config::default()), health.clone(), all("domains"))),
            move |domain: Domain| {
                let suffix = format!("@{}", domain.spec.name.to_ascii_lowercase());
                in_domain
                    .state()
                    .into_iter()
                    .filter(|m| m.spec.address.to_ascii_lowercase().ends_with(&suffix))
                    .map(|m| ObjectRef::from_obj(m.as_ref()))
                    .collect::<Vec<_>>()
            },
        );
    for trigger in secret_triggers(&secrets) {
        let store = mailbox_store.clone();
        mailbox_controller = mailbox_controller.watches_stream(trigger, move |secret: PartialObjectMeta<Secret>| {
            let namespace = secret.namespace();
            let name = secret.name_any();
            store
                .state()
                .into_iter()
                .filter(|m| m.namespace() == namespace && m.spec.password_secret_ref.name == name)
                .map(|m| ObjectRef::from_obj(m.as_ref()))
                .collect::<Vec<_>>()
        });
    }
    for (api, target) in config_maps {
        let store = mailbox_store.clone();
        let trigger = touched(observed(watcher(api, watcher::Config::default()), health.clone(), target));
        mailbox_controller =
            mailbox_controller.watches_stream(trigger, move |config_map: PartialObjectMeta<ConfigMap>| {
                let namespace = config_map.namespace();
                let name = config_map.name_any();
                store
                    .state()
                    .into_iter()
                    .filter(|m| {
                        m.namespace() == namespace
                            && m.spec
                                .sieve
                                .as_ref()
                                .and_then(|s| s.config_map_key_ref.as_ref())
                                .is_some_and(|r| r.name == name)
                    })
                    .map(|m| ObjectRef::from_obj(m.as_ref()))
                    .collect::<Vec<_>>()
            });
    }
    let mailbox_controller = mailbox_controller
        .shutdown_on_signal()
        .run(reconcile_mailbox, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "mailbox controller");
            }
        });

    let (domain_store, writer) = reflector::store::<Domain>();
    let _ = ctx.domains.set(domain_store.clone());
    let domain_events =
        observed(watcher(domains, watcher::Config::default()).reflect(writer), health.clone(), all("domains"));
    let mut domain_controller = Controller::for_stream(applied(domain_events), domain_store.clone());
    for trigger in secret_triggers(&secrets) {
        let store = domain_store.clone();
        domain_controller = domain_controller.watches_stream(trigger, move |secret: PartialObjectMeta<Secret>| {
            let namespace = secret.namespace();
            let name = secret.name_any();
            // The Domain owning a generated key (one deleted is made again), and the
            // Domains whose `dkim.secretRef` names the Secret.
            let owners = secret
                .owner_references()
                .iter()
                .filter(|o| o.kind == "Domain" && o.api_version == Domain::api_version(&()))
                .map(|o| ObjectRef::<Domain>::new(&o.name).within(namespace.as_deref().unwrap_or_default()))
                .collect::<Vec<_>>();
            let referring = store
                .state()
                .into_iter()
                .filter(|d| {
                    d.namespace() == namespace
                        && d.spec.dkim.as_ref().and_then(|k| k.secret_ref.as_ref()).is_some_and(|r| r.name == name)
                })
                .map(|d| ObjectRef::from_obj(d.as_ref()));
            owners.into_iter().chain(referring).collect::<Vec<_>>()
        });
    }
    let domain_controller =
        domain_controller.shutdown_on_signal().run(reconcile_domain, error_policy, ctx).for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "domain controller");
            }
        });
    futures::join!(mailbox_controller, domain_controller);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The families are on `/metrics` from the start, each series at zero, before any
    /// reconcile or watch (the chart's checks scrape an operator that reaches no API server).
    #[test]
    fn metric_families_are_registered_with_their_series() {
        reconciles();
        crate::watch::watch_errors();
        let metrics = tern_runtime::metrics::Metrics::global().encode();
        for line in [
            "# TYPE tern_operator_reconciles counter",
            r#"tern_operator_reconciles_total{kind="Mailbox",result="error"}"#,
            "# TYPE tern_operator_watch_errors counter",
            r#"tern_operator_watch_errors_total{resource="domains"}"#,
        ] {
            assert!(metrics.contains(line), "{line} is missing: {metrics}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let delays: Vec<u64> = (1..=9).map(|n| backoff_delay(n).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn event_notes_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("short".to_string(), 1024), "short");
        let cut = truncate("é".repeat(600), 1024);
        assert!(cut.len() <= 1024 && cut.ends_with("..."), "{}", cut.len());
    }
}
