//! Leader election against a mock Kubernetes API server (tower-test: every request is checked
//! and answered by the test): creating the Lease, following a live one without writing, taking
//! over an expired one with the resourceVersion read (so a concurrent takeover conflicts), and
//! giving it up on shutdown.
//!
//! Every request is recorded as the RBAC rule it needs, and must be listed in
//! `tests/api-requests.json` (see `support`); this binary owns the Leases there.

mod support;

use std::time::Duration;

use http::{Request, Response, StatusCode};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::{Api, Client};
use serde_json::{Value, json};
use tern_operator::leader::{ElectionConfig, Elector};

const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/mail/leases/tern-operator";
const LEASES_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/mail/leases";

/// The test's side of the mock API server, which records every request (leader election is
/// the same in every configuration).
struct Handle {
    handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    _settle: support::Guard,
}

impl Handle {
    async fn next_request(&mut self) -> Option<(Request<Body>, tower_test::mock::SendResponse<Response<Body>>)> {
        let next = self.handle.next_request().await;
        if let Some((request, _)) = &next {
            support::record(request.method().as_str(), request.uri(), support::When::Always);
        }
        next
    }
}

fn elector(identity: &str) -> (Elector, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "mail");
    let handle = Handle { handle, _settle: support::Guard(|request| request.resource == "leases") };
    (Elector::new(Api::<Lease>::namespaced(client, "mail"), ElectionConfig::new(identity.into())), handle)
}

/// Expects `method path`, answers `status` with `response`, and returns the request body.
async fn expect(handle: &mut Handle, method: &str, path: &str, status: StatusCode, response: &Value) -> Value {
    let (request, respond) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .expect("no further request")
        .expect("the client was dropped");
    assert_eq!((request.method().as_str(), request.uri().path()), (method, path));
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    respond.send_response(
        Response::builder().status(status).body(Body::from(serde_json::to_vec(response).unwrap())).unwrap(),
    );
    body
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "leases \"tern-operator\" not found"})
}

fn lease(holder: Option<&str>, renewed: Timestamp, version: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "tern-operator", "namespace": "mail", "resourceVersion": version},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed.to_string(),
                 "acquireTime": renewed.to_string(), "leaseTransitions": 3}
    })
}

fn ago(seconds: i64) -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second() - seconds).unwrap()
}

#[tokio::test]
async fn the_first_replica_creates_the_lease_and_leads() {
    let (elector, mut api) = elector("op-a");
    let round = tokio::spawn(async move { elector.try_acquire_or_renew().await });
    expect(&mut api, "GET", LEASE_PATH, StatusCode::NOT_FOUND, &not_found()).await;
    let created = lease(Some("op-a"), Timestamp::now(), "1");
    let body = expect(&mut api, "POST", LEASES_PATH, StatusCode::CREATED, &created).await;
    assert_eq!(body["spec"]["holderIdentity"], "op-a");
    assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
    assert!(round.await.unwrap().unwrap(), "the creator leads");
}

#[tokio::test]
async fn a_live_lease_of_another_replica_is_followed_without_writing() {
    let (elector, mut api) = elector("op-a");
    let round = tokio::spawn(async move { elector.try_acquire_or_renew().await });
    expect(&mut api, "GET", LEASE_PATH, StatusCode::OK, &lease(Some("op-b"), ago(3), "7")).await;
    assert!(!round.await.unwrap().unwrap(), "op-b leads");
    // No write followed: the round is over and dropped the client.
    assert!(api.next_request().await.is_none());
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_with_the_version_read() {
    let (elector, mut api) = elector("op-a");
    let round = tokio::spawn(async move { elector.try_acquire_or_renew().await });
    expect(&mut api, "GET", LEASE_PATH, StatusCode::OK, &lease(Some("op-b"), ago(60), "7")).await;
    let body = expect(&mut api, "PUT", LEASE_PATH, StatusCode::OK, &lease(Some("op-a"), Timestamp::now(), "8")).await;
    assert_eq!(body["metadata"]["resourceVersion"], "7", "a concurrent takeover must conflict");
    assert_eq!(body["spec"]["holderIdentity"], "op-a");
    assert_eq!(body["spec"]["leaseTransitions"], 4);
    assert!(round.await.unwrap().unwrap());
}

#[tokio::test]
async fn losing_a_takeover_race_is_following_not_an_error() {
    let (elector, mut api) = elector("op-a");
    let round = tokio::spawn(async move { elector.try_acquire_or_renew().await });
    expect(&mut api, "GET", LEASE_PATH, StatusCode::OK, &lease(Some("op-b"), ago(60), "7")).await;
    let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
                          "message": "the object has been modified"});
    expect(&mut api, "PUT", LEASE_PATH, StatusCode::CONFLICT, &conflict).await;
    assert!(!round.await.unwrap().unwrap(), "op-c won the race");
}

#[tokio::test]
async fn the_leader_renews_and_gives_the_lease_up_on_shutdown() {
    let (elector, mut api) = elector("op-a");
    let e = elector.clone();
    let round = tokio::spawn(async move { e.try_acquire_or_renew().await });
    expect(&mut api, "GET", LEASE_PATH, StatusCode::OK, &lease(Some("op-a"), ago(2), "9")).await;
    let body = expect(&mut api, "PUT", LEASE_PATH, StatusCode::OK, &lease(Some("op-a"), Timestamp::now(), "10")).await;
    assert_eq!(body["spec"]["leaseTransitions"], 3, "a renewal is no transition");
    assert!(round.await.unwrap().unwrap());

    let release = tokio::spawn(async move { elector.release().await });
    expect(&mut api, "GET", LEASE_PATH, StatusCode::OK, &lease(Some("op-a"), Timestamp::now(), "10")).await;
    let body = expect(&mut api, "PUT", LEASE_PATH, StatusCode::OK, &lease(None, Timestamp::now(), "11")).await;
    assert!(body["spec"]["holderIdentity"].is_null(), "released: {body}");
    release.await.unwrap();
}
