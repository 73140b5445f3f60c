//! Sieve scripts in the mailbox service (issue #18) over a real loopback socket: the RPCs
//! ManageSieve and `tern admin sieve` use, each refusal checked for its gRPC code and the
//! `tern-reason` that ManageSieve turns into a response code, and the scripts kept across a
//! restart of the service.
//!
//! Like `grpc.rs`, the suite runs on the embedded backend, and on NATS JetStream when
//! `TERN_TEST_NATS_URL` is set (`cargo xtask e2e` and `ci`). The last test starts a NATS server
//! of its own ([`tern_tests::servers::Nats`]), so the NATS store is covered by every run that
//! has `nats-server` (see `crates/testbed`).

use tern_mailbox::Limits;
use tern_proto::v1::{
    CheckSieveScriptRequest, DeleteAccountRequest, DeleteSieveScriptRequest, ErrorReason, GetSieveScriptRequest,
    HaveSieveSpaceRequest, ListSieveScriptsRequest, PutSieveScriptRequest, RenameSieveScriptRequest,
    SetActiveSieveScriptRequest, SieveScript,
};
use tern_tests::{Mailbox, TestServer, expect_error, servers::Nats, setup_account};
use tonic::Code;

/// A valid script that files mail marked as spam.
const JUNK: &str =
    "require \"fileinto\";\r\nif header :contains \"subject\" \"[SPAM]\" {\r\n  fileinto \"Junk\";\r\n}\r\n";
/// A valid script that keeps everything.
const KEEP: &str = "keep;\n";
/// A script whose fourth line closes a block whose command has no `;`.
const BROKEN: &str = "require \"fileinto\";\nif header :contains \"subject\" \"x\" {\n  fileinto \"Junk\"\n}\n";

/// A server with the account `alice@example.com`, a Mailbox client, and Alice's account id.
async fn fixture(limits: Limits) -> (TestServer, Mailbox, u64) {
    let server = TestServer::start(limits).await;
    let mut admin = server.admin_client().await;
    let alice = setup_account(&mut admin, "alice@example.com", "alice-pw").await.id;
    let mail = server.mailbox_client().await;
    (server, mail, alice)
}

fn put(account_id: u64, name: &str, text: &str) -> PutSieveScriptRequest {
    PutSieveScriptRequest { account_id, name: name.into(), text: text.into(), activate: false }
}

async fn list(mail: &mut Mailbox, account_id: u64) -> Vec<SieveScript> {
    mail.list_sieve_scripts(ListSieveScriptsRequest { account_id })
        .await
        .expect("list Sieve scripts")
        .into_inner()
        .scripts
}

/// The scripts as (name, active) pairs, in the order listed.
async fn names(mail: &mut Mailbox, account_id: u64) -> Vec<(String, bool)> {
    list(mail, account_id).await.into_iter().map(|s| (s.name, s.active)).collect()
}

async fn get(mail: &mut Mailbox, account_id: u64, name: &str) -> Result<(String, bool), tonic::Status> {
    let r = mail.get_sieve_script(GetSieveScriptRequest { account_id, name: name.into() }).await?.into_inner();
    Ok((r.text, r.active))
}

async fn activate(mail: &mut Mailbox, account_id: u64, name: &str) -> Result<(), tonic::Status> {
    mail.set_active_sieve_script(SetActiveSieveScriptRequest { account_id, name: name.into() }).await.map(|_| ())
}

fn pairs(list: &[(&str, bool)]) -> Vec<(String, bool)> {
    list.iter().map(|(n, a)| (n.to_string(), *a)).collect()
}

#[tokio::test]
async fn scripts_are_put_listed_read_activated_renamed_and_deleted() {
    let (_server, mut mail, alice) = fixture(Limits::default()).await;
    assert!(list(&mut mail, alice).await.is_empty(), "a new account has no scripts");

    mail.put_sieve_script(put(alice, "vacation", KEEP)).await.expect("put vacation");
    mail.put_sieve_script(PutSieveScriptRequest { activate: true, ..put(alice, "junk", JUNK) })
        .await
        .expect("put and activate junk");
    let scripts = list(&mut mail, alice).await;
    assert_eq!(
        scripts,
        [
            SieveScript { name: "junk".into(), active: true, size: JUNK.len() as u64 },
            SieveScript { name: "vacation".into(), active: false, size: KEEP.len() as u64 },
        ],
        "sorted by name, with sizes and the active one"
    );
    assert_eq!(get(&mut mail, alice, "junk").await.unwrap(), (JUNK.to_string(), true), "CRLFs kept as sent");
    assert_eq!(get(&mut mail, alice, "vacation").await.unwrap(), (KEEP.to_string(), false));
    expect_error(get(&mut mail, alice, "nope").await, Code::NotFound, ErrorReason::NotFound);

    // Replacing the active script keeps it active.
    let replaced = format!("# replaced\r\n{JUNK}");
    mail.put_sieve_script(put(alice, "junk", &replaced)).await.expect("replace junk");
    assert_eq!(get(&mut mail, alice, "junk").await.unwrap(), (replaced.clone(), true));

    // One active script at a time; an unknown name is refused and changes nothing.
    activate(&mut mail, alice, "vacation").await.expect("activate vacation");
    assert_eq!(names(&mut mail, alice).await, pairs(&[("junk", false), ("vacation", true)]));
    expect_error(activate(&mut mail, alice, "nope").await, Code::NotFound, ErrorReason::NotFound);
    assert_eq!(names(&mut mail, alice).await, pairs(&[("junk", false), ("vacation", true)]));

    // Renaming the active script keeps it active under its new name; a name taken is refused.
    let rename =
        |from: &str, to: &str| RenameSieveScriptRequest { account_id: alice, from: from.into(), to: to.into() };
    mail.rename_sieve_script(rename("vacation", "away")).await.expect("rename vacation");
    assert_eq!(names(&mut mail, alice).await, pairs(&[("away", true), ("junk", false)]));
    assert_eq!(get(&mut mail, alice, "away").await.unwrap(), (KEEP.to_string(), true));
    expect_error(get(&mut mail, alice, "vacation").await, Code::NotFound, ErrorReason::NotFound);
    expect_error(
        mail.rename_sieve_script(rename("away", "junk")).await,
        Code::AlreadyExists,
        ErrorReason::AlreadyExists,
    );
    expect_error(
        mail.rename_sieve_script(rename("away", "away")).await,
        Code::AlreadyExists,
        ErrorReason::AlreadyExists,
    );
    expect_error(mail.rename_sieve_script(rename("gone", "new")).await, Code::NotFound, ErrorReason::NotFound);
    assert_eq!(names(&mut mail, alice).await, pairs(&[("away", true), ("junk", false)]));

    // The active script cannot be deleted (RFC 5804 DELETESCRIPT: ACTIVE); the others can.
    let delete = |name: &str| DeleteSieveScriptRequest { account_id: alice, name: name.into() };
    let refused =
        expect_error(mail.delete_sieve_script(delete("away")).await, Code::FailedPrecondition, ErrorReason::Active);
    assert!(refused.message().contains("away"), "{refused:?}");
    expect_error(mail.delete_sieve_script(delete("nope")).await, Code::NotFound, ErrorReason::NotFound);
    mail.delete_sieve_script(delete("junk")).await.expect("delete junk");
    assert_eq!(names(&mut mail, alice).await, pairs(&[("away", true)]));

    // The empty name deactivates; then the script may go too.
    activate(&mut mail, alice, "").await.expect("deactivate");
    assert_eq!(names(&mut mail, alice).await, pairs(&[("away", false)]));
    mail.delete_sieve_script(delete("away")).await.expect("delete away");
    assert!(list(&mut mail, alice).await.is_empty());
}

#[tokio::test]
async fn names_are_checked_and_unknown_accounts_refused() {
    let (_server, mut mail, alice) = fixture(Limits::default()).await;
    let long = "n".repeat(129);
    for bad in ["", "a\nb", "nul\0", "c1\u{85}", "sep\u{2028}", long.as_str()] {
        let status = expect_error(
            mail.put_sieve_script(put(alice, bad, KEEP)).await,
            Code::InvalidArgument,
            ErrorReason::InvalidArgument,
        );
        assert!(status.message().contains("Sieve script name"), "{bad:?}: {status:?}");
    }
    // Any other Unicode is a name, up to 128 characters.
    let unicode = "Ferien für Ärzte ☀";
    mail.put_sieve_script(put(alice, unicode, KEEP)).await.expect("a Unicode name");
    mail.put_sieve_script(put(alice, &"n".repeat(128), KEEP)).await.expect("a name of 128 characters");
    assert_eq!(get(&mut mail, alice, unicode).await.unwrap().0, KEEP);

    let nobody = alice + 1000;
    expect_error(mail.put_sieve_script(put(nobody, "x", KEEP)).await, Code::NotFound, ErrorReason::NotFound);
    let listed = mail.list_sieve_scripts(ListSieveScriptsRequest { account_id: nobody }).await;
    expect_error(listed, Code::NotFound, ErrorReason::NotFound);
}

#[tokio::test]
async fn a_script_with_a_syntax_error_is_refused_with_its_line_and_nothing_is_stored() {
    let (_server, mut mail, alice) = fixture(Limits::default()).await;
    let refused = expect_error(
        mail.put_sieve_script(put(alice, "broken", BROKEN)).await,
        Code::InvalidArgument,
        ErrorReason::ScriptInvalid,
    );
    assert!(refused.message().starts_with("invalid Sieve script: line 4, column 1: "), "{refused:?}");
    assert!(list(&mut mail, alice).await.is_empty(), "nothing stored");

    // Replacing a good script with a broken one keeps the good one, active as it was.
    mail.put_sieve_script(PutSieveScriptRequest { activate: true, ..put(alice, "junk", JUNK) }).await.unwrap();
    let again = expect_error(
        mail.put_sieve_script(PutSieveScriptRequest { activate: true, ..put(alice, "junk", BROKEN) }).await,
        Code::InvalidArgument,
        ErrorReason::ScriptInvalid,
    );
    assert_eq!(again.message(), refused.message());
    assert_eq!(get(&mut mail, alice, "junk").await.unwrap(), (JUNK.to_string(), true));

    // CheckSieveScript answers the same, and stores nothing either way.
    let check = |text: &str| CheckSieveScriptRequest { text: text.into() };
    mail.check_sieve_script(check(JUNK)).await.expect("a good script passes the check");
    let checked =
        expect_error(mail.check_sieve_script(check(BROKEN)).await, Code::InvalidArgument, ErrorReason::ScriptInvalid);
    assert_eq!(checked.message(), refused.message());
    assert_eq!(names(&mut mail, alice).await, pairs(&[("junk", true)]));
}

#[tokio::test]
async fn quotas_refuse_too_many_scripts_too_large_ones_and_too_many_bytes() {
    let limits =
        Limits { sieve_max_scripts: 3, sieve_max_script_bytes: 100, sieve_max_total_bytes: 250, ..Limits::default() };
    let (_server, mut mail, alice) = fixture(limits).await;
    // A valid script of exactly `size` bytes: a comment padded out, then `keep;`.
    let sized = |size: usize| format!("#{}\nkeep;\n", "x".repeat(size - 8));
    let space = |name: &str, size: u64| HaveSieveSpaceRequest { account_id: alice, name: name.into(), size };

    let too_big = sized(101);
    expect_error(
        mail.put_sieve_script(put(alice, "big", &too_big)).await,
        Code::ResourceExhausted,
        ErrorReason::TooLarge,
    );
    expect_error(mail.have_sieve_space(space("big", 101)).await, Code::ResourceExhausted, ErrorReason::TooLarge);
    mail.have_sieve_space(space("big", 100)).await.expect("100 bytes fit");

    for name in ["a", "b"] {
        mail.put_sieve_script(put(alice, name, &sized(100))).await.expect("a script of 100 bytes");
    }
    // 200 bytes stored: a third script of 51 bytes would make 251.
    expect_error(
        mail.put_sieve_script(put(alice, "c", &sized(51))).await,
        Code::ResourceExhausted,
        ErrorReason::OverQuota,
    );
    expect_error(mail.have_sieve_space(space("c", 51)).await, Code::ResourceExhausted, ErrorReason::OverQuota);
    mail.have_sieve_space(space("c", 50)).await.expect("50 bytes fit");
    mail.put_sieve_script(put(alice, "c", &sized(50))).await.expect("a third script of 50 bytes");

    // A fourth script is one too many, whatever its size; replacing one is not a new one.
    expect_error(mail.put_sieve_script(put(alice, "d", KEEP)).await, Code::ResourceExhausted, ErrorReason::TooMany);
    expect_error(mail.have_sieve_space(space("d", 1)).await, Code::ResourceExhausted, ErrorReason::TooMany);
    mail.have_sieve_space(space("a", 100)).await.expect("replacing a with as much fits");
    mail.put_sieve_script(put(alice, "a", KEEP)).await.expect("replace a");
    let sizes: Vec<(String, u64)> = list(&mut mail, alice).await.into_iter().map(|s| (s.name, s.size)).collect();
    assert_eq!(sizes, [("a".into(), KEEP.len() as u64), ("b".into(), 100), ("c".into(), 50)], "no refusal stored");
}

/// Puts two scripts, one active, and checks what a restarted service answers.
async fn survives_a_restart(mut server: TestServer) {
    let mut admin = server.admin_client().await;
    let alice = setup_account(&mut admin, "alice@example.com", "alice-pw").await.id;
    let mut mail = server.mailbox_client().await;
    mail.put_sieve_script(put(alice, "keep", KEEP)).await.unwrap();
    mail.put_sieve_script(PutSieveScriptRequest { activate: true, ..put(alice, "junk", JUNK) }).await.unwrap();
    drop((admin, mail));

    server.restart().await;
    let mut mail = server.mailbox_client().await;
    assert_eq!(names(&mut mail, alice).await, pairs(&[("junk", true), ("keep", false)]));
    assert_eq!(get(&mut mail, alice, "junk").await.unwrap(), (JUNK.to_string(), true));
    assert_eq!(get(&mut mail, alice, "keep").await.unwrap(), (KEEP.to_string(), false));
    // What delivery will run.
    let active = server.service().active_sieve(alice).await.unwrap().expect("an active script");
    assert_eq!((active.name.as_str(), active.text.as_str()), ("junk", JUNK));

    // Deleting the account deletes its scripts with it.
    let mut admin = server.admin_client().await;
    admin.delete_account(DeleteAccountRequest { address: "alice@example.com".into() }).await.unwrap();
    expect_error(
        mail.list_sieve_scripts(ListSieveScriptsRequest { account_id: alice }).await,
        Code::NotFound,
        ErrorReason::NotFound,
    );
}

#[tokio::test]
async fn scripts_survive_a_restart() {
    survives_a_restart(TestServer::start(Limits::default()).await).await;
}

#[tokio::test]
async fn scripts_survive_a_restart_on_nats() {
    let nats = Nats::start().expect("start NATS");
    survives_a_restart(TestServer::start_on_nats(Limits::default(), &nats.url()).await).await;
}
