//! The storage invariants (ARCHITECTURE.md, "Invariants"), checked end to end over real
//! loopback connections, on the embedded backend by default and on NATS JetStream when
//! `TERN_TEST_NATS_URL` is set (as `cargo xtask ci` and `e2e` set it; the two tests that only
//! the embedded backend can pass are skipped there):
//!
//! 1. UIDs strictly increase in commit order and are never reused; a session that has seen UID
//!    n never later sees a new message below n.
//! 2. MODSEQ strictly increases with every append, flag change and expunge.
//! 3. An acknowledged write survives a restart (and a crash: a copy of the live data directory).
//! 4. An expunge is seen by every session of the mailbox.
//! 5. Bodies are stored once by content hash and collected only when nothing refers to them.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use argon2::{Argon2, PasswordHasher, password_hash::SaltString};
use sha2::{Digest, Sha256};
use tern_mailbox::Limits;
use tern_proto::v1::{
    AuthenticateRequest, ChangesRequest, CopyRequest, CreateAccountRequest, CreateFolderRequest, DeleteAccountRequest,
    DeleteFolderRequest, DeliveryStatus, ErrorReason, EventKind, ExpungeRequest, FetchMessagesRequest, FlagsMode,
    Folder, FolderRef, GetQuotaRequest, ListFoldersRequest, MailboxEvent, MoveRequest, Password, RecipientStatus,
    ResolveRecipientRequest, SelectRequest, SelectResponse, StatusRequest, StoreFlagsRequest, WatchRequest, password,
};
use tern_tests::{
    Mailbox, TestServer, append, blob_hash, blob_path, blobs_dir, collect_garbage_until, count_bodies, deliver,
    expect_error, fetch_body, message, setup_account, setup_account_with_quota,
};
use tokio::task::JoinSet;
use tonic::{Code, Streaming};

/// Writers in the concurrency test, and writes each of them makes.
const WRITERS: usize = 16;
const WRITES_PER_WRITER: usize = 10;

/// How long a test waits for events it expects on a Watch stream.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn status(mail: &mut Mailbox, account_id: u64, name: &str) -> Folder {
    mail.status(StatusRequest { account_id, folder: Some(FolderRef::name(name)) })
        .await
        .unwrap_or_else(|e| panic!("status of {name}: {e}"))
        .into_inner()
        .folder
        .expect("a folder in the status response")
}

async fn select(mail: &mut Mailbox, account_id: u64, folder: FolderRef) -> SelectResponse {
    mail.select(SelectRequest { account_id, folder: Some(folder) }).await.expect("select").into_inner()
}

fn store(account_id: u64, folder_id: u64, uids: Vec<u32>, mode: FlagsMode, flags: &[&str]) -> StoreFlagsRequest {
    StoreFlagsRequest {
        account_id,
        folder_id,
        uids,
        mode: mode as i32,
        flags: flags.iter().map(|f| f.to_string()).collect(),
        unchanged_since: 0,
    }
}

/// Reads events until `done` says the collected ones are enough, or fails after
/// [`EVENT_TIMEOUT`].
async fn events_until(
    stream: &mut Streaming<MailboxEvent>,
    mut done: impl FnMut(&[MailboxEvent]) -> bool,
) -> Vec<MailboxEvent> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while !done(&events) {
        let next = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for events; got {events:?}"))
            .expect("the Watch stream failed")
            .expect("the Watch stream ended");
        events.push(next);
    }
    events
}

/// A body of about `len` bytes whose content is unique to `tag`.
fn sized_message(tag: &str, len: usize) -> Vec<u8> {
    let mut text = String::new();
    let mut line = 0;
    while text.len() < len {
        text.push_str(&format!("{tag} line {line:06} of a message that has to be kept byte for byte\r\n"));
        line += 1;
    }
    message(tag, &text)
}

// ---------------------------------------------------------------------------------------------
// Invariant 1: UIDs.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uids_strictly_increase_in_commit_order_under_concurrent_writers() {
    let server = TestServer::start(Limits::default()).await;
    let mut admin = server.admin_client().await;
    let alice = setup_account(&mut admin, "alice@example.com", "pw").await.id;
    let mut mail = server.mailbox_client().await;
    let inbox = status(&mut mail, alice, "INBOX").await;

    // One session watches, another keeps selecting while the writers run.
    let mut watcher = server.mailbox_client().await;
    let mut events = watcher.watch(WatchRequest { account_id: alice }).await.unwrap().into_inner();
    let writing = Arc::new(AtomicBool::new(true));
    let poller = {
        let mut session = server.mailbox_client().await;
        let writing = writing.clone();
        tokio::spawn(async move {
            let mut seen: BTreeSet<u32> = BTreeSet::new();
            let mut highest_modseq = 0;
            // At least one snapshot is taken even if the writers are done before this starts.
            loop {
                let still_writing = writing.load(Ordering::Acquire);
                let snapshot = select(&mut session, alice, FolderRef::name("INBOX")).await;
                let uids: Vec<u32> = snapshot.messages.iter().map(|m| m.uid).collect();
                assert!(uids.windows(2).all(|w| w[0] < w[1]), "a snapshot is not in UID order: {uids:?}");
                let max_seen = seen.last().copied().unwrap_or(0);
                for uid in &uids {
                    assert!(seen.contains(uid) || *uid > max_seen, "UID {uid} appeared after UID {max_seen} was seen");
                }
                assert!(uids.len() >= seen.len(), "messages disappeared without an expunge");
                let folder = snapshot.folder.expect("a folder");
                assert!(folder.highest_modseq >= highest_modseq, "HIGHESTMODSEQ went backwards");
                highest_modseq = folder.highest_modseq;
                seen.extend(uids);
                if !still_writing {
                    return seen.len();
                }
                tokio::task::yield_now().await;
            }
        })
    };

    // Half of each writer's messages come in by Deliver, half by Append, each writer on its own
    // connection; every acknowledgement is recorded with the content it acknowledged.
    let mut writers = JoinSet::new();
    for w in 0..WRITERS {
        let mut client = server.mailbox_client().await;
        writers.spawn(async move {
            let mut acked = Vec::new();
            for i in 0..WRITES_PER_WRITER {
                let body = message(&format!("w{w}-m{i}"), &format!("writer {w} message {i}"));
                let (uid, modseq) = if i % 2 == 0 {
                    let d = deliver(&mut client, &["alice@example.com"], &body).await.expect("deliver");
                    assert_eq!(d.results[0].status(), DeliveryStatus::Delivered);
                    (d.results[0].uid, None)
                } else {
                    let a = append(&mut client, alice, FolderRef::name("INBOX"), &[], &body).await.expect("append");
                    (a.uid, Some(a.modseq))
                };
                acked.push((uid, modseq, body));
            }
            acked
        });
    }
    let mut acked = Vec::new();
    while let Some(done) = writers.join_next().await {
        acked.extend(done.expect("a writer panicked"));
    }
    writing.store(false, Ordering::Release);
    let last_seen = poller.await.expect("the polling session failed");
    // The poller's last snapshot was taken after every write was acknowledged.
    assert_eq!(last_seen, WRITERS * WRITES_PER_WRITER);

    let total = WRITERS * WRITES_PER_WRITER;
    assert_eq!(acked.len(), total);
    let acked_uids: BTreeSet<u32> = acked.iter().map(|(uid, _, _)| *uid).collect();
    assert_eq!(acked_uids.len(), total, "a UID was acknowledged twice");

    // The folder holds exactly what was acknowledged, in strictly increasing UID order, and
    // since every change was an append, UID order and MODSEQ (commit) order are the same.
    let snapshot = select(&mut mail, alice, FolderRef::id(inbox.id)).await;
    let folder = snapshot.folder.unwrap();
    let uids: Vec<u32> = snapshot.messages.iter().map(|m| m.uid).collect();
    assert!(uids.windows(2).all(|w| w[0] < w[1]), "UIDs are not strictly increasing: {uids:?}");
    assert_eq!(uids.iter().copied().collect::<BTreeSet<_>>(), acked_uids);
    let modseqs: Vec<u64> = snapshot.messages.iter().map(|m| m.modseq).collect();
    assert!(modseqs.windows(2).all(|w| w[0] < w[1]), "commit order differs from UID order: {modseqs:?}");
    assert_eq!((folder.messages as usize, folder.uidnext), (total, uids.last().unwrap() + 1));
    assert_eq!(folder.highest_modseq, *modseqs.last().unwrap());
    let by_uid: BTreeMap<u32, u64> = snapshot.messages.iter().map(|m| (m.uid, m.modseq)).collect();
    for (uid, modseq, _) in &acked {
        if let Some(modseq) = modseq {
            assert_eq!(by_uid[uid], *modseq, "UID {uid} has another MODSEQ than its Append returned");
        }
    }

    // Every acknowledged UID holds the content it was acknowledged for.
    let metas = mail
        .fetch_messages(FetchMessagesRequest {
            account_id: alice,
            folder_id: inbox.id,
            uids: uids.clone(),
            with_structure: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .messages;
    let blob_by_uid: BTreeMap<u32, String> = metas.into_iter().map(|m| (m.uid, m.blob_id)).collect();
    for (uid, _, body) in &acked {
        assert_eq!(blob_hash(&blob_by_uid[uid]), sha256_hex(body), "UID {uid} holds another body");
    }
    for (uid, _, body) in acked.iter().step_by(7) {
        assert!(fetch_body(&mut mail, alice, inbox.id, *uid, 0, 0).await.unwrap().0 == *body);
    }

    // The watching session saw every append once, in strictly increasing UID and MODSEQ order.
    let seen = events_until(&mut events, |e| e.len() >= total).await;
    assert!(seen.iter().all(|e| e.kind() == EventKind::Append && e.folder_id == inbox.id && e.messages.len() == 1));
    let event_uids: Vec<u32> = seen.iter().map(|e| e.messages[0].uid).collect();
    let event_modseqs: Vec<u64> = seen.iter().map(|e| e.modseq).collect();
    assert!(event_uids.windows(2).all(|w| w[0] < w[1]), "events out of UID order: {event_uids:?}");
    assert!(event_modseqs.windows(2).all(|w| w[0] < w[1]), "events out of MODSEQ order: {event_modseqs:?}");
    assert_eq!(event_uids, uids);
    assert_eq!(event_modseqs, modseqs);
}

#[tokio::test]
async fn uids_are_not_reused_after_expunge_or_folder_recreation() {
    let server = TestServer::start(Limits::default()).await;
    let mut admin = server.admin_client().await;
    let alice = setup_account(&mut admin, "alice@example.com", "pw").await.id;
    let mut mail = server.mailbox_client().await;
    let inbox = status(&mut mail, alice, "INBOX").await;
    for i in 0..3 {
        deliver(&mut mail, &["alice@example.com"], &message(&format!("r{i}"), "x")).await.unwrap();
    }
    // Expunging the highest UID does not make it available again.
    mail.expunge(ExpungeRequest { account_id: alice, folder_id: inbox.id, uids: vec![2, 3], only_deleted: false })
        .await
        .unwrap();
    let d = deliver(&mut mail, &["alice@example.com"], &message("r3", "x")).await.unwrap();
    assert_eq!(d.results[0].uid, 4);

    // A folder deleted and created again under the same name starts over with UID 1, and so
    // gets a new UIDVALIDITY, in the same second or not.
    let create = CreateFolderRequest { account_id: alice, name: "Lists".into(), special_use: 0, uidvalidity: 0 };
    let first = mail.create_folder(create.clone()).await.unwrap().into_inner().folder.unwrap();
    append(&mut mail, alice, FolderRef::id(first.id), &[], b"Subject: l\r\n\r\nx\r\n").await.unwrap();
    mail.delete_folder(tern_proto::v1::DeleteFolderRequest { account_id: alice, name: "Lists".into() }).await.unwrap();
    let second = mail.create_folder(create).await.unwrap().into_inner().folder.unwrap();
    assert_ne!(second.id, first.id);
    assert_ne!(second.uidvalidity, first.uidvalidity);
    let a = append(&mut mail, alice, FolderRef::name("Lists"), &[], b"Subject: l\r\n\r\ny\r\n").await.unwrap();
    assert_eq!((a.uid, a.uidvalidity), (1, second.uidvalidity));
}

// ---------------------------------------------------------------------------------------------
// Invariant 2: MODSEQ.

#[tokio::test]
async fn modseq_strictly_increases_with_every_change() {
    let server = TestServer::start(Limits::default()).await;
    let mut admin = server.admin_client().await;
    let alice = setup_account(&mut admin, "alice@example.com", "pw").await.id;
    let mut mail = server.mailbox_client().await;
    let inbox = status(&mut mail, alice, "INBOX").await;
    let changes = async |mail: &mut Mailbox, since_modseq: u64| {
        mail.changes(ChangesRequest { account_id: alice, folder_id: inbox.id, since_modseq })
            .await
            .unwrap()
            .into_inner()
    };
    let mut history = vec![inbox.highest_modseq];

    // Append: the response's MODSEQ is the folder's new HIGHESTMODSEQ.
    let a = append(&mut mail, alice, FolderRef::id(inbox.id), &[], &message("m-a", "x")).await.unwrap();
    assert!(a.modseq > *history.last().unwrap());
    assert_eq!(status(&mut mail, alice, "INBOX").await.highest_modseq, a.modseq);
    history.push(a.modseq);

    // Deliver.
    let b = deliver(&mut mail, &["alice@example.com"], &message("m-b", "x")).await.unwrap().results[0].uid;
    let after_deliver = status(&mut mail, alice, "INBOX").await.highest_modseq;
    assert!(after_deliver > a.modseq);
    let c = changes(&mut mail, a.modseq).await;
    assert_eq!(c.changed.iter().map(|m| (m.uid, m.modseq)).collect::<Vec<_>>(), [(b, after_deliver)]);
    history.push(after_deliver);

    // Flag changes, adding and removing.
    let added =
        mail.store_flags(store(alice, inbox.id, vec![a.uid], FlagsMode::Add, &["\\Seen"])).await.unwrap().into_inner();
    assert!(added.highest_modseq > after_deliver);
    assert_eq!(added.updated[0].modseq, added.highest_modseq);
    let c = changes(&mut mail, after_deliver).await;
    assert_eq!(c.changed.iter().map(|m| (m.uid, m.modseq)).collect::<Vec<_>>(), [(a.uid, added.highest_modseq)]);
    history.push(added.highest_modseq);
    let removed = mail
        .store_flags(store(alice, inbox.id, vec![a.uid], FlagsMode::Remove, &["\\Seen"]))
        .await
        .unwrap()
        .into_inner();
    assert!(removed.highest_modseq > added.highest_modseq);
    history.push(removed.highest_modseq);

    // A store that changes nothing is not a change.
    let nothing = mail
        .store_flags(store(alice, inbox.id, vec![a.uid], FlagsMode::Remove, &["\\Seen"]))
        .await
        .unwrap()
        .into_inner();
    assert!(nothing.updated.is_empty());
    assert_eq!(nothing.highest_modseq, removed.highest_modseq);

    // A copy out of the folder does not change it; the destination moves on instead.
    let archive_before = status(&mut mail, alice, "Archive").await.highest_modseq;
    mail.copy(CopyRequest {
        account_id: alice,
        folder_id: inbox.id,
        uids: vec![a.uid],
        destination: Some(FolderRef::name("Archive")),
    })
    .await
    .unwrap();
    assert_eq!(status(&mut mail, alice, "INBOX").await.highest_modseq, removed.highest_modseq);
    assert!(status(&mut mail, alice, "Archive").await.highest_modseq > archive_before);

    // Expunge, and a move, which expunges from the source.
    let expunged = mail
        .expunge(ExpungeRequest { account_id: alice, folder_id: inbox.id, uids: vec![b], only_deleted: false })
        .await
        .unwrap()
        .into_inner();
    assert!(expunged.highest_modseq > removed.highest_modseq);
    history.push(expunged.highest_modseq);
    let moved = mail
        .r#move(MoveRequest {
            account_id: alice,
            folder_id: inbox.id,
            uids: vec![a.uid],
            destination: Some(FolderRef::name("Trash")),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(moved.highest_modseq > expunged.highest_modseq);
    history.push(moved.highest_modseq);

    assert!(history.windows(2).all(|w| w[0] < w[1]), "MODSEQ did not strictly increase: {history:?}");
    // A client resynchronising from any earlier MODSEQ learns exactly what it missed.
    let c = changes(&mut mail, removed.highest_modseq).await;
    assert_eq!((c.vanished.as_slice(), c.changed.len(), c.highest_modseq), (&[a.uid, b][..], 0, moved.highest_modseq));
    let c = changes(&mut mail, expunged.highest_modseq).await;
    assert_eq!(c.vanished, [a.uid]);
    let c = changes(&mut mail, moved.highest_modseq).await;
    assert!(c.vanished.is_empty() && c.changed.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_flag_changes_each_get_their_own_modseq() {
    let server = TestServer::start(Limits::default()).await;
    let mut admin = server.admin_client().await;
    let alice = setup_account(&mut admin, "alice@example.com", "pw").await.id;
    let mut mail = server.mailbox_client().await;
    let inbox = status(&mut mail, alice, "INBOX").await;
    const SESSIONS: u32 = 8;
    const TOGGLES: usize = 6;
    for i in 0..SESSIONS {
        deliver(&mut mail, &["alice@example.com"], &message(&format!("t{i}"), "x")).await.unwrap();
    }
    let start = status(&mut mail, alice, "INBOX").await.highest_modseq;

    // Each session toggles \Seen on its own message; every toggle is a change.
    let mut sessions = JoinSet::new();
    for uid in 1..=SESSIONS {
        let mut client = server.mailbox_client().await;
        sessions.spawn(async move {
            let mut modseqs = Vec::new();
            for t in 0..TOGGLES {
                let mode = if t % 2 == 0 { FlagsMode::Add } else { FlagsMode::Remove };
                let r = client
                    .store_flags(store(alice, inbox.id, vec![uid], mode, &["\\Seen"]))
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(r.updated.len(), 1, "toggle {t} of UID {uid} changed nothing");
                assert_eq!(r.updated[0].modseq, r.highest_modseq);
                modseqs.push(r.highest_modseq);
            }
            modseqs
        });
    }
    let mut all = Vec::new();
    while let Some(done) = sessions.join_next().await {
        let modseqs = done.expect("a session panicked");
        assert!(modseqs.windows(2).all(|w| w[0] < w[1]), "one session's changes went backwards: {modseqs:?}");
        all.extend(modseqs);
    }
    let unique: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "two changes shared a MODSEQ");
    assert!(all.iter().all(|m| *m > start));
    let end = status(&mut mail, alice, "INBOX").await.highest_modseq;
    assert_eq!(end, *all.iter().max().unwrap());
    // Each message's last change is what Changes reports for it.
    let c = mail
        .changes(ChangesRequest { account_id: alice, folder_id: inbox.id, since_modseq: start })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.changed.len(), SESSIONS as usize);
    assert!(c.changed.iter().all(|m| m.flags.is_empty() && m.modseq > start && m.modseq <= end));
}

// ---------------------------------------------------------------------------------------------
// Invariant 3: durability.

/// Everything a client can observe of an account, to compare before and after a restart.
#[derive(Debug, PartialEq)]
struct Observed {
    folders: Vec<Folder>,
    subscribed_without_folder: Vec<String>,
    selects: Vec<SelectResponse>,
    metas: Vec<Vec<tern_proto::v1::MessageMeta>>,
    bodies: Vec<Vec<u8>>,
    usage: tern_proto::v1::Usage,
}

async fn observe(mail: &mut Mailbox, account_id: u64) -> Observed {
    let list = mail.list_folders(ListFoldersRequest { account_id, with_status: true }).await.unwrap().into_inner();
    let (mut folders, subscribed_without_folder) = (list.folders, list.subscribed_without_folder);
    folders.sort_by_key(|f| f.id);
    let mut selects = Vec::new();
    let mut metas = Vec::new();
    let mut bodies = Vec::new();
    for f in &folders {
        let s = select(mail, account_id, FolderRef::id(f.id)).await;
        let uids: Vec<u32> = s.messages.iter().map(|m| m.uid).collect();
        for uid in &uids {
            bodies.push(fetch_body(mail, account_id, f.id, *uid, 0, 0).await.unwrap().0);
        }
        metas.push(
            mail.fetch_messages(FetchMessagesRequest {
                account_id,
                folder_id: f.id,
                uids,
                with_structure: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .messages,
        );
        selects.push(s);
    }
    let usage = mail.get_quota(GetQuotaRequest { account_id }).await.unwrap().into_inner().usage.unwrap();
    Observed { folders, subscribed_without_folder, selects, metas, bodies, usage }
}

/// Writes a little of everything to alice's account and returns what was acknowledged.
async fn write_a_bit_of_everything(server: &TestServer, alice: u64) -> Vec<(u64, u32, Vec<u8>)> {
    let mut admin = server.admin_client().await;
    let mut mail = server.mailbox_client().await;
    admin
        .add_alias(tern_proto::v1::AddAliasRequest {
            alias: "al@example.com".into(),
            target: "alice@example.com".into(),
        })
        .await
        .unwrap();
    let inbox = status(&mut mail, alice, "INBOX").await;
    let mut acked = Vec::new();
    for i in 0..10 {
        // A few bodies larger than a FetchBody chunk, the rest small.
        let len = if i % 4 == 0 { 150_000 } else { 300 + i * 97 };
        let body = sized_message(&format!("durable-{i}"), len);
        let d = deliver(&mut mail, &["al@example.com"], &body).await.unwrap();
        acked.push((inbox.id, d.results[0].uid, body));
    }
    let sent = status(&mut mail, alice, "Sent").await;
    for i in 0..3 {
        let body = sized_message(&format!("sent-{i}"), 500);
        let a = append(&mut mail, alice, FolderRef::id(sent.id), &["\\Seen", "$Sent"], &body).await.unwrap();
        acked.push((sent.id, a.uid, body));
    }
    mail.store_flags(store(alice, inbox.id, vec![1, 2, 3], FlagsMode::Add, &["\\Flagged", "\\Deleted"])).await.unwrap();
    mail.expunge(ExpungeRequest { account_id: alice, folder_id: inbox.id, uids: vec![2], only_deleted: true })
        .await
        .unwrap();
    acked.retain(|(f, uid, _)| !(*f == inbox.id && *uid == 2));
    mail.create_folder(CreateFolderRequest {
        account_id: alice,
        name: "Kept/Deep".into(),
        special_use: 0,
        uidvalidity: 0,
    })
    .await
    .unwrap();
    mail.copy(CopyRequest {
        account_id: alice,
        folder_id: inbox.id,
        uids: vec![4, 5],
        destination: Some(FolderRef::name("Kept/Deep")),
    })
    .await
    .unwrap();
    // A deleted folder's subscription stays, by name.
    mail.create_folder(CreateFolderRequest { account_id: alice, name: "Gone".into(), special_use: 0, uidvalidity: 0 })
        .await
        .unwrap();
    mail.delete_folder(DeleteFolderRequest { account_id: alice, name: "Gone".into() }).await.unwrap();
    acked
}

/// Checks, on a server opened on data written before, that everything acknowledged is there
/// as it was, that logins and aliases work, and that UIDs and MODSEQs carry on from where they
/// were rather than starting over.
async fn check_survived(server: &TestServer, alice: u64, before: &Observed, acked: &[(u64, u32, Vec<u8>)]) {
    let mut mail = server.mailbox_client().await;
    let after = observe(&mut mail, alice).await;
    assert!(after == *before, "the account differs after reopening:\nbefore: {before:?}\nafter:  {after:?}");
    for (folder_id, uid, body) in acked {
        let (got, _) = fetch_body(&mut mail, alice, *folder_id, *uid, 0, 0).await.unwrap();
        assert!(got == *body, "UID {uid} in folder {folder_id} changed");
    }
    let who = mail
        .authenticate(AuthenticateRequest {
            username: "al@example.com".into(),
            password: "pw".into(),
            remote_ip: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(who.id, alice);
    let r = mail
        .resolve_recipient(ResolveRecipientRequest { address: "alice+x@example.com".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status(), RecipientStatus::Local);

    let inbox = before.folders.iter().find(|f| f.name == "INBOX").unwrap();
    let d = deliver(&mut mail, &["alice@example.com"], &message("after", "x")).await.unwrap();
    assert_eq!((d.results[0].uid, d.results[0].uidvalidity), (inbox.uidnext, inbox.uidvalidity));
    let c = mail
        .changes(ChangesRequest { account_id: alice, folder_id: inbox.id, since_modseq: inbox.highest_modseq })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.changed.iter().map(|m| m.uid).collect::<Vec<_>>(), [inbox.uidnext]);
    assert!(c.highest_modseq > inbox.highest_modseq);
    // The expunge before the restart is still in the change log.
    let c = mail
        .changes(ChangesRequest { account_id: alice, folder_id: inbox.id, since_modseq: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.vanished, [2]);
}

#[tokio::test]
async fn acknowledged_writes_survive_a_restart() {
    let mut server = TestServer::start(Limits::default()).await;
    let mut admin = server.admin_client().await;
    let alice = setup_account(&mut admin, "alice@example.com", "pw").await.id;
    let acked = write_a_bit_of_everything(&server, alice).await;
    let before = observe(&mut server.mailbox_client().await, alice).await;
    assert_eq!(before.usage.messages, 14);
    assert_eq!(before.subscribed_without_folder, ["Gone"]);
    drop(admin);

    server.restart().await;
    check_survived(&server, alice, &before, &acked).await;

    // And a second time, with the writes made after the first restart.
    let before = observe(&mut server.mailbox_client().await, alice).await;
    server.restart().await;
    let after = observe(&mut server.mailbox_client().await, alice).await;
    assert!(after == before);
}

#[tokio::test]
async fn acknowledged_writes_survive_a_crash() {
    let server = TestServer::start(Limits::default()).await;
    let mut admin = server.admin_client().await;
    let alice = setup_account(&mut admin, "alice@example.com", "pw").await.id;
    let acked = write_a_bit_of_everything(&server, alice).await;
    let before = observe(&mut server.mailbox_client().await, alice).await;

    // The original server keeps running (and holding its files open) while a second one opens
    // what is on disk right now, as a process restarted after a crash would.
    let crashed = TestServer::start_from_copy(Limits::default(), &server.data_dir).await;
    check_survived(&crashed, alice, &before, &acked).await;
}

// ---------------------------------------------------------------------------------------------
// Invariant 4: expunges reach every session.

#[tokio::test]
async fn an_expunge_is_seen_by_every_session() {
    let mut server = TestServer::start(Limits::default()).await;
    let mut admin = server.admin_client().await;
    let alice = setup_account(&mut admin, "alice@example.com", "pw").await.id;
    let mut a = server.mailbox_client().await;
    for i in 0..3 {
        deliver(&mut a, &["alice@example.com"], &message(&format!("x{i}"), "x")).await.unwrap();
    }

    // Session B listens, then selects the folder, as a front-end must: subscribing first means
    // no change can fall between the snapshot and the stream, and events already covered by
    // the snapshot (MODSEQ not above its HIGHESTMODSEQ) are skipped. Such events do occur: a
    // write is acknowledged just before its event is published.
    let mut b = server.mailbox_client().await;
    let mut b_events = b.clone().watch(WatchRequest { account_id: alice }).await.unwrap().into_inner();
    let selected = select(&mut b, alice, FolderRef::name("INBOX")).await;
    let inbox = selected.folder.unwrap();
    assert_eq!(selected.messages.iter().map(|m| m.uid).collect::<Vec<_>>(), [1, 2, 3]);

    // Session A marks UID 2 \Deleted and expunges it, then moves UID 3 away.
    a.store_flags(store(alice, inbox.id, vec![2], FlagsMode::Add, &["\\Deleted"])).await.unwrap();
    let expunged = a
        .expunge(ExpungeRequest { account_id: alice, folder_id: inbox.id, uids: vec![], only_deleted: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(expunged.expunged, [2]);
    let moved = a
        .r#move(MoveRequest {
            account_id: alice,
            folder_id: inbox.id,
            uids: vec![3],
            destination: Some(FolderRef::name("Archive")),
        })
        .await
        .unwrap()
        .into_inner();

    // B is told, in order: the flag change, the expunge, and the move's expunge of UID 3.
    let inbox_expunges = |events: &[MailboxEvent]| {
        events.iter().filter(|e| e.folder_id == inbox.id && e.kind() == EventKind::Expunge).count()
    };
    let events = events_until(&mut b_events, |e| inbox_expunges(e) >= 2).await;
    let in_inbox: Vec<(EventKind, Vec<u32>, u64)> = events
        .iter()
        .filter(|e| e.folder_id == inbox.id && e.modseq > inbox.highest_modseq)
        .map(|e| (e.kind(), e.messages.iter().map(|m| m.uid).collect(), e.modseq))
        .collect();
    assert_eq!(in_inbox.len(), 3, "{in_inbox:?}");
    assert_eq!((in_inbox[0].0, in_inbox[0].1.as_slice()), (EventKind::Flags, &[2][..]));
    assert_eq!(in_inbox[1], (EventKind::Expunge, vec![2], expunged.highest_modseq));
    assert_eq!(in_inbox[2], (EventKind::Expunge, vec![3], moved.highest_modseq));
    drop(b_events);

    // B resynchronises from what it selected: both UIDs vanished, neither is "changed".
    let c = b
        .changes(ChangesRequest { account_id: alice, folder_id: inbox.id, since_modseq: inbox.highest_modseq })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.vanished, [2, 3]);
    assert!(c.changed.iter().all(|m| m.uid == 1));
    assert_eq!(
        select(&mut b, alice, FolderRef::id(inbox.id)).await.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
        [1]
    );
    let gone = b
        .fetch_messages(FetchMessagesRequest {
            account_id: alice,
            folder_id: inbox.id,
            uids: vec![2, 3],
            with_structure: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert!(gone.is_empty());
    expect_error(fetch_body(&mut b, alice, inbox.id, 2, 0, 0).await, Code::NotFound, ErrorReason::NotFound);

    // A session that connects only now, even after a restart, learns the same.
    drop((a, b, admin));
    server.restart().await;
    let mut late = server.mailbox_client().await;
    let c = late
        .changes(ChangesRequest { account_id: alice, folder_id: inbox.id, since_modseq: inbox.highest_modseq })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.vanished, [2, 3]);
}

// ---------------------------------------------------------------------------------------------
// Invariant 5: bodies stored once, and collected only when unreferenced.

#[tokio::test]
async fn a_message_to_fifty_local_recipients_is_one_object() {
    let server = TestServer::start(Limits::default()).await;
    let mut admin = server.admin_client().await;
    let mut mail = server.mailbox_client().await;
    tern_tests::ensure_domain(&mut admin, "example.com").await;
    // One argon2 hash given as a PHC string keeps fifty account creations fast.
    let salt = SaltString::from_b64("ZmlmdHlyZWNpcGllbnRz").unwrap();
    let phc = Argon2::default().hash_password(b"pw", &salt).unwrap().to_string();
    let mut recipients = Vec::new();
    for i in 0..50 {
        let address = format!("user{i:02}@example.com");
        admin
            .create_account(CreateAccountRequest {
                address: address.clone(),
                password: Some(Password { value: Some(password::Value::Hash(phc.clone())) }),
                ..Default::default()
            })
            .await
            .unwrap();
        recipients.push(address);
    }
    let rcpts: Vec<&str> = recipients.iter().map(String::as_str).collect();
    let body = sized_message("fifty", 20_000);

    let d = deliver(&mut mail, &rcpts, &body).await.unwrap();
    assert_eq!(d.results.len(), 50);
    assert!(d.results.iter().all(|r| r.status() == DeliveryStatus::Delivered && r.uid == 1));
    assert_eq!(blob_hash(&d.blob_id), sha256_hex(&body));
    assert_eq!(count_bodies(&blobs_dir(&server.data_dir)), 1);
    assert_eq!(std::fs::read(blob_path(&server.data_dir, &d.blob_id)).unwrap(), body);
    let accounts: HashSet<u64> = d.results.iter().map(|r| r.account_id).collect();
    assert_eq!(accounts.len(), 50);

    // Appending the same bytes again, anywhere, still refers to that one object where
    // references are counted; on NATS it is an object of its own with the same content hash.
    let any = d.results[17].account_id;
    let a = append(&mut mail, any, FolderRef::name("Drafts"), &[], &body).await.unwrap();
    let meta = mail
        .fetch_messages(FetchMessagesRequest {
            account_id: any,
            folder_id: a.folder_id,
            uids: vec![a.uid],
            with_structure: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .messages;
    if tern_tests::on_nats() {
        assert_eq!(blob_hash(&meta[0].blob_id), blob_hash(&d.blob_id));
        assert_eq!(count_bodies(&blobs_dir(&server.data_dir)), 2);
    } else {
        assert_eq!(meta[0].blob_id, d.blob_id);
        assert_eq!(count_bodies(&blobs_dir(&server.data_dir)), 1);
    }
}

#[tokio::test]
async fn garbage_collection_deletes_only_unreferenced_bodies() {
    let limits = Limits { blob_grace: Duration::ZERO, ..Limits::default() };
    let server = TestServer::start(limits).await;
    let mut admin = server.admin_client().await;
    let alice = setup_account(&mut admin, "alice@example.com", "pw").await.id;
    let bob = setup_account(&mut admin, "bob@example.com", "pw").await.id;
    let mut mail = server.mailbox_client().await;
    let dir = server.data_dir.clone();
    let alice_inbox = status(&mut mail, alice, "INBOX").await.id;
    let bob_inbox = status(&mut mail, bob, "INBOX").await.id;

    let shared = message("shared", "to both");
    let only = message("only", "to alice");
    let shared_id = deliver(&mut mail, &["alice@example.com", "bob@example.com"], &shared).await.unwrap().blob_id;
    let only_id = deliver(&mut mail, &["alice@example.com"], &only).await.unwrap().blob_id;
    mail.copy(CopyRequest {
        account_id: alice,
        folder_id: alice_inbox,
        uids: vec![1],
        destination: Some(FolderRef::name("Archive")),
    })
    .await
    .unwrap();
    assert_eq!(count_bodies(&blobs_dir(&dir)), 2);

    // Alice drops every reference she has to both bodies; Bob still refers to the shared one.
    mail.expunge(ExpungeRequest { account_id: alice, folder_id: alice_inbox, uids: vec![], only_deleted: false })
        .await
        .unwrap();
    let archive = status(&mut mail, alice, "Archive").await.id;
    mail.expunge(ExpungeRequest { account_id: alice, folder_id: archive, uids: vec![], only_deleted: false })
        .await
        .unwrap();

    assert_eq!(collect_garbage_until(server.service(), 1).await, 1);
    assert!(!blob_path(&dir, &only_id).exists(), "the unreferenced body is still there");
    assert!(blob_path(&dir, &shared_id).exists(), "a referenced body was deleted");
    // Well past any grace, a body that is referenced is still never collected.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(server.service().collect_garbage().await.unwrap(), 0);
    assert!(fetch_body(&mut mail, bob, bob_inbox, 1, 0, 0).await.unwrap().0 == shared);

    // Once Bob's copy goes too, so does the body.
    mail.expunge(ExpungeRequest { account_id: bob, folder_id: bob_inbox, uids: vec![1], only_deleted: false })
        .await
        .unwrap();
    assert_eq!(collect_garbage_until(server.service(), 1).await, 1);
    assert_eq!(count_bodies(&blobs_dir(&dir)), 0);

    // A collected body can be delivered again, and is stored again.
    let again = deliver(&mut mail, &["bob@example.com"], &shared).await.unwrap();
    assert_eq!(again.blob_id, shared_id);
    assert!(fetch_body(&mut mail, bob, bob_inbox, again.results[0].uid, 0, 0).await.unwrap().0 == shared);

    // Deleting an account drops its references as well.
    admin.delete_account(DeleteAccountRequest { address: "bob@example.com".into() }).await.unwrap();
    assert_eq!(collect_garbage_until(server.service(), 1).await, 1);
    assert_eq!(count_bodies(&blobs_dir(&dir)), 0);
}

#[tokio::test]
async fn refused_writes_leave_no_body_behind() {
    let limits = Limits { blob_grace: Duration::ZERO, ..Limits::default() };
    let server = TestServer::start(limits).await;
    let mut admin = server.admin_client().await;
    let alice = setup_account_with_quota(&mut admin, "alice@example.com", "pw", 100).await.id;
    let mut mail = server.mailbox_client().await;

    // The body is stored before the metadata commit decides; when every recipient or the one
    // folder refuses it, nothing refers to it, and collection must still find it.
    let d = deliver(&mut mail, &["alice@example.com"], &sized_message("over-1", 500)).await.unwrap();
    assert_eq!(d.results[0].status(), DeliveryStatus::OverQuota);
    expect_error(
        append(&mut mail, alice, FolderRef::name("INBOX"), &[], &sized_message("over-2", 500)).await,
        Code::ResourceExhausted,
        ErrorReason::OverQuota,
    );
    expect_error(
        append(&mut mail, alice, FolderRef::name("Missing"), &[], &sized_message("nowhere", 50)).await,
        Code::NotFound,
        ErrorReason::NotFound,
    );
    let stored = count_bodies(&blobs_dir(&server.data_dir));
    assert_eq!(collect_garbage_until(server.service(), stored).await, stored);
    assert_eq!(count_bodies(&blobs_dir(&server.data_dir)), 0, "refused bodies were never collected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collection_racing_redelivery_never_loses_a_body() {
    let limits = Limits { blob_grace: Duration::ZERO, ..Limits::default() };
    let server = TestServer::start(limits).await;
    let mut admin = server.admin_client().await;
    let alice = setup_account(&mut admin, "alice@example.com", "pw").await.id;
    let mut mail = server.mailbox_client().await;
    let inbox = status(&mut mail, alice, "INBOX").await.id;

    // Thirty bodies are delivered and expunged, so each is an orphan old enough to collect.
    let bodies: Vec<Vec<u8>> = (0..30).map(|i| message(&format!("race-{i}"), "the same bytes come back")).collect();
    for body in &bodies {
        deliver(&mut mail, &["alice@example.com"], body).await.unwrap();
    }
    mail.expunge(ExpungeRequest { account_id: alice, folder_id: inbox, uids: vec![], only_deleted: false })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // The same bodies are delivered again while collection runs over and over.
    let delivering = Arc::new(AtomicBool::new(true));
    let collector = {
        let service = server.service().clone();
        let delivering = delivering.clone();
        tokio::spawn(async move {
            let mut deleted = 0;
            while delivering.load(Ordering::Acquire) {
                deleted += service.collect_garbage().await.expect("collect garbage");
                tokio::task::yield_now().await;
            }
            deleted
        })
    };
    let mut redelivered = Vec::new();
    for body in &bodies {
        let d = deliver(&mut mail, &["alice@example.com"], body).await.unwrap();
        assert_eq!(d.results[0].status, DeliveryStatus::Delivered as i32, "a redelivery failed: {:?}", d.results[0]);
        redelivered.push((d.results[0].uid, body));
    }
    delivering.store(false, Ordering::Release);
    let deleted = collector.await.unwrap();
    assert!(deleted <= bodies.len(), "{deleted} bodies deleted, of {} that were unreferenced", bodies.len());

    // Whatever the interleaving, every acknowledged message can be read back.
    for (uid, body) in redelivered {
        let (got, _) = fetch_body(&mut mail, alice, inbox, uid, 0, 0)
            .await
            .unwrap_or_else(|e| panic!("UID {uid} lost its body to collection: {e}"));
        assert!(got == *body);
    }
    assert_eq!(count_bodies(&blobs_dir(&server.data_dir)), bodies.len());
}
