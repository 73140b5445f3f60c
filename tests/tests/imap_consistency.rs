//! A consistency checker for IMAP sessions sharing one mailbox (issue #14), in the manner of
//! imaptest: eight sessions, spread over two IMAP front-ends, run a seeded random mix of UID
//! STORE, STORE, EXPUNGE, APPEND (synchronising and LITERAL+), FETCH, UID FETCH, SEARCH, NOOP
//! and IDLE on one INBOX, for at most [`COMMANDS`] commands or [`TIME_BOUND`] each. Every
//! session talks over a raw TCP connection with a small response reader of its own (literals
//! included), has CONDSTORE enabled (by ENABLE or by SELECT's parameter) so that MODSEQs are
//! reported, and keeps a model of what it has been told, against which a [`Checker`] holds every
//! response:
//!
//! - every flag a FETCH reports is a system flag or was named by the last `* FLAGS` response
//!   (RFC 3501 section 7.2.6, RFC 9051 section 7.3.5);
//! - a message's MODSEQ never goes down, and one MODSEQ never comes with two different flag
//!   sets (RFC 7162: the mod-sequence is the version of the message's metadata); every FETCH
//!   carries the UID, and every FETCH with FLAGS the MODSEQ, once CONDSTORE is on (RFC 7162
//!   section 3.1);
//! - a FETCH's message number is at most the EXISTS count; a message number keeps its UID until
//!   an EXPUNGE renumbers; a UID is at one message number only; UIDs strictly increase with the
//!   message number; a new message's UID is above every UID the session had seen when EXISTS
//!   announced it; an expunged UID never comes back; APPENDUID is above every UID seen before;
//! - `* n EXPUNGE` has 1 <= n <= EXISTS and takes one off it; EXISTS never goes down by itself;
//!   no EXPUNGE while a FETCH, STORE or SEARCH runs (RFC 9051 section 7.5.1; the UID variants
//!   may carry them); SEARCH names only numbers up to EXISTS;
//! - a message is `\Recent` in at most one session (RFC 3501 section 2.3.2), and within a
//!   session it stays recent or not recent;
//! - every tagged response is OK, except that FETCH and STORE (with UID or not) may be NO:
//!   RFC 2180 sections 4.1 and 4.2 let a server refuse them for messages another session has
//!   expunged, which this mix does all the time. Those NOs are counted and printed, not failed.
//!   No VANISHED (QRESYNC is not enabled), no untagged BAD, no BYE before LOGOUT.
//!
//! A run fails with a count and an example per kind, the first violations and the seed.
//! `on_one_mailbox_service` runs on the embedded backend (or on the NATS server of
//! `TERN_TEST_NATS_URL`, as every `TestServer` does when it is set); `on_a_nats_cluster` starts a
//! three-node JetStream cluster itself, with two mailbox replicas behind the two front-ends, as
//! `tests/nats_cluster.rs` does, so both run under `cargo test --workspace` (and so in
//! `cargo xtask ci`, which installs nats-server first). `TERN_CONSISTENCY_SEED=<n>` replays a
//! run's command choices; how the sessions interleave is up to the scheduler. The self-tests
//! (`checker_reports_*`, `reader_frames_literals`) feed the checker scripted responses and show
//! that it finds what it is meant to find, so that a passing run means something.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::SocketAddr,
    time::Duration,
};

use tern_imap::config::Limits;
use tern_tests::{
    TestServer, append,
    common::lenient_mailbox_limits,
    imap::{ImapOptions, ImapTestServer, password_of},
    message,
    servers::NatsCluster,
    tern_proto::v1::FolderRef,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
    time::Instant,
};

const ALICE: &str = "alice@example.com";

/// How many sessions share the mailbox; they alternate between the two front-ends.
const SESSIONS: usize = 8;

/// How many commands each session sends at most after selecting the mailbox.
const COMMANDS: usize = 150;

/// How long the sessions send commands at most, whatever their count, so that a slow machine
/// keeps the test short.
const TIME_BOUND: Duration = Duration::from_secs(20);

/// How long one response may take before the session counts the server as stuck.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages delivered before the sessions start, so that the first STOREs have targets.
const SEED_DELIVERIES: usize = 12;

/// The flags the sessions store: keywords the mailbox does not know at first, so that their
/// announcement in `* FLAGS` is exercised, and system flags, \Deleted feeding EXPUNGE.
const STORE_FLAGS: [&str; 6] = ["$Foo", "$Bar", "$Baz", "\\Seen", "\\Flagged", "\\Deleted"];

/// The flags an APPEND may carry: no \Deleted, so that appended messages live a while.
const APPEND_FLAGS: [&str; 5] = ["$Foo", "$Bar", "$Baz", "\\Seen", "\\Flagged"];

/// The system flags of RFC 3501 section 2.3.2, which need no announcement.
const SYSTEM_FLAGS: [&str; 6] = ["\\seen", "\\answered", "\\flagged", "\\deleted", "\\draft", "\\recent"];

/// How many violations the failure message quotes in full.
const SHOWN: usize = 20;

/// Eight sessions on two front-ends of one mailbox service, on the embedded backend unless
/// `TERN_TEST_NATS_URL` names a NATS server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_one_mailbox_service() {
    let server = ImapTestServer::start(Limits::default(), true).await;
    let other = server.start_frontend().await;
    seed_inbox(&server).await;
    let what = if tern_tests::on_nats() { "TERN_TEST_NATS_URL" } else { "embedded" };
    run_checker(what, [server.frontend.imap, other.imap]).await;
}

/// Eight sessions on a three-node NATS JetStream cluster (three replicas of every stream and
/// bucket, as the storage suites run there): half through mailbox replica A and its front-end,
/// half through replica B and its own front-end, as two pods of each would be deployed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_nats_cluster() {
    // Declared first so that it is dropped last, after the servers that use it.
    let cluster =
        tokio::task::spawn_blocking(NatsCluster::start).await.expect("start task").expect("start the NATS cluster");
    let replicas = cluster.node_count();
    let a = TestServer::start_on_nats_with_replicas(lenient_mailbox_limits(), &cluster.url(), replicas).await;
    let server = ImapTestServer::start_on(a, ImapOptions { allow_plaintext_auth: true, ..Default::default() }).await;
    let b = server.mailbox.replica().await;
    let other = server.start_frontend_on(b.addr).await;
    seed_inbox(&server).await;
    run_checker("NATS cluster", [server.frontend.imap, other.imap]).await;
}

/// The checker reports the two defects issue #14 was opened for (a keyword in FETCH that no
/// FLAGS response named, a MODSEQ going back for one UID), and nothing on a clean script that
/// uses the same responses lawfully.
#[test]
fn checker_reports_the_defects_of_issue_14() {
    let select: &[&str] = &[
        "C: SELECT INBOX (CONDSTORE)",
        "S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
        "S: * 2 EXISTS",
        "S: * OK [HIGHESTMODSEQ 74000] Highest",
        "S: OK [READ-WRITE] SELECT completed",
        "C: FETCH 1:* (UID FLAGS MODSEQ)",
        "S: * 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ (73000))",
        "S: * 2 FETCH (UID 2 FLAGS () MODSEQ (74000))",
        "S: OK FETCH completed",
    ];
    let clean = [
        select,
        &[
            "C: UID STORE 2 +FLAGS ($Foo)",
            "S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Foo)",
            "S: * 2 FETCH (UID 2 FLAGS ($Foo) MODSEQ (74022))",
            "S: OK STORE completed",
            "C: NOOP",
            "S: * 2 FETCH (UID 2 FLAGS ($Foo \\Seen) MODSEQ (74030))",
            "S: OK NOOP completed",
        ],
    ]
    .concat();
    assert_eq!(kinds(&clean), Vec::<&str>::new());

    let defects = [
        select,
        &[
            "C: UID STORE 2 +FLAGS ($Foo)",
            "S: * 2 FETCH (UID 2 FLAGS ($Foo) MODSEQ (74022))",
            "S: OK STORE completed",
            "C: NOOP",
            "S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Foo)",
            "S: * 2 FETCH (UID 2 FLAGS ($Foo) MODSEQ (74020))",
            "S: OK NOOP completed",
        ],
    ]
    .concat();
    assert_eq!(kinds(&defects), ["unannounced-flag", "modseq-backwards"]);
}

/// Every other rule of the checker, one scripted breach each, after a lawful start: the checker
/// reports exactly that kind, once.
#[test]
fn checker_reports_every_kind_of_violation() {
    let start: &[&str] = &[
        "C: SELECT INBOX",
        "S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Foo)",
        "S: * 3 EXISTS",
        "S: OK SELECT completed",
        "C: FETCH 1:* (UID FLAGS MODSEQ)",
        "S: * 1 FETCH (UID 4 FLAGS () MODSEQ (10))",
        "S: * 2 FETCH (UID 7 FLAGS ($Foo) MODSEQ (11))",
        "S: * 3 FETCH (UID 9 FLAGS () MODSEQ (12))",
        "S: OK FETCH completed",
    ];
    let cases: &[(&str, &[&str])] = &[
        ("expunge-during-fetch-store-search", &["C: FETCH 1:* (UID FLAGS MODSEQ)", "S: * 3 EXPUNGE", "S: OK done"]),
        ("expunge-during-fetch-store-search", &["C: STORE 1 +FLAGS (\\Seen)", "S: * 2 EXPUNGE", "S: OK done"]),
        ("expunge-during-fetch-store-search", &["C: SEARCH ALL", "S: * SEARCH 1 2", "S: * 3 EXPUNGE", "S: OK done"]),
        ("expunge-out-of-range", &["C: NOOP", "S: * 4 EXPUNGE", "S: OK done"]),
        ("exists-decreased", &["C: NOOP", "S: * 2 EXISTS", "S: OK done"]),
        ("fetch-beyond-exists", &["C: NOOP", "S: * 4 FETCH (UID 12 FLAGS () MODSEQ (20))", "S: OK done"]),
        ("seq-uid-changed", &["C: NOOP", "S: * 2 FETCH (UID 8 FLAGS () MODSEQ (20))", "S: OK done"]),
        ("seq-uid-changed", &["C: NOOP", "S: * 2 EXPUNGE", "S: * 1 FETCH (UID 9 FLAGS () MODSEQ (20))", "S: OK done"]),
        ("uid-order", &["C: NOOP", "S: * 4 EXISTS", "S: * 4 FETCH (UID 8 FLAGS () MODSEQ (20))", "S: OK done"]),
        ("expunged-uid-returned", &["C: NOOP", "S: * 3 EXPUNGE", "S: * 3 EXISTS", "S: * 3 FETCH (UID 9)", "S: OK"]),
        (
            "new-uid-not-above-seen",
            &["C: NOOP", "S: * 3 EXPUNGE", "S: * 3 EXISTS", "S: * 3 FETCH (UID 8 FLAGS () MODSEQ (20))", "S: OK"],
        ),
        ("modseq-flags-differ", &["C: NOOP", "S: * 1 FETCH (UID 4 FLAGS (\\Seen) MODSEQ (10))", "S: OK done"]),
        ("fetch-without-modseq", &["C: NOOP", "S: * 1 FETCH (UID 4 FLAGS (\\Seen))", "S: OK done"]),
        ("fetch-without-uid", &["C: NOOP", "S: * 1 FETCH (FLAGS (\\Seen) MODSEQ (30))", "S: OK done"]),
        ("unannounced-flag", &["C: NOOP", "S: * 1 FETCH (UID 4 FLAGS ($Bar) MODSEQ (30))", "S: OK done"]),
        ("search-beyond-exists", &["C: SEARCH ALL", "S: * SEARCH 1 4", "S: OK done"]),
        ("tagged-not-ok", &["C: NOOP", "S: BAD what"]),
        ("tagged-not-ok", &["C: EXPUNGE", "S: NO [UNAVAILABLE] later"]),
        ("appenduid-not-above-seen", &["C: APPEND INBOX {10+}", "S: * 4 EXISTS", "S: OK [APPENDUID 5 8] done"]),
        ("unexpected-response", &["C: NOOP", "S: * VANISHED 4", "S: OK done"]),
        ("unexpected-response", &["C: NOOP", "S: * BYE going away", "S: OK done"]),
        ("malformed", &["C: NOOP", "S: * 1 FETCH (UID 4 FLAGS (\\Seen MODSEQ (30)", "S: OK done"]),
    ];
    for (want, breach) in cases {
        let script = [start, breach].concat();
        assert_eq!(kinds(&script), [*want], "{breach:?}");
    }
    // What RFC 2180 allows and this mix provokes: a FETCH or STORE refused for a message that
    // another session expunged, and EXPUNGE during UID commands, are not violations.
    let lawful = [
        start,
        &["C: NOOP", "S: * 1 EXPUNGE", "S: * 2 FETCH (UID 9 FLAGS ($Foo) MODSEQ (20))", "S: OK done"],
        &["C: UID FETCH 7 (UID BODY.PEEK[HEADER])", "S: * 2 EXPUNGE", "S: NO [EXPUNGEISSUED] gone"],
        &["C: STORE 1 +FLAGS (\\Seen)", "S: NO [EXPUNGEISSUED] gone"],
        &[
            "C: APPEND INBOX {10+}",
            "S: * 2 EXISTS",
            "S: * 2 FETCH (UID 10 FLAGS () MODSEQ (30))",
            "S: OK [APPENDUID 5 10]",
        ],
        &["C: UID FETCH 10 (UID BODY.PEEK[HEADER])", "S: * 2 FETCH (UID 10 BODY[HEADER] {4}\r\nA: b)", "S: OK"],
    ]
    .concat();
    assert_eq!(kinds(&lawful), Vec::<&str>::new());
}

/// The reader frames responses by their CRLF and the literals they announce, whatever those
/// literals contain, and the parser finds FETCH items after a literal.
#[test]
fn reader_frames_literals() {
    let header = "Subject: ) {3}\r\n\r\n";
    let stream =
        format!("* 1 FETCH (UID 5 BODY[HEADER] {{{}}}\r\n{header} FLAGS ($Foo))\r\n* 2 EXISTS\r\n", header.len());
    let first = response_len(stream.as_bytes()).unwrap().expect("a complete response");
    assert_eq!(&stream[first..], "* 2 EXISTS\r\n");
    for cut in 0..first {
        assert_eq!(response_len(&stream.as_bytes()[..cut]).unwrap(), None, "cut at {cut}");
    }
    let Ok(Untagged::Fetch(1, items)) = classify(&stream.as_bytes()[..first - 2]) else { panic!("not a FETCH") };
    let data = fetch_data(&items).unwrap();
    assert_eq!((data.uid, data.flags, data.modseq), (Some(5), Some(vec!["$Foo".to_string()]), None));
    assert!(response_len(b"* 1 EXISTS\n").is_err(), "a bare LF is not a line end");
}

/// The kinds of the violations `script` makes the checker report: `C:` lines start commands,
/// `S: *` lines are untagged responses, other `S:` lines the tagged status.
fn kinds(script: &[&str]) -> Vec<&'static str> {
    let mut checker = Checker::new("script".into());
    for line in script {
        if let Some(command) = line.strip_prefix("C: ") {
            checker.start(command);
        } else if let Some(untagged) = line.strip_prefix("S: * ") {
            checker.untagged(format!("* {untagged}").as_bytes());
        } else if let Some(status) = line.strip_prefix("S: ") {
            checker.tagged(status);
        } else {
            panic!("not a script line: {line:?}");
        }
    }
    checker.violations.iter().map(|v| v.kind).collect()
}

/// Delivers [`SEED_DELIVERIES`] messages to alice's INBOX and appends a few with keywords, so
/// that SELECT must announce keywords the mailbox already has.
async fn seed_inbox(server: &ImapTestServer) {
    for n in 0..SEED_DELIVERIES {
        server.deliver(ALICE, &message(&format!("seed{n}"), "delivered before the sessions start")).await;
    }
    let mut client = server.mailbox_client().await;
    let account = server.account_id(ALICE);
    for (n, flags) in [&["$Foo"][..], &["$Bar", "\\Seen"], &["$Foo", "$Baz", "\\Flagged"]].into_iter().enumerate() {
        let body = message(&format!("keywords{n}"), "appended with keywords");
        append(&mut client, account, FolderRef::name("INBOX"), flags, &body)
            .await
            .unwrap_or_else(|e| panic!("append a message with {flags:?}: {e}"));
    }
}

/// Runs [`SESSIONS`] sessions against the front-ends at `frontends` (the plain-text listeners)
/// and fails with what they found. `what` names the backend in the output.
async fn run_checker(what: &str, frontends: [SocketAddr; 2]) {
    let seed = std::env::var("TERN_CONSISTENCY_SEED").ok().and_then(|s| s.trim().parse().ok()).unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        (now.as_nanos() as u64) ^ u64::from(std::process::id())
    });
    println!("imap_consistency ({what}): seed {seed}; TERN_CONSISTENCY_SEED={seed} replays the command choices");
    let deadline = Instant::now() + TIME_BOUND;
    let mut sessions = JoinSet::new();
    for id in 0..SESSIONS {
        sessions.spawn(run_session(id, frontends[id % 2], seed, deadline));
    }
    // Every read has its own timeout, so this bound only catches a session stuck elsewhere.
    let all = async {
        let mut outcomes = Vec::new();
        while let Some(outcome) = sessions.join_next().await {
            outcomes.push(outcome.expect("a session panicked"));
        }
        outcomes
    };
    let mut outcomes = tokio::time::timeout(TIME_BOUND + 3 * READ_TIMEOUT, all)
        .await
        .unwrap_or_else(|_| panic!("({what}, seed {seed}) the sessions did not finish in time"));
    outcomes.sort_by_key(|o| o.id);

    // Exactly one session may see a message as \Recent.
    let recent_seen: usize = outcomes.iter().map(|o| o.recent.len()).sum();
    let mut recent_in: HashMap<u32, Vec<usize>> = HashMap::new();
    for o in &outcomes {
        for uid in &o.recent {
            recent_in.entry(*uid).or_default().push(o.id);
        }
    }
    let mut shared: Vec<(u32, Vec<usize>)> = recent_in.into_iter().filter(|(_, s)| s.len() > 1).collect();
    shared.sort();
    let shared: Vec<Violation> = shared
        .into_iter()
        .map(|(uid, sessions)| Violation {
            kind: "recent-in-two-sessions",
            text: format!("UID {uid} was \\Recent in sessions {sessions:?}"),
        })
        .collect();
    let violations: Vec<&Violation> = outcomes.iter().flat_map(|o| &o.violations).chain(&shared).collect();
    let mut by_kind: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for v in &violations {
        by_kind.entry(v.kind).or_insert((0, v.text.as_str())).0 += 1;
    }
    let summary: String =
        by_kind.iter().map(|(kind, (count, example))| format!("  {kind}: {count}, e.g. {example}\n")).collect();
    let commands: usize = outcomes.iter().map(|o| o.commands).sum();
    let responses: usize = outcomes.iter().map(|o| o.responses).sum();
    let refused: Vec<&String> = outcomes.iter().flat_map(|o| &o.accepted_no).collect();
    println!(
        "imap_consistency ({what}): {SESSIONS} sessions, {commands} commands, {responses} untagged responses checked, \
         {recent_seen} messages seen as \\Recent, {} tagged NO accepted (RFC 2180){}, {} violations",
        refused.len(),
        refused.first().map(|r| format!(", e.g. {r}")).unwrap_or_default(),
        violations.len(),
    );
    print!("{summary}");
    let shown: String = violations.iter().take(SHOWN).map(|v| format!("  {}\n", v.text)).collect();
    assert!(
        violations.is_empty(),
        "({what}, seed {seed}) {} violations in {commands} commands:\n{summary}the first {}:\n{shown}",
        violations.len(),
        violations.len().min(SHOWN),
    );
}

/// What one session did and found.
#[derive(Debug)]
struct Outcome {
    id: usize,
    commands: usize,
    responses: usize,
    violations: Vec<Violation>,
    accepted_no: Vec<String>,
    recent: HashSet<u32>,
}

/// One session from connection to LOGOUT: login, CONDSTORE, SELECT, a first FETCH, then random
/// commands until [`COMMANDS`] or `deadline`. A connection failure ends it as a violation.
async fn run_session(id: usize, addr: SocketAddr, seed: u64, deadline: Instant) -> Outcome {
    let mut checker = Checker::new(format!("session {id}"));
    let mut commands = 0;
    match TcpStream::connect(addr).await {
        Err(e) => checker.violation("io", format!("cannot connect to {addr}: {e}")),
        Ok(stream) => {
            let rng = Rng::new(seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut session = Session { id, conn: Conn { stream, buf: Vec::new(), tag: 0 }, checker, rng, appends: 0 };
            let result = async {
                session.open().await?;
                while commands < COMMANDS && Instant::now() < deadline {
                    session.step().await?;
                    commands += 1;
                }
                session.command("LOGOUT").await
            }
            .await;
            checker = session.checker;
            if let Err(e) = result {
                checker.violation("io", e);
            }
        }
    }
    Outcome {
        id,
        commands,
        responses: checker.responses,
        violations: checker.violations,
        accepted_no: checker.accepted_no,
        recent: checker.recent,
    }
}

/// A session's connection, its random choices and its checker.
struct Session {
    id: usize,
    conn: Conn,
    checker: Checker,
    rng: Rng,
    appends: usize,
}

impl Session {
    /// Greeting, LOGIN, CONDSTORE on (by ENABLE in even sessions, by SELECT's parameter in odd
    /// ones), SELECT INBOX, and a FETCH that teaches the model every UID.
    async fn open(&mut self) -> Result<(), String> {
        let greeting = self.conn.read_required().await?;
        if !greeting.starts_with(b"* OK") {
            self.checker.violation("unexpected-response", format!("greeting {}", shown(&greeting)));
        }
        self.command(&format!("LOGIN {ALICE} {}", password_of(ALICE))).await?;
        if self.id.is_multiple_of(2) {
            self.command("ENABLE CONDSTORE").await?;
            self.command("SELECT INBOX").await?;
        } else {
            self.command("SELECT INBOX (CONDSTORE)").await?;
        }
        if self.checker.exists() > 0 {
            self.command("FETCH 1:* (UID FLAGS MODSEQ)").await?;
        }
        Ok(())
    }

    /// One random command, weighted so that the mailbox neither empties nor grows much.
    async fn step(&mut self) -> Result<(), String> {
        let exists = self.checker.exists();
        match self.rng.below(100) {
            // UID sets with `*` on an empty mailbox are left alone: what they mean there is
            // not what this test is about.
            0..=27 if exists > 0 => {
                let command = self.uid_store();
                self.command(&command).await
            }
            28..=35 if exists > 0 => {
                let seq = 1 + self.rng.below(exists);
                let mode = *self.rng.pick(&["+FLAGS", "-FLAGS", "+FLAGS.SILENT"]);
                let flag = *self.rng.pick(&STORE_FLAGS[..5]);
                self.command(&format!("STORE {seq} {mode} ({flag})")).await
            }
            36..=49 => self.append().await,
            50..=56 => self.command("EXPUNGE").await,
            57..=68 if exists > 0 => self.command("FETCH 1:* (UID FLAGS MODSEQ)").await,
            69..=76 if exists > 0 => {
                let set = self.uid_set();
                self.command(&format!("UID FETCH {set} (UID BODY.PEEK[HEADER])")).await
            }
            77..=81 => {
                let command = *self.rng.pick(&["SEARCH ALL", "SEARCH KEYWORD $Foo", "SEARCH DELETED"]);
                self.command(command).await
            }
            90..=99 => self.idle().await,
            _ => self.command("NOOP").await,
        }
    }

    /// A UID STORE of one to two flags on a UID set, in any of the three modes, silent or not.
    fn uid_store(&mut self) -> String {
        let set = self.uid_set();
        let mode = *self.rng.pick(&["+FLAGS", "+FLAGS", "-FLAGS", "FLAGS"]);
        let silent = if self.rng.below(4) == 0 { ".SILENT" } else { "" };
        let mut flags = vec![*self.rng.pick(&STORE_FLAGS)];
        if self.rng.below(2) == 0 {
            let second = *self.rng.pick(&STORE_FLAGS);
            if second != flags[0] {
                flags.push(second);
            }
        }
        // Deleting the whole mailbox at once would leave the others nothing to work on.
        if set == "1:*" && mode != "-FLAGS" {
            flags.retain(|f| *f != "\\Deleted");
            if flags.is_empty() {
                flags.push("$Baz");
            }
        }
        format!("UID STORE {set} {mode}{silent} ({})", flags.join(" "))
    }

    /// A UID set: mostly one UID the session knows, sometimes a range of them or `1:*`.
    fn uid_set(&mut self) -> String {
        let known = self.checker.known_uids();
        if known.is_empty() || self.rng.below(10) == 0 {
            return "1:*".into();
        }
        let a = *self.rng.pick(&known);
        if self.rng.below(6) == 0 {
            let b = *self.rng.pick(&known);
            return format!("{}:{}", a.min(b), a.max(b));
        }
        a.to_string()
    }

    /// APPEND of a small message to the selected INBOX, with a flag sometimes, as a LITERAL+
    /// or as a synchronising literal.
    async fn append(&mut self) -> Result<(), String> {
        self.appends += 1;
        let (id, n) = (self.id, self.appends);
        let body = format!(
            "From: session{id}@example.com\r\nTo: {ALICE}\r\nSubject: s{id}-{n}\r\nMessage-ID: <s{id}-{n}@example.com>\r\n\
             \r\nAppended by session {id}.\r\n"
        );
        let flags = if self.rng.below(10) < 4 { format!(" ({})", self.rng.pick(&APPEND_FLAGS)) } else { String::new() };
        let plus = self.rng.below(2) == 0;
        let head = format!("APPEND INBOX{flags} {{{}{}}}", body.len(), if plus { "+" } else { "" });
        let tag = self.conn.next_tag();
        self.checker.start(&head);
        if plus {
            self.conn.send(format!("{tag} {head}\r\n{body}\r\n").as_bytes()).await?;
        } else {
            self.conn.send(format!("{tag} {head}\r\n").as_bytes()).await?;
            if !self.continuation(&tag).await? {
                return Ok(());
            }
            self.conn.send(format!("{body}\r\n").as_bytes()).await?;
        }
        self.finish(&tag).await
    }

    /// IDLE for 100 to 600 ms, then DONE.
    async fn idle(&mut self) -> Result<(), String> {
        let tag = self.conn.next_tag();
        self.checker.start("IDLE");
        self.conn.send(format!("{tag} IDLE\r\n").as_bytes()).await?;
        if !self.continuation(&tag).await? {
            return Ok(());
        }
        let until = Instant::now() + Duration::from_millis(100 + self.rng.below(500) as u64);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.conn.read(left).await? {
                Some(response) => self.feed(&response),
                None => break,
            }
        }
        self.conn.send(b"DONE\r\n").await?;
        self.finish(&tag).await
    }

    /// Sends `command` under a new tag and checks every response up to the tagged one.
    async fn command(&mut self, command: &str) -> Result<(), String> {
        let tag = self.conn.next_tag();
        self.checker.start(command);
        self.conn.send(format!("{tag} {command}\r\n").as_bytes()).await?;
        self.finish(&tag).await
    }

    /// Checks responses up to the tagged one of `tag`.
    async fn finish(&mut self, tag: &str) -> Result<(), String> {
        let prefix = format!("{tag} ");
        loop {
            let response = self.conn.read_required().await?;
            if let Some(status) = response.strip_prefix(prefix.as_bytes()) {
                self.checker.tagged(&String::from_utf8_lossy(status));
                return Ok(());
            }
            self.feed(&response);
        }
    }

    /// Checks responses up to a continuation request: true then, false when the tagged
    /// response of `tag` came instead (the command was refused).
    async fn continuation(&mut self, tag: &str) -> Result<bool, String> {
        let prefix = format!("{tag} ");
        loop {
            let response = self.conn.read_required().await?;
            if response.starts_with(b"+") {
                return Ok(true);
            }
            if let Some(status) = response.strip_prefix(prefix.as_bytes()) {
                self.checker.tagged(&String::from_utf8_lossy(status));
                return Ok(false);
            }
            self.feed(&response);
        }
    }

    /// An untagged response goes to the checker; anything else here is out of place.
    fn feed(&mut self, response: &[u8]) {
        if response.starts_with(b"* ") {
            self.checker.untagged(response);
        } else {
            self.checker.violation("unexpected-response", format!("neither untagged nor ours: {}", shown(response)));
        }
    }
}

/// A connection with the bytes received but not read yet.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    tag: u32,
}

impl Conn {
    fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("c{}", self.tag)
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream.write_all(bytes).await.map_err(|e| format!("send failed: {e}"))
    }

    /// The next response without its final CRLF, or None when none was complete within `wait`.
    async fn read(&mut self, wait: Duration) -> Result<Option<Vec<u8>>, String> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(n) = response_len(&self.buf)? {
                let mut response: Vec<u8> = self.buf.drain(..n).collect();
                response.truncate(n - 2);
                return Ok(Some(response));
            }
            let mut chunk = [0u8; 16 * 1024];
            // A read cancelled by the timeout loses nothing: tokio's TcpStream::read is
            // cancellation safe, and partial responses stay in the buffer.
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Ok(None),
                Ok(Err(e)) => return Err(format!("read failed: {e}")),
                Ok(Ok(0)) => return Err(format!("the server closed the connection (pending: {})", shown(&self.buf))),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next response, which must come within [`READ_TIMEOUT`].
    async fn read_required(&mut self) -> Result<Vec<u8>, String> {
        self.read(READ_TIMEOUT)
            .await?
            .ok_or_else(|| format!("no response within {READ_TIMEOUT:?} (pending: {})", shown(&self.buf)))
    }
}

/// The length of the first complete response in `buf`: its lines and the literals they
/// announce, up to and with the final CRLF; None while more bytes are needed.
fn response_len(buf: &[u8]) -> Result<Option<usize>, String> {
    let mut from = 0;
    loop {
        let Some(end) = buf[from..].iter().position(|b| *b == b'\n').map(|p| p + from) else { return Ok(None) };
        if end == 0 || buf[end - 1] != b'\r' {
            return Err(format!("a line without CRLF: {}", shown(&buf[..=end])));
        }
        match literal_size(&buf[from..end - 1]) {
            Some(n) if buf.len() < end + 1 + n => return Ok(None),
            Some(n) => from = end + 1 + n,
            None => return Ok(Some(end + 1)),
        }
    }
}

/// The size `n` of a line that ends in `{n}` (or `{n+}`), which announces a literal.
fn literal_size(line: &[u8]) -> Option<usize> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|b| *b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A response shortened and escaped for a report.
fn shown(response: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(response);
    let mut out: String = text.chars().take(MAX).collect::<String>().escape_debug().to_string();
    if text.chars().count() > MAX {
        out.push_str("...");
    }
    out
}

/// What a command is, for the rules that depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Select,
    Fetch,
    UidFetch,
    Store,
    UidStore,
    Search,
    Append,
    Logout,
    Other,
}

impl Command {
    fn of(text: &str) -> Command {
        let upper = text.to_ascii_uppercase();
        let mut words = upper.split(' ');
        match (words.next().unwrap_or(""), words.next().unwrap_or("")) {
            ("UID", "FETCH") => Command::UidFetch,
            ("UID", "STORE") => Command::UidStore,
            ("FETCH", _) => Command::Fetch,
            ("STORE", _) => Command::Store,
            ("SEARCH", _) => Command::Search,
            ("APPEND", _) => Command::Append,
            ("LOGOUT", _) => Command::Logout,
            ("SELECT" | "EXAMINE", _) => Command::Select,
            _ => Command::Other,
        }
    }

    /// RFC 9051 section 7.5.1: no EXPUNGE while a FETCH, STORE or SEARCH (not their UID
    /// variants) is answered, since it would renumber the messages the answer names.
    fn forbids_expunge(self) -> bool {
        matches!(self, Command::Fetch | Command::Store | Command::Search)
    }

    /// RFC 2180 sections 4.1 and 4.2: a FETCH or STORE of a message another session expunged
    /// may be refused with NO.
    fn may_be_refused(self) -> bool {
        matches!(self, Command::Fetch | Command::UidFetch | Command::Store | Command::UidStore)
    }
}

/// One breach of the rules: its kind (for counting) and what happened.
#[derive(Debug, Clone)]
struct Violation {
    kind: &'static str,
    text: String,
}

/// A message number of the session's view: its UID once a FETCH told it, and the highest UID
/// the session had seen when EXISTS announced it (its UID must be higher).
#[derive(Debug, Clone, Copy)]
struct Slot {
    uid: Option<u32>,
    above: u32,
}

/// A session's model of the selected mailbox, built only from what the server told it, and the
/// rules every response is held to (see the file's documentation).
#[derive(Debug)]
struct Checker {
    name: String,
    command: Command,
    command_text: String,
    /// Message numbers 1..=EXISTS.
    slots: Vec<Slot>,
    /// The flags of the last `* FLAGS` response, lowercased (flags are case-insensitive).
    announced: HashSet<String>,
    /// Per UID, the highest MODSEQ reported and the flags reported with it.
    modseqs: HashMap<u32, (u64, Option<Vec<String>>)>,
    expunged: HashSet<u32>,
    /// The UIDs FETCH FLAGS reported with `\Recent`, and those it reported without: a message
    /// is recent for one session only (RFC 3501 section 2.3.2), and stays what it was within it.
    recent: HashSet<u32>,
    not_recent: HashSet<u32>,
    /// The highest UID any FETCH has reported.
    max_uid: u32,
    /// [`Checker::max_uid`] when the current command was sent.
    max_uid_before: u32,
    responses: usize,
    violations: Vec<Violation>,
    accepted_no: Vec<String>,
}

impl Checker {
    fn new(name: String) -> Checker {
        Checker {
            name,
            command: Command::Other,
            command_text: String::new(),
            slots: Vec::new(),
            announced: HashSet::new(),
            modseqs: HashMap::new(),
            expunged: HashSet::new(),
            recent: HashSet::new(),
            not_recent: HashSet::new(),
            max_uid: 0,
            max_uid_before: 0,
            responses: 0,
            violations: Vec::new(),
            accepted_no: Vec::new(),
        }
    }

    fn exists(&self) -> usize {
        self.slots.len()
    }

    fn known_uids(&self) -> Vec<u32> {
        self.slots.iter().filter_map(|s| s.uid).collect()
    }

    fn violation(&mut self, kind: &'static str, detail: String) {
        let text = format!("[{kind}] {} during {:?}: {detail}", self.name, self.command_text);
        self.violations.push(Violation { kind, text });
    }

    /// A command is sent; what follows is its answer.
    fn start(&mut self, text: &str) {
        self.command = Command::of(text);
        self.command_text = text.to_string();
        self.max_uid_before = self.max_uid;
        if self.command == Command::Select {
            // A new SELECT starts a new view, and announces its flags afresh.
            self.slots.clear();
            self.announced.clear();
        }
    }

    /// The tagged status (without the tag) ends the command.
    fn tagged(&mut self, status: &str) {
        let word = status.split(' ').next().unwrap_or("").to_ascii_uppercase();
        match word.as_str() {
            "OK" => {
                if self.command == Command::Append
                    && let Some(uid) = appenduid(status)
                {
                    if uid <= self.max_uid_before {
                        self.violation(
                            "appenduid-not-above-seen",
                            format!("APPENDUID {uid}, but UID {} was seen before the APPEND", self.max_uid_before),
                        );
                    }
                    if self.expunged.contains(&uid) {
                        self.violation("appenduid-not-above-seen", format!("APPENDUID {uid} was expunged before"));
                    }
                }
            }
            "NO" if self.command.may_be_refused() => {
                let note = format!("{}: {:?} got {status:?}", self.name, self.command_text);
                self.accepted_no.push(note);
            }
            _ => self.violation("tagged-not-ok", format!("tagged {status:?}")),
        }
    }

    /// Checks an untagged response (`* ...`, literals included, without the final CRLF) and
    /// applies it to the model.
    fn untagged(&mut self, response: &[u8]) {
        self.responses += 1;
        match classify(response) {
            Err(e) => self.violation("malformed", format!("{e}: {}", shown(response))),
            Ok(Untagged::Exists(n)) => self.exists_response(n as usize),
            Ok(Untagged::Expunge(n)) => self.expunge_response(n as usize, response),
            Ok(Untagged::Fetch(n, items)) => match fetch_data(&items) {
                Ok(data) => self.fetch_response(n as usize, data, response),
                Err(e) => self.violation("malformed", format!("{e}: {}", shown(response))),
            },
            Ok(Untagged::Flags(flags)) => self.announced = flags.iter().map(|f| f.to_ascii_lowercase()).collect(),
            Ok(Untagged::Search(numbers)) => {
                let exists = self.exists();
                if let Some(n) = numbers.iter().find(|n| **n as usize > exists || **n == 0) {
                    self.violation("search-beyond-exists", format!("{n} with EXISTS {exists}: {}", shown(response)));
                }
            }
            Ok(Untagged::Vanished) => {
                self.violation("unexpected-response", format!("VANISHED without QRESYNC: {}", shown(response)));
            }
            Ok(Untagged::Bad) => self.violation("unexpected-response", format!("untagged BAD: {}", shown(response))),
            Ok(Untagged::Bye) if self.command != Command::Logout => {
                self.violation("unexpected-response", format!("BYE before LOGOUT: {}", shown(response)));
            }
            Ok(Untagged::Bye | Untagged::Other) => {}
        }
    }

    fn exists_response(&mut self, n: usize) {
        let have = self.exists();
        if n < have {
            self.violation("exists-decreased", format!("EXISTS {n} after EXISTS {have} without an EXPUNGE between"));
            // The server's count wins, so that one slip is not reported again at every response.
            self.slots.truncate(n);
            return;
        }
        // The messages of SELECT are not new: only later ones must be above what was seen.
        let above = if self.command == Command::Select { 0 } else { self.max_uid };
        self.slots.resize(n, Slot { uid: None, above });
    }

    fn expunge_response(&mut self, n: usize, response: &[u8]) {
        if self.command.forbids_expunge() {
            self.violation(
                "expunge-during-fetch-store-search",
                format!("renumbers what the answer names: {}", shown(response)),
            );
        }
        if n == 0 || n > self.exists() {
            self.violation("expunge-out-of-range", format!("EXPUNGE {n} with EXISTS {}", self.exists()));
            return;
        }
        if let Some(uid) = self.slots.remove(n - 1).uid {
            self.expunged.insert(uid);
            self.modseqs.remove(&uid);
        }
    }

    fn fetch_response(&mut self, n: usize, data: FetchData, response: &[u8]) {
        let shown = shown(response);
        if let Some(flags) = &data.flags {
            for flag in flags {
                let lower = flag.to_ascii_lowercase();
                if !SYSTEM_FLAGS.contains(&lower.as_str()) && !self.announced.contains(&lower) {
                    let mut announced: Vec<&String> = self.announced.iter().collect();
                    announced.sort();
                    self.violation(
                        "unannounced-flag",
                        format!("{flag} not in the last FLAGS response {announced:?}: {shown}"),
                    );
                }
            }
            if data.modseq.is_none() {
                self.violation("fetch-without-modseq", format!("FLAGS without MODSEQ under CONDSTORE: {shown}"));
            }
        }
        let in_range = n >= 1 && n <= self.exists();
        if !in_range {
            self.violation("fetch-beyond-exists", format!("message {n} with EXISTS {}: {shown}", self.exists()));
        }
        let Some(uid) = data.uid else {
            self.violation("fetch-without-uid", format!("no UID under CONDSTORE: {shown}"));
            return;
        };
        if self.expunged.contains(&uid) {
            self.violation("expunged-uid-returned", format!("UID {uid} was expunged before: {shown}"));
            return;
        }
        if in_range {
            self.place(n, uid, &shown);
        }
        self.max_uid = self.max_uid.max(uid);
        if let Some(flags) = &data.flags {
            let recent = flags.iter().any(|f| f.eq_ignore_ascii_case("\\Recent"));
            let (now, before) =
                if recent { (&mut self.recent, &self.not_recent) } else { (&mut self.not_recent, &self.recent) };
            now.insert(uid);
            if before.contains(&uid) {
                let was = if recent { "not recent" } else { "recent" };
                self.violation("recent-changed", format!("UID {uid} was {was} earlier in this session: {shown}"));
            }
        }
        if let Some(modseq) = data.modseq {
            // \Recent belongs to the session, not to the message's metadata that MODSEQ versions.
            let flags = data.flags.map(|f| {
                let mut f: Vec<String> = f.iter().map(|x| x.to_ascii_lowercase()).filter(|x| x != "\\recent").collect();
                f.sort();
                f
            });
            match self.modseqs.get(&uid).cloned() {
                Some((before, _)) if modseq < before => {
                    self.violation("modseq-backwards", format!("UID {uid} MODSEQ {modseq} after {before}: {shown}"));
                }
                // One MODSEQ is one version of the message's flags.
                Some((before, Some(before_flags))) if modseq == before => {
                    if flags.is_some_and(|flags| flags != before_flags) {
                        self.violation(
                            "modseq-flags-differ",
                            format!("UID {uid} at MODSEQ {modseq} had flags {before_flags:?}: {shown}"),
                        );
                    }
                }
                _ => {
                    self.modseqs.insert(uid, (modseq, flags));
                }
            }
        }
    }

    /// Puts `uid` at message number `n`, checking it against what the view already knows.
    fn place(&mut self, n: usize, uid: u32, shown: &str) {
        let slot = self.slots[n - 1];
        match slot.uid {
            Some(known) if known == uid => return,
            Some(known) => {
                self.violation("seq-uid-changed", format!("message {n} was UID {known} and no EXPUNGE came: {shown}"));
                return;
            }
            None => {}
        }
        if let Some(other) = self.slots.iter().position(|s| s.uid == Some(uid)) {
            self.violation("uid-at-two-seqs", format!("UID {uid} is message {} already: {shown}", other + 1));
            return;
        }
        let lower = self.slots[..n - 1].iter().rev().find_map(|s| s.uid);
        let higher = self.slots[n..].iter().find_map(|s| s.uid);
        if lower.is_some_and(|l| l >= uid) || higher.is_some_and(|h| h <= uid) {
            self.violation(
                "uid-order",
                format!("UID {uid} at message {n} between UIDs {lower:?} and {higher:?}: {shown}"),
            );
        } else if uid <= slot.above {
            self.violation(
                "new-uid-not-above-seen",
                format!("message {n} came after UID {} was seen, with UID {uid}: {shown}", slot.above),
            );
        }
        self.slots[n - 1].uid = Some(uid);
    }
}

/// The UID of a tagged `OK [APPENDUID validity uid]`.
fn appenduid(status: &str) -> Option<u32> {
    let code = status.to_ascii_uppercase().split("[APPENDUID ").nth(1)?.to_string();
    code.split([' ', ']']).nth(1)?.parse().ok()
}

/// An untagged response, as far as the checker cares.
#[derive(Debug)]
enum Untagged {
    Exists(u32),
    Expunge(u32),
    Fetch(u32, Vec<Item>),
    Flags(Vec<String>),
    Search(Vec<u32>),
    Vanished,
    Bad,
    Bye,
    Other,
}

/// Classifies `* ...` (without the final CRLF). Status responses (`* OK [...] text`) are not
/// tokenised: their text is free.
fn classify(response: &[u8]) -> Result<Untagged, String> {
    let rest = response.strip_prefix(b"* ").ok_or("not untagged")?;
    let (first, rest) = split_word(rest);
    let first = String::from_utf8_lossy(first).to_ascii_uppercase();
    if let Ok(n) = first.parse::<u32>() {
        let (keyword, rest) = split_word(rest);
        return match String::from_utf8_lossy(keyword).to_ascii_uppercase().as_str() {
            "EXISTS" => Ok(Untagged::Exists(n)),
            "EXPUNGE" => Ok(Untagged::Expunge(n)),
            "RECENT" => Ok(Untagged::Other),
            "FETCH" => match parse_items(rest)?.as_slice() {
                [Item::List(items)] => Ok(Untagged::Fetch(n, items.clone())),
                _ => Err("FETCH without one parenthesised list".into()),
            },
            other => Err(format!("unknown numbered response {other:?}")),
        };
    }
    Ok(match first.as_str() {
        "FLAGS" => match parse_items(rest)?.as_slice() {
            [Item::List(flags)] => Untagged::Flags(flags.iter().map(atom).collect::<Result<_, _>>()?),
            _ => return Err("FLAGS without one parenthesised list".into()),
        },
        "SEARCH" => Untagged::Search(
            parse_items(rest)?
                .iter()
                .filter_map(|i| match i {
                    Item::Atom(a) => Some(a.parse().map_err(|_| format!("SEARCH names {a:?}"))),
                    _ => None,
                })
                .collect::<Result<_, _>>()?,
        ),
        "VANISHED" => Untagged::Vanished,
        "BAD" => Untagged::Bad,
        "BYE" => Untagged::Bye,
        _ => Untagged::Other,
    })
}

/// The bytes up to the first space, and what follows it.
fn split_word(input: &[u8]) -> (&[u8], &[u8]) {
    match input.iter().position(|b| *b == b' ') {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &[]),
    }
}

/// The items of a FETCH response the checker reads.
#[derive(Debug)]
struct FetchData {
    uid: Option<u32>,
    flags: Option<Vec<String>>,
    modseq: Option<u64>,
}

/// Reads UID, FLAGS and MODSEQ from the name-value pairs of a FETCH response; other items
/// (BODY[HEADER] and its literal, say) are skipped.
fn fetch_data(items: &[Item]) -> Result<FetchData, String> {
    if !items.len().is_multiple_of(2) {
        return Err("FETCH items are not name-value pairs".into());
    }
    let mut data = FetchData { uid: None, flags: None, modseq: None };
    for pair in items.chunks(2) {
        let name = atom(&pair[0])?.to_ascii_uppercase();
        match (name.as_str(), &pair[1]) {
            ("UID", Item::Atom(n)) => data.uid = Some(n.parse().map_err(|_| format!("UID {n:?}"))?),
            ("FLAGS", Item::List(flags)) => data.flags = Some(flags.iter().map(atom).collect::<Result<_, _>>()?),
            ("MODSEQ", Item::List(list)) => match list.as_slice() {
                [Item::Atom(n)] => data.modseq = Some(n.parse().map_err(|_| format!("MODSEQ {n:?}"))?),
                _ => return Err("MODSEQ is not one number in parentheses".into()),
            },
            ("UID" | "FLAGS" | "MODSEQ", other) => return Err(format!("{name} with {other:?}")),
            _ => {}
        }
    }
    Ok(data)
}

fn atom(item: &Item) -> Result<String, String> {
    match item {
        Item::Atom(a) => Ok(a.clone()),
        other => Err(format!("expected an atom, got {other:?}")),
    }
}

/// A token of a response: an atom (numbers, flags, NIL, `BODY[...]<...>`), a string (quoted or
/// literal), or a parenthesised list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Atom(String),
    Bytes(Vec<u8>),
    List(Vec<Item>),
}

/// Tokenises `input` into items separated by spaces.
fn parse_items(input: &[u8]) -> Result<Vec<Item>, String> {
    let mut parser = Parser { input, pos: 0 };
    parser.items(false)
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn items(&mut self, in_list: bool) -> Result<Vec<Item>, String> {
        let mut out = Vec::new();
        loop {
            while self.input.get(self.pos) == Some(&b' ') {
                self.pos += 1;
            }
            match self.input.get(self.pos) {
                None if in_list => return Err("an unclosed list".into()),
                None => return Ok(out),
                Some(b')') if in_list => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b')') => return Err("a ')' without '('".into()),
                Some(b'(') => {
                    self.pos += 1;
                    out.push(Item::List(self.items(true)?));
                }
                Some(b'"') => out.push(Item::Bytes(self.quoted()?)),
                Some(b'{') => out.push(Item::Bytes(self.literal()?)),
                Some(_) => out.push(Item::Atom(self.atom()?)),
            }
        }
    }

    fn quoted(&mut self) -> Result<Vec<u8>, String> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.input.get(self.pos) {
                None => return Err("an unclosed quoted string".into()),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    out.push(*self.input.get(self.pos + 1).ok_or("an escape at the end")?);
                    self.pos += 2;
                }
                Some(b) => {
                    out.push(*b);
                    self.pos += 1;
                }
            }
        }
    }

    fn literal(&mut self) -> Result<Vec<u8>, String> {
        let close = self.input[self.pos..].iter().position(|b| *b == b'}').ok_or("an unclosed literal size")?;
        let line = &self.input[self.pos..=self.pos + close];
        let n = literal_size(line).ok_or("a bad literal size")?;
        let start = self.pos + close + 1;
        if self.input.get(start..start + 2) != Some(b"\r\n") {
            return Err("no CRLF after a literal size".into());
        }
        let bytes = self.input.get(start + 2..start + 2 + n).ok_or("a literal cut short")?;
        self.pos = start + 2 + n;
        Ok(bytes.to_vec())
    }

    /// An atom; inside brackets (`BODY[HEADER.FIELDS (SUBJECT)]`) spaces and parentheses are
    /// part of it.
    fn atom(&mut self) -> Result<String, String> {
        let start = self.pos;
        let mut depth = 0usize;
        while let Some(&b) = self.input.get(self.pos) {
            match b {
                b'[' => depth += 1,
                b']' => depth = depth.saturating_sub(1),
                b' ' | b'(' | b')' | b'\r' | b'\n' if depth == 0 => break,
                _ => {}
            }
            self.pos += 1;
        }
        if self.pos == start {
            return Err(format!("an empty atom at {start}"));
        }
        Ok(String::from_utf8_lossy(&self.input[start..self.pos]).into_owned())
    }
}

/// xorshift64* seeded through splitmix64: the test crate depends on no RNG crate, and a
/// reproducible sequence per seed is all the test needs.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 spreads the sessions' neighbouring seeds apart; xorshift needs a non-zero
        // state.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`; `n` is not zero.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}
