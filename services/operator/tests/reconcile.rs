//! The reconcilers against a real mailbox service on loopback (gRPC), with no Kubernetes API
//! server: the objects are built in the test, as the controller would read them.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use secrecy::SecretString;
use tern_operator::admin::{AdminApi, ApiError, GrpcAdmin};
use tern_operator::crd::{
    ConfigMapKeyRef, DEFAULT_SIEVE_NAME, Domain, DomainSpec, Mailbox, MailboxSpec, MailboxStatus, Pop3DeletePolicy,
    ReclaimPolicy, SecretKeyRef, SieveSpec, SpamScan, SpamSpec,
};
use tern_operator::dkim;
use tern_operator::reconcile::{
    ClientPorts, ConfigMapInput, DkimInput, DnsSettings, Next, Outcome, PasswordInput, PasswordMissing, SIEVE_READY,
    cleanup_domain, cleanup_mailbox, condition, dns_records, ready_condition, reason, reconcile_domain,
    reconcile_domain_with_dkim, reconcile_mailbox, reconcile_mailbox_with_sieve,
};
use tern_tests::tern_mailbox::Limits;
use tern_tests::tern_proto::v1::{
    Account, AuthenticateRequest, CreateAccountRequest, CreateDomainRequest, DkimKey, Domain as ApiDomain,
    GetAccountRequest, GetDomainRequest, GetSieveScriptRequest, GetSieveScriptResponse, ListSieveScriptsRequest,
    Password, Pop3DeletePolicy as Pop3, PutSieveScriptRequest, ResolveRecipientRequest, SetActiveSieveScriptRequest,
    SetDkimKeyRequest, SpamScan as Scan, SpamSettings, UpdateAccountRequest, UpdateDomainRequest, Usage,
};
use tern_tests::{TestServer, deliver, message};

fn domain(name: &str) -> Domain {
    let mut domain = Domain::new(
        name,
        DomainSpec {
            name: name.to_string(),
            catch_all: None,
            default_quota: Some("1Gi".to_string()),
            dkim: None,
            mail_host: None,
            spam: None,
            reclaim_policy: ReclaimPolicy::Retain,
        },
    );
    domain.metadata.namespace = Some("mail".to_string());
    domain.metadata.generation = Some(1);
    domain
}

fn mailbox(address: &str) -> Mailbox {
    let mut mailbox = Mailbox::new(
        address.split('@').next().unwrap(),
        MailboxSpec {
            address: address.to_string(),
            display_name: Some("Alice Example".to_string()),
            password_secret_ref: SecretKeyRef { name: "alice-password".to_string(), key: "password".to_string() },
            quota: Some("10Mi".to_string()),
            aliases: vec!["info@example.com".to_string(), "a@example.com".to_string()],
            suspended: false,
            pop3_delete_policy: Pop3DeletePolicy::Expunge,
            spam: None,
            sieve: None,
            reclaim_policy: ReclaimPolicy::Retain,
        },
    );
    mailbox.metadata.namespace = Some("mail".to_string());
    mailbox.metadata.generation = Some(1);
    mailbox
}

fn password(value: &str, version: &str) -> Result<PasswordInput, PasswordMissing> {
    Ok(PasswordInput { value: SecretString::from(value.to_string()), version: version.to_string() })
}

/// What the controller does between reconciles: the status is written back to the object.
fn apply_status(mailbox: &mut Mailbox, outcome: &Outcome<MailboxStatus>) {
    mailbox.status = Some(outcome.status.clone());
}

fn reason_of<S>(outcome: &Outcome<S>, conditions: impl Fn(&S) -> &[tern_operator::crd::Condition]) -> (String, String) {
    let ready = ready_condition(conditions(&outcome.status)).expect("a Ready condition");
    (ready.status.clone(), ready.reason.clone())
}

async fn can_login(server: &TestServer, address: &str, password: &str) -> bool {
    let mut client = server.mailbox_client().await;
    let request = AuthenticateRequest {
        username: address.to_string(),
        password: password.to_string(),
        remote_ip: "127.0.0.1".to_string(),
    };
    client.authenticate(request).await.is_ok()
}

async fn start() -> (TestServer, GrpcAdmin) {
    let server = TestServer::start(Limits::default()).await;
    let admin = GrpcAdmin::new(server.admin_client().await, server.mailbox_client().await);
    (server, admin)
}

#[tokio::test]
async fn domain_is_created_then_updated_and_a_second_reconcile_changes_nothing() {
    let (server, admin) = start().await;
    let mut object = domain("example.com");

    let outcome = reconcile_domain(&admin, &object).await;
    assert_eq!(outcome.next, Next::Resync);
    assert_eq!(outcome.changes, ["created domain example.com"]);
    assert_eq!(reason_of(&outcome, |s| &s.conditions), ("True".to_string(), reason::RECONCILED.to_string()));
    assert_eq!(outcome.status.observed_generation, Some(1));
    let types: Vec<_> = outcome.status.dns_records.iter().map(|r| (r.type_.as_str(), r.name.as_str())).collect();
    assert_eq!(
        types,
        [
            ("MX", "example.com."),
            ("TXT", "example.com."),
            ("TXT", "_dmarc.example.com."),
            ("SRV", "_submissions._tcp.example.com."),
            ("SRV", "_submission._tcp.example.com."),
            ("SRV", "_imaps._tcp.example.com."),
            ("SRV", "_imap._tcp.example.com."),
            ("SRV", "_pop3s._tcp.example.com."),
            ("SRV", "_pop3._tcp.example.com."),
            ("CNAME", "autoconfig.example.com."),
            ("CNAME", "autodiscover.example.com."),
            ("TXT", "_smtp._tls.example.com."),
        ]
    );
    assert_eq!(outcome.status.dns_records[0].value, "10 mail.example.com.");
    let stored = server
        .admin_client()
        .await
        .get_domain(GetDomainRequest { name: "example.com".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.default_quota_bytes, 1 << 30);

    object.status = Some(outcome.status.clone());
    let again = reconcile_domain(&admin, &object).await;
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    assert_eq!(again.status, outcome.status, "the status (and the condition's transition time) is unchanged");

    object.spec.catch_all = Some("Postmaster".to_string());
    object.spec.default_quota = Some("500Mi".to_string());
    object.metadata.generation = Some(2);
    let updated = reconcile_domain(&admin, &object).await;
    assert_eq!(updated.changes.len(), 2, "{:?}", updated.changes);
    let stored = server
        .admin_client()
        .await
        .get_domain(GetDomainRequest { name: "example.com".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stored.catch_all.as_str(), stored.default_quota_bytes), ("postmaster", 500 << 20));
    object.status = Some(updated.status);
    assert!(reconcile_domain(&admin, &object).await.changes.is_empty());
}

#[tokio::test]
async fn domain_with_an_invalid_quota_is_not_ready() {
    let (_server, admin) = start().await;
    let mut object = domain("example.com");
    object.spec.default_quota = Some("1.5Gi".to_string());
    let outcome = reconcile_domain(&admin, &object).await;
    assert_eq!(reason_of(&outcome, |s| &s.conditions), ("False".to_string(), reason::INVALID_SPEC.to_string()));
    assert!(outcome.changes.is_empty());
}

#[tokio::test]
async fn mailbox_waits_for_its_domain_then_is_created_with_quota_and_aliases() {
    let (server, admin) = start().await;
    let mut object = mailbox("alice@example.com");

    let outcome = reconcile_mailbox(&admin, &object, password("first secret", "v1")).await;
    assert_eq!(reason_of(&outcome, |s| &s.conditions), ("False".to_string(), reason::DOMAIN_MISSING.to_string()));
    assert_eq!(outcome.next, Next::Soon);
    assert!(outcome.changes.is_empty());
    apply_status(&mut object, &outcome);

    reconcile_domain(&admin, &domain("example.com")).await;
    let outcome = reconcile_mailbox(&admin, &object, password("first secret", "v1")).await;
    assert_eq!(reason_of(&outcome, |s| &s.conditions), ("True".to_string(), reason::RECONCILED.to_string()));
    assert_eq!(outcome.next, Next::Resync);
    assert_eq!(outcome.changes[0], "created account alice@example.com");
    assert_eq!(outcome.status.messages, Some(0));
    assert_eq!(outcome.status.usage.as_deref(), Some("0/10.0Mi"));
    assert_eq!(outcome.status.password_version.as_deref(), Some("v1"));

    let account = server
        .admin_client()
        .await
        .get_account(GetAccountRequest { address: "alice@example.com".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(account.quota_bytes, 10 << 20);
    assert_eq!(account.display_name, "Alice Example");
    let mut aliases = account.aliases.clone();
    aliases.sort();
    assert_eq!(aliases, ["a@example.com", "info@example.com"]);
    assert!(can_login(&server, "alice@example.com", "first secret").await);

    // Usage follows deliveries.
    apply_status(&mut object, &outcome);
    let mut client = server.mailbox_client().await;
    deliver(&mut client, &["info@example.com"], &message("hello", "to the alias")).await.unwrap();
    let outcome = reconcile_mailbox(&admin, &object, password("first secret", "v1")).await;
    assert!(outcome.changes.is_empty(), "{:?}", outcome.changes);
    assert_eq!(outcome.status.messages, Some(1));
    assert!(outcome.status.bytes_used.unwrap() > 0);
}

#[tokio::test]
async fn reconciling_twice_is_a_no_op() {
    let (_server, admin) = start().await;
    reconcile_domain(&admin, &domain("example.com")).await;
    let mut object = mailbox("alice@example.com");
    object.spec.suspended = true;
    object.spec.pop3_delete_policy = Pop3DeletePolicy::Keep;
    let first = reconcile_mailbox(&admin, &object, password("secret", "v1")).await;
    assert!(first.is_ready());
    apply_status(&mut object, &first);
    let second = reconcile_mailbox(&admin, &object, password("secret", "v1")).await;
    assert!(second.changes.is_empty(), "{:?}", second.changes);
    assert_eq!(second.status, first.status);
}

#[tokio::test]
async fn a_new_password_secret_version_resets_the_password() {
    let (server, admin) = start().await;
    reconcile_domain(&admin, &domain("example.com")).await;
    let mut object = mailbox("alice@example.com");
    let outcome = reconcile_mailbox(&admin, &object, password("old password", "uid/1")).await;
    apply_status(&mut object, &outcome);
    assert!(can_login(&server, "alice@example.com", "old password").await);

    // `kubectl create secret --from-file` keeps the file's line break; it is not part of the
    // password.
    let outcome = reconcile_mailbox(&admin, &object, password("new password\n", "uid/2")).await;
    assert_eq!(outcome.changes, ["set the password of alice@example.com"]);
    assert_eq!(outcome.status.password_version.as_deref(), Some("uid/2"));
    apply_status(&mut object, &outcome);
    assert!(can_login(&server, "alice@example.com", "new password").await);
    assert!(!can_login(&server, "alice@example.com", "old password").await);

    // A PHC hash is stored as it is.
    let hash = tern_tests::tern_mailbox::password::hash(&SecretString::from("hashed password")).unwrap();
    let outcome = reconcile_mailbox(&admin, &object, password(&hash, "uid/3")).await;
    assert_eq!(outcome.changes, ["set the password of alice@example.com"]);
    assert!(can_login(&server, "alice@example.com", "hashed password").await);
}

#[tokio::test]
async fn missing_password_secret_blocks_creation_but_not_updates() {
    let (server, admin) = start().await;
    reconcile_domain(&admin, &domain("example.com")).await;
    let mut object = mailbox("alice@example.com");
    let missing = || Err(PasswordMissing("password Secret mail/alice-password does not exist".to_string()));

    let outcome = reconcile_mailbox(&admin, &object, missing()).await;
    assert_eq!(
        reason_of(&outcome, |s| &s.conditions),
        ("False".to_string(), reason::PASSWORD_SECRET_MISSING.to_string())
    );
    assert!(outcome.changes.is_empty());
    let get = server.admin_client().await.get_account(GetAccountRequest { address: "alice@example.com".into() }).await;
    assert_eq!(get.unwrap_err().code(), tonic::Code::NotFound);

    let outcome = reconcile_mailbox(&admin, &object, password("secret", "v1")).await;
    apply_status(&mut object, &outcome);
    object.spec.quota = Some("20Mi".to_string());
    let outcome = reconcile_mailbox(&admin, &object, missing()).await;
    assert_eq!(outcome.changes, ["set the quota of alice@example.com to 20971520 bytes"]);
    assert_eq!(reason_of(&outcome, |s| &s.conditions).1, reason::PASSWORD_SECRET_MISSING);
}

#[tokio::test]
async fn suspended_quota_pop3_policy_and_aliases_updates_apply() {
    let (server, admin) = start().await;
    reconcile_domain(&admin, &domain("example.com")).await;
    let mut object = mailbox("alice@example.com");
    let outcome = reconcile_mailbox(&admin, &object, password("secret", "v1")).await;
    apply_status(&mut object, &outcome);

    object.spec.suspended = true;
    object.spec.quota = Some("1G".to_string());
    object.spec.pop3_delete_policy = Pop3DeletePolicy::Keep;
    object.spec.display_name = None;
    object.spec.aliases = vec!["info@example.com".to_string(), "alice.smith@example.com".to_string()];
    object.metadata.generation = Some(2);
    let outcome = reconcile_mailbox(&admin, &object, password("secret", "v1")).await;
    assert_eq!(outcome.changes.len(), 6, "{:?}", outcome.changes);
    assert_eq!(outcome.status.observed_generation, Some(2));
    let account = server
        .admin_client()
        .await
        .get_account(GetAccountRequest { address: "alice@example.com".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(account.suspended);
    assert_eq!(account.quota_bytes, 1_000_000_000);
    assert_eq!(account.pop3_delete(), Pop3::Keep);
    assert_eq!(account.display_name, "");
    let mut aliases = account.aliases.clone();
    aliases.sort();
    assert_eq!(aliases, ["alice.smith@example.com", "info@example.com"]);
    assert!(!can_login(&server, "alice@example.com", "secret").await, "a suspended mailbox cannot log in");

    apply_status(&mut object, &outcome);
    object.spec.suspended = false;
    let outcome = reconcile_mailbox(&admin, &object, password("secret", "v1")).await;
    assert_eq!(outcome.changes, ["resumed alice@example.com"]);
    assert!(can_login(&server, "alice@example.com", "secret").await);
}

#[tokio::test]
async fn drift_made_outside_the_operator_is_repaired() {
    let (server, admin) = start().await;
    reconcile_domain(&admin, &domain("example.com")).await;
    let mut object = mailbox("alice@example.com");
    let outcome = reconcile_mailbox(&admin, &object, password("secret", "v1")).await;
    apply_status(&mut object, &outcome);

    let mut client = server.admin_client().await;
    let update = tern_tests::tern_proto::v1::UpdateAccountRequest {
        address: "alice@example.com".into(),
        quota_bytes: Some(1),
        suspended: Some(true),
        ..Default::default()
    };
    client.update_account(update).await.unwrap();
    client
        .remove_alias(tern_tests::tern_proto::v1::RemoveAliasRequest { alias: "info@example.com".into() })
        .await
        .unwrap();

    let outcome = reconcile_mailbox(&admin, &object, password("secret", "v1")).await;
    assert_eq!(outcome.changes.len(), 3, "{:?}", outcome.changes);
    let account =
        client.get_account(GetAccountRequest { address: "alice@example.com".into() }).await.unwrap().into_inner();
    assert!(!account.suspended);
    assert_eq!(account.quota_bytes, 10 << 20);
    assert_eq!(account.aliases.len(), 2);
}

#[tokio::test]
async fn deletion_honours_the_reclaim_policy() {
    let (server, admin) = start().await;
    reconcile_domain(&admin, &domain("example.com")).await;
    let exists = |address: &'static str| {
        let server = &server;
        async move {
            let request = GetAccountRequest { address: address.to_string() };
            server.admin_client().await.get_account(request).await.is_ok()
        }
    };

    let kept = mailbox("kept@example.com");
    let mut kept_aliases = kept.clone();
    kept_aliases.spec.aliases.clear();
    reconcile_mailbox(&admin, &kept_aliases, password("secret", "v1")).await;
    let changes = cleanup_mailbox(&admin, &kept_aliases).await.unwrap();
    assert!(changes[0].contains("reclaimPolicy Retain"), "{changes:?}");
    assert!(exists("kept@example.com").await, "Retain leaves the account");

    let mut deleted = mailbox("gone@example.com");
    deleted.spec.reclaim_policy = ReclaimPolicy::Delete;
    let outcome = reconcile_mailbox(&admin, &deleted, password("secret", "v1")).await;
    assert!(outcome.is_ready());
    let mut client = server.mailbox_client().await;
    deliver(&mut client, &["gone@example.com"], &message("hello", "soon gone")).await.unwrap();
    assert_eq!(cleanup_mailbox(&admin, &deleted).await.unwrap(), ["deleted account gone@example.com and its mail"]);
    assert!(!exists("gone@example.com").await, "Delete removes the account");
    assert!(!can_login(&server, "gone@example.com", "secret").await);
    // Its aliases went with it: another mailbox can take them.
    let mut taker = mailbox("taker@example.com");
    taker.spec.aliases = vec!["info@example.com".to_string()];
    assert!(reconcile_mailbox(&admin, &taker, password("secret", "v1")).await.is_ready());
    // A second cleanup (the finalizer retried) is fine.
    assert!(cleanup_mailbox(&admin, &deleted).await.unwrap().is_empty());

    // A Domain with Delete is refused while it has accounts, and deleted once it has none.
    let mut object = domain("example.com");
    object.spec.reclaim_policy = ReclaimPolicy::Delete;
    assert!(cleanup_domain(&admin, &object).await.is_err());
    for address in ["kept@example.com", "taker@example.com"] {
        let mut m = mailbox(address);
        m.spec.reclaim_policy = ReclaimPolicy::Delete;
        cleanup_mailbox(&admin, &m).await.unwrap();
    }
    assert_eq!(cleanup_domain(&admin, &object).await.unwrap(), ["deleted domain example.com"]);
}

#[tokio::test]
async fn an_alias_taken_by_another_account_is_refused_not_retried_hot() {
    let (_server, admin) = start().await;
    reconcile_domain(&admin, &domain("example.com")).await;
    assert!(reconcile_mailbox(&admin, &mailbox("alice@example.com"), password("secret", "v1")).await.is_ready());
    let bob = mailbox("bob@example.com");
    let outcome = reconcile_mailbox(&admin, &bob, password("secret", "v1")).await;
    assert_eq!(reason_of(&outcome, |s| &s.conditions).0, "False");
    assert_eq!(outcome.next, Next::Soon);
}

#[tokio::test]
async fn admin_api_down_is_unavailable_and_backs_off() {
    let (mut server, admin) = start().await;
    reconcile_domain(&admin, &domain("example.com")).await;
    server.stop().await;
    let outcome = reconcile_mailbox(&admin, &mailbox("alice@example.com"), password("secret", "v1")).await;
    assert_eq!(reason_of(&outcome, |s| &s.conditions), ("False".to_string(), reason::API_UNAVAILABLE.to_string()));
    assert_eq!(outcome.next, Next::Backoff);
    let outcome = reconcile_domain(&admin, &domain("example.com")).await;
    assert_eq!(outcome.next, Next::Backoff);
}

/// Spam settings as a resource writes them.
fn spam(scan: SpamScan, junk_folder: Option<&str>, allow: &[&str], block: &[&str]) -> Option<SpamSpec> {
    Some(SpamSpec {
        scan,
        junk_folder: junk_folder.map(str::to_string),
        allow_senders: allow.iter().map(|s| s.to_string()).collect(),
        block_senders: block.iter().map(|s| s.to_string()).collect(),
    })
}

/// Spam settings as the mailbox service reports them.
fn settings(scan: Scan, junk_folder: &str, allow: &[&str], block: &[&str]) -> SpamSettings {
    SpamSettings {
        scan: scan as i32,
        junk_folder: junk_folder.to_string(),
        allow_senders: allow.iter().map(|s| s.to_string()).collect(),
        block_senders: block.iter().map(|s| s.to_string()).collect(),
    }
}

/// The spam settings the mailbox service stores for a domain, and for an account: the defaults
/// when it reports none.
async fn stored_domain_spam(server: &TestServer, name: &str) -> SpamSettings {
    let request = GetDomainRequest { name: name.to_string() };
    server.admin_client().await.get_domain(request).await.unwrap().into_inner().spam.unwrap_or_default()
}

async fn stored_account_spam(server: &TestServer, address: &str) -> SpamSettings {
    let request = GetAccountRequest { address: address.to_string() };
    server.admin_client().await.get_account(request).await.unwrap().into_inner().spam.unwrap_or_default()
}

#[tokio::test]
async fn spam_settings_are_applied_normalised_left_alone_and_follow_changes() {
    let (server, admin) = start().await;

    // A Domain with settings written loosely: mixed case, spaces, a duplicate.
    let mut object = domain("example.com");
    object.spec.spam = spam(
        SpamScan::Disabled,
        Some("Spam"),
        &["@Partner.example", " bob@example.org", "BOB@example.org"],
        &["x@bad.example"],
    );
    let outcome = reconcile_domain(&admin, &object).await;
    assert!(outcome.is_ready(), "{:?}", outcome.status);
    assert_eq!(
        outcome.changes,
        [
            "created domain example.com",
            "set the spam settings of example.com: scan Disabled, junk folder \"Spam\", 2 allowed and 1 blocked senders",
        ]
    );
    let expected = settings(Scan::Off, "Spam", &["@partner.example", "bob@example.org"], &["x@bad.example"]);
    assert_eq!(stored_domain_spam(&server, "example.com").await, expected);
    object.status = Some(outcome.status.clone());
    let again = reconcile_domain(&admin, &object).await;
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    assert_eq!(again.status, outcome.status);

    // A Mailbox with its own: `inbox/` is stored as `INBOX/`, which must not read as a change.
    let mut alice = mailbox("alice@example.com");
    alice.spec.spam = spam(SpamScan::Enabled, Some("inbox/Spam"), &["Carol@Example.net"], &[]);
    let outcome = reconcile_mailbox(&admin, &alice, password("secret", "v1")).await;
    assert!(outcome.is_ready(), "{:?}", outcome.status);
    assert_eq!(
        outcome.changes.last().unwrap(),
        "set the spam settings of alice@example.com: scan Enabled, junk folder \"INBOX/Spam\", 1 allowed and 0 blocked \
         senders"
    );
    let own = settings(Scan::On, "INBOX/Spam", &["carol@example.net"], &[]);
    assert_eq!(stored_account_spam(&server, "alice@example.com").await, own);
    apply_status(&mut alice, &outcome);
    let again = reconcile_mailbox(&admin, &alice, password("secret", "v1")).await;
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    assert_eq!(again.status, outcome.status);

    // What holds for Alice: her choices, and her list added to the domain's.
    let resolve = |address: &str| {
        let request = ResolveRecipientRequest { address: address.to_string() };
        let server = &server;
        async move { server.mailbox_client().await.resolve_recipient(request).await.unwrap().into_inner().spam.unwrap() }
    };
    let allowed = ["@partner.example", "bob@example.org", "carol@example.net"];
    assert_eq!(resolve("alice@example.com").await, settings(Scan::On, "INBOX/Spam", &allowed, &["x@bad.example"]));

    // Changes of the specs: the domain back to scanning with nothing blocked, Alice's settings
    // removed (all the domain's again).
    object.spec.spam = spam(SpamScan::Inherit, None, &["@partner.example"], &[]);
    object.metadata.generation = Some(2);
    let outcome = reconcile_domain(&admin, &object).await;
    assert_eq!(
        outcome.changes,
        ["set the spam settings of example.com: scan Inherit, junk folder inherited, 1 allowed and 0 blocked senders"]
    );
    assert_eq!(
        stored_domain_spam(&server, "example.com").await,
        settings(Scan::Inherit, "", &["@partner.example"], &[])
    );
    object.status = Some(outcome.status);
    assert!(reconcile_domain(&admin, &object).await.changes.is_empty());

    alice.spec.spam = None;
    alice.metadata.generation = Some(2);
    let outcome = reconcile_mailbox(&admin, &alice, password("secret", "v1")).await;
    assert_eq!(
        outcome.changes,
        [
            "set the spam settings of alice@example.com: scan Inherit, junk folder inherited, 0 allowed and 0 blocked senders"
        ]
    );
    assert_eq!(stored_account_spam(&server, "alice@example.com").await, SpamSettings::default());
    apply_status(&mut alice, &outcome);
    assert!(reconcile_mailbox(&admin, &alice, password("secret", "v1")).await.changes.is_empty());
    assert_eq!(resolve("alice@example.com").await, settings(Scan::On, "Junk", &["@partner.example"], &[]));

    // Drift made with `tern admin` is repaired.
    let drift = UpdateAccountRequest {
        address: "alice@example.com".into(),
        spam: Some(settings(Scan::Off, "", &[], &["@example.org"])),
        ..Default::default()
    };
    server.admin_client().await.update_account(drift).await.unwrap();
    let outcome = reconcile_mailbox(&admin, &alice, password("secret", "v1")).await;
    assert_eq!(outcome.changes.len(), 1, "{:?}", outcome.changes);
    assert_eq!(stored_account_spam(&server, "alice@example.com").await, SpamSettings::default());
}

#[tokio::test]
async fn spam_settings_the_service_refuses_show_in_the_status() {
    let (server, admin) = start().await;

    // A sender the mailbox service cannot read (the CRD's pattern refuses it too, but an object
    // may reach the operator by another way, such as an older CRD's).
    let mut object = domain("example.com");
    object.spec.catch_all = Some("postmaster".to_string());
    object.spec.spam = spam(SpamScan::Enabled, None, &[], &["spam@localhost"]);
    let outcome = reconcile_domain(&admin, &object).await;
    assert_eq!(reason_of(&outcome, |s| &s.conditions), ("False".to_string(), reason::REFUSED.to_string()));
    assert_eq!(outcome.next, Next::Soon, "retried later, not at once");
    let message = &ready_condition(&outcome.status.conditions).unwrap().message;
    assert!(message.contains("spec.spam: invalid block_senders") && message.contains("spam@localhost"), "{message}");
    // The rest of the spec is applied all the same.
    assert_eq!(outcome.changes, ["created domain example.com"]);
    let stored = server
        .admin_client()
        .await
        .get_domain(GetDomainRequest { name: "example.com".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.catch_all, "postmaster");
    assert_eq!(stored.spam.unwrap_or_default(), SpamSettings::default());

    // Corrected, the Domain becomes Ready.
    object.status = Some(outcome.status);
    object.spec.spam = spam(SpamScan::Enabled, None, &[], &["spam@example.net"]);
    let outcome = reconcile_domain(&admin, &object).await;
    assert_eq!(reason_of(&outcome, |s| &s.conditions), ("True".to_string(), reason::RECONCILED.to_string()));

    // A Mailbox: an invalid sender, then INBOX as the junk folder (which the CRD's rule refuses).
    let mut alice = mailbox("alice@example.com");
    alice.spec.spam = spam(SpamScan::Inherit, None, &["not-an-address"], &[]);
    let outcome = reconcile_mailbox(&admin, &alice, password("secret", "v1")).await;
    assert_eq!(reason_of(&outcome, |s| &s.conditions), ("False".to_string(), reason::REFUSED.to_string()));
    assert_eq!(outcome.next, Next::Soon);
    let message = &ready_condition(&outcome.status.conditions).unwrap().message;
    assert!(message.contains("spec.spam: invalid allow_senders") && message.contains("not-an-address"), "{message}");
    assert!(message.starts_with("account alice@example.com: "), "{message}");
    assert!(outcome.changes.iter().any(|c| c == "created account alice@example.com"), "{:?}", outcome.changes);
    assert!(can_login(&server, "alice@example.com", "secret").await, "the account is served all the same");
    apply_status(&mut alice, &outcome);

    alice.spec.spam = spam(SpamScan::Inherit, Some("Inbox"), &[], &[]);
    let outcome = reconcile_mailbox(&admin, &alice, password("secret", "v1")).await;
    assert_eq!(reason_of(&outcome, |s| &s.conditions).1, reason::REFUSED);
    let message = &ready_condition(&outcome.status.conditions).unwrap().message;
    assert!(message.contains("spec.spam: invalid junk folder") && message.contains("INBOX"), "{message}");
    assert_eq!(stored_account_spam(&server, "alice@example.com").await, SpamSettings::default());
    apply_status(&mut alice, &outcome);

    alice.spec.spam = spam(SpamScan::Inherit, Some("Junk/Suspect"), &[], &[]);
    let outcome = reconcile_mailbox(&admin, &alice, password("secret", "v1")).await;
    assert!(outcome.is_ready(), "{:?}", outcome.status);
}

/// The real service through [`GrpcAdmin`], counting `SetDkimKey` calls: the stored key alone
/// cannot show that an unchanged key was not sent again.
struct CountingAdmin {
    inner: GrpcAdmin,
    set_dkim_key_calls: AtomicUsize,
}

impl CountingAdmin {
    fn new(inner: GrpcAdmin) -> Self {
        CountingAdmin { inner, set_dkim_key_calls: AtomicUsize::new(0) }
    }

    fn set_dkim_key_calls(&self) -> usize {
        self.set_dkim_key_calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl AdminApi for CountingAdmin {
    async fn get_domain(&self, name: &str) -> Result<ApiDomain, ApiError> {
        self.inner.get_domain(name).await
    }
    async fn create_domain(&self, request: CreateDomainRequest) -> Result<ApiDomain, ApiError> {
        self.inner.create_domain(request).await
    }
    async fn update_domain(&self, request: UpdateDomainRequest) -> Result<ApiDomain, ApiError> {
        self.inner.update_domain(request).await
    }
    async fn delete_domain(&self, name: &str) -> Result<(), ApiError> {
        self.inner.delete_domain(name).await
    }
    async fn set_dkim_key(&self, request: SetDkimKeyRequest) -> Result<DkimKey, ApiError> {
        self.set_dkim_key_calls.fetch_add(1, Ordering::SeqCst);
        self.inner.set_dkim_key(request).await
    }
    async fn get_account(&self, address: &str) -> Result<Account, ApiError> {
        self.inner.get_account(address).await
    }
    async fn create_account(&self, request: CreateAccountRequest) -> Result<Account, ApiError> {
        self.inner.create_account(request).await
    }
    async fn update_account(&self, request: UpdateAccountRequest) -> Result<Account, ApiError> {
        self.inner.update_account(request).await
    }
    async fn delete_account(&self, address: &str) -> Result<(), ApiError> {
        self.inner.delete_account(address).await
    }
    async fn set_password(&self, address: &str, password: Password) -> Result<(), ApiError> {
        self.inner.set_password(address, password).await
    }
    async fn add_alias(&self, alias: &str, target: &str) -> Result<(), ApiError> {
        self.inner.add_alias(alias, target).await
    }
    async fn remove_alias(&self, alias: &str) -> Result<(), ApiError> {
        self.inner.remove_alias(alias).await
    }
    async fn get_usage(&self, address: &str) -> Result<Usage, ApiError> {
        self.inner.get_usage(address).await
    }
    async fn get_sieve_script(&self, account_id: u64, name: &str) -> Result<GetSieveScriptResponse, ApiError> {
        self.inner.get_sieve_script(account_id, name).await
    }
    async fn put_sieve_script(&self, request: PutSieveScriptRequest) -> Result<(), ApiError> {
        self.inner.put_sieve_script(request).await
    }
    async fn set_active_sieve_script(&self, account_id: u64, name: &str) -> Result<(), ApiError> {
        self.inner.set_active_sieve_script(account_id, name).await
    }
    async fn delete_sieve_script(&self, account_id: u64, name: &str) -> Result<(), ApiError> {
        self.inner.delete_sieve_script(account_id, name).await
    }
}

/// A DKIM key as the controller hands it over after reading its Secret.
fn dkim_key(selector: &str, pem: &str) -> DkimInput {
    DkimInput::Key {
        selector: selector.to_string(),
        txt_value: dkim::txt_value(pem).unwrap(),
        private_key_pem: SecretString::from(pem.to_string()),
    }
}

/// The selector and TXT record the mailbox service reports for `name`.
async fn stored_dkim(server: &TestServer, name: &str) -> (String, String) {
    let request = GetDomainRequest { name: name.to_string() };
    let domain = server.admin_client().await.get_domain(request).await.unwrap().into_inner();
    (domain.dkim_selector, domain.dkim_txt)
}

#[tokio::test]
async fn the_dkim_key_reaches_the_mailbox_service_once_and_follows_changes() {
    let (server, admin) = start().await;
    let admin = CountingAdmin::new(admin);
    let mut object = domain("example.com");
    let first = dkim::generate_private_key_pem().unwrap();
    let txt = dkim::txt_value(&first).unwrap();

    // Created with its key: the relay can sign from now on.
    let outcome = reconcile_domain_with_dkim(&admin, &object, &dkim_key("tern", &first), &DnsSettings::default()).await;
    assert!(outcome.is_ready());
    assert_eq!(outcome.changes, ["created domain example.com", "set the DKIM key of example.com (selector tern)"]);
    assert_eq!(admin.set_dkim_key_calls(), 1);
    assert_eq!(stored_dkim(&server, "example.com").await, ("tern".to_string(), txt.clone()));

    // Reconciled again with the same key: nothing is sent.
    object.status = Some(outcome.status.clone());
    let again = reconcile_domain_with_dkim(&admin, &object, &dkim_key("tern", &first), &DnsSettings::default()).await;
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    assert_eq!(again.status, outcome.status);
    assert_eq!(admin.set_dkim_key_calls(), 1, "an unchanged key is not set again");

    // The same key in PKCS#1 (a Secret made with other tools) has the same record: not sent.
    let pkcs1 = {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        dkim::parse_private_key_pem(&first).unwrap().to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap().to_string()
    };
    assert!(
        reconcile_domain_with_dkim(&admin, &object, &dkim_key("tern", &pkcs1), &DnsSettings::default())
            .await
            .changes
            .is_empty()
    );
    assert_eq!(admin.set_dkim_key_calls(), 1);

    // A rotation (new selector and key) is sent.
    let second = dkim::generate_private_key_pem().unwrap();
    let rotated = dkim_key("s2026", &second);
    let outcome = reconcile_domain_with_dkim(&admin, &object, &rotated, &DnsSettings::default()).await;
    assert_eq!(outcome.changes, ["set the DKIM key of example.com (selector s2026)"]);
    assert_eq!(admin.set_dkim_key_calls(), 2);
    let rotated_txt = dkim::txt_value(&second).unwrap();
    assert_eq!(stored_dkim(&server, "example.com").await, ("s2026".to_string(), rotated_txt.clone()));

    // Drift: `tern admin domain dkim` put the old key back under the new selector; repaired.
    let drift =
        SetDkimKeyRequest { domain: "example.com".into(), selector: "s2026".into(), private_key_pem: first.clone() };
    server.admin_client().await.set_dkim_key(drift).await.unwrap();
    let outcome = reconcile_domain_with_dkim(&admin, &object, &rotated, &DnsSettings::default()).await;
    assert_eq!(outcome.changes, ["set the DKIM key of example.com (selector s2026)"]);
    assert_eq!(stored_dkim(&server, "example.com").await, ("s2026".to_string(), rotated_txt.clone()));

    // A key that is unknown or cannot be read leaves the service's key alone: mail stays
    // signed with the key already published.
    let calls = admin.set_dkim_key_calls();
    reconcile_domain(&admin, &object).await;
    let invalid =
        reconcile_domain_with_dkim(&admin, &object, &DkimInput::Invalid("no key".into()), &DnsSettings::default())
            .await;
    assert_eq!(reason_of(&invalid, |s| &s.conditions).1, reason::DKIM_KEY_INVALID);
    assert_eq!(admin.set_dkim_key_calls(), calls);
    assert_eq!(stored_dkim(&server, "example.com").await, ("s2026".to_string(), rotated_txt));
}

/// The records of discovery: SRV with the configured ports (a protocol turned off says so),
/// the CNAMEs to the mail host, MTA-STS with the id of the policy the front-ends serve, and
/// TLS-RPT.
#[test]
fn dns_records_let_clients_and_servers_find_the_domain() {
    use tern_discovery::{MtaSts, mta_sts::Mode};
    let value = |records: &[tern_operator::crd::DnsRecord], type_: &str, name: &str| {
        let found: Vec<_> = records.iter().filter(|r| r.type_ == type_ && r.name == name).collect();
        assert!(found.len() <= 1, "{found:?}");
        found.first().map(|r| r.value.clone())
    };
    let policy = MtaSts { mode: Mode::Enforce, mx: vec!["mail.example.com".into()], max_age: 86_400 };
    let settings = DnsSettings {
        ports: ClientPorts { pop3: 0, ..ClientPorts::default() },
        discovery: true,
        mta_sts: Some(policy.clone()),
        tls_rpt_address: Some("reports@example.net".into()),
    };
    let records = dns_records("example.com", "mail.example.com", None, &settings);
    let srv = |service: &str| value(&records, "SRV", &format!("_{service}._tcp.example.com.")).unwrap();
    assert_eq!(srv("submissions"), "0 1 465 mail.example.com.");
    assert_eq!(srv("submission"), "10 1 587 mail.example.com.");
    assert_eq!(srv("imaps"), "0 1 993 mail.example.com.");
    assert_eq!(srv("imap"), "10 1 143 mail.example.com.");
    assert_eq!(srv("pop3s"), "20 1 995 mail.example.com.");
    assert_eq!(srv("pop3"), "0 0 0 .", "a service not offered");
    for name in ["autoconfig", "autodiscover", "mta-sts"] {
        let cname = value(&records, "CNAME", &format!("{name}.example.com."));
        assert_eq!(cname.as_deref(), Some("mail.example.com."), "{name}");
    }
    let id = value(&records, "TXT", "_mta-sts.example.com.").unwrap();
    assert_eq!(id, format!("v=STSv1; id={}", policy.id()));
    assert!(id.len() <= "v=STSv1; id=".len() + 32 && policy.id().bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(
        value(&records, "TXT", "_smtp._tls.example.com.").as_deref(),
        Some("v=TLSRPTv1; rua=mailto:reports@example.net")
    );

    // A policy that would not allow the domain's own MX host is not published: senders that
    // enforce it would refuse the domain's mail.
    let other_host = dns_records("example.org", "mx.example.org", None, &settings);
    assert_eq!(value(&other_host, "TXT", "_mta-sts.example.org."), None);
    assert_eq!(value(&other_host, "CNAME", "mta-sts.example.org."), None);
    assert!(value(&other_host, "CNAME", "autoconfig.example.org.").is_some());

    // Without discovery on HTTPS: no CNAMEs and no MTA-STS; the SRV records and TLS-RPT stay.
    let off = DnsSettings { discovery: false, ..settings };
    let records = dns_records("example.com", "mail.example.com", None, &off);
    assert!(records.iter().all(|r| r.type_ != "CNAME" && r.name != "_mta-sts.example.com."), "{records:?}");
    assert_eq!(records.iter().filter(|r| r.type_ == "SRV").count(), 6);
    let defaults = dns_records("example.com", "mail.example.com", None, &DnsSettings::default());
    assert_eq!(
        value(&defaults, "TXT", "_smtp._tls.example.com.").as_deref(),
        Some("v=TLSRPTv1; rua=mailto:postmaster@example.com")
    );
}

#[test]
fn of_two_domains_naming_one_mail_domain_the_older_owns_it() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    let at = |s: i64| Some(Time(Timestamp::from_second(1_800_000_000 + s).unwrap()));
    let mut first = domain("example.org");
    first.metadata.creation_timestamp = at(0);
    let mut second = domain("example.org");
    second.metadata.namespace = Some("team-b".into());
    second.spec.name = "Example.ORG".into();
    second.metadata.creation_timestamp = at(60);
    let mut other = domain("other.org");
    other.metadata.creation_timestamp = at(-60);
    let all = [first.clone(), second.clone(), other.clone()];

    assert_eq!(tern_operator::reconcile::domain_owner(&first, &all), None, "the older one owns it");
    assert_eq!(tern_operator::reconcile::domain_owner(&second, &all).as_deref(), Some("mail/example.org"));
    assert_eq!(tern_operator::reconcile::domain_owner(&other, &all), None, "another mail domain");
    // Equally old: the first by namespace and name, the same on every replica.
    second.metadata.creation_timestamp = at(0);
    let all = [second.clone(), first.clone()];
    assert_eq!(tern_operator::reconcile::domain_owner(&second, &all).as_deref(), Some("mail/example.org"));

    let outcome = tern_operator::reconcile::domain_conflict(&second, "mail/example.org");
    let ready = tern_operator::reconcile::ready_condition(&outcome.status.conditions).unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "DomainConflict"));
    assert!(ready.message.contains("mail/example.org"), "{}", ready.message);
    assert!(outcome.changes.is_empty());
}

/// A good script, as a user would write it.
const FILTER: &str = "require \"fileinto\";\nif header :contains \"subject\" \"[list]\" {\n  fileinto \"Lists\";\n}\n";
/// Its next version.
const FILTER_V2: &str =
    "require \"fileinto\";\nif header :contains \"subject\" \"[news]\" {\n  fileinto \"News\";\n}\n";
/// A script with a syntax error on line 3 (`fileinto` needs a folder).
const BROKEN: &str = "require \"fileinto\";\nif header :contains \"subject\" \"[list]\" {\n  fileinto;\n}\n";

fn inline(name: Option<&str>, text: &str) -> Option<SieveSpec> {
    Some(SieveSpec {
        name: name.unwrap_or(DEFAULT_SIEVE_NAME).to_string(),
        config_map_key_ref: None,
        script: Some(text.to_string()),
    })
}

fn from_config_map() -> Option<SieveSpec> {
    Some(SieveSpec {
        name: DEFAULT_SIEVE_NAME.to_string(),
        config_map_key_ref: Some(ConfigMapKeyRef { name: "alice-sieve".to_string(), key: "filter.sieve".to_string() }),
        script: None,
    })
}

async fn account_id(server: &TestServer, address: &str) -> u64 {
    let request = GetAccountRequest { address: address.to_string() };
    server.admin_client().await.get_account(request).await.unwrap().into_inner().id
}

/// The account's scripts as the Mailbox API lists them: (name, active).
async fn sieve_scripts(server: &TestServer, address: &str) -> Vec<(String, bool)> {
    let account_id = account_id(server, address).await;
    let list = server.mailbox_client().await.list_sieve_scripts(ListSieveScriptsRequest { account_id }).await;
    list.unwrap().into_inner().scripts.into_iter().map(|s| (s.name, s.active)).collect()
}

/// One script's text as the Mailbox API returns it.
async fn sieve_text(server: &TestServer, address: &str, name: &str) -> String {
    let request = GetSieveScriptRequest { account_id: account_id(server, address).await, name: name.to_string() };
    server.mailbox_client().await.get_sieve_script(request).await.unwrap().into_inner().text
}

fn sieve_condition(outcome: &Outcome<MailboxStatus>) -> Option<(String, String, String)> {
    let c = condition(&outcome.status.conditions, SIEVE_READY)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn an_inline_sieve_script_is_stored_active_and_kept_active() {
    let (server, admin) = start().await;
    reconcile_domain(&admin, &domain("example.com")).await;
    let mut alice = mailbox("alice@example.com");
    alice.spec.sieve = inline(None, FILTER);

    let outcome = reconcile_mailbox(&admin, &alice, password("secret", "v1")).await;
    assert!(outcome.is_ready(), "{:?}", outcome.status);
    assert!(
        outcome.changes.contains(&"stored Sieve script \"kubernetes\" of alice@example.com and made it active".into()),
        "{:?}",
        outcome.changes
    );
    let (status, reason, message) = sieve_condition(&outcome).unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", reason::SCRIPT_ACTIVE));
    assert_eq!(message, "Sieve script \"kubernetes\" is active for alice@example.com");
    assert_eq!(outcome.status.sieve_script.as_deref(), Some("kubernetes"));
    assert_eq!(sieve_scripts(&server, "alice@example.com").await, [("kubernetes".to_string(), true)]);
    assert_eq!(sieve_text(&server, "alice@example.com", "kubernetes").await, FILTER);

    // Unchanged: nothing written, the same status.
    apply_status(&mut alice, &outcome);
    let again = reconcile_mailbox(&admin, &alice, password("secret", "v1")).await;
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    assert_eq!(again.status, outcome.status);

    // The owner stores a script of their own over ManageSieve and activates it: the operator's
    // is made active again, the owner's is left as it is.
    let id = account_id(&server, "alice@example.com").await;
    let mut client = server.mailbox_client().await;
    let put = PutSieveScriptRequest { account_id: id, name: "mine".into(), text: "keep;\n".into(), activate: true };
    client.put_sieve_script(put).await.unwrap();
    let outcome = reconcile_mailbox(&admin, &alice, password("secret", "v1")).await;
    assert_eq!(outcome.changes, ["made Sieve script \"kubernetes\" of alice@example.com active"]);
    assert_eq!(
        sieve_scripts(&server, "alice@example.com").await,
        [("kubernetes".to_string(), true), ("mine".to_string(), false)]
    );

    // Edited over ManageSieve: put back as the spec has it.
    let put =
        PutSieveScriptRequest { account_id: id, name: "kubernetes".into(), text: FILTER_V2.into(), activate: false };
    client.put_sieve_script(put).await.unwrap();
    let outcome = reconcile_mailbox(&admin, &alice, password("secret", "v1")).await;
    assert_eq!(outcome.changes, ["updated Sieve script \"kubernetes\" of alice@example.com and made it active"]);
    assert_eq!(sieve_text(&server, "alice@example.com", "kubernetes").await, FILTER);
}

#[tokio::test]
async fn a_sieve_script_from_a_config_map_follows_it_and_waits_for_it() {
    let (server, admin) = start().await;
    reconcile_domain(&admin, &domain("example.com")).await;
    let mut alice = mailbox("alice@example.com");
    alice.spec.sieve = from_config_map();
    let text = |t: &str| ConfigMapInput::Text(t.to_string());

    // The ConfigMap is missing: the account is served all the same, the script waits.
    let missing = ConfigMapInput::Missing {
        reason: reason::CONFIG_MAP_NOT_FOUND,
        message: "Sieve ConfigMap mail/alice-sieve does not exist".to_string(),
    };
    let outcome = reconcile_mailbox_with_sieve(&admin, &alice, password("secret", "v1"), &missing).await;
    assert_eq!(reason_of(&outcome, |s| &s.conditions), ("True".to_string(), reason::RECONCILED.to_string()));
    let (status, why, message) = sieve_condition(&outcome).unwrap();
    assert_eq!((status.as_str(), why.as_str()), ("False", reason::CONFIG_MAP_NOT_FOUND));
    assert!(message.starts_with("Sieve ConfigMap mail/alice-sieve does not exist"), "{message}");
    assert_eq!(outcome.next, Next::Soon, "looked at again soon");
    assert!(can_login(&server, "alice@example.com", "secret").await);
    assert!(sieve_scripts(&server, "alice@example.com").await.is_empty());
    apply_status(&mut alice, &outcome);

    // It appears.
    let outcome = reconcile_mailbox_with_sieve(&admin, &alice, password("secret", "v1"), &text(FILTER)).await;
    assert_eq!(outcome.changes, ["stored Sieve script \"kubernetes\" of alice@example.com and made it active"]);
    assert_eq!(sieve_condition(&outcome).unwrap().1, reason::SCRIPT_ACTIVE);
    assert_eq!(outcome.next, Next::Resync);
    assert_eq!(sieve_text(&server, "alice@example.com", "kubernetes").await, FILTER);
    apply_status(&mut alice, &outcome);

    // It changes.
    let outcome = reconcile_mailbox_with_sieve(&admin, &alice, password("secret", "v1"), &text(FILTER_V2)).await;
    assert_eq!(outcome.changes, ["updated Sieve script \"kubernetes\" of alice@example.com and made it active"]);
    assert_eq!(sieve_text(&server, "alice@example.com", "kubernetes").await, FILTER_V2);
    apply_status(&mut alice, &outcome);
    let again = reconcile_mailbox_with_sieve(&admin, &alice, password("secret", "v1"), &text(FILTER_V2)).await;
    assert!(again.changes.is_empty(), "{:?}", again.changes);

    // Its key goes: the script stored stays active, and the condition says why it is stale.
    let no_key = ConfigMapInput::Missing {
        reason: reason::KEY_NOT_FOUND,
        message: "Sieve ConfigMap mail/alice-sieve has no key filter.sieve".to_string(),
    };
    let outcome = reconcile_mailbox_with_sieve(&admin, &alice, password("secret", "v1"), &no_key).await;
    assert_eq!(sieve_condition(&outcome).unwrap().1, reason::KEY_NOT_FOUND);
    assert_eq!(outcome.next, Next::Soon);
    assert_eq!(sieve_scripts(&server, "alice@example.com").await, [("kubernetes".to_string(), true)]);
    assert_eq!(sieve_text(&server, "alice@example.com", "kubernetes").await, FILTER_V2);

    // Without Kubernetes (the ConfigMap not read), the script is left alone.
    let outcome = reconcile_mailbox(&admin, &alice, password("secret", "v1")).await;
    assert!(outcome.changes.is_empty(), "{:?}", outcome.changes);
}

#[tokio::test]
async fn a_sieve_syntax_error_is_reported_with_its_line_and_stores_nothing() {
    let (server, admin) = start().await;
    reconcile_domain(&admin, &domain("example.com")).await;

    // A first script that does not compile: nothing is stored, the account is served.
    let mut bob = mailbox("bob@example.com");
    bob.spec.aliases.clear();
    bob.spec.sieve = inline(None, BROKEN);
    let outcome = reconcile_mailbox(&admin, &bob, password("secret", "v1")).await;
    assert_eq!(reason_of(&outcome, |s| &s.conditions), ("True".to_string(), reason::RECONCILED.to_string()));
    let (status, why, message) = sieve_condition(&outcome).unwrap();
    assert_eq!((status.as_str(), why.as_str()), ("False", reason::SCRIPT_INVALID));
    assert!(message.starts_with("invalid Sieve script: line 3, column "), "{message}");
    assert_eq!(outcome.status.sieve_script, None);
    assert!(!outcome.changes.iter().any(|c| c.contains("Sieve")), "{:?}", outcome.changes);
    assert!(sieve_scripts(&server, "bob@example.com").await.is_empty());
    assert!(can_login(&server, "bob@example.com", "secret").await);

    // A good version, then a broken one: the good one stays stored and active.
    let mut alice = mailbox("alice@example.com");
    alice.spec.sieve = inline(None, FILTER);
    let outcome = reconcile_mailbox(&admin, &alice, password("secret", "v1")).await;
    apply_status(&mut alice, &outcome);
    alice.spec.sieve = inline(None, BROKEN);
    alice.metadata.generation = Some(2);
    let outcome = reconcile_mailbox(&admin, &alice, password("secret", "v1")).await;
    assert!(outcome.changes.is_empty(), "{:?}", outcome.changes);
    assert_eq!(reason_of(&outcome, |s| &s.conditions).0, "True", "the account is still served as specified");
    let (status, why, message) = sieve_condition(&outcome).unwrap();
    assert_eq!((status.as_str(), why.as_str()), ("False", reason::SCRIPT_INVALID));
    assert!(message.starts_with("invalid Sieve script: line 3, column "), "{message}");
    assert_eq!(condition(&outcome.status.conditions, SIEVE_READY).unwrap().observed_generation, Some(2));
    assert_eq!(outcome.status.sieve_script.as_deref(), Some("kubernetes"));
    assert_eq!(sieve_scripts(&server, "alice@example.com").await, [("kubernetes".to_string(), true)]);
    assert_eq!(sieve_text(&server, "alice@example.com", "kubernetes").await, FILTER);
    // Looked at again when the spec or the ConfigMap changes, which the controller watches.
    assert_eq!(outcome.next, Next::Resync);

    // Fixed: stored.
    apply_status(&mut alice, &outcome);
    alice.spec.sieve = inline(None, FILTER_V2);
    let outcome = reconcile_mailbox(&admin, &alice, password("secret", "v1")).await;
    assert_eq!(sieve_condition(&outcome).unwrap().1, reason::SCRIPT_ACTIVE);
    assert_eq!(sieve_text(&server, "alice@example.com", "kubernetes").await, FILTER_V2);
}

#[tokio::test]
async fn removing_spec_sieve_deletes_the_operators_script_and_no_other() {
    let (server, admin) = start().await;
    reconcile_domain(&admin, &domain("example.com")).await;
    let mut alice = mailbox("alice@example.com");
    alice.spec.sieve = inline(Some("from-k8s"), FILTER);
    let outcome = reconcile_mailbox(&admin, &alice, password("secret", "v1")).await;
    apply_status(&mut alice, &outcome);
    // The owner's own scripts, one of them named as the default: not the operator's.
    let id = account_id(&server, "alice@example.com").await;
    for name in ["mine", DEFAULT_SIEVE_NAME] {
        let put = PutSieveScriptRequest { account_id: id, name: name.into(), text: "keep;\n".into(), activate: false };
        server.mailbox_client().await.put_sieve_script(put).await.unwrap();
    }

    // Renamed: stored under the new name, the old name deleted.
    alice.spec.sieve = inline(Some("filters"), FILTER);
    let outcome = reconcile_mailbox(&admin, &alice, password("secret", "v1")).await;
    assert_eq!(
        outcome.changes,
        [
            "stored Sieve script \"filters\" of alice@example.com and made it active",
            "deleted Sieve script \"from-k8s\" of alice@example.com (renamed to \"filters\")",
        ]
    );
    assert_eq!(outcome.status.sieve_script.as_deref(), Some("filters"));
    assert_eq!(
        sieve_scripts(&server, "alice@example.com").await,
        [("filters".to_string(), true), ("kubernetes".to_string(), false), ("mine".to_string(), false)]
    );
    apply_status(&mut alice, &outcome);

    // Removed: deactivated and deleted; the owner's scripts stay, none active.
    alice.spec.sieve = None;
    let outcome = reconcile_mailbox(&admin, &alice, password("secret", "v1")).await;
    assert_eq!(outcome.changes, ["deactivated and deleted Sieve script \"filters\" of alice@example.com"]);
    assert_eq!(outcome.status.sieve_script, None);
    assert_eq!(sieve_condition(&outcome), None, "no SieveReady without spec.sieve");
    assert!(outcome.is_ready());
    assert_eq!(
        sieve_scripts(&server, "alice@example.com").await,
        [("kubernetes".to_string(), false), ("mine".to_string(), false)]
    );
    // The status patch clears the name (null, not left out).
    let patch = serde_json::to_value(&outcome.status).unwrap();
    assert_eq!(patch["sieveScript"], serde_json::Value::Null);
    assert!(patch.as_object().unwrap().contains_key("sieveScript"));
    apply_status(&mut alice, &outcome);
    let again = reconcile_mailbox(&admin, &alice, password("secret", "v1")).await;
    assert!(again.changes.is_empty(), "{:?}", again.changes);

    // Removed while the owner had activated another script: that one stays active.
    alice.spec.sieve = inline(None, FILTER);
    let outcome = reconcile_mailbox(&admin, &alice, password("secret", "v1")).await;
    apply_status(&mut alice, &outcome);
    let active = SetActiveSieveScriptRequest { account_id: id, name: "mine".into() };
    server.mailbox_client().await.set_active_sieve_script(active).await.unwrap();
    alice.spec.sieve = None;
    let outcome = reconcile_mailbox(&admin, &alice, password("secret", "v1")).await;
    assert_eq!(outcome.changes, ["deactivated and deleted Sieve script \"kubernetes\" of alice@example.com"]);
    assert_eq!(sieve_scripts(&server, "alice@example.com").await, [("mine".to_string(), true)]);
}

/// The example Mailbox of `examples/`, with its inline Sieve script, is reconciled as it is:
/// the script passes the mailbox service's check.
#[tokio::test]
async fn the_example_mailbox_and_its_sieve_script_are_reconciled() {
    let (server, admin) = start().await;
    reconcile_domain(&admin, &domain("example.com")).await;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mailbox.yaml");
    let mut example: Mailbox = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    example.metadata.namespace = Some("mail".to_string());
    let sieve = example.spec.sieve.clone().expect("the example has a Sieve script");
    let outcome = reconcile_mailbox(&admin, &example, password("secret", "v1")).await;
    assert!(outcome.is_ready(), "{:?}", outcome.status);
    assert_eq!(sieve_condition(&outcome).unwrap().1, reason::SCRIPT_ACTIVE, "{:?}", outcome.status);
    assert_eq!(sieve_scripts(&server, &example.spec.address).await, [(sieve.name.clone(), true)]);
    assert_eq!(sieve_text(&server, &example.spec.address, &sieve.name).await, sieve.script.unwrap());
}
