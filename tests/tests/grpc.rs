//! Round trips of every Mailbox and Admin RPC over a real loopback socket, with the error cases
//! a front-end relies on: each error is checked for both its gRPC code and the machine-readable
//! reason in the `tern-reason` metadata.
//!
//! The suite runs on the embedded backend by default and, with `TERN_TEST_NATS_URL` set (as
//! `cargo xtask ci` and `e2e` set it, on a three-node cluster), on NATS JetStream: one suite,
//! both backends, so a backend that answers an RPC differently fails here.

use std::time::Duration;

use argon2::{Argon2, PasswordHasher, password_hash::SaltString};
use sha2::{Digest, Sha256};
use tern_mailbox::Limits;
use tern_proto::v1::{
    AddAliasRequest, AppendHeader, AuthenticateRequest, ChangesRequest, ClaimRecentRequest, CopyRequest,
    CreateAccountRequest, CreateDomainRequest, CreateFolderRequest, DeleteAccountRequest, DeleteDomainRequest,
    DeleteFolderRequest, DeliverEnvelope, DeliverRequest, DeliveryStatus, ErrorReason, EventKind, ExpungeRequest,
    FetchMessagesRequest, FlagsMode, Folder, FolderRef, GetAccountRequest, GetDomainRequest, GetQuotaRequest,
    GetUsageRequest, ListAccountsRequest, ListAliasesRequest, ListDomainsRequest, ListFoldersRequest, MoveRequest,
    Password, RecipientStatus, RemoveAliasRequest, RenameFolderRequest, ResolveRecipientRequest, ResolvedVia,
    SelectRequest, SetPasswordRequest, SpecialUse, StatusRequest, StoreFlagsRequest, SubscribeFolderRequest,
    UpdateAccountRequest, UpdateDomainRequest, WatchRequest, deliver_request, password,
};
use tern_tests::{
    Admin, Mailbox, TestServer, append, append_with_header, blobs_dir, count_bodies, deliver, expect_error, fetch_body,
    message, plain, setup_account, setup_account_with_quota,
};
use tonic::Code;

/// How long a test waits for an event it expects on a Watch stream.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// A server with one account, `alice@example.com`, and a client of each API.
struct Fixture {
    server: TestServer,
    mail: Mailbox,
    admin: Admin,
    alice: u64,
}

async fn fixture(limits: Limits) -> Fixture {
    let server = TestServer::start(limits).await;
    let mut admin = server.admin_client().await;
    let mail = server.mailbox_client().await;
    let alice = setup_account(&mut admin, "alice@example.com", "alice-pw").await.id;
    Fixture { server, mail, admin, alice }
}

async fn folder(mail: &mut Mailbox, account_id: u64, name: &str) -> Folder {
    mail.status(StatusRequest { account_id, folder: Some(FolderRef::name(name)) })
        .await
        .unwrap_or_else(|e| panic!("status of {name}: {e}"))
        .into_inner()
        .folder
        .expect("a folder in the status response")
}

fn rcpt_statuses(response: &tern_proto::v1::DeliverResponse) -> Vec<DeliveryStatus> {
    response.results.iter().map(|r| r.status()).collect()
}

/// A multipart message whose attachment is large enough to span several 64 KiB chunks of
/// FetchBody, with the byte offsets of its text part known.
fn multipart_message() -> Vec<u8> {
    let line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n";
    let attachment = line.repeat(3000);
    format!(
        "From: Sender Name <sender@remote.example>\r\n\
         To: Alice <alice@example.com>, bob@example.com\r\n\
         Subject: Quarterly report\r\n\
         Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <report-1@remote.example>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
         \r\n\
         --b1\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         Numbers attached.\r\n\
         --b1\r\n\
         Content-Type: application/octet-stream\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"report.bin\"\r\n\
         \r\n\
         {attachment}--b1--\r\n"
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Authenticate and ResolveRecipient.

#[tokio::test]
async fn authenticate_accepts_the_password_and_aliases_and_refuses_the_rest() {
    let Fixture { server: _server, mut mail, mut admin, alice } = fixture(Limits::default()).await;
    admin
        .add_alias(AddAliasRequest { alias: "al@example.com".into(), target: "alice@example.com".into() })
        .await
        .unwrap();

    let login = |username: &str, password: &str| AuthenticateRequest {
        username: username.into(),
        password: password.into(),
        remote_ip: "192.0.2.1".into(),
    };
    let account =
        mail.authenticate(login("alice@example.com", "alice-pw")).await.unwrap().into_inner().account.unwrap();
    assert_eq!((account.id, account.address.as_str()), (alice, "alice@example.com"));
    // Addresses are case-insensitive, and an alias logs in to its account.
    let account =
        mail.authenticate(login("Alice@Example.COM", "alice-pw")).await.unwrap().into_inner().account.unwrap();
    assert_eq!(account.id, alice);
    let account = mail.authenticate(login("al@example.com", "alice-pw")).await.unwrap().into_inner().account.unwrap();
    assert_eq!(account.id, alice);
    assert_eq!(account.aliases, vec!["al@example.com".to_string()]);

    expect_error(
        mail.authenticate(login("alice@example.com", "wrong")).await,
        Code::Unauthenticated,
        ErrorReason::AuthFailed,
    );
    expect_error(
        mail.authenticate(login("nobody@example.com", "alice-pw")).await,
        Code::Unauthenticated,
        ErrorReason::AuthFailed,
    );
    expect_error(mail.authenticate(login("not an address", "x")).await, Code::Unauthenticated, ErrorReason::AuthFailed);

    // A suspended account is refused with its own reason even with the right password.
    admin
        .update_account(UpdateAccountRequest {
            address: "alice@example.com".into(),
            suspended: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    expect_error(
        mail.authenticate(login("alice@example.com", "alice-pw")).await,
        Code::PermissionDenied,
        ErrorReason::Suspended,
    );
}

#[tokio::test]
async fn authenticate_throttles_repeated_failures() {
    let limits = Limits { max_auth_failures: 3, ..Limits::default() };
    let Fixture { server: _server, mut mail, .. } = fixture(limits).await;
    let login = |password: &str| AuthenticateRequest {
        username: "alice@example.com".into(),
        password: password.into(),
        remote_ip: "198.51.100.7".into(),
    };
    for _ in 0..3 {
        expect_error(mail.authenticate(login("wrong")).await, Code::Unauthenticated, ErrorReason::AuthFailed);
    }
    // Past the limit even the right password fails, so guessing stops paying off; the reason
    // says so, so front-ends answer with a temporary failure (SMTP 454, POP3 [SYS/TEMP]).
    expect_error(mail.authenticate(login("alice-pw")).await, Code::ResourceExhausted, ErrorReason::Throttled);
}

#[tokio::test]
async fn resolve_recipient_covers_mailbox_alias_detail_catch_all_and_unknown() {
    let Fixture { server: _server, mut mail, mut admin, alice } = fixture(Limits::default()).await;
    admin
        .add_alias(AddAliasRequest { alias: "sales@example.com".into(), target: "alice@example.com".into() })
        .await
        .unwrap();
    let postmaster = setup_account(&mut admin, "postmaster@catch.example", "pm-pw").await.id;
    admin
        .update_domain(UpdateDomainRequest {
            name: "catch.example".into(),
            catch_all: Some("postmaster".into()),
            default_quota_bytes: None,
            spam: None,
        })
        .await
        .unwrap();

    let mut resolve = async |address: &str| {
        mail.resolve_recipient(ResolveRecipientRequest { address: address.into() }).await.map(|r| r.into_inner())
    };

    let r = resolve("alice@example.com").await.unwrap();
    assert_eq!(
        (r.status(), r.via(), r.account.unwrap().id, r.detail.as_str()),
        (RecipientStatus::Local, ResolvedVia::Mailbox, alice, "")
    );
    let r = resolve("<ALICE@example.com>").await.unwrap();
    assert_eq!((r.status(), r.account.unwrap().id), (RecipientStatus::Local, alice));
    let r = resolve("sales@example.com").await.unwrap();
    assert_eq!((r.status(), r.via(), r.account.unwrap().id), (RecipientStatus::Local, ResolvedVia::Alias, alice));
    let r = resolve("alice+lists@example.com").await.unwrap();
    assert_eq!(
        (r.status(), r.via(), r.account.unwrap().id, r.detail.as_str()),
        (RecipientStatus::Local, ResolvedVia::Mailbox, alice, "lists")
    );
    let r = resolve("sales+q3@example.com").await.unwrap();
    assert_eq!(
        (r.status(), r.via(), r.account.unwrap().id, r.detail.as_str()),
        (RecipientStatus::Local, ResolvedVia::Alias, alice, "q3")
    );
    let r = resolve("anyone@catch.example").await.unwrap();
    assert_eq!(
        (r.status(), r.via(), r.account.unwrap().id),
        (RecipientStatus::Local, ResolvedVia::CatchAll, postmaster)
    );

    let r = resolve("someone@elsewhere.example").await.unwrap();
    assert_eq!(r.status(), RecipientStatus::NotLocal);
    assert!(r.account.is_none());
    let r = resolve("nobody@example.com").await.unwrap();
    assert_eq!(r.status(), RecipientStatus::UnknownUser);
    assert!(r.account.is_none());

    for bad in ["", "no-at-sign", "a b@example.com", "x@bad_domain.example", "@example.com"] {
        expect_error(resolve(bad).await, Code::InvalidArgument, ErrorReason::InvalidArgument);
    }

    admin
        .update_account(UpdateAccountRequest {
            address: "alice@example.com".into(),
            suspended: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    let r = resolve("alice@example.com").await.unwrap();
    assert_eq!((r.status(), r.account.unwrap().id), (RecipientStatus::Suspended, alice));
}

// ---------------------------------------------------------------------------------------------
// Deliver, Append, FetchMessages, FetchBody.

#[tokio::test]
async fn deliver_then_fetch_structure_and_body_byte_for_byte() {
    let Fixture { server: _server, mut mail, alice, .. } = fixture(Limits::default()).await;
    let raw = multipart_message();
    assert!(raw.len() > 3 * 64 * 1024, "the message must span several FetchBody chunks");

    let d = deliver(&mut mail, &["alice@example.com"], &raw).await.unwrap();
    // A body is named by its SHA-256; a store that does not count references (NATS) adds a
    // suffix of its own to every delivery's object.
    let hash = hex::encode(Sha256::digest(&raw));
    if tern_tests::on_nats() {
        assert!(d.blob_id.starts_with(&format!("{hash}-")), "{} is not named by its SHA-256", d.blob_id);
    } else {
        assert_eq!(d.blob_id, hash, "a body is named by its SHA-256");
    }
    assert_eq!(d.size, raw.len() as u64);
    assert_eq!(d.results.len(), 1);
    let r = &d.results[0];
    assert_eq!((r.status(), r.account_id, r.folder.as_str(), r.uid), (DeliveryStatus::Delivered, alice, "INBOX", 1));

    let inbox = folder(&mut mail, alice, "INBOX").await;
    assert_eq!(r.uidvalidity, inbox.uidvalidity);
    assert_eq!((inbox.messages, inbox.unseen, inbox.uidnext, inbox.size), (1, 1, 2, raw.len() as u64));

    let metas = mail
        .fetch_messages(FetchMessagesRequest {
            account_id: alice,
            folder_id: inbox.id,
            uids: vec![1, 99],
            with_structure: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert_eq!(metas.len(), 1, "a UID that does not exist is left out");
    let m = &metas[0];
    assert_eq!((m.uid, m.size, m.blob_id.as_str()), (1, raw.len() as u64, d.blob_id.as_str()));
    assert!(m.flags.is_empty());
    assert!(!m.email_id.is_empty());
    assert!(m.internal_date > 1_700_000_000, "the internal date is the time of delivery");
    let env = m.envelope.as_ref().expect("an envelope");
    assert_eq!(env.subject, "Quarterly report");
    assert_eq!(env.message_id, "<report-1@remote.example>");
    assert_eq!(env.date, "Thu, 26 Nov 2026 10:00:00 +0000");
    assert_eq!(
        (env.from[0].name.as_str(), env.from[0].mailbox.as_str(), env.from[0].host.as_str()),
        ("Sender Name", "sender", "remote.example")
    );
    assert_eq!(env.to.len(), 2);
    assert_eq!(env.to[1].mailbox, "bob");
    let body = m.body.as_ref().expect("a body structure");
    assert_eq!((body.media_type.as_str(), body.media_subtype.as_str()), ("multipart", "mixed"));
    assert_eq!(body.parts.len(), 2);
    let text = &body.parts[0];
    assert_eq!((text.media_type.as_str(), text.media_subtype.as_str()), ("text", "plain"));
    let attachment = &body.parts[1];
    assert_eq!((attachment.encoding.as_str(), attachment.disposition.as_str()), ("base64", "attachment"));

    // Without structure, only the summary fields come back.
    let plain_meta = mail
        .fetch_messages(FetchMessagesRequest {
            account_id: alice,
            folder_id: inbox.id,
            uids: vec![1],
            with_structure: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert!(plain_meta[0].envelope.is_none() && plain_meta[0].body.is_none());

    // The whole body (several stream chunks), then ranges: the text part as BODY[1] reads it, one
    // in the middle, the attachment to the end, one running past the end, one starting past it.
    let (whole, total) = fetch_body(&mut mail, alice, inbox.id, 1, 0, 0).await.unwrap();
    assert_eq!(total, raw.len() as u64);
    assert!(whole == raw, "the body differs from what was delivered");
    let (part, _) =
        fetch_body(&mut mail, alice, inbox.id, 1, text.body_offset, text.end_offset - text.body_offset).await.unwrap();
    assert_eq!(part, b"Numbers attached.");
    let (part, _) = fetch_body(&mut mail, alice, inbox.id, 1, 65_000, 10_000).await.unwrap();
    assert!(part == raw[65_000..75_000]);
    let (part, _) = fetch_body(&mut mail, alice, inbox.id, 1, attachment.body_offset, 0).await.unwrap();
    assert!(part == raw[attachment.body_offset as usize..]);
    let tail = raw.len() as u64 - 10;
    let (part, _) = fetch_body(&mut mail, alice, inbox.id, 1, tail, 1_000).await.unwrap();
    assert!(part == raw[tail as usize..]);
    let (part, total) = fetch_body(&mut mail, alice, inbox.id, 1, raw.len() as u64 + 5, 10).await.unwrap();
    assert!(part.is_empty());
    assert_eq!(total, raw.len() as u64);

    expect_error(fetch_body(&mut mail, alice, inbox.id, 42, 0, 0).await, Code::NotFound, ErrorReason::NotFound);
    expect_error(fetch_body(&mut mail, alice, 999_999, 1, 0, 0).await, Code::NotFound, ErrorReason::NotFound);
}

#[tokio::test]
async fn append_stores_flags_and_date_in_the_named_folder() {
    let Fixture { server: _server, mut mail, alice, .. } = fixture(Limits::default()).await;
    let raw = message("draft-1", "a draft");
    let header = AppendHeader {
        account_id: alice,
        folder: Some(FolderRef::name("Drafts")),
        flags: vec!["\\draft".into(), "\\Seen".into(), "$Important".into(), "\\seen".into()],
        internal_date: 1_600_000_000,
        size_hint: raw.len() as u64,
        ..Default::default()
    };
    let a = append_with_header(&mut mail, header, &raw).await.unwrap();
    let drafts = folder(&mut mail, alice, "Drafts").await;
    assert_eq!((a.folder_id, a.uidvalidity, a.uid), (drafts.id, drafts.uidvalidity, 1));
    assert_eq!(a.modseq, drafts.highest_modseq);
    assert_eq!((drafts.messages, drafts.unseen), (1, 0), "a \\Seen message is not unseen");

    let m = mail
        .fetch_messages(FetchMessagesRequest {
            account_id: alice,
            folder_id: drafts.id,
            uids: vec![1],
            with_structure: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .messages
        .remove(0);
    // Flags come back canonical, sorted and without duplicates.
    assert_eq!(m.flags, vec!["$Important", "\\Draft", "\\Seen"]);
    assert_eq!((m.internal_date, m.modseq), (1_600_000_000, a.modseq));
    assert_eq!(m.envelope.unwrap().subject, "draft-1");
    assert!(fetch_body(&mut mail, alice, drafts.id, 1, 0, 0).await.unwrap().0 == raw);

    // Appending by folder id works too, and gets the next UID.
    let b = append(&mut mail, alice, FolderRef::id(drafts.id), &[], b"Subject: two\r\n\r\nx\r\n").await.unwrap();
    assert_eq!(b.uid, 2);
    assert!(b.modseq > a.modseq);

    let bad = |folder: FolderRef| AppendHeader { account_id: alice, folder: Some(folder), ..Default::default() };
    expect_error(
        append_with_header(&mut mail, bad(FolderRef::name("Nope")), b"x").await,
        Code::NotFound,
        ErrorReason::NotFound,
    );
    expect_error(
        append_with_header(&mut mail, bad(FolderRef::id(987_654)), b"x").await,
        Code::NotFound,
        ErrorReason::NotFound,
    );
    expect_error(
        append(&mut mail, 987_654, FolderRef::name("INBOX"), &[], b"x").await,
        Code::NotFound,
        ErrorReason::NotFound,
    );
    expect_error(
        append(&mut mail, alice, FolderRef::name("INBOX"), &["\\Recent"], b"x").await,
        Code::InvalidArgument,
        ErrorReason::InvalidArgument,
    );
    expect_error(
        append_with_header(&mut mail, AppendHeader { account_id: alice, ..Default::default() }, b"x").await,
        Code::InvalidArgument,
        ErrorReason::InvalidArgument,
    );
}

#[tokio::test]
async fn deliver_refuses_malformed_streams_and_reports_unknown_recipients() {
    let Fixture { server: _server, mut mail, .. } = fixture(Limits::default()).await;
    expect_error(deliver(&mut mail, &[], b"x").await, Code::InvalidArgument, ErrorReason::InvalidArgument);

    // A body chunk before the envelope is a protocol error.
    let chunk_first = vec![DeliverRequest { part: Some(deliver_request::Part::Chunk(b"x".to_vec())) }];
    let status = mail.deliver(futures::stream::iter(chunk_first)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // Unknown, foreign and malformed recipients are reported one by one; nothing is stored
    // when nobody takes the message.
    let d = deliver(
        &mut mail,
        &["nobody@example.com", "x@elsewhere.example", "not an address"],
        b"Subject: x\r\n\r\ny\r\n",
    )
    .await
    .unwrap();
    assert_eq!(rcpt_statuses(&d), vec![DeliveryStatus::UnknownUser; 3]);
    assert!(d.results.iter().all(|r| r.uid == 0));
}

#[tokio::test]
async fn multi_recipient_delivery_stores_one_body_object() {
    let Fixture { server, mut mail, mut admin, alice } = fixture(Limits::default()).await;
    let bob = setup_account(&mut admin, "bob@example.com", "bob-pw").await.id;
    let carol = setup_account(&mut admin, "carol@other.example", "carol-pw").await.id;
    admin
        .add_alias(AddAliasRequest { alias: "ali@example.com".into(), target: "alice@example.com".into() })
        .await
        .unwrap();
    assert_eq!(count_bodies(&blobs_dir(&server.data_dir)), 0);

    let raw = message("to-many", "one body, many mailboxes");
    let rcpts = ["alice@example.com", "bob@example.com", "carol@other.example", "ali@example.com", "ghost@example.com"];
    let d = deliver(&mut mail, &rcpts, &raw).await.unwrap();
    assert_eq!(
        rcpt_statuses(&d),
        vec![
            DeliveryStatus::Delivered,
            DeliveryStatus::Delivered,
            DeliveryStatus::Delivered,
            DeliveryStatus::Delivered,
            DeliveryStatus::UnknownUser
        ]
    );
    let ids: Vec<u64> = d.results.iter().map(|r| r.account_id).collect();
    assert_eq!(ids[..4], [alice, bob, carol, alice]);
    // The alias is the same account: one copy, and the alias reports the mailbox's UID.
    assert_eq!((d.results[0].uid, d.results[3].uid), (1, 1));
    assert_eq!(folder(&mut mail, alice, "INBOX").await.messages, 1);

    assert_eq!(count_bodies(&blobs_dir(&server.data_dir)), 1, "one body object for every recipient");
    for account in [alice, bob, carol] {
        let inbox = folder(&mut mail, account, "INBOX").await;
        let metas = mail
            .fetch_messages(FetchMessagesRequest {
                account_id: account,
                folder_id: inbox.id,
                uids: vec![1],
                with_structure: false,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .messages;
        assert_eq!(metas[0].blob_id, d.blob_id);
        assert!(fetch_body(&mut mail, account, inbox.id, 1, 0, 0).await.unwrap().0 == raw);
    }

    // The same content delivered again is still one object where references are counted; on
    // NATS every delivery has its own (see ARCHITECTURE.md, garbage collection).
    deliver(&mut mail, &["bob@example.com"], &raw).await.unwrap();
    let want = if tern_tests::on_nats() { 2 } else { 1 };
    assert_eq!(count_bodies(&blobs_dir(&server.data_dir)), want);
}

// ---------------------------------------------------------------------------------------------
// Quotas and sizes.

#[tokio::test]
async fn quota_refuses_deliveries_appends_and_copies_that_do_not_fit() {
    let Fixture { server: _server, mut mail, mut admin, .. } = fixture(Limits::default()).await;
    let dave = setup_account_with_quota(&mut admin, "dave@example.com", "dave-pw", 1000).await.id;
    let body =
        |tag: char, len: usize| format!("Subject: {tag}\r\n\r\n{}", tag.to_string().repeat(len - 14)).into_bytes();
    let six = body('a', 600);
    assert_eq!(six.len(), 600);

    let d = deliver(&mut mail, &["dave@example.com"], &six).await.unwrap();
    assert_eq!(rcpt_statuses(&d), vec![DeliveryStatus::Delivered]);
    let d = deliver(&mut mail, &["dave@example.com"], &body('b', 600)).await.unwrap();
    assert_eq!(rcpt_statuses(&d), vec![DeliveryStatus::OverQuota]);
    assert_eq!(d.results[0].uid, 0);
    // Exactly filling the quota is allowed.
    let d = deliver(&mut mail, &["dave@example.com"], &body('c', 400)).await.unwrap();
    assert_eq!(rcpt_statuses(&d), vec![DeliveryStatus::Delivered]);

    let usage = mail.get_quota(GetQuotaRequest { account_id: dave }).await.unwrap().into_inner().usage.unwrap();
    assert_eq!((usage.messages, usage.bytes, usage.quota_bytes), (2, 1000, 1000));

    expect_error(
        append(&mut mail, dave, FolderRef::name("Sent"), &[], &body('d', 20)).await,
        Code::ResourceExhausted,
        ErrorReason::OverQuota,
    );
    let inbox = folder(&mut mail, dave, "INBOX").await;
    expect_error(
        mail.copy(CopyRequest {
            account_id: dave,
            folder_id: inbox.id,
            uids: vec![1],
            destination: Some(FolderRef::name("Archive")),
        })
        .await,
        Code::ResourceExhausted,
        ErrorReason::OverQuota,
    );
    // Moving does not add bytes, so it is allowed at the limit.
    let moved = mail
        .r#move(MoveRequest {
            account_id: dave,
            folder_id: inbox.id,
            uids: vec![1],
            destination: Some(FolderRef::name("Archive")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.source_uids, vec![1]);

    // Raising the quota lets mail in again.
    admin
        .update_account(UpdateAccountRequest {
            address: "dave@example.com".into(),
            quota_bytes: Some(5000),
            ..Default::default()
        })
        .await
        .unwrap();
    append(&mut mail, dave, FolderRef::name("Sent"), &[], &body('d', 20)).await.unwrap();
}

/// One AppendAll request of several messages: a header, then that message's chunks.
fn append_all_request(
    account_id: u64,
    folder: &str,
    messages: &[(&[&str], &[u8])],
) -> Vec<tern_proto::v1::AppendRequest> {
    use tern_proto::v1::{AppendRequest, append_request::Part};
    let mut out = Vec::new();
    for (flags, raw) in messages {
        let header = AppendHeader {
            account_id,
            folder: Some(FolderRef::name(folder)),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            internal_date: 0,
            size_hint: raw.len() as u64,
            ..Default::default()
        };
        out.push(AppendRequest { part: Some(Part::Header(header)) });
        // Two chunks each, so that the service joins a message's chunks and not the messages'.
        let (a, b) = raw.split_at(raw.len() / 2);
        out.push(AppendRequest { part: Some(Part::Chunk(a.to_vec())) });
        out.push(AppendRequest { part: Some(Part::Chunk(b.to_vec())) });
    }
    out
}

/// MULTIAPPEND's storage: several messages in one call get consecutive UIDs and MODSEQs in
/// order, and a call refused for any of them (over quota together, one bad flag, a second
/// folder) appends none.
#[tokio::test]
async fn append_all_appends_every_message_or_none() {
    let Fixture { server: _server, mut mail, mut admin, .. } = fixture(Limits::default()).await;
    let dave = setup_account_with_quota(&mut admin, "dave@example.com", "dave-pw", 1000).await.id;
    let (one, two, three) = (message("one", "first"), message("two", "second"), message("three", "third"));
    let request = append_all_request(dave, "Drafts", &[(&["\\Seen"], &one), (&[], &two), (&["$Later"], &three)]);
    let appended = mail.append_all(futures::stream::iter(request)).await.unwrap().into_inner().appended;
    let drafts = folder(&mut mail, dave, "Drafts").await;
    assert_eq!(appended.iter().map(|a| a.uid).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(appended.windows(2).all(|w| w[0].modseq < w[1].modseq), "{appended:?}");
    assert!(appended.iter().all(|a| a.folder_id == drafts.id && a.uidvalidity == drafts.uidvalidity));
    assert_eq!((drafts.messages, drafts.unseen, drafts.highest_modseq), (3, 2, appended[2].modseq));
    for (uid, raw) in [(1, &one), (2, &two), (3, &three)] {
        assert!(fetch_body(&mut mail, dave, drafts.id, uid, 0, 0).await.unwrap().0 == *raw, "message {uid}");
    }

    // Each of these fits the quota alone, and together they do not: nothing is appended.
    let used: u64 = [&one, &two, &three].iter().map(|m| m.len() as u64).sum();
    let half = format!("Subject: h\r\n\r\n{}", "h".repeat(((1000 - used) / 2) as usize)).into_bytes();
    let request = append_all_request(dave, "Drafts", &[(&[], &half), (&[], &half)]);
    expect_error(
        mail.append_all(futures::stream::iter(request)).await,
        Code::ResourceExhausted,
        ErrorReason::OverQuota,
    );
    let request = append_all_request(dave, "Drafts", &[(&[], &one), (&["\\Recent"], &two)]);
    expect_error(
        mail.append_all(futures::stream::iter(request)).await,
        Code::InvalidArgument,
        ErrorReason::InvalidArgument,
    );
    let mut request = append_all_request(dave, "Drafts", &[(&[], &one)]);
    request.extend(append_all_request(dave, "Sent", &[(&[], &two)]));
    assert_eq!(mail.append_all(futures::stream::iter(request)).await.unwrap_err().code(), Code::InvalidArgument);
    let request = append_all_request(dave, "Nope", &[(&[], &one), (&[], &two)]);
    expect_error(mail.append_all(futures::stream::iter(request)).await, Code::NotFound, ErrorReason::NotFound);
    let after = folder(&mut mail, dave, "Drafts").await;
    assert_eq!((after.messages, after.uidnext, after.highest_modseq), (3, 4, drafts.highest_modseq));
    assert_eq!(folder(&mut mail, dave, "Sent").await.messages, 0);
}

/// METADATA's storage: a folder's and the server's annotations are kept apart, names are
/// canonical, and the limits on a value's size and on the number of entries are answered as
/// values, with nothing written.
#[tokio::test]
async fn metadata_limits_are_answers_and_write_nothing() {
    use tern_proto::v1::{GetMetadataRequest, MetadataChange, SetMetadataRequest};
    let Fixture { server: _server, mut mail, alice, .. } = fixture(Limits::default()).await;
    let change = |name: String, value: &str| MetadataChange { name, value: value.into(), remove: false };
    let set = |folder: &str, changes: Vec<MetadataChange>| SetMetadataRequest {
        account_id: alice,
        folder: folder.into(),
        changes,
    };
    let names = |folder: &str| GetMetadataRequest { account_id: alice, folder: folder.into() };

    let full: Vec<MetadataChange> = (0..100).map(|i| change(format!("/Private/N{i:03}"), "x")).collect();
    let r = mail.set_metadata(set("INBOX", full)).await.unwrap().into_inner();
    assert_eq!((r.max_size, r.too_many), (0, false));
    let one_more = set("INBOX", vec![change("/private/extra".into(), "x")]);
    assert!(mail.set_metadata(one_more).await.unwrap().into_inner().too_many);
    // Changing an entry, or removing one and adding another, stays within the limit.
    let swap = vec![
        MetadataChange { name: "/private/n000".into(), value: vec![], remove: true },
        change("/private/new".into(), "y"),
    ];
    assert!(!mail.set_metadata(set("INBOX", swap)).await.unwrap().into_inner().too_many);
    let inbox = mail.get_metadata(names("INBOX")).await.unwrap().into_inner().entries;
    assert_eq!(inbox.len(), 100);
    assert!(inbox.windows(2).all(|w| w[0].name < w[1].name), "sorted by name");
    assert!(inbox.iter().all(|e| e.name != "/private/extra" && e.name != "/private/n000"));

    let big = "v".repeat(64 * 1024 + 1);
    let r = mail.set_metadata(set("", vec![change("/shared/comment".into(), &big)])).await.unwrap().into_inner();
    assert_eq!(r.max_size, 64 * 1024);
    mail.set_metadata(set("", vec![change("/shared/comment".into(), "server")])).await.unwrap();
    let server = mail.get_metadata(names("")).await.unwrap().into_inner().entries;
    assert_eq!(
        server.iter().map(|e| (e.name.as_str(), e.value.as_slice())).collect::<Vec<_>>(),
        [("/shared/comment", &b"server"[..])]
    );

    let bad = set("INBOX", vec![change("/public/x".into(), "x")]);
    expect_error(mail.set_metadata(bad).await, Code::InvalidArgument, ErrorReason::InvalidArgument);
    expect_error(mail.get_metadata(names("Nope")).await, Code::NotFound, ErrorReason::NotFound);
}

#[tokio::test]
async fn multi_recipient_delivery_with_one_recipient_over_quota() {
    let Fixture { server, mut mail, mut admin, alice } = fixture(Limits::default()).await;
    let bob = setup_account_with_quota(&mut admin, "bob@example.com", "bob-pw", 100).await.id;
    let carol = setup_account(&mut admin, "carol@example.com", "carol-pw").await.id;
    let raw = message("partial", &"x".repeat(400));

    let d = deliver(&mut mail, &["alice@example.com", "bob@example.com", "carol@example.com"], &raw).await.unwrap();
    assert_eq!(
        rcpt_statuses(&d),
        vec![DeliveryStatus::Delivered, DeliveryStatus::OverQuota, DeliveryStatus::Delivered]
    );
    assert_eq!((d.results[0].uid, d.results[1].uid, d.results[2].uid), (1, 0, 1));
    assert_eq!(d.results[1].account_id, bob);

    assert_eq!(folder(&mut mail, alice, "INBOX").await.messages, 1);
    assert_eq!(folder(&mut mail, carol, "INBOX").await.messages, 1);
    assert_eq!(folder(&mut mail, bob, "INBOX").await.messages, 0);
    let bob_usage = mail.get_quota(GetQuotaRequest { account_id: bob }).await.unwrap().into_inner().usage.unwrap();
    assert_eq!((bob_usage.messages, bob_usage.bytes), (0, 0));
    assert_eq!(count_bodies(&blobs_dir(&server.data_dir)), 1);
}

#[tokio::test]
async fn messages_over_the_size_limit_are_refused() {
    let limits = Limits { max_message_bytes: 4096, ..Limits::default() };
    let Fixture { server: _server, mut mail, alice, .. } = fixture(limits).await;
    let fits = vec![b'a'; 4096];
    let too_big = vec![b'a'; 4097];

    let d = deliver(&mut mail, &["alice@example.com"], &fits).await.unwrap();
    assert_eq!(rcpt_statuses(&d), vec![DeliveryStatus::Delivered]);
    expect_error(
        deliver(&mut mail, &["alice@example.com"], &too_big).await,
        Code::ResourceExhausted,
        ErrorReason::TooLarge,
    );
    append(&mut mail, alice, FolderRef::name("INBOX"), &[], &fits).await.unwrap();
    expect_error(
        append(&mut mail, alice, FolderRef::name("INBOX"), &[], &too_big).await,
        Code::ResourceExhausted,
        ErrorReason::TooLarge,
    );

    // A size announced up front is refused before any body is sent.
    let envelope =
        DeliverEnvelope { recipients: vec!["alice@example.com".into()], size_hint: 10_000, ..Default::default() };
    let only_envelope = vec![DeliverRequest { part: Some(deliver_request::Part::Envelope(envelope)) }];
    expect_error(
        mail.deliver(futures::stream::iter(only_envelope)).await,
        Code::ResourceExhausted,
        ErrorReason::TooLarge,
    );
    let header = AppendHeader {
        account_id: alice,
        folder: Some(FolderRef::name("INBOX")),
        size_hint: 10_000,
        ..Default::default()
    };
    expect_error(append_with_header(&mut mail, header, b"").await, Code::ResourceExhausted, ErrorReason::TooLarge);

    assert_eq!(folder(&mut mail, alice, "INBOX").await.messages, 2, "nothing refused was stored");
}

#[tokio::test]
async fn get_quota_and_get_usage_agree() {
    let Fixture { server: _server, mut mail, mut admin, alice } = fixture(Limits::default()).await;
    let a = message("q1", "first");
    let b = message("q2", "second, longer");
    deliver(&mut mail, &["alice@example.com"], &a).await.unwrap();
    append(&mut mail, alice, FolderRef::name("Sent"), &[], &b).await.unwrap();

    let usage = mail.get_quota(GetQuotaRequest { account_id: alice }).await.unwrap().into_inner().usage.unwrap();
    assert_eq!((usage.account_id, usage.address.as_str()), (alice, "alice@example.com"));
    assert_eq!((usage.messages, usage.bytes, usage.quota_bytes), (2, (a.len() + b.len()) as u64, 0));
    let admin_usage =
        admin.get_usage(GetUsageRequest { address: "alice@example.com".into() }).await.unwrap().into_inner();
    assert_eq!(admin_usage, usage);

    expect_error(mail.get_quota(GetQuotaRequest { account_id: 424_242 }).await, Code::NotFound, ErrorReason::NotFound);
    expect_error(
        admin.get_usage(GetUsageRequest { address: "nobody@example.com".into() }).await,
        Code::NotFound,
        ErrorReason::NotFound,
    );
}

// ---------------------------------------------------------------------------------------------
// Folders.

#[tokio::test]
async fn new_accounts_have_the_special_use_folders() {
    let Fixture { server: _server, mut mail, alice, .. } = fixture(Limits::default()).await;
    deliver(&mut mail, &["alice@example.com"], &message("count-me", "x")).await.unwrap();

    let folders = mail
        .list_folders(ListFoldersRequest { account_id: alice, with_status: true })
        .await
        .unwrap()
        .into_inner()
        .folders;
    let mut found: Vec<(String, SpecialUse, bool)> =
        folders.iter().map(|f| (f.name.clone(), f.special_use(), f.subscribed)).collect();
    found.sort();
    let mut want = vec![
        ("INBOX".to_string(), SpecialUse::None, true),
        ("Sent".to_string(), SpecialUse::Sent, true),
        ("Drafts".to_string(), SpecialUse::Drafts, true),
        ("Trash".to_string(), SpecialUse::Trash, true),
        ("Junk".to_string(), SpecialUse::Junk, true),
        ("Archive".to_string(), SpecialUse::Archive, true),
    ];
    want.sort();
    assert_eq!(found, want);
    let inbox = folders.iter().find(|f| f.name == "INBOX").unwrap();
    assert_eq!((inbox.messages, inbox.unseen, inbox.uidnext), (1, 1, 2));
    assert!(inbox.uidvalidity > 0);
    // Every folder has its own UIDVALIDITY.
    let mut validities: Vec<u32> = folders.iter().map(|f| f.uidvalidity).collect();
    validities.sort_unstable();
    validities.dedup();
    assert_eq!(validities.len(), 6);

    // Without with_status the counts are left out.
    let bare = mail
        .list_folders(ListFoldersRequest { account_id: alice, with_status: false })
        .await
        .unwrap()
        .into_inner()
        .folders;
    assert_eq!(bare.iter().find(|f| f.name == "INBOX").unwrap().messages, 0);
}

#[tokio::test]
async fn folders_are_created_renamed_subscribed_and_deleted() {
    let Fixture { server: _server, mut mail, alice, .. } = fixture(Limits::default()).await;
    let mut events = mail.clone().watch(WatchRequest { account_id: alice }).await.unwrap().into_inner();
    let create = |name: &str, special_use: SpecialUse| CreateFolderRequest {
        account_id: alice,
        name: name.into(),
        special_use: special_use as i32,
        uidvalidity: 0,
    };

    let projects = mail.create_folder(create("Projects", SpecialUse::None)).await.unwrap().into_inner().folder.unwrap();
    let tern =
        mail.create_folder(create("Projects/Tern", SpecialUse::Flagged)).await.unwrap().into_inner().folder.unwrap();
    assert_eq!(
        (projects.name.as_str(), tern.name.as_str(), tern.special_use()),
        ("Projects", "Projects/Tern", SpecialUse::Flagged)
    );
    assert_eq!((tern.uidnext, tern.messages), (1, 0));
    let e = tokio::time::timeout(EVENT_TIMEOUT, events.message()).await.unwrap().unwrap().unwrap();
    assert_eq!((e.kind(), e.folder_id, e.folder_name.as_str()), (EventKind::FolderCreated, projects.id, "Projects"));

    expect_error(
        mail.create_folder(create("Projects", SpecialUse::None)).await,
        Code::AlreadyExists,
        ErrorReason::AlreadyExists,
    );
    expect_error(
        mail.create_folder(create("inbox", SpecialUse::None)).await,
        Code::AlreadyExists,
        ErrorReason::AlreadyExists,
    );
    for bad in ["a//b", "", "x*", "50%", "/lead", "trail/", "tab\there"] {
        expect_error(
            mail.create_folder(create(bad, SpecialUse::None)).await,
            Code::InvalidArgument,
            ErrorReason::InvalidArgument,
        );
    }
    expect_error(
        mail.create_folder(CreateFolderRequest {
            account_id: 777_777,
            name: "X".into(),
            special_use: 0,
            uidvalidity: 0,
        })
        .await,
        Code::NotFound,
        ErrorReason::NotFound,
    );

    // Subscription is stored per folder.
    mail.subscribe_folder(SubscribeFolderRequest {
        account_id: alice,
        name: "Projects/Tern".into(),
        subscribed: false,
    })
    .await
    .unwrap();
    let list = mail
        .list_folders(ListFoldersRequest { account_id: alice, with_status: false })
        .await
        .unwrap()
        .into_inner()
        .folders;
    assert!(!list.iter().find(|f| f.name == "Projects/Tern").unwrap().subscribed);
    assert!(list.iter().find(|f| f.name == "Projects").unwrap().subscribed);
    expect_error(
        mail.subscribe_folder(SubscribeFolderRequest { account_id: alice, name: "Missing".into(), subscribed: true })
            .await,
        Code::NotFound,
        ErrorReason::NotFound,
    );

    // A message in the sub-folder goes along with a rename, and ids stay the same.
    append(&mut mail, alice, FolderRef::id(tern.id), &[], &message("inside", "x")).await.unwrap();
    let renamed = mail
        .rename_folder(RenameFolderRequest { account_id: alice, from: "Projects".into(), to: "Work".into() })
        .await
        .unwrap()
        .into_inner()
        .folder
        .unwrap();
    assert_eq!((renamed.id, renamed.name.as_str()), (projects.id, "Work"));
    let moved = folder(&mut mail, alice, "Work/Tern").await;
    assert_eq!((moved.id, moved.uidvalidity, moved.messages), (tern.id, tern.uidvalidity, 1));
    assert!(!moved.subscribed);
    expect_error(
        mail.status(StatusRequest { account_id: alice, folder: Some(FolderRef::name("Projects/Tern")) }).await,
        Code::NotFound,
        ErrorReason::NotFound,
    );

    let rename = |from: &str, to: &str| RenameFolderRequest { account_id: alice, from: from.into(), to: to.into() };
    expect_error(mail.rename_folder(rename("Missing", "Other")).await, Code::NotFound, ErrorReason::NotFound);
    expect_error(mail.rename_folder(rename("Work", "Sent")).await, Code::AlreadyExists, ErrorReason::AlreadyExists);
    expect_error(
        mail.rename_folder(rename("Work", "Work/Deeper")).await,
        Code::PermissionDenied,
        ErrorReason::NotAllowed,
    );
    // Renaming INBOX moves its messages to the new folder and leaves INBOX, empty, in place.
    let status = |mail: &mut Mailbox, name: &str| {
        let req = StatusRequest { account_id: alice, folder: Some(FolderRef::name(name)) };
        let mut mail = mail.clone();
        async move { mail.status(req).await.unwrap().into_inner().folder.unwrap() }
    };
    deliver(&mut mail, &["alice@example.com"], b"Subject: to be moved\r\n\r\nbody\r\n").await.unwrap();
    let before = status(&mut mail, "INBOX").await.messages;
    assert!(before > 0);
    let old = mail.rename_folder(rename("INBOX", "Old Inbox")).await.unwrap().into_inner().folder.unwrap();
    assert_eq!((old.name.as_str(), old.messages), ("Old Inbox", before));
    assert_eq!(status(&mut mail, "INBOX").await.messages, 0);
    expect_error(mail.rename_folder(rename("INBOX", "inbox")).await, Code::PermissionDenied, ErrorReason::NotAllowed);
    mail.delete_folder(DeleteFolderRequest { account_id: alice, name: "Old Inbox".into() }).await.unwrap();
    expect_error(mail.rename_folder(rename("Work", "a//b")).await, Code::InvalidArgument, ErrorReason::InvalidArgument);

    // A folder with children cannot be deleted; its children can, and then it can.
    let delete = |name: &str| DeleteFolderRequest { account_id: alice, name: name.into() };
    expect_error(mail.delete_folder(delete("Work")).await, Code::PermissionDenied, ErrorReason::NotAllowed);
    mail.delete_folder(delete("Work/Tern")).await.unwrap();
    mail.delete_folder(delete("Work")).await.unwrap();
    expect_error(mail.delete_folder(delete("Work")).await, Code::NotFound, ErrorReason::NotFound);
    expect_error(mail.delete_folder(delete("INBOX")).await, Code::PermissionDenied, ErrorReason::NotAllowed);
    expect_error(mail.delete_folder(delete("inbox")).await, Code::PermissionDenied, ErrorReason::NotAllowed);
    expect_error(mail.delete_folder(delete("x*")).await, Code::InvalidArgument, ErrorReason::InvalidArgument);

    // The deleted folder's message no longer counts against the account.
    let usage = mail.get_quota(GetQuotaRequest { account_id: alice }).await.unwrap().into_inner().usage.unwrap();
    assert_eq!(usage.messages, 0);
    let mut names: Vec<String> = mail
        .list_folders(ListFoldersRequest { account_id: alice, with_status: false })
        .await
        .unwrap()
        .into_inner()
        .folders
        .into_iter()
        .map(|f| f.name)
        .collect();
    names.sort();
    assert_eq!(names, ["Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash"]);
}

/// A subscription is to a name and outlives its folder (RFC 3501 section 6.3.6): DELETE keeps
/// it, ListFolders reports it, UNSUBSCRIBE removes it, and a folder created or renamed to the
/// name takes it over. Subscribing to a name that no folder has is refused, as Dovecot does.
#[tokio::test]
async fn subscriptions_outlive_their_folders() {
    let Fixture { server: _server, mut mail, alice, .. } = fixture(Limits::default()).await;
    let create =
        |name: &str| CreateFolderRequest { account_id: alice, name: name.into(), special_use: 0, uidvalidity: 0 };
    let delete = |name: &str| DeleteFolderRequest { account_id: alice, name: name.into() };
    let subscribe =
        |name: &str, subscribed: bool| SubscribeFolderRequest { account_id: alice, name: name.into(), subscribed };
    // The subscribed folders among those named, and the subscribed names without a folder.
    let subscriptions = |mail: &Mailbox, names: &'static [&'static str]| {
        let mut mail = mail.clone();
        async move {
            let list = mail
                .list_folders(ListFoldersRequest { account_id: alice, with_status: false })
                .await
                .unwrap()
                .into_inner();
            let folders: Vec<String> = list
                .folders
                .into_iter()
                .filter(|f| f.subscribed && names.contains(&f.name.as_str()))
                .map(|f| f.name)
                .collect();
            (folders, list.subscribed_without_folder)
        }
    };
    const NAMES: &[&str] = &["Lists", "Quiet", "Other", "Old", "Old/Child"];

    for name in ["Lists", "Quiet", "Old", "Old/Child"] {
        mail.create_folder(create(name)).await.unwrap();
    }
    mail.subscribe_folder(subscribe("Quiet", false)).await.unwrap();
    for name in ["Lists", "Quiet", "Old/Child", "Old"] {
        mail.delete_folder(delete(name)).await.unwrap();
    }
    // Only the subscribed ones stay, by name, parent and child alike.
    assert_eq!(subscriptions(&mail, NAMES).await, (vec![], vec!["Lists".into(), "Old".into(), "Old/Child".into()]));
    expect_error(mail.subscribe_folder(subscribe("Lists", true)).await, Code::NotFound, ErrorReason::NotFound);
    expect_error(mail.subscribe_folder(subscribe("Quiet", true)).await, Code::NotFound, ErrorReason::NotFound);

    // A folder created under the name holds its subscription again, and keeps it over DELETE.
    mail.create_folder(create("Lists")).await.unwrap();
    assert_eq!(subscriptions(&mail, NAMES).await, (vec!["Lists".into()], vec!["Old".into(), "Old/Child".into()]));
    mail.delete_folder(delete("Lists")).await.unwrap();

    // A folder renamed to a subscribed name is subscribed, even if it was not before.
    mail.create_folder(create("Other")).await.unwrap();
    mail.subscribe_folder(subscribe("Other", false)).await.unwrap();
    mail.rename_folder(RenameFolderRequest { account_id: alice, from: "Other".into(), to: "Lists".into() })
        .await
        .unwrap();
    assert_eq!(subscriptions(&mail, NAMES).await, (vec!["Lists".into()], vec!["Old".into(), "Old/Child".into()]));

    // UNSUBSCRIBE takes a name without a folder off, and succeeds for a name that was never
    // subscribed; an invalid name is still refused.
    mail.subscribe_folder(subscribe("Old/Child", false)).await.unwrap();
    mail.subscribe_folder(subscribe("Never", false)).await.unwrap();
    expect_error(
        mail.subscribe_folder(subscribe("a//b", false)).await,
        Code::InvalidArgument,
        ErrorReason::InvalidArgument,
    );
    assert_eq!(subscriptions(&mail, NAMES).await, (vec!["Lists".into()], vec!["Old".into()]));
}

#[tokio::test]
async fn a_refused_rename_changes_nothing() {
    let Fixture { server: _server, mut mail, alice, .. } = fixture(Limits::default()).await;
    for name in ["A", "A/x", "B/x"] {
        mail.create_folder(CreateFolderRequest {
            account_id: alice,
            name: name.into(),
            special_use: 0,
            uidvalidity: 0,
        })
        .await
        .unwrap();
    }
    // Renaming A to B would move A/x onto the existing B/x: the whole rename must be refused,
    // not only its second half.
    expect_error(
        mail.rename_folder(RenameFolderRequest { account_id: alice, from: "A".into(), to: "B".into() }).await,
        Code::AlreadyExists,
        ErrorReason::AlreadyExists,
    );
    let mut names: Vec<String> = mail
        .list_folders(ListFoldersRequest { account_id: alice, with_status: false })
        .await
        .unwrap()
        .into_inner()
        .folders
        .into_iter()
        .map(|f| f.name)
        .filter(|n| (n.starts_with('A') && n != "Archive") || n.starts_with('B'))
        .collect();
    names.sort();
    assert_eq!(names, ["A", "A/x", "B/x"]);
}

#[tokio::test]
async fn select_and_status_snapshot_a_folder() {
    let Fixture { server: _server, mut mail, mut admin, alice } = fixture(Limits::default()).await;
    for i in 0..3 {
        deliver(&mut mail, &["alice@example.com"], &message(&format!("s{i}"), "x")).await.unwrap();
    }
    let select = |folder: FolderRef| SelectRequest { account_id: alice, folder: Some(folder) };
    let by_name = mail.select(select(FolderRef::name("inbox"))).await.unwrap().into_inner();
    let f = by_name.folder.clone().unwrap();
    assert_eq!((f.name.as_str(), f.messages, f.unseen, f.uidnext), ("INBOX", 3, 3, 4));
    let uids: Vec<u32> = by_name.messages.iter().map(|m| m.uid).collect();
    assert_eq!(uids, [1, 2, 3]);
    assert_eq!(by_name.messages.iter().map(|m| m.modseq).max(), Some(f.highest_modseq));
    let by_id = mail.select(select(FolderRef::id(f.id))).await.unwrap().into_inner();
    assert_eq!(by_id, by_name);

    // Status also counts the messages no IMAP session has claimed as \Recent: all three.
    let status = folder(&mut mail, alice, "INBOX").await;
    assert_eq!(status, Folder { recent: 3, ..f.clone() });
    assert_eq!(f.first_recent_uid, 0);

    // The first claim gets all three, a second one nothing, and Status follows.
    let claim = |up_to| ClaimRecentRequest { account_id: alice, folder_id: f.id, up_to };
    assert_eq!(mail.claim_recent(claim(4)).await.unwrap().into_inner().first_recent_uid, 0);
    assert_eq!(mail.claim_recent(claim(4)).await.unwrap().into_inner().first_recent_uid, 4);
    let status = folder(&mut mail, alice, "INBOX").await;
    assert_eq!((status.recent, status.first_recent_uid), (0, 4));

    expect_error(mail.select(select(FolderRef::name("Nope"))).await, Code::NotFound, ErrorReason::NotFound);
    expect_error(mail.select(select(FolderRef::name("x*"))).await, Code::InvalidArgument, ErrorReason::InvalidArgument);
    expect_error(
        mail.select(SelectRequest { account_id: alice, folder: None }).await,
        Code::InvalidArgument,
        ErrorReason::InvalidArgument,
    );
    expect_error(
        mail.status(StatusRequest { account_id: alice, folder: Some(FolderRef::name("Nope")) }).await,
        Code::NotFound,
        ErrorReason::NotFound,
    );
    // Another account's folder is invisible, even by id.
    let bob = setup_account(&mut admin, "bob@example.com", "bob-pw").await.id;
    expect_error(
        mail.select(SelectRequest { account_id: bob, folder: Some(FolderRef::id(f.id)) }).await,
        Code::NotFound,
        ErrorReason::NotFound,
    );
    expect_error(fetch_body(&mut mail, bob, f.id, 1, 0, 0).await, Code::NotFound, ErrorReason::NotFound);
}

// ---------------------------------------------------------------------------------------------
// Flags, Copy, Move, Expunge, Changes, Watch.

#[tokio::test]
async fn store_flags_adds_removes_replaces_and_honours_unchanged_since() {
    let Fixture { server: _server, mut mail, alice, .. } = fixture(Limits::default()).await;
    for i in 0..3 {
        deliver(&mut mail, &["alice@example.com"], &message(&format!("f{i}"), "x")).await.unwrap();
    }
    let inbox = folder(&mut mail, alice, "INBOX").await;
    let store = |uids: Vec<u32>, mode: FlagsMode, flags: &[&str], unchanged_since: u64| StoreFlagsRequest {
        account_id: alice,
        folder_id: inbox.id,
        uids,
        mode: mode as i32,
        flags: flags.iter().map(|f| f.to_string()).collect(),
        unchanged_since,
    };

    let added =
        mail.store_flags(store(vec![1, 2], FlagsMode::Add, &["\\Seen", "$Work"], 0)).await.unwrap().into_inner();
    assert_eq!(added.updated.iter().map(|m| m.uid).collect::<Vec<_>>(), [1, 2]);
    assert!(added.updated.iter().all(|m| m.flags == ["$Work", "\\Seen"] && m.modseq == added.highest_modseq));
    assert!(added.highest_modseq > inbox.highest_modseq);
    assert_eq!(folder(&mut mail, alice, "INBOX").await.unseen, 1);

    let removed = mail.store_flags(store(vec![1], FlagsMode::Remove, &["\\seen"], 0)).await.unwrap().into_inner();
    assert_eq!(removed.updated.len(), 1);
    assert_eq!(removed.updated[0].flags, ["$Work"]);
    assert!(removed.highest_modseq > added.highest_modseq);

    let replaced =
        mail.store_flags(store(vec![1, 2, 3], FlagsMode::Replace, &["\\Flagged"], 0)).await.unwrap().into_inner();
    assert_eq!(replaced.updated.len(), 3);
    assert!(replaced.updated.iter().all(|m| m.flags == ["\\Flagged"]));
    assert_eq!(folder(&mut mail, alice, "INBOX").await.unseen, 3);

    // Setting what is already set changes nothing and uses no MODSEQ.
    let same = mail.store_flags(store(vec![1, 2, 3], FlagsMode::Add, &["\\Flagged"], 0)).await.unwrap().into_inner();
    assert!(same.updated.is_empty());
    assert_eq!(same.highest_modseq, replaced.highest_modseq);

    // UNCHANGEDSINCE: message 1 changes after the client's MODSEQ, so a conditional store
    // leaves it alone and reports it, and changes the others.
    let seen_at = replaced.highest_modseq;
    let bump = mail.store_flags(store(vec![1], FlagsMode::Add, &["$Late"], 0)).await.unwrap().into_inner();
    let conditional =
        mail.store_flags(store(vec![1, 2, 3], FlagsMode::Add, &["\\Answered"], seen_at)).await.unwrap().into_inner();
    assert_eq!(conditional.modified, [1]);
    assert_eq!(conditional.updated.iter().map(|m| m.uid).collect::<Vec<_>>(), [2, 3]);
    assert!(conditional.highest_modseq > bump.highest_modseq);
    let metas = mail
        .fetch_messages(FetchMessagesRequest {
            account_id: alice,
            folder_id: inbox.id,
            uids: vec![1],
            with_structure: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert_eq!(metas[0].flags, ["$Late", "\\Flagged"]);

    expect_error(
        mail.store_flags(store(vec![1], FlagsMode::Add, &["\\Recent"], 0)).await,
        Code::InvalidArgument,
        ErrorReason::InvalidArgument,
    );
    expect_error(
        mail.store_flags(store(vec![1], FlagsMode::Add, &["two words"], 0)).await,
        Code::InvalidArgument,
        ErrorReason::InvalidArgument,
    );
    expect_error(
        mail.store_flags(store(vec![1], FlagsMode::Unspecified, &["\\Seen"], 0)).await,
        Code::InvalidArgument,
        ErrorReason::InvalidArgument,
    );
    let mut missing = store(vec![1], FlagsMode::Add, &["\\Seen"], 0);
    missing.folder_id = 999_999;
    expect_error(mail.store_flags(missing).await, Code::NotFound, ErrorReason::NotFound);
}

#[tokio::test]
async fn copy_and_move_keep_bodies_and_report_uid_pairs() {
    let Fixture { server: _server, mut mail, alice, .. } = fixture(Limits::default()).await;
    for i in 0..3 {
        deliver(&mut mail, &["alice@example.com"], &message(&format!("c{i}"), "x")).await.unwrap();
    }
    let inbox = folder(&mut mail, alice, "INBOX").await;
    let archive = folder(&mut mail, alice, "Archive").await;
    let fetch = async |mail: &mut Mailbox, folder_id: u64, uids: Vec<u32>| {
        mail.fetch_messages(FetchMessagesRequest {
            account_id: alice,
            folder_id,
            uids,
            with_structure: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .messages
    };
    let originals = fetch(&mut mail, inbox.id, vec![1, 2, 3]).await;

    let copied = mail
        .copy(CopyRequest {
            account_id: alice,
            folder_id: inbox.id,
            uids: vec![1, 3, 77],
            destination: Some(FolderRef::name("Archive")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((copied.uidvalidity, copied.destination_folder_id), (archive.uidvalidity, archive.id));
    assert_eq!((copied.source_uids.as_slice(), copied.destination_uids.as_slice()), (&[1, 3][..], &[1, 2][..]));
    let copies = fetch(&mut mail, archive.id, vec![1, 2]).await;
    for (copy, original) in copies.iter().zip([&originals[0], &originals[2]]) {
        assert_eq!(
            (copy.blob_id.as_str(), copy.email_id.as_str()),
            (original.blob_id.as_str(), original.email_id.as_str())
        );
    }
    assert_eq!(folder(&mut mail, alice, "INBOX").await.messages, 3, "a copy leaves the source alone");

    let moved = mail
        .r#move(MoveRequest {
            account_id: alice,
            folder_id: inbox.id,
            uids: vec![2],
            destination: Some(FolderRef::id(archive.id)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((moved.source_uids.as_slice(), moved.destination_uids.as_slice()), (&[2][..], &[3][..]));
    assert_eq!((moved.uidvalidity, moved.destination_folder_id), (archive.uidvalidity, archive.id));
    let after = folder(&mut mail, alice, "INBOX").await;
    assert_eq!(after.messages, 2);
    assert_eq!(moved.highest_modseq, after.highest_modseq);
    let changes = mail
        .changes(ChangesRequest { account_id: alice, folder_id: inbox.id, since_modseq: inbox.highest_modseq })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changes.vanished, [2]);
    let moved_copy = fetch(&mut mail, archive.id, vec![3]).await;
    assert_eq!(moved_copy[0].email_id, originals[1].email_id);
    assert!(fetch_body(&mut mail, alice, archive.id, 3, 0, 0).await.unwrap().0 == message("c1", "x"));

    // A move within one folder is legal (RFC 6851 section 3.3): a new UID, the old one gone.
    let within = mail
        .r#move(MoveRequest {
            account_id: alice,
            folder_id: inbox.id,
            uids: vec![1],
            destination: Some(FolderRef::name("INBOX")),
        })
        .await
        .unwrap()
        .into_inner();
    let selected = mail
        .select(SelectRequest { account_id: alice, folder: Some(FolderRef::name("INBOX")) })
        .await
        .unwrap()
        .into_inner();
    let uids: Vec<u32> = selected.messages.iter().map(|m| m.uid).collect();
    assert_eq!(within.source_uids, [1]);
    assert_eq!(uids, [3, within.destination_uids[0]], "INBOX after moving UID 1 within it");
    expect_error(
        mail.copy(CopyRequest {
            account_id: alice,
            folder_id: inbox.id,
            uids: vec![1],
            destination: Some(FolderRef::name("Nope")),
        })
        .await,
        Code::NotFound,
        ErrorReason::NotFound,
    );
    expect_error(
        mail.copy(CopyRequest { account_id: alice, folder_id: inbox.id, uids: vec![1], destination: None }).await,
        Code::InvalidArgument,
        ErrorReason::InvalidArgument,
    );
}

#[tokio::test]
async fn expunge_removes_deleted_messages_or_the_given_ones() {
    let Fixture { server: _server, mut mail, alice, .. } = fixture(Limits::default()).await;
    for i in 0..5 {
        deliver(&mut mail, &["alice@example.com"], &message(&format!("e{i}"), "x")).await.unwrap();
    }
    let inbox = folder(&mut mail, alice, "INBOX").await;
    let expunge = |uids: Vec<u32>, only_deleted: bool| ExpungeRequest {
        account_id: alice,
        folder_id: inbox.id,
        uids,
        only_deleted,
    };

    // Nothing is flagged \Deleted yet: nothing goes, and no MODSEQ is used.
    let none = mail.expunge(expunge(vec![], true)).await.unwrap().into_inner();
    assert!(none.expunged.is_empty());
    assert_eq!(none.highest_modseq, inbox.highest_modseq);

    mail.store_flags(StoreFlagsRequest {
        account_id: alice,
        folder_id: inbox.id,
        uids: vec![2, 4, 5],
        mode: FlagsMode::Add as i32,
        flags: vec!["\\Deleted".into()],
        unchanged_since: 0,
    })
    .await
    .unwrap();
    assert_eq!(folder(&mut mail, alice, "INBOX").await.deleted, 3);

    // Restricted to UIDs 1 and 2, only the flagged one of them goes.
    let some = mail.expunge(expunge(vec![1, 2], true)).await.unwrap().into_inner();
    assert_eq!(some.expunged, [2]);
    let rest = mail.expunge(expunge(vec![], true)).await.unwrap().into_inner();
    assert_eq!(rest.expunged, [4, 5]);
    assert!(rest.highest_modseq > some.highest_modseq);
    let left = mail
        .select(SelectRequest { account_id: alice, folder: Some(FolderRef::id(inbox.id)) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(left.messages.iter().map(|m| m.uid).collect::<Vec<_>>(), [1, 3]);
    assert_eq!(left.folder.unwrap().deleted, 0);

    // Without only_deleted the listed UIDs go whatever their flags.
    let forced = mail.expunge(expunge(vec![3], false)).await.unwrap().into_inner();
    assert_eq!(forced.expunged, [3]);
    let usage = mail.get_quota(GetQuotaRequest { account_id: alice }).await.unwrap().into_inner().usage.unwrap();
    assert_eq!(usage.messages, 1);

    expect_error(
        mail.expunge(ExpungeRequest { account_id: alice, folder_id: 999_999, uids: vec![], only_deleted: false }).await,
        Code::NotFound,
        ErrorReason::NotFound,
    );
}

#[tokio::test]
async fn changes_reports_changed_and_vanished_since_a_modseq() {
    let Fixture { server: _server, mut mail, alice, .. } = fixture(Limits::default()).await;
    for i in 0..3 {
        deliver(&mut mail, &["alice@example.com"], &message(&format!("ch{i}"), "x")).await.unwrap();
    }
    let inbox = folder(&mut mail, alice, "INBOX").await;
    let since = inbox.highest_modseq;

    let added = deliver(&mut mail, &["alice@example.com"], &message("ch3", "x")).await.unwrap().results[0].uid;
    mail.store_flags(StoreFlagsRequest {
        account_id: alice,
        folder_id: inbox.id,
        uids: vec![1],
        mode: FlagsMode::Add as i32,
        flags: vec!["\\Seen".into()],
        unchanged_since: 0,
    })
    .await
    .unwrap();
    mail.expunge(ExpungeRequest { account_id: alice, folder_id: inbox.id, uids: vec![2], only_deleted: false })
        .await
        .unwrap();

    let changes = |since_modseq: u64| ChangesRequest { account_id: alice, folder_id: inbox.id, since_modseq };
    let c = mail.changes(changes(since)).await.unwrap().into_inner();
    assert_eq!(c.uidvalidity, inbox.uidvalidity);
    let mut changed: Vec<(u32, Vec<String>)> = c.changed.iter().map(|m| (m.uid, m.flags.clone())).collect();
    changed.sort();
    assert_eq!(changed, [(1, vec!["\\Seen".to_string()]), (added, vec![])]);
    assert!(c.changed.iter().all(|m| m.modseq > since && m.modseq <= c.highest_modseq));
    assert_eq!(c.vanished, [2]);

    // From the current MODSEQ nothing has changed.
    let none = mail.changes(changes(c.highest_modseq)).await.unwrap().into_inner();
    assert!(none.changed.is_empty() && none.vanished.is_empty());
    assert_eq!(none.highest_modseq, c.highest_modseq);
    // From zero everything present is "changed".
    let all = mail.changes(changes(0)).await.unwrap().into_inner();
    assert_eq!(all.changed.len(), 3);
    assert_eq!(all.vanished, [2]);
    // A MODSEQ from the future (a confused or hostile client) has nothing after it either.
    let future = mail.changes(changes(u64::MAX)).await.unwrap().into_inner();
    assert!(future.changed.is_empty() && future.vanished.is_empty(), "{future:?}");

    expect_error(
        mail.changes(ChangesRequest { account_id: alice, folder_id: 999_999, since_modseq: 0 }).await,
        Code::NotFound,
        ErrorReason::NotFound,
    );
}

#[tokio::test]
async fn watch_streams_events_of_one_account() {
    let Fixture { server, mut mail, mut admin, alice } = fixture(Limits::default()).await;
    setup_account(&mut admin, "bob@example.com", "bob-pw").await;
    let mut watcher = server.mailbox_client().await;
    let mut events = watcher.watch(WatchRequest { account_id: alice }).await.unwrap().into_inner();

    // Bob's mail is not Alice's business; her first event is her own delivery.
    deliver(&mut mail, &["bob@example.com"], &message("for-bob", "x")).await.unwrap();
    let d = deliver(&mut mail, &["alice@example.com"], &message("for-alice", "x")).await.unwrap();
    let inbox = folder(&mut mail, alice, "INBOX").await;
    let e = tokio::time::timeout(EVENT_TIMEOUT, events.message()).await.expect("an event in time").unwrap().unwrap();
    assert_eq!(
        (e.account_id, e.folder_id, e.kind(), e.folder_name.as_str()),
        (alice, inbox.id, EventKind::Append, "INBOX")
    );
    assert_eq!(e.messages.len(), 1);
    assert_eq!((e.messages[0].uid, e.modseq), (d.results[0].uid, inbox.highest_modseq));

    mail.store_flags(StoreFlagsRequest {
        account_id: alice,
        folder_id: inbox.id,
        uids: vec![1],
        mode: FlagsMode::Add as i32,
        flags: vec!["\\Seen".into()],
        unchanged_since: 0,
    })
    .await
    .unwrap();
    let e = tokio::time::timeout(EVENT_TIMEOUT, events.message()).await.unwrap().unwrap().unwrap();
    assert_eq!((e.kind(), e.messages[0].flags.as_slice()), (EventKind::Flags, &["\\Seen".to_string()][..]));

    expect_error(mail.watch(WatchRequest { account_id: 555_555 }).await, Code::NotFound, ErrorReason::NotFound);
}

// ---------------------------------------------------------------------------------------------
// Admin.

#[tokio::test]
async fn admin_manages_domains() {
    let server = TestServer::start(Limits::default()).await;
    let mut admin = server.admin_client().await;
    let create = |name: &str, catch_all: &str, quota: u64| CreateDomainRequest {
        name: name.into(),
        catch_all: catch_all.into(),
        default_quota_bytes: quota,
    };

    let d = admin.create_domain(create("Example.COM.", "", 5000)).await.unwrap().into_inner();
    assert_eq!((d.name.as_str(), d.default_quota_bytes, d.accounts), ("example.com", 5000, 0));
    expect_error(
        admin.create_domain(create("example.com", "", 0)).await,
        Code::AlreadyExists,
        ErrorReason::AlreadyExists,
    );
    for bad in ["", "bad_domain.example", "-x.example", "a..b", "spa ce.example"] {
        expect_error(
            admin.create_domain(create(bad, "", 0)).await,
            Code::InvalidArgument,
            ErrorReason::InvalidArgument,
        );
    }
    expect_error(
        admin.create_domain(create("ok.example", "bad address", 0)).await,
        Code::InvalidArgument,
        ErrorReason::InvalidArgument,
    );
    let other = admin.create_domain(create("other.example", "Postmaster", 0)).await.unwrap().into_inner();
    assert_eq!(other.catch_all, "postmaster");

    // New accounts take the domain's default quota unless they set their own.
    let a = setup_account(&mut admin, "a@example.com", "pw").await;
    assert_eq!(a.quota_bytes, 5000);
    let b = setup_account_with_quota(&mut admin, "b@example.com", "pw", 123).await;
    assert_eq!(b.quota_bytes, 123);

    let got = admin.get_domain(GetDomainRequest { name: "EXAMPLE.com".into() }).await.unwrap().into_inner();
    assert_eq!((got.name.as_str(), got.accounts), ("example.com", 2));
    expect_error(
        admin.get_domain(GetDomainRequest { name: "missing.example".into() }).await,
        Code::NotFound,
        ErrorReason::NotFound,
    );

    let updated = admin
        .update_domain(UpdateDomainRequest {
            name: "example.com".into(),
            catch_all: Some("a".into()),
            default_quota_bytes: Some(0),
            spam: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((updated.catch_all.as_str(), updated.default_quota_bytes), ("a", 0));
    // Fields not given are left alone.
    let untouched = admin
        .update_domain(UpdateDomainRequest {
            name: "example.com".into(),
            catch_all: None,
            default_quota_bytes: Some(7),
            spam: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((untouched.catch_all.as_str(), untouched.default_quota_bytes), ("a", 7));
    expect_error(
        admin
            .update_domain(UpdateDomainRequest {
                name: "missing.example".into(),
                catch_all: None,
                default_quota_bytes: None,
                spam: None,
            })
            .await,
        Code::NotFound,
        ErrorReason::NotFound,
    );

    let mut listed: Vec<(String, u64)> = admin
        .list_domains(ListDomainsRequest {})
        .await
        .unwrap()
        .into_inner()
        .domains
        .into_iter()
        .map(|d| (d.name, d.accounts))
        .collect();
    listed.sort();
    assert_eq!(listed, [("example.com".to_string(), 2), ("other.example".to_string(), 0)]);

    // A domain with mailboxes or aliases cannot be deleted.
    expect_error(
        admin.delete_domain(DeleteDomainRequest { name: "example.com".into() }).await,
        Code::PermissionDenied,
        ErrorReason::NotAllowed,
    );
    for address in ["a@example.com", "b@example.com"] {
        admin.delete_account(DeleteAccountRequest { address: address.into() }).await.unwrap();
    }
    let target = setup_account(&mut admin, "t@other.example", "pw").await;
    admin
        .add_alias(AddAliasRequest { alias: "alias@example.com".into(), target: target.address.clone() })
        .await
        .unwrap();
    expect_error(
        admin.delete_domain(DeleteDomainRequest { name: "example.com".into() }).await,
        Code::PermissionDenied,
        ErrorReason::NotAllowed,
    );
    admin.remove_alias(RemoveAliasRequest { alias: "alias@example.com".into() }).await.unwrap();
    admin.delete_domain(DeleteDomainRequest { name: "example.com".into() }).await.unwrap();
    expect_error(
        admin.get_domain(GetDomainRequest { name: "example.com".into() }).await,
        Code::NotFound,
        ErrorReason::NotFound,
    );
    expect_error(
        admin.delete_domain(DeleteDomainRequest { name: "example.com".into() }).await,
        Code::NotFound,
        ErrorReason::NotFound,
    );
}

#[tokio::test]
async fn admin_manages_accounts_and_passwords() {
    let server = TestServer::start(Limits::default()).await;
    let mut admin = server.admin_client().await;
    let mut mail = server.mailbox_client().await;
    let alice = setup_account(&mut admin, "Alice@Example.com", "first").await;
    assert_eq!((alice.address.as_str(), alice.suspended, alice.quota_bytes), ("alice@example.com", false, 0));

    let create = |address: &str, password: Option<Password>| CreateAccountRequest {
        address: address.into(),
        password,
        display_name: "X".into(),
        quota_bytes: 0,
    };
    expect_error(
        admin.create_account(create("alice@example.com", Some(plain("pw")))).await,
        Code::AlreadyExists,
        ErrorReason::AlreadyExists,
    );
    expect_error(
        admin.create_account(create("x@unknown.example", Some(plain("pw")))).await,
        Code::NotFound,
        ErrorReason::NotFound,
    );
    expect_error(
        admin.create_account(create("x+tag@example.com", Some(plain("pw")))).await,
        Code::InvalidArgument,
        ErrorReason::InvalidArgument,
    );
    expect_error(
        admin.create_account(create("not an address", Some(plain("pw")))).await,
        Code::InvalidArgument,
        ErrorReason::InvalidArgument,
    );
    expect_error(
        admin.create_account(create("x@example.com", None)).await,
        Code::InvalidArgument,
        ErrorReason::InvalidArgument,
    );
    expect_error(
        admin.create_account(create("x@example.com", Some(plain("")))).await,
        Code::InvalidArgument,
        ErrorReason::InvalidArgument,
    );
    let not_a_hash = Password { value: Some(password::Value::Hash("plain-text".into())) };
    expect_error(
        admin.create_account(create("x@example.com", Some(not_a_hash))).await,
        Code::InvalidArgument,
        ErrorReason::InvalidArgument,
    );

    // A PHC hash made elsewhere (say, a Kubernetes Secret) is stored as given and verifies.
    let salt = SaltString::from_b64("dGVybnRlc3RzYWx0MTIzNA").unwrap();
    let phc = Argon2::default().hash_password(b"from-a-secret", &salt).unwrap().to_string();
    let hashed = admin
        .create_account(create("hashed@example.com", Some(Password { value: Some(password::Value::Hash(phc)) })))
        .await
        .unwrap()
        .into_inner();
    let login = |username: &str, password: &str| AuthenticateRequest {
        username: username.into(),
        password: password.into(),
        remote_ip: String::new(),
    };
    let who =
        mail.authenticate(login("hashed@example.com", "from-a-secret")).await.unwrap().into_inner().account.unwrap();
    assert_eq!(who.id, hashed.id);
    // So is a bcrypt hash ($2y$ as Apache's htpasswd writes it).
    let bcrypt = bcrypt::hash("from-htpasswd", 4).unwrap().replacen("$2b$", "$2y$", 1);
    let b = admin
        .create_account(create("bcrypt@example.com", Some(Password { value: Some(password::Value::Hash(bcrypt)) })))
        .await
        .unwrap()
        .into_inner();
    let who =
        mail.authenticate(login("bcrypt@example.com", "from-htpasswd")).await.unwrap().into_inner().account.unwrap();
    assert_eq!(who.id, b.id);
    assert!(mail.authenticate(login("bcrypt@example.com", "wrong")).await.is_err());

    let updated = admin
        .update_account(UpdateAccountRequest {
            address: "alice@example.com".into(),
            display_name: Some("Alice A.".into()),
            quota_bytes: Some(10_000),
            suspended: None,
            pop3_delete: Some(tern_proto::v1::Pop3DeletePolicy::Keep as i32),
            spam: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((updated.display_name.as_str(), updated.quota_bytes, updated.suspended), ("Alice A.", 10_000, false));
    assert_eq!(updated.pop3_delete, tern_proto::v1::Pop3DeletePolicy::Keep as i32);
    expect_error(
        admin.update_account(UpdateAccountRequest { address: "nobody@example.com".into(), ..Default::default() }).await,
        Code::NotFound,
        ErrorReason::NotFound,
    );
    let got = admin.get_account(GetAccountRequest { address: "ALICE@example.com".into() }).await.unwrap().into_inner();
    assert_eq!(got, updated);
    expect_error(
        admin.get_account(GetAccountRequest { address: "nobody@example.com".into() }).await,
        Code::NotFound,
        ErrorReason::NotFound,
    );
    expect_error(
        admin.get_account(GetAccountRequest { address: "bad".into() }).await,
        Code::InvalidArgument,
        ErrorReason::InvalidArgument,
    );

    setup_account(&mut admin, "zed@other.example", "pw").await;
    let all: Vec<String> = admin
        .list_accounts(ListAccountsRequest { domain: String::new() })
        .await
        .unwrap()
        .into_inner()
        .accounts
        .into_iter()
        .map(|a| a.address)
        .collect();
    assert_eq!(all, ["alice@example.com", "bcrypt@example.com", "hashed@example.com", "zed@other.example"]);
    let one: Vec<String> = admin
        .list_accounts(ListAccountsRequest { domain: "other.example".into() })
        .await
        .unwrap()
        .into_inner()
        .accounts
        .into_iter()
        .map(|a| a.address)
        .collect();
    assert_eq!(one, ["zed@other.example"]);

    // A new password replaces the old one.
    mail.authenticate(login("alice@example.com", "first")).await.unwrap();
    admin
        .set_password(SetPasswordRequest { address: "alice@example.com".into(), password: Some(plain("second")) })
        .await
        .unwrap();
    expect_error(
        mail.authenticate(login("alice@example.com", "first")).await,
        Code::Unauthenticated,
        ErrorReason::AuthFailed,
    );
    mail.authenticate(login("alice@example.com", "second")).await.unwrap();
    expect_error(
        admin
            .set_password(SetPasswordRequest { address: "nobody@example.com".into(), password: Some(plain("x")) })
            .await,
        Code::NotFound,
        ErrorReason::NotFound,
    );
    expect_error(
        admin.set_password(SetPasswordRequest { address: "alice@example.com".into(), password: None }).await,
        Code::InvalidArgument,
        ErrorReason::InvalidArgument,
    );

    // Deleting an account removes its mail, its aliases and its address.
    admin
        .add_alias(AddAliasRequest { alias: "a@example.com".into(), target: "alice@example.com".into() })
        .await
        .unwrap();
    deliver(&mut mail, &["alice@example.com"], &message("gone", "x")).await.unwrap();
    admin.delete_account(DeleteAccountRequest { address: "alice@example.com".into() }).await.unwrap();
    expect_error(
        admin.get_account(GetAccountRequest { address: "alice@example.com".into() }).await,
        Code::NotFound,
        ErrorReason::NotFound,
    );
    expect_error(mail.get_quota(GetQuotaRequest { account_id: alice.id }).await, Code::NotFound, ErrorReason::NotFound);
    for address in ["alice@example.com", "a@example.com"] {
        let r = mail.resolve_recipient(ResolveRecipientRequest { address: address.into() }).await.unwrap().into_inner();
        assert_eq!(r.status(), RecipientStatus::UnknownUser, "{address} still resolves");
    }
    assert!(
        admin.list_aliases(ListAliasesRequest { domain: String::new() }).await.unwrap().into_inner().aliases.is_empty()
    );
    expect_error(
        mail.authenticate(login("alice@example.com", "second")).await,
        Code::Unauthenticated,
        ErrorReason::AuthFailed,
    );
    expect_error(
        admin.delete_account(DeleteAccountRequest { address: "alice@example.com".into() }).await,
        Code::NotFound,
        ErrorReason::NotFound,
    );
    // The address is free again.
    let again = setup_account(&mut admin, "alice@example.com", "third").await;
    assert_ne!(again.id, alice.id);
}

#[tokio::test]
async fn admin_manages_aliases() {
    let server = TestServer::start(Limits::default()).await;
    let mut admin = server.admin_client().await;
    let alice = setup_account(&mut admin, "alice@example.com", "pw").await;
    setup_account(&mut admin, "bob@other.example", "pw").await;
    let add = |alias: &str, target: &str| AddAliasRequest { alias: alias.into(), target: target.into() };

    admin.add_alias(add("Info@Example.com", "alice@example.com")).await.unwrap();
    admin.add_alias(add("abuse@example.com", "alice@example.com")).await.unwrap();
    admin.add_alias(add("team@other.example", "alice@example.com")).await.unwrap();
    expect_error(
        admin.add_alias(add("info@example.com", "bob@other.example")).await,
        Code::AlreadyExists,
        ErrorReason::AlreadyExists,
    );
    expect_error(
        admin.add_alias(add("bob@other.example", "alice@example.com")).await,
        Code::AlreadyExists,
        ErrorReason::AlreadyExists,
    );
    expect_error(
        admin.add_alias(add("x@example.com", "nobody@example.com")).await,
        Code::NotFound,
        ErrorReason::NotFound,
    );
    expect_error(
        admin.add_alias(add("x@unknown.example", "alice@example.com")).await,
        Code::NotFound,
        ErrorReason::NotFound,
    );
    expect_error(
        admin.add_alias(add("bad alias", "alice@example.com")).await,
        Code::InvalidArgument,
        ErrorReason::InvalidArgument,
    );
    // An alias's address cannot then become a mailbox.
    expect_error(
        admin
            .create_account(CreateAccountRequest {
                address: "info@example.com".into(),
                password: Some(plain("pw")),
                ..Default::default()
            })
            .await,
        Code::AlreadyExists,
        ErrorReason::AlreadyExists,
    );

    let account =
        admin.get_account(GetAccountRequest { address: "alice@example.com".into() }).await.unwrap().into_inner();
    assert_eq!(account.aliases, ["abuse@example.com", "info@example.com", "team@other.example"]);
    let mut in_example: Vec<(String, String)> = admin
        .list_aliases(ListAliasesRequest { domain: "example.com".into() })
        .await
        .unwrap()
        .into_inner()
        .aliases
        .into_iter()
        .map(|a| (a.alias, a.target))
        .collect();
    in_example.sort();
    assert_eq!(
        in_example,
        [
            ("abuse@example.com".to_string(), "alice@example.com".to_string()),
            ("info@example.com".to_string(), "alice@example.com".to_string())
        ]
    );
    assert_eq!(
        admin.list_aliases(ListAliasesRequest { domain: String::new() }).await.unwrap().into_inner().aliases.len(),
        3
    );

    admin.remove_alias(RemoveAliasRequest { alias: "INFO@example.com".into() }).await.unwrap();
    expect_error(
        admin.remove_alias(RemoveAliasRequest { alias: "info@example.com".into() }).await,
        Code::NotFound,
        ErrorReason::NotFound,
    );
    let account =
        admin.get_account(GetAccountRequest { address: "alice@example.com".into() }).await.unwrap().into_inner();
    assert_eq!(account.aliases, ["abuse@example.com", "team@other.example"]);
    assert_eq!(account.id, alice.id);
}

#[tokio::test]
async fn leases_are_exclusive_renewable_and_released() {
    let Fixture { server: _server, mut mail, alice, .. } = fixture(Limits::default()).await;
    let lease = |holder: &str, ttl: u32| tern_proto::v1::AcquireLeaseRequest {
        account_id: alice,
        name: "pop3".into(),
        holder: holder.into(),
        ttl_seconds: ttl,
    };
    assert!(mail.acquire_lease(lease("a", 60)).await.unwrap().into_inner().granted);
    assert!(!mail.acquire_lease(lease("b", 60)).await.unwrap().into_inner().granted, "held by a");
    assert!(mail.acquire_lease(lease("a", 60)).await.unwrap().into_inner().granted, "a renews its own");
    // Someone else's release does nothing; the holder's frees it.
    let release = |holder: &str| tern_proto::v1::ReleaseLeaseRequest {
        account_id: alice,
        name: "pop3".into(),
        holder: holder.into(),
    };
    mail.release_lease(release("b")).await.unwrap();
    assert!(!mail.acquire_lease(lease("b", 1)).await.unwrap().into_inner().granted);
    mail.release_lease(release("a")).await.unwrap();
    assert!(mail.acquire_lease(lease("b", 1)).await.unwrap().into_inner().granted);
    // A lease that is not renewed expires, so a crashed holder never locks the mailbox for good.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(mail.acquire_lease(lease("c", 60)).await.unwrap().into_inner().granted);
    expect_error(
        mail.acquire_lease(tern_proto::v1::AcquireLeaseRequest { holder: String::new(), ..lease("x", 1) }).await,
        Code::InvalidArgument,
        ErrorReason::InvalidArgument,
    );
}

// ---------------------------------------------------------------------------------------------
// Spam: junk delivery and learning tasks.

/// A Deliver names the recipients whose copy is junk: theirs goes to the account's junk folder
/// (created, as `\Junk` only when the account has no such folder, when missing), the others' to
/// INBOX. A move into Junk queues one "learn as spam" task per message (holding the body), a
/// move out of it one "ham" task, a move from Junk to Trash none, and an account with
/// scanning off none; with learning off (no learner configured) nothing is queued.
#[tokio::test]
async fn junk_delivery_and_learning_tasks() {
    use tern_proto::v1::{LearnClass, ListQueueRequest, SpamScan, SpamSettings};
    let Fixture { server: _server, mut mail, mut admin, alice } =
        fixture(Limits { learn_spam: true, ..Limits::default() }).await;
    let bob = setup_account(&mut admin, "bob@example.com", "bob-pw").await.id;
    admin
        .update_account(UpdateAccountRequest {
            address: "bob@example.com".into(),
            spam: Some(SpamSettings { junk_folder: "Spam/Suspect".into(), ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap();
    let envelope = DeliverEnvelope {
        mail_from: "x@remote.example".into(),
        recipients: vec!["alice@example.com".into(), "bob@example.com".into()],
        junk: vec!["BOB@example.com".into()],
        remote_ip: "127.0.0.1".into(),
        size_hint: 0,
        spam_percent: None,
    };
    let requests = vec![
        DeliverRequest { part: Some(deliver_request::Part::Envelope(envelope)) },
        DeliverRequest { part: Some(deliver_request::Part::Chunk(message("judged", "text"))) },
    ];
    let delivered = mail.deliver(futures::stream::iter(requests)).await.unwrap().into_inner();
    let folders: Vec<&str> = delivered.results.iter().map(|r| r.folder.as_str()).collect();
    assert_eq!(folders, ["INBOX", "Spam/Suspect"]);
    let suspect = folder(&mut mail, bob, "Spam/Suspect").await;
    assert_eq!((suspect.messages, suspect.special_use()), (1, SpecialUse::None), "bob has a \\Junk folder already");

    let queue = |mail: &mut Mailbox| {
        let mut mail = mail.clone();
        async move { mail.list_queue(ListQueueRequest {}).await.unwrap().into_inner().messages }
    };
    let inbox = folder(&mut mail, alice, "INBOX").await;
    let moved = |from: u64, uids: Vec<u32>, to: &str| MoveRequest {
        account_id: alice,
        folder_id: from,
        uids,
        destination: Some(FolderRef::name(to)),
    };
    mail.r#move(moved(inbox.id, vec![1], "Junk")).await.unwrap();
    let tasks = queue(&mut mail).await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].learn(), LearnClass::Spam);
    assert_eq!(tasks[0].account_id, alice);
    assert_eq!(tasks[0].recipients[0].address, "alice@example.com");
    assert_eq!(tasks[0].blob_id, delivered.blob_id, "the task holds the message's body");

    let junk = folder(&mut mail, alice, "Junk").await;
    mail.r#move(moved(junk.id, vec![1], "INBOX")).await.unwrap();
    let tasks = queue(&mut mail).await;
    assert_eq!(tasks.iter().map(|t| t.learn()).collect::<Vec<_>>(), [LearnClass::Spam, LearnClass::Ham]);

    // From Junk to Trash says nothing of the message.
    let inbox = folder(&mut mail, alice, "INBOX").await;
    let uid = inbox.uidnext - 1;
    mail.r#move(moved(inbox.id, vec![uid], "Junk")).await.unwrap();
    let junk = folder(&mut mail, alice, "Junk").await;
    mail.r#move(moved(junk.id, vec![junk.uidnext - 1], "Trash")).await.unwrap();
    assert_eq!(queue(&mut mail).await.len(), 3, "one more spam task, none for Trash");

    // Scanning off: nothing to teach.
    admin
        .update_account(UpdateAccountRequest {
            address: "alice@example.com".into(),
            spam: Some(SpamSettings { scan: SpamScan::Off as i32, ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap();
    append(&mut mail, alice, FolderRef::name("INBOX"), &[], &message("more", "text")).await.unwrap();
    let inbox = folder(&mut mail, alice, "INBOX").await;
    mail.r#move(moved(inbox.id, vec![inbox.uidnext - 1], "Junk")).await.unwrap();
    assert_eq!(queue(&mut mail).await.len(), 3);

    // Without a learner nothing is queued at all.
    let Fixture { server: _other, mail: mut plain_mail, alice: carol, .. } = fixture(Limits::default()).await;
    let body = message("plain", "text");
    append(&mut plain_mail, carol, FolderRef::name("INBOX"), &[], &body).await.unwrap();
    let inbox = folder(&mut plain_mail, carol, "INBOX").await;
    plain_mail
        .r#move(MoveRequest {
            account_id: carol,
            folder_id: inbox.id,
            uids: vec![1],
            destination: Some(FolderRef::name("Junk")),
        })
        .await
        .unwrap();
    assert!(queue(&mut plain_mail).await.is_empty());
}
