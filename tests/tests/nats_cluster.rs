//! The distributed metadata backend on a three-node NATS JetStream cluster
//! (`tern_tests::servers::NatsCluster`), with the stream and buckets kept on all three nodes and
//! two mailbox replicas writing to the same account, as a production deployment runs:
//!
//! - writers on both replicas at once never see a failure: a lost optimistic-concurrency race
//!   is routine however the cluster reports it, so every delivery and flag change succeeds, and
//!   UIDs and MODSEQs strictly increase;
//! - the node leading the accounts' stream is killed (SIGKILL) while deliveries go on: writes
//!   may fail as "unavailable" during the election (and are retried, as an SMTP client would),
//!   every acknowledged delivery is there exactly once afterwards, and the node comes back and
//!   catches up. The test prints how long writes stalled.
//!
//! `cargo xtask e2e` runs this file; the storage suites also run on such a cluster there.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};
use tern_mailbox::Limits;
use tern_proto::v1::{
    DeliveryStatus, ErrorReason, EventKind, FetchMessagesRequest, FlagsMode, FolderRef, MailboxEvent, SelectRequest,
    SelectResponse, StoreFlagsRequest, WatchRequest,
};
use tern_tests::{Mailbox, TestServer, blob_hash, deliver, fetch_body, message, servers::NatsCluster, setup_account};
use tokio::task::JoinSet;
use tonic::{Code, Status};

const ALICE: &str = "alice@example.com";

/// Replicas of the stream and buckets: one on every node.
const REPLICAS: usize = 3;

/// How long the tests wait for events, a stream leader, or the writers to finish.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A three-node cluster, mailbox replicas A and B over it (stream and buckets on three nodes),
/// and alice's account.
async fn cluster_with_two_replicas() -> (NatsCluster, TestServer, TestServer, u64) {
    let cluster =
        tokio::task::spawn_blocking(NatsCluster::start).await.expect("start task").expect("start the NATS cluster");
    let a = TestServer::start_on_nats_with_replicas(Limits::default(), &cluster.url(), REPLICAS).await;
    let b = a.replica().await;
    let alice = setup_account(&mut a.admin_client().await, ALICE, "pw").await.id;
    (cluster, a, b, alice)
}

async fn inbox(mail: &mut Mailbox, account_id: u64) -> SelectResponse {
    mail.select(SelectRequest { account_id, folder: Some(FolderRef::name("INBOX")) })
        .await
        .expect("select INBOX")
        .into_inner()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `status` is the temporary failure SMTP turns into 451 and IMAP into NO [UNAVAILABLE].
fn unavailable(status: &Status) -> bool {
    status.code() == Code::Unavailable && ErrorReason::of(status) == ErrorReason::Unavailable
}

/// The UID and MODSEQ of each message of the folder, checked to be in strictly increasing UID
/// order, and UIDNEXT above the last.
fn checked_view(view: &SelectResponse) -> Vec<(u32, u64)> {
    let folder = view.folder.clone().expect("a folder");
    let messages: Vec<(u32, u64)> = view.messages.iter().map(|m| (m.uid, m.modseq)).collect();
    assert!(messages.windows(2).all(|w| w[0].0 < w[1].0), "UIDs not strictly increasing: {messages:?}");
    if let Some(&(last, _)) = messages.last() {
        assert!(folder.uidnext > last, "UIDNEXT {} is not above the last UID {last}", folder.uidnext);
    }
    assert!(messages.iter().all(|&(_, m)| m <= folder.highest_modseq), "a MODSEQ above HIGHESTMODSEQ");
    messages
}

/// The content hash of each message's body, by UID.
async fn hashes_by_uid(mail: &mut Mailbox, account_id: u64, folder_id: u64, uids: &[u32]) -> BTreeMap<u32, String> {
    let mut hashes = BTreeMap::new();
    for chunk in uids.chunks(100) {
        let metas = mail
            .fetch_messages(FetchMessagesRequest {
                account_id,
                folder_id,
                uids: chunk.to_vec(),
                with_structure: false,
                ..Default::default()
            })
            .await
            .expect("fetch messages")
            .into_inner()
            .messages;
        hashes.extend(metas.into_iter().map(|m| (m.uid, blob_hash(&m.blob_id).to_owned())));
    }
    hashes
}

/// Writers per mailbox replica in the test of concurrent writers, and deliveries each makes
/// (each followed by a flag change of what it delivered): 200 deliveries and 200 STOREs.
const WRITERS_PER_REPLICA: usize = 4;
const DELIVERIES_PER_WRITER: usize = 25;

/// What one writer of the concurrency test saw: for each delivery, its UID and the MODSEQ of
/// its flag change, in the order acknowledged, and every call that failed.
#[derive(Default)]
struct WriterLog {
    acked: Vec<(u32, u64, Vec<u8>)>,
    failures: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_on_two_replicas_of_a_cluster_never_see_a_spurious_failure() {
    let (_cluster, a, b, alice) = cluster_with_two_replicas().await;
    let mut mail = a.mailbox_client().await;
    let folder_id = inbox(&mut mail, alice).await.folder.expect("a folder").id;

    // A session on replica B follows the account; a first delivery shows it is following.
    let mut watcher = b.mailbox_client().await;
    let mut events = watcher.watch(WatchRequest { account_id: alice }).await.expect("watch").into_inner();
    let first = deliver(&mut mail, &[ALICE], &message("first", "before the writers")).await.expect("first delivery");
    let first_uid = first.results[0].uid;
    next_events(&mut events, |e| e.iter().any(|e| e.kind() == EventKind::Append)).await;

    // Four writers on each replica, all to alice's INBOX: a delivery, then a flag change of the
    // delivered message. Failures are recorded rather than retried: there must be none.
    let started = Instant::now();
    let mut writers = JoinSet::new();
    for w in 0..2 * WRITERS_PER_REPLICA {
        let mut client = if w % 2 == 0 { a.mailbox_client().await } else { b.mailbox_client().await };
        writers.spawn(async move {
            let mut log = WriterLog::default();
            for i in 0..DELIVERIES_PER_WRITER {
                let body = message(&format!("w{w}-m{i}"), &format!("writer {w} message {i}"));
                let uid = match deliver(&mut client, &[ALICE], &body).await {
                    Ok(d) if d.results[0].status() == DeliveryStatus::Delivered => d.results[0].uid,
                    Ok(d) => {
                        log.failures.push(format!("writer {w} delivery {i}: {:?}", d.results[0]));
                        continue;
                    }
                    Err(e) => {
                        log.failures.push(format!("writer {w} delivery {i}: {e:?}"));
                        continue;
                    }
                };
                let store = StoreFlagsRequest {
                    account_id: alice,
                    folder_id,
                    uids: vec![uid],
                    mode: FlagsMode::Add as i32,
                    flags: vec!["\\Flagged".into()],
                    unchanged_since: 0,
                };
                match client.store_flags(store).await.map(tonic::Response::into_inner) {
                    Ok(r) if r.updated.len() == 1 && r.updated[0].uid == uid => {
                        log.acked.push((uid, r.updated[0].modseq, body));
                    }
                    Ok(r) => log.failures.push(format!("writer {w} STORE of UID {uid} changed {:?}", r.updated)),
                    Err(e) => log.failures.push(format!("writer {w} STORE of UID {uid}: {e:?}")),
                }
            }
            log
        });
    }
    let mut logs = Vec::new();
    while let Some(done) = tokio::time::timeout(TIMEOUT, writers.join_next()).await.expect("the writers hang") {
        logs.push(done.expect("a writer panicked"));
    }
    let elapsed = started.elapsed();
    let failures: Vec<&String> = logs.iter().flat_map(|l| &l.failures).collect();
    let calls = 2 * 2 * WRITERS_PER_REPLICA * DELIVERIES_PER_WRITER;
    println!(
        "{calls} calls (deliveries and STOREs) from {} writers on two replicas in {elapsed:?}: {} failed",
        2 * WRITERS_PER_REPLICA,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed although nothing was wrong with the cluster; the first ones:\n{}",
        failures.len(),
        failures.iter().take(5).map(|f| f.as_str()).collect::<Vec<_>>().join("\n")
    );

    // Each writer's deliveries got strictly increasing UIDs, and its flag changes strictly
    // increasing MODSEQs, in the order they were acknowledged; no UID or MODSEQ was given twice.
    for log in &logs {
        assert!(log.acked.windows(2).all(|w| w[0].0 < w[1].0), "a writer's UIDs went backwards");
        assert!(log.acked.windows(2).all(|w| w[0].1 < w[1].1), "a writer's MODSEQs went backwards");
    }
    let acked: Vec<&(u32, u64, Vec<u8>)> = logs.iter().flat_map(|l| &l.acked).collect();
    let total = 2 * WRITERS_PER_REPLICA * DELIVERIES_PER_WRITER;
    let uids: BTreeSet<u32> = acked.iter().map(|(u, _, _)| *u).collect();
    let modseqs: BTreeSet<u64> = acked.iter().map(|(_, m, _)| *m).collect();
    assert_eq!((uids.len(), modseqs.len()), (total, total), "a UID or MODSEQ was given out twice");
    assert!(uids.iter().all(|&u| u > first_uid));

    // Both replicas have the same view: every delivery, flagged, with the MODSEQ its STORE got.
    let view_a = inbox(&mut a.mailbox_client().await, alice).await;
    let view_b = inbox(&mut b.mailbox_client().await, alice).await;
    assert_eq!(view_a.messages, view_b.messages, "the replicas disagree");
    let messages = checked_view(&view_a);
    assert_eq!(messages.len(), total + 1);
    let by_uid: BTreeMap<u32, u64> = messages.into_iter().collect();
    for (uid, modseq, _) in &acked {
        assert_eq!(by_uid.get(uid), Some(modseq), "UID {uid} does not have the MODSEQ of its flag change");
    }
    assert!(view_a.messages.iter().filter(|m| m.uid != first_uid).all(|m| m.flags.iter().any(|f| f == "\\Flagged")));
    let hashes = hashes_by_uid(&mut mail, alice, folder_id, &uids.iter().copied().collect::<Vec<_>>()).await;
    for (uid, _, body) in &acked {
        assert_eq!(hashes.get(uid), Some(&sha256_hex(body)), "UID {uid} holds another body");
    }

    // The Watch on replica B saw every change once, in strictly increasing MODSEQ order: the
    // order of the log both replicas wrote to.
    let seen = next_events(&mut events, |e| e.len() >= 2 * total).await;
    let order: Vec<u64> = seen.iter().map(|e| e.modseq).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "events out of MODSEQ order: {order:?}");
    let appended: BTreeSet<u32> =
        seen.iter().filter(|e| e.kind() == EventKind::Append).flat_map(|e| e.messages.iter().map(|m| m.uid)).collect();
    assert_eq!(appended, uids, "the Watch missed or repeated an append");
}

/// Reads events until `done` says the collected ones are enough, or fails after [`TIMEOUT`].
async fn next_events(
    stream: &mut tonic::Streaming<MailboxEvent>,
    mut done: impl FnMut(&[MailboxEvent]) -> bool,
) -> Vec<MailboxEvent> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !done(&events) {
        let next = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for events after {} of them", events.len()))
            .expect("the Watch stream failed")
            .expect("the Watch stream ended");
        events.push(next);
    }
    events
}

/// Writers per mailbox replica in the leader-kill test.
const KILL_WRITERS_PER_REPLICA: usize = 2;

/// Deliveries acknowledged after the kill (and again after the restart) before the test moves on.
const DELIVERIES_AFTER: usize = 20;

/// What one writer of the leader-kill test saw: acknowledged deliveries (UID, body, when), the
/// bodies of attempts that failed, and when each failed attempt started and ended.
#[derive(Default)]
struct KillLog {
    acked: Vec<(u32, Vec<u8>, Instant)>,
    unacked: Vec<Vec<u8>>,
    failures: Vec<(Instant, Instant)>,
}

/// Milliseconds from `origin` to `t`, negative when `t` came first.
fn ms_after(origin: Instant, t: Instant) -> i128 {
    match t.checked_duration_since(origin) {
        Some(d) => d.as_millis() as i128,
        None => -(origin.duration_since(t).as_millis() as i128),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_loses_no_acknowledged_delivery() {
    let (mut cluster, a, b, alice) = cluster_with_two_replicas().await;
    let stream = a.nats_mail_stream().expect("a NATS store");
    let leader = tokio::task::block_in_place(|| cluster.wait_for_stream_leader(&stream, TIMEOUT))
        .expect("the mail stream has a leader");

    // Writers on both replicas deliver until told to stop; a delivery that fails as
    // "unavailable" is tried again (with a new body, so that an attempt that was stored although
    // it failed is told apart from the one acknowledged), anything else fails the test.
    let stop = Arc::new(AtomicBool::new(false));
    let acked_count = Arc::new(AtomicUsize::new(0));
    let mut writers = JoinSet::new();
    for w in 0..2 * KILL_WRITERS_PER_REPLICA {
        let mut client = if w % 2 == 0 { a.mailbox_client().await } else { b.mailbox_client().await };
        let (stop, acked_count) = (stop.clone(), acked_count.clone());
        writers.spawn(async move {
            let mut log = KillLog::default();
            let mut attempt = 0;
            while !stop.load(Ordering::Acquire) {
                let i = log.acked.len();
                attempt += 1;
                let body = message(&format!("w{w}-m{i}"), &format!("writer {w} message {i} attempt {attempt}"));
                let tried = Instant::now();
                match deliver(&mut client, &[ALICE], &body).await {
                    Ok(d) => {
                        assert_eq!(d.results[0].status(), DeliveryStatus::Delivered, "{:?}", d.results[0]);
                        log.acked.push((d.results[0].uid, body, Instant::now()));
                        acked_count.fetch_add(1, Ordering::AcqRel);
                    }
                    Err(e) if unavailable(&e) => {
                        log.unacked.push(body);
                        log.failures.push((tried, Instant::now()));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("writer {w}: a delivery failed otherwise than as unavailable: {e:?}"),
                }
            }
            log
        });
    }
    let wait_for = |count: usize| {
        let acked_count = acked_count.clone();
        async move {
            let deadline = tokio::time::Instant::now() + TIMEOUT;
            while acked_count.load(Ordering::Acquire) < count {
                assert!(tokio::time::Instant::now() < deadline, "deliveries stopped being acknowledged");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };

    // Some deliveries first, then the leader of the mail stream dies.
    wait_for(DELIVERIES_AFTER).await;
    let killed = Instant::now();
    let before_kill = acked_count.load(Ordering::Acquire);
    tokio::task::block_in_place(|| cluster.kill(leader));
    let new_leader = tokio::task::block_in_place(|| cluster.wait_for_stream_leader(&stream, TIMEOUT))
        .expect("a new leader of the mail stream");
    let elected = killed.elapsed();
    assert_ne!(new_leader, leader);
    wait_for(acked_count.load(Ordering::Acquire) + DELIVERIES_AFTER).await;
    let recovered = killed.elapsed();

    // The old leader comes back, catches up, and deliveries go on.
    tokio::task::block_in_place(|| cluster.restart(leader)).expect("restart the killed node");
    let restarted = killed.elapsed();
    wait_for(acked_count.load(Ordering::Acquire) + DELIVERIES_AFTER).await;
    stop.store(true, Ordering::Release);
    let mut logs = Vec::new();
    while let Some(done) = tokio::time::timeout(TIMEOUT, writers.join_next()).await.expect("the writers hang") {
        logs.push(done.expect("a writer panicked"));
    }

    // The figures: failures, and how long deliveries stalled around the kill (the longest time
    // between two acknowledgements of any writer).
    let failures: Vec<(Instant, Instant)> = logs.iter().flat_map(|l| l.failures.iter().copied()).collect();
    let mut ack_times: Vec<Instant> = logs.iter().flat_map(|l| l.acked.iter().map(|(_, _, t)| *t)).collect();
    ack_times.sort();
    let stall = ack_times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    let acked: Vec<&(u32, Vec<u8>, Instant)> = logs.iter().flat_map(|l| &l.acked).collect();
    let window = match (failures.iter().map(|f| f.0).min(), failures.iter().map(|f| f.1).max()) {
        (Some(first), Some(last)) => format!(
            "from {} ms to {} ms after the kill ({} ms)",
            ms_after(killed, first),
            ms_after(killed, last),
            elapsed_ms(last - first)
        ),
        _ => "none".to_owned(),
    };
    println!(
        "leader n{leader} of {stream} killed after {before_kill} deliveries; n{new_leader} led it {} ms later; \
         writes acknowledged again by {} ms; n{leader} restarted and caught up by {} ms",
        elapsed_ms(elected),
        elapsed_ms(recovered),
        elapsed_ms(restarted),
    );
    println!(
        "{} deliveries acknowledged, {} failed as unavailable and were retried; failure window {window}; \
         longest gap between acknowledgements {} ms",
        acked.len(),
        failures.len(),
        elapsed_ms(stall),
    );

    // Every writer's acknowledged deliveries got strictly increasing UIDs, and no UID was
    // acknowledged twice.
    for log in &logs {
        assert!(log.acked.windows(2).all(|w| w[0].0 < w[1].0), "a writer's UIDs went backwards");
    }
    let acked_uids: BTreeSet<u32> = acked.iter().map(|(u, _, _)| *u).collect();
    assert_eq!(acked_uids.len(), acked.len(), "a UID was acknowledged twice");

    // Both replicas (their connections moved off the dead node) see the same folder, in strictly
    // increasing UID and, since every change was an append, MODSEQ order.
    let mut mail = a.mailbox_client().await;
    let view_a = inbox(&mut mail, alice).await;
    let view_b = inbox(&mut b.mailbox_client().await, alice).await;
    assert_eq!(view_a.messages, view_b.messages, "the replicas disagree");
    let messages = checked_view(&view_a);
    assert!(messages.windows(2).all(|w| w[0].1 < w[1].1), "MODSEQs not in UID order: {messages:?}");
    let folder_id = view_a.folder.clone().expect("a folder").id;

    // Every acknowledged delivery is there exactly once, under the UID it was acknowledged
    // with; an attempt that failed may have been stored (its answer lost), at most once, and
    // nothing else is there.
    let uids: Vec<u32> = messages.iter().map(|&(u, _)| u).collect();
    let hashes = hashes_by_uid(&mut mail, alice, folder_id, &uids).await;
    let mut count_by_hash: BTreeMap<&str, usize> = BTreeMap::new();
    for hash in hashes.values() {
        *count_by_hash.entry(hash.as_str()).or_default() += 1;
    }
    for (uid, body, _) in &acked {
        let hash = sha256_hex(body);
        assert_eq!(hashes.get(uid), Some(&hash), "acknowledged UID {uid} is missing or holds another body");
        assert_eq!(count_by_hash[hash.as_str()], 1, "the delivery acknowledged as UID {uid} is stored twice");
    }
    let unacked: BTreeSet<String> = logs.iter().flat_map(|l| l.unacked.iter().map(|b| sha256_hex(b))).collect();
    let stored_unacked = hashes.values().filter(|h| unacked.contains(*h)).count();
    assert_eq!(
        hashes.len(),
        acked.len() + stored_unacked,
        "the folder holds messages nobody delivered, or an unacknowledged attempt twice"
    );
    assert!(count_by_hash.values().all(|&n| n == 1));
    println!("{stored_unacked} failed attempts were stored all the same (a sender would have sent them again)");
    for (uid, body, _) in acked.iter().step_by(25) {
        assert_eq!(&fetch_body(&mut mail, alice, folder_id, *uid, 0, 0).await.expect("fetch a body").0, body);
    }

    // The restarted node holds the stream again and the cluster has a leader for it.
    assert!(cluster.is_running(leader));
    tokio::task::block_in_place(|| cluster.wait_for_stream_leader(&stream, TIMEOUT)).expect("a leader at the end");
}

fn elapsed_ms(d: Duration) -> u128 {
    d.as_millis()
}
