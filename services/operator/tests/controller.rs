//! The controllers' reconcile functions against a mock Kubernetes API server (tower-test, as in
//! kube-rs's controller-rs: every request is checked and answered by the test) and a real
//! mailbox service on loopback; and the controllers' watches, in both Secret configurations.
//!
//! Every request the operator makes here is recorded as the RBAC rule it needs, and must be
//! listed in `tests/api-requests.json` (see `support`).

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::{Client, Resource};
use serde_json::{Value, json};
use tern_operator::admin::GrpcAdmin;
use tern_operator::controller::{self, Context};
use tern_operator::crd::{
    ConfigMapKeyRef, DkimSpec, Domain, DomainSpec, FINALIZER, Mailbox, MailboxSpec, Pop3DeletePolicy, ReclaimPolicy,
    SecretKeyRef, SieveSpec,
};
use tern_operator::dkim;
use tern_operator::reconcile::{RESYNC, RETRY_SOON};
use tern_operator::watch::SecretScope;
use tern_tests::TestServer;
use tern_tests::tern_mailbox::Limits;
use tern_tests::tern_proto::v1::{AuthenticateRequest, GetAccountRequest};

const MAILBOX_PATH: &str = "/apis/mail.tern.dev/v1alpha1/namespaces/mail/mailboxes/alice";
const SECRET_PATH: &str = "/api/v1/namespaces/mail/secrets/alice-password";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/mail/events";
const CONFIG_MAP_PATH: &str = "/api/v1/namespaces/mail/configmaps/alice-sieve";

/// The test's side of the mock API server, which records every request.
struct ApiServer {
    handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    /// The operator's configuration, for the record.
    when: support::When,
    _settle: support::Guard,
}

/// The requests this binary records: all but the Leases (the leader tests').
fn recorded_here(request: &support::ApiRequest) -> bool {
    request.resource != "leases"
}

/// One request the reconciler made.
struct Call {
    method: String,
    path: String,
    body: Value,
    respond: tower_test::mock::SendResponse<Response<Body>>,
}

impl Call {
    fn reply(self, status: StatusCode, body: &Value) {
        let response = Response::builder().status(status).body(Body::from(serde_json::to_vec(body).unwrap())).unwrap();
        self.respond.send_response(response);
    }
}

impl ApiServer {
    async fn next(&mut self) -> Call {
        let (request, respond) = tokio::time::timeout(Duration::from_secs(10), self.handle.next_request())
            .await
            .expect("the reconciler made no further request")
            .expect("the client was dropped");
        support::record(request.method().as_str(), request.uri(), self.when);
        let method = request.method().to_string();
        let path = request.uri().path().to_string();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        Call { method, path, body, respond }
    }

    /// Expects `method path`, answers 200 with `response`, and returns the request body.
    async fn expect(&mut self, method: &str, path: &str, response: &Value) -> Value {
        let call = self.next().await;
        assert_eq!((call.method.as_str(), call.path.as_str()), (method, path), "request body: {}", call.body);
        let body = call.body.clone();
        call.reply(StatusCode::OK, response);
        body
    }

    /// Answers the Event creations until the status patch, and returns the Events' notes and
    /// the patch.
    async fn events_then_status(&mut self, mailbox: &Mailbox) -> (Vec<String>, Value) {
        let mut notes = vec![];
        loop {
            let call = self.next().await;
            match (call.method.as_str(), call.path.as_str()) {
                ("POST", EVENTS_PATH) => {
                    assert_eq!(call.body["reportingController"], "tern-operator");
                    assert_eq!(call.body["regarding"]["kind"], "Mailbox");
                    notes.push(call.body["note"].as_str().unwrap().to_string());
                    let echo = call.body.clone();
                    call.reply(StatusCode::OK, &echo);
                }
                ("PATCH", path) if path == format!("{MAILBOX_PATH}/status") => {
                    let patch = call.body.clone();
                    let mut object = serde_json::to_value(mailbox).unwrap();
                    object["status"] = patch["status"].clone();
                    call.reply(StatusCode::OK, &object);
                    return (notes, patch);
                }
                (method, path) => panic!("unexpected {method} {path}: {}", call.body),
            }
        }
    }

    async fn secret(&mut self, password: &str, resource_version: &str) {
        let mut secret = Secret::default();
        secret.metadata.name = Some("alice-password".to_string());
        secret.metadata.namespace = Some("mail".to_string());
        secret.metadata.uid = Some("secret-uid".to_string());
        secret.metadata.resource_version = Some(resource_version.to_string());
        secret.data = Some([("password".to_string(), ByteString(password.as_bytes().to_vec()))].into());
        self.expect("GET", SECRET_PATH, &serde_json::to_value(&secret).unwrap()).await;
    }
}

struct Setup {
    server: TestServer,
    api: ApiServer,
    ctx: Arc<Context>,
}

/// A mailbox service, and a controller context that may read Secrets in `mail` (as the chart
/// configures it by default) over the mock API server.
///
/// The requests of a reconcile in a namespace whose Secrets the operator reads are the same in
/// both Secret configurations (the configuration only decides which namespaces those are, and
/// what is watched), so they are recorded as made `Always`.
async fn setup() -> Setup {
    setup_reading_secrets_in("mail").await
}

async fn setup_reading_secrets_in(namespace: &str) -> Setup {
    let server = TestServer::start(Limits::default()).await;
    let admin = Arc::new(GrpcAdmin::new(server.admin_client().await, server.mailbox_client().await));
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let ctx = Context::new(client, admin.clone(), Some("tern-operator-0".to_string()))
        .with_secret_scope(SecretScope::from_namespaces([namespace]));
    let ctx = Arc::new(ctx);
    // The domain, through the reconciler without Kubernetes.
    let mut domain = tern_operator::crd::Domain::new(
        "example",
        DomainSpec {
            name: "example.com".into(),
            catch_all: None,
            default_quota: None,
            dkim: None,
            mail_host: None,
            spam: None,
            reclaim_policy: ReclaimPolicy::Retain,
        },
    );
    domain.metadata.namespace = Some("mail".into());
    tern_operator::reconcile::reconcile_domain(admin.as_ref(), &domain).await;
    let api = ApiServer { handle, when: support::When::Always, _settle: support::Guard(recorded_here) };
    Setup { server, api, ctx }
}

fn mailbox(finalizer: bool) -> Mailbox {
    let mut mailbox = Mailbox::new(
        "alice",
        MailboxSpec {
            address: "alice@example.com".into(),
            display_name: None,
            password_secret_ref: SecretKeyRef { name: "alice-password".into(), key: "password".into() },
            quota: Some("1Mi".into()),
            aliases: vec!["info@example.com".into()],
            suspended: false,
            pop3_delete_policy: Pop3DeletePolicy::Expunge,
            spam: None,
            sieve: None,
            reclaim_policy: ReclaimPolicy::Retain,
        },
    );
    let meta = mailbox.meta_mut();
    meta.namespace = Some("mail".into());
    meta.uid = Some("mailbox-uid".into());
    meta.resource_version = Some("1".into());
    meta.generation = Some(1);
    if finalizer {
        meta.finalizers = Some(vec![FINALIZER.to_string()]);
    }
    mailbox
}

fn deleting(mut mailbox: Mailbox, policy: ReclaimPolicy) -> Mailbox {
    mailbox.spec.reclaim_policy = policy;
    mailbox.meta_mut().deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    mailbox
}

async fn can_login(server: &TestServer, password: &str) -> bool {
    let request = AuthenticateRequest {
        username: "alice@example.com".into(),
        password: password.into(),
        remote_ip: "127.0.0.1".into(),
    };
    server.mailbox_client().await.authenticate(request).await.is_ok()
}

async fn account_exists(server: &TestServer) -> bool {
    let request = GetAccountRequest { address: "alice@example.com".into() };
    server.admin_client().await.get_account(request).await.is_ok()
}

fn ready(patch: &Value) -> (String, String) {
    let conditions = patch["status"]["conditions"].as_array().unwrap();
    let ready = conditions.iter().find(|c| c["type"] == "Ready").unwrap();
    (ready["status"].as_str().unwrap().into(), ready["reason"].as_str().unwrap().into())
}

#[tokio::test]
async fn first_reconcile_adds_the_finalizer_and_changes_nothing_else() {
    let Setup { server, mut api, ctx } = setup().await;
    let task = tokio::spawn(controller::reconcile_mailbox(Arc::new(mailbox(false)), ctx));
    let patch = api.expect("PATCH", MAILBOX_PATH, &serde_json::to_value(mailbox(true)).unwrap()).await;
    assert!(patch.to_string().contains(FINALIZER), "{patch}");
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert!(!account_exists(&server).await);
}

#[tokio::test]
async fn mailbox_is_created_then_its_password_follows_the_secret() {
    let Setup { server, mut api, ctx } = setup().await;
    let object = mailbox(true);
    let task = tokio::spawn(controller::reconcile_mailbox(Arc::new(object.clone()), ctx.clone()));
    api.secret("first", "100").await;
    let (notes, patch) = api.events_then_status(&object).await;
    assert_eq!(notes, ["created account alice@example.com; added alias info@example.com to alice@example.com"]);
    assert_eq!(ready(&patch), ("True".into(), "Reconciled".into()));
    assert_eq!(patch["status"]["passwordVersion"], "secret-uid/100");
    assert_eq!(patch["status"]["usage"], "0/1.0Mi");
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(RESYNC));
    assert!(can_login(&server, "first").await);

    // The status was written; the Secret changes.
    let mut object = object;
    object.status = serde_json::from_value(patch["status"].clone()).unwrap();
    let task = tokio::spawn(controller::reconcile_mailbox(Arc::new(object.clone()), ctx.clone()));
    api.secret("second", "101").await;
    let (notes, patch) = api.events_then_status(&object).await;
    assert_eq!(notes, ["set the password of alice@example.com"]);
    assert_eq!(patch["status"]["passwordVersion"], "secret-uid/101");
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(RESYNC));
    assert!(can_login(&server, "second").await);
    assert!(!can_login(&server, "first").await);

    // Nothing changed: no Event, the same status.
    object.status = serde_json::from_value(patch["status"].clone()).unwrap();
    let task = tokio::spawn(controller::reconcile_mailbox(Arc::new(object.clone()), ctx));
    api.secret("second", "101").await;
    let (notes, again) = api.events_then_status(&object).await;
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(again, patch);
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(RESYNC));
}

#[tokio::test]
async fn missing_secret_is_reported_and_retried() {
    let Setup { server, mut api, ctx } = setup().await;
    let object = mailbox(true);
    let task = tokio::spawn(controller::reconcile_mailbox(Arc::new(object.clone()), ctx.clone()));
    let call = api.next().await;
    assert_eq!((call.method.as_str(), call.path.as_str()), ("GET", SECRET_PATH));
    call.reply(
        StatusCode::NOT_FOUND,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                "message": "secrets \"alice-password\" not found"}),
    );
    let (notes, patch) = api.events_then_status(&object).await;
    assert_eq!(notes, ["password Secret mail/alice-password does not exist"], "one Warning Event");
    assert_eq!(ready(&patch), ("False".into(), "PasswordSecretMissing".into()));
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(RETRY_SOON));
    assert!(!account_exists(&server).await);

    // The retry finds the same reason: no second Warning. Then the Secret appears.
    let mut object = object;
    object.status = serde_json::from_value(patch["status"].clone()).unwrap();
    let task = tokio::spawn(controller::reconcile_mailbox(Arc::new(object.clone()), ctx.clone()));
    let call = api.next().await;
    assert_eq!(call.path, SECRET_PATH);
    call.reply(
        StatusCode::NOT_FOUND,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
    );
    let (notes, _) = api.events_then_status(&object).await;
    assert!(notes.is_empty(), "{notes:?}");
    task.await.unwrap().unwrap();
    let task = tokio::spawn(controller::reconcile_mailbox(Arc::new(object.clone()), ctx));
    api.secret("first", "100").await;
    let (_, patch) = api.events_then_status(&object).await;
    assert_eq!(ready(&patch), ("True".into(), "Reconciled".into()));
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(RESYNC));
    assert!(can_login(&server, "first").await);
}

#[tokio::test]
async fn deletion_with_delete_removes_the_account_then_the_finalizer() {
    let Setup { server, mut api, ctx } = setup().await;
    let object = mailbox(true);
    let task = tokio::spawn(controller::reconcile_mailbox(Arc::new(object.clone()), ctx.clone()));
    api.secret("first", "100").await;
    api.events_then_status(&object).await;
    task.await.unwrap().unwrap();
    assert!(account_exists(&server).await);

    let object = deleting(object, ReclaimPolicy::Delete);
    let task = tokio::spawn(controller::reconcile_mailbox(Arc::new(object.clone()), ctx));
    let event = api.expect("POST", EVENTS_PATH, &json!({})).await;
    assert_eq!(event["note"], "deleted account alice@example.com and its mail");
    let patch = api.expect("PATCH", MAILBOX_PATH, &serde_json::to_value(&object).unwrap()).await;
    assert!(patch.to_string().contains("remove"), "{patch}");
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert!(!account_exists(&server).await);
}

#[tokio::test]
async fn deletion_with_retain_keeps_the_account() {
    let Setup { server, mut api, ctx } = setup().await;
    let object = mailbox(true);
    let task = tokio::spawn(controller::reconcile_mailbox(Arc::new(object.clone()), ctx.clone()));
    api.secret("first", "100").await;
    api.events_then_status(&object).await;
    task.await.unwrap().unwrap();

    let object = deleting(object, ReclaimPolicy::Retain);
    let task = tokio::spawn(controller::reconcile_mailbox(Arc::new(object.clone()), ctx));
    let event = api.expect("POST", EVENTS_PATH, &json!({})).await;
    assert!(event["note"].as_str().unwrap().contains("reclaimPolicy Retain"));
    api.expect("PATCH", MAILBOX_PATH, &serde_json::to_value(&object).unwrap()).await;
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert!(account_exists(&server).await);
    assert!(can_login(&server, "first").await);
}

#[tokio::test]
async fn admin_api_down_sets_the_condition_and_backs_off() {
    let Setup { mut server, mut api, ctx } = setup().await;
    server.stop().await;
    let object = Arc::new(mailbox(true));
    let task = tokio::spawn(controller::reconcile_mailbox(object.clone(), ctx.clone()));
    api.secret("first", "100").await;
    let (_, patch) = api.events_then_status(&object).await;
    assert_eq!(ready(&patch), ("False".into(), "ApiUnavailable".into()));
    let error = task.await.unwrap().unwrap_err();
    assert_eq!(controller::error_policy(object.clone(), &error, ctx.clone()), Action::requeue(Duration::from_secs(5)));
    assert_eq!(controller::error_policy(object, &error, ctx), Action::requeue(Duration::from_secs(10)));
}

const DOMAIN_STATUS_PATH: &str = "/apis/mail.tern.dev/v1alpha1/namespaces/mail/domains/other/status";
const DKIM_SECRET_PATH: &str = "/api/v1/namespaces/mail/secrets/other-dkim";

fn other_domain(dkim: Option<DkimSpec>) -> Domain {
    let mut domain = Domain::new(
        "other",
        DomainSpec {
            name: "other.example".into(),
            catch_all: Some("postmaster".into()),
            default_quota: Some("2Gi".into()),
            dkim,
            mail_host: Some("mx.example.net".into()),
            spam: None,
            reclaim_policy: ReclaimPolicy::Retain,
        },
    );
    domain.metadata.namespace = Some("mail".into());
    domain.metadata.uid = Some("domain-uid".into());
    domain.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
    domain
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})
}

/// The `SieveReady` condition of a status patch: (status, reason, message).
fn sieve_ready(patch: &Value) -> (String, String, String) {
    let conditions = patch["status"]["conditions"].as_array().unwrap();
    let c = conditions.iter().find(|c| c["type"] == "SieveReady").expect("a SieveReady condition");
    let field = |name: &str| c[name].as_str().unwrap().to_string();
    (field("status"), field("reason"), field("message"))
}

/// A ConfigMap holding a Sieve script under `filter.sieve`.
fn sieve_config_map(text: &str, resource_version: &str) -> Value {
    let mut config_map = ConfigMap::default();
    config_map.metadata.name = Some("alice-sieve".into());
    config_map.metadata.namespace = Some("mail".into());
    config_map.metadata.resource_version = Some(resource_version.into());
    config_map.data = Some([("filter.sieve".to_string(), text.to_string())].into());
    serde_json::to_value(&config_map).unwrap()
}

/// The account's Sieve scripts through the Mailbox API: (name, active, text).
async fn stored_scripts(server: &TestServer) -> Vec<(String, bool, String)> {
    use tern_tests::tern_proto::v1::{GetSieveScriptRequest, ListSieveScriptsRequest};
    let request = GetAccountRequest { address: "alice@example.com".into() };
    let account_id = server.admin_client().await.get_account(request).await.unwrap().into_inner().id;
    let mut client = server.mailbox_client().await;
    let list = client.list_sieve_scripts(ListSieveScriptsRequest { account_id }).await.unwrap().into_inner();
    let mut scripts = vec![];
    for script in list.scripts {
        let request = GetSieveScriptRequest { account_id, name: script.name.clone() };
        let text = client.get_sieve_script(request).await.unwrap().into_inner().text;
        scripts.push((script.name, script.active, text));
    }
    scripts
}

/// A Mailbox whose Sieve script is in a ConfigMap: a missing ConfigMap is a Warning and a
/// retry soon (the account is served meanwhile), the ConfigMap's script is stored and
/// active once it exists, and a new version with a syntax error is a Warning with the line,
/// leaving the good one active.
#[tokio::test]
async fn a_sieve_config_map_is_read_waited_for_and_followed() {
    let Setup { server, mut api, ctx } = setup().await;
    let mut object = mailbox(true);
    object.spec.sieve = Some(SieveSpec {
        name: "kubernetes".into(),
        config_map_key_ref: Some(ConfigMapKeyRef { name: "alice-sieve".into(), key: "filter.sieve".into() }),
        script: None,
    });

    let task = tokio::spawn(controller::reconcile_mailbox(Arc::new(object.clone()), ctx.clone()));
    api.secret("first", "100").await;
    let call = api.next().await;
    assert_eq!((call.method.as_str(), call.path.as_str()), ("GET", CONFIG_MAP_PATH));
    call.reply(StatusCode::NOT_FOUND, &not_found());
    let (notes, patch) = api.events_then_status(&object).await;
    assert_eq!(notes.len(), 2, "the changes, and one Warning: {notes:?}");
    assert!(notes[1].starts_with("Sieve ConfigMap mail/alice-sieve does not exist"), "{notes:?}");
    assert_eq!(ready(&patch), ("True".into(), "Reconciled".into()), "the account is served");
    assert_eq!(sieve_ready(&patch).1, "ConfigMapNotFound");
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(RETRY_SOON));
    assert!(can_login(&server, "first").await);
    assert!(stored_scripts(&server).await.is_empty());

    // The ConfigMap appears.
    let good = "require \"fileinto\";\nif header :contains \"subject\" \"[list]\" {\n  fileinto \"Lists\";\n}\n";
    object.status = serde_json::from_value(patch["status"].clone()).unwrap();
    let task = tokio::spawn(controller::reconcile_mailbox(Arc::new(object.clone()), ctx.clone()));
    api.secret("first", "100").await;
    api.expect("GET", CONFIG_MAP_PATH, &sieve_config_map(good, "7")).await;
    let (notes, patch) = api.events_then_status(&object).await;
    assert_eq!(notes, ["stored Sieve script \"kubernetes\" of alice@example.com and made it active"]);
    assert_eq!(sieve_ready(&patch).0, "True");
    assert_eq!(patch["status"]["sieveScript"], "kubernetes");
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(RESYNC));
    assert_eq!(stored_scripts(&server).await, [("kubernetes".to_string(), true, good.to_string())]);

    // It is edited, with a syntax error on line 3.
    let broken = "require \"fileinto\";\nif true {\n  fileinto;\n}\n";
    object.status = serde_json::from_value(patch["status"].clone()).unwrap();
    let task = tokio::spawn(controller::reconcile_mailbox(Arc::new(object.clone()), ctx.clone()));
    api.secret("first", "100").await;
    api.expect("GET", CONFIG_MAP_PATH, &sieve_config_map(broken, "8")).await;
    let (notes, patch) = api.events_then_status(&object).await;
    assert_eq!(notes.len(), 1, "one Warning: {notes:?}");
    assert!(notes[0].starts_with("invalid Sieve script: line 3, column "), "{notes:?}");
    let (status, reason, message) = sieve_ready(&patch);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "ScriptInvalid"));
    assert_eq!(message, notes[0]);
    assert_eq!(ready(&patch), ("True".into(), "Reconciled".into()));
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(RESYNC));
    assert_eq!(stored_scripts(&server).await, [("kubernetes".to_string(), true, good.to_string())]);

    // The same again: no second Warning.
    object.status = serde_json::from_value(patch["status"].clone()).unwrap();
    let task = tokio::spawn(controller::reconcile_mailbox(Arc::new(object.clone()), ctx));
    api.secret("first", "100").await;
    api.expect("GET", CONFIG_MAP_PATH, &sieve_config_map(broken, "8")).await;
    let (notes, _) = api.events_then_status(&object).await;
    assert!(notes.is_empty(), "{notes:?}");
    task.await.unwrap().unwrap();
}

/// The DKIM record of a status patch.
fn dkim_record(patch: &Value) -> Value {
    let records = patch["status"]["dnsRecords"].as_array().unwrap();
    records.iter().find(|r| r["name"].as_str().unwrap().contains("._domainkey.")).cloned().unwrap_or(Value::Null)
}

#[tokio::test]
async fn domain_reconcile_generates_a_dkim_key_and_writes_the_dns_records_and_an_event() {
    let Setup { server, mut api, ctx } = setup().await;
    let domain = other_domain(None);
    let task = tokio::spawn(controller::reconcile_domain(Arc::new(domain.clone()), ctx.clone()));

    // No generated Secret yet: one is created, owned by the Domain.
    let call = api.next().await;
    assert_eq!((call.method.as_str(), call.path.as_str()), ("GET", DKIM_SECRET_PATH));
    call.reply(StatusCode::NOT_FOUND, &not_found());
    let created = api.expect("POST", "/api/v1/namespaces/mail/secrets", &json!({})).await;
    let secret: Secret = serde_json::from_value(created.clone()).unwrap();
    assert_eq!(secret.metadata.name.as_deref(), Some("other-dkim"));
    assert_eq!(secret.metadata.namespace.as_deref(), Some("mail"));
    assert_eq!(secret.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"], "tern-operator");
    let owners = secret.metadata.owner_references.clone().unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(
        (owners[0].api_version.as_str(), owners[0].kind.as_str(), owners[0].name.as_str(), owners[0].uid.as_str()),
        ("mail.tern.dev/v1alpha1", "Domain", "other", "domain-uid")
    );
    assert_eq!(owners[0].controller, Some(true));
    let data = secret.data.clone().unwrap();
    assert_eq!(data["selector"].0, b"tern");
    let pem = String::from_utf8(data["private.pem"].0.clone()).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    let txt = dkim::txt_value(&pem).unwrap();

    let event = api.expect("POST", EVENTS_PATH, &json!({})).await;
    assert_eq!(
        event["note"],
        "generated a DKIM key (selector tern) into Secret other-dkim; created domain other.example; \
         set the DKIM key of other.example (selector tern)"
    );
    assert_eq!(event["regarding"]["kind"], "Domain");
    let patch = api.expect("PATCH", DOMAIN_STATUS_PATH, &serde_json::to_value(&domain).unwrap()).await;
    assert_eq!(ready(&patch), ("True".into(), "Reconciled".into()));
    assert_eq!(
        patch["status"]["dnsRecords"][0],
        json!({"type": "MX", "name": "other.example.", "value": "10 mx.example.net."})
    );
    assert_eq!(dkim_record(&patch), json!({"type": "TXT", "name": "tern._domainkey.other.example.", "value": txt}));
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(RESYNC));
    let stored = server
        .admin_client()
        .await
        .get_domain(tern_tests::tern_proto::v1::GetDomainRequest { name: "other.example".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stored.catch_all.as_str(), stored.default_quota_bytes), ("postmaster", 2 << 30));
    // The relay signs with the generated key: the mailbox service has it.
    assert_eq!((stored.dkim_selector.as_str(), stored.dkim_txt.as_str()), ("tern", txt.as_str()));

    // Counted on /metrics.
    let metrics = tern_runtime::metrics::Metrics::global().encode();
    assert!(metrics.contains(r#"tern_operator_reconciles_total{kind="Domain",result="ready"}"#), "{metrics}");

    // Again, the Secret existing: it is read, not created again; nothing changed, no Event.
    let mut domain = domain;
    domain.status = serde_json::from_value(patch["status"].clone()).unwrap();
    let task = tokio::spawn(controller::reconcile_domain(Arc::new(domain.clone()), ctx));
    api.expect("GET", DKIM_SECRET_PATH, &created).await;
    let again = api.expect("PATCH", DOMAIN_STATUS_PATH, &serde_json::to_value(&domain).unwrap()).await;
    assert_eq!(again, patch);
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(RESYNC));
}

#[tokio::test]
async fn domain_with_a_dkim_secret_publishes_its_key_or_says_why_not() {
    let Setup { server, mut api, ctx } = setup().await;
    let reference = SecretKeyRef { name: "my-dkim".into(), key: "key.pem".into() };
    let domain = other_domain(Some(DkimSpec { selector: "s2026".into(), secret_ref: Some(reference) }));
    let secret_path = "/api/v1/namespaces/mail/secrets/my-dkim";

    // The Secret is missing: the domain is served, not Ready, no Secret is generated.
    let task = tokio::spawn(controller::reconcile_domain(Arc::new(domain.clone()), ctx.clone()));
    let call = api.next().await;
    assert_eq!((call.method.as_str(), call.path.as_str()), ("GET", secret_path));
    call.reply(StatusCode::NOT_FOUND, &not_found());
    let event = api.expect("POST", EVENTS_PATH, &json!({})).await;
    assert_eq!(event["note"], "created domain other.example");
    let warning = api.expect("POST", EVENTS_PATH, &json!({})).await;
    assert_eq!(warning["reason"], "DkimKeyInvalid");
    let patch = api.expect("PATCH", DOMAIN_STATUS_PATH, &serde_json::to_value(&domain).unwrap()).await;
    assert_eq!(ready(&patch), ("False".into(), "DkimKeyInvalid".into()));
    assert_eq!(dkim_record(&patch), Value::Null);
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(RETRY_SOON));

    // The Secret appears (a PKCS#1 key made elsewhere).
    let pem = dkim::generate_private_key_pem().unwrap();
    let pkcs1 = {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        dkim::parse_private_key_pem(&pem).unwrap().to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap().to_string()
    };
    let mut secret = Secret::default();
    secret.metadata.name = Some("my-dkim".into());
    secret.data = Some([("key.pem".to_string(), ByteString(pkcs1.into_bytes()))].into());
    let mut domain = domain;
    domain.status = serde_json::from_value(patch["status"].clone()).unwrap();
    let task = tokio::spawn(controller::reconcile_domain(Arc::new(domain.clone()), ctx));
    api.expect("GET", secret_path, &serde_json::to_value(&secret).unwrap()).await;
    // The key goes to the mailbox service (in PKCS#1 as the Secret has it: the record is the
    // same).
    let event = api.expect("POST", EVENTS_PATH, &json!({})).await;
    assert_eq!(event["note"], "set the DKIM key of other.example (selector s2026)");
    let patch = api.expect("PATCH", DOMAIN_STATUS_PATH, &serde_json::to_value(&domain).unwrap()).await;
    assert_eq!(ready(&patch), ("True".into(), "Reconciled".into()));
    assert_eq!(
        dkim_record(&patch),
        json!({"type": "TXT", "name": "s2026._domainkey.other.example.", "value": dkim::txt_value(&pem).unwrap()})
    );
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(RESYNC));
    let stored = server
        .admin_client()
        .await
        .get_domain(tern_tests::tern_proto::v1::GetDomainRequest { name: "other.example".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stored.dkim_selector, stored.dkim_txt), ("s2026".to_string(), dkim::txt_value(&pem).unwrap()));
}

/// A Mailbox and a Domain in a namespace whose Secrets the operator may not read: nothing is
/// done in the mailbox service and no Secret is asked for (it would be refused); each says why
/// in its condition and one Warning Event.
#[tokio::test]
async fn objects_where_secrets_are_not_read_say_so_and_are_not_reconciled() {
    let Setup { server, mut api, ctx } = setup_reading_secrets_in("tern-system").await;
    let object = mailbox(true);
    let task = tokio::spawn(controller::reconcile_mailbox(Arc::new(object.clone()), ctx.clone()));
    let (notes, patch) = api.events_then_status(&object).await;
    assert_eq!(ready(&patch), ("False".into(), "SecretNamespaceNotWatched".into()));
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("only in namespaces tern-system") && notes[0].contains("not in mail"), "{notes:?}");
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(RESYNC));
    assert!(!account_exists(&server).await);

    let domain = other_domain(None);
    let task = tokio::spawn(controller::reconcile_domain(Arc::new(domain.clone()), ctx));
    let warning = api.expect("POST", EVENTS_PATH, &json!({})).await;
    assert_eq!(warning["reason"], "SecretNamespaceNotWatched");
    let patch = api.expect("PATCH", DOMAIN_STATUS_PATH, &serde_json::to_value(&domain).unwrap()).await;
    assert_eq!(ready(&patch), ("False".into(), "SecretNamespaceNotWatched".into()));
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(RESYNC));
    let missing = server
        .admin_client()
        .await
        .get_domain(tern_tests::tern_proto::v1::GetDomainRequest { name: "other.example".into() })
        .await;
    assert!(missing.is_err(), "the domain was not created");
}

/// An empty list, as the API server answers a list of objects or of their metadata.
fn empty_list(metadata_only: bool) -> Value {
    if metadata_only {
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
               "metadata": {"resourceVersion": "1"}, "items": []})
    } else {
        json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []})
    }
}

/// Runs the controllers (`controller::run`) against the mock API server in the Secret
/// configuration `scope`, answers every list with an empty list and leaves every watch open,
/// and returns the requests they made once they make no more: the list and the watch of each
/// watch.
async fn watch_requests(scope: SecretScope, when: support::When) -> (Vec<(String, String)>, controller::Watches) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    // The mailbox service is never called: no object is listed.
    let options = tern_runtime::rpc::ClientOptions::new("http://127.0.0.1:9".to_string());
    let admin = Arc::new(GrpcAdmin::connect(&options).unwrap());
    let ctx = Arc::new(Context::new(client.clone(), admin, None).with_secret_scope(scope.clone()));
    let run = tokio::spawn(controller::run(ctx));
    let mut requests = vec![];
    let mut open_watches = vec![];
    while let Ok(next) = tokio::time::timeout(Duration::from_secs(2), handle.next_request()).await {
        let (request, respond) = next.expect("the controllers dropped the client");
        support::record(request.method().as_str(), request.uri(), when);
        let uri = request.uri().clone();
        let path = uri.path().to_string();
        let query = uri.query().unwrap_or_default().to_string();
        requests.push((request.method().to_string(), format!("{path}?{query}")));
        if query.split('&').any(|p| p == "watch=true") {
            open_watches.push(respond);
            continue;
        }
        let metadata_only = request
            .headers()
            .get(http::header::ACCEPT)
            .is_some_and(|a| a.to_str().unwrap_or_default().contains("PartialObjectMetadata"));
        let body = serde_json::to_vec(&empty_list(metadata_only)).unwrap();
        respond.send_response(Response::builder().status(StatusCode::OK).body(Body::from(body)).unwrap());
    }
    run.abort();
    (requests, controller::watches(&client, &scope))
}

/// What each watch lists and watches: exactly the [`controller::Watches`] of the configuration,
/// Secrets metadata-only, and only in the namespaces the operator may read Secrets in.
#[tokio::test]
async fn watches_list_and_watch_secrets_only_where_they_may_be_read() {
    let _settle = support::Guard(recorded_here);
    for (scope, when) in [
        (SecretScope::Cluster, support::When::ClusterWideSecrets),
        (SecretScope::from_namespaces(["mail", "team"]), support::When::NamespacedSecrets),
    ] {
        let (requests, watches) = watch_requests(scope.clone(), when).await;
        let made: std::collections::BTreeSet<(String, String)> =
            requests.iter().map(|(method, uri)| (method.clone(), uri.split('?').next().unwrap().to_string())).collect();
        let mut expected = std::collections::BTreeSet::new();
        expected.insert(("GET".to_string(), watches.mailboxes.resource_url().to_string()));
        expected.insert(("GET".to_string(), watches.domains.resource_url().to_string()));
        for (api, _) in &watches.secrets {
            expected.insert(("GET".to_string(), api.resource_url().to_string()));
        }
        for (api, _) in &watches.config_maps {
            expected.insert(("GET".to_string(), api.resource_url().to_string()));
        }
        assert_eq!(made, expected, "{scope:?}: {requests:#?}");
        // Each watcher lists, then watches: mailboxes once, domains and the Secrets of each
        // namespace once for each controller, the ConfigMaps of each namespace once (the
        // Mailboxes').
        let watchers = 1 + 2 + 2 * watches.secrets.len() + watches.config_maps.len();
        let lists = requests.iter().filter(|(_, uri)| !uri.contains("watch=true")).count();
        let watching = requests.iter().filter(|(_, uri)| uri.contains("watch=true")).count();
        assert_eq!((lists, watching), (watchers, watchers), "{scope:?}: {requests:#?}");
        match &scope {
            SecretScope::Cluster => {
                assert!(requests.iter().any(|(_, uri)| uri.starts_with("/api/v1/secrets?")));
                assert!(requests.iter().any(|(_, uri)| uri.starts_with("/api/v1/configmaps?")));
            }
            SecretScope::Namespaces(_) => {
                for resource in ["secrets", "configmaps"] {
                    let everywhere = format!("/api/v1/{resource}");
                    assert!(requests.iter().all(|(_, uri)| !uri.starts_with(&everywhere)), "{requests:#?}");
                    for ns in ["mail", "team"] {
                        let url = format!("/api/v1/namespaces/{ns}/{resource}?");
                        assert!(requests.iter().any(|(_, uri)| uri.starts_with(&url)), "{requests:#?}");
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn first_domain_reconcile_adds_the_finalizer() {
    let Setup { server: _server, mut api, ctx } = setup().await;
    let mut domain = other_domain(None);
    domain.metadata.finalizers = None;
    let task = tokio::spawn(controller::reconcile_domain(Arc::new(domain.clone()), ctx));
    let mut with_finalizer = domain.clone();
    with_finalizer.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
    let path = "/apis/mail.tern.dev/v1alpha1/namespaces/mail/domains/other";
    let patch = api.expect("PATCH", path, &serde_json::to_value(&with_finalizer).unwrap()).await;
    assert!(patch.to_string().contains(FINALIZER), "{patch}");
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
}

/// A Secret watch the API server refuses (403, as under a Role in another namespace) is
/// retried with backoff, counted, and keeps the process not ready until it works.
#[tokio::test]
async fn a_refused_secret_watch_makes_the_operator_not_ready_until_it_works() {
    let _settle = support::Guard(recorded_here);
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let options = tern_runtime::rpc::ClientOptions::new("http://127.0.0.1:9".to_string());
    let admin = Arc::new(GrpcAdmin::connect(&options).unwrap());
    let readiness = tern_runtime::http::Readiness::default();
    readiness.set(true);
    let health = tern_operator::watch::Health::with_readiness(readiness.clone());
    let ctx = Arc::new(Context::new(client, admin, None).with_health(health.clone()));
    let run = tokio::spawn(controller::run(ctx));

    let mut refused = 0;
    let mut open_watches = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    // Refuses the first two lists of Secrets (each controller's), then answers them.
    while refused < 2 || !readiness.get() {
        let next = tokio::time::timeout_at(deadline, handle.next_request()).await;
        let (request, respond) = next.expect("the watch was not retried").expect("the client was dropped");
        support::record(request.method().as_str(), request.uri(), support::When::ClusterWideSecrets);
        let query = request.uri().query().unwrap_or_default().to_string();
        if query.split('&').any(|p| p == "watch=true") {
            open_watches.push(respond);
            continue;
        }
        let secrets = request.uri().path() == "/api/v1/secrets";
        // The Secret and ConfigMap watches ask for metadata only.
        let metadata_only = request
            .headers()
            .get(http::header::ACCEPT)
            .is_some_and(|a| a.to_str().unwrap_or_default().contains("PartialObjectMetadata"));
        let (status, body) = if secrets && refused < 2 {
            refused += 1;
            let forbidden = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden",
                "code": 403, "message": "secrets is forbidden: User \"system:serviceaccount:tern:tern-operator\" \
                cannot list resource \"secrets\" in API group \"\" at the cluster scope"});
            (StatusCode::FORBIDDEN, forbidden)
        } else {
            (StatusCode::OK, empty_list(metadata_only))
        };
        let body = serde_json::to_vec(&body).unwrap();
        respond.send_response(Response::builder().status(status).body(Body::from(body)).unwrap());
        if refused == 2 && secrets && status == StatusCode::FORBIDDEN {
            // Both refusals are in: the process is not ready, and says why.
            for _ in 0..100 {
                if !readiness.get() && !health.problems().is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(!readiness.get());
            let problems = health.problems();
            assert!(
                problems[0].contains("secrets in every namespace") && problems[0].contains("forbidden"),
                "{problems:?}"
            );
        }
    }
    assert!(health.problems().is_empty(), "{:?}", health.problems());
    let metrics = tern_runtime::metrics::Metrics::global().encode();
    let errors = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"tern_operator_watch_errors_total{resource="secrets"} "#))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(errors.is_some_and(|n| n >= 2), "{metrics}");
    run.abort();
}
