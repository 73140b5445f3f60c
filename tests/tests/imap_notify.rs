//! NOTIFY (RFC 5465) between real sessions on one server: what one session does reaches the
//! other as it happens, without a command or IDLE from it. A file of its own so that it builds
//! and runs apart from the long real-client tests of `imap.rs`.

use std::time::Duration;

use tern_imap::config::Limits;
use tern_tests::imap::ImapTestServer;

const ALICE: &str = "alice@example.com";

/// NOTIFY (RFC 5465) between two real sessions: the first asks to hear of new and expunged
/// messages in every mailbox, of mailbox names and of subscriptions, gets the starting STATUS
/// of each, and is then told of the second session's changes as they happen, between commands
/// and without IDLE; NOTIFY NONE stops it, and events Tern does not send are NO [BADEVENT].
#[tokio::test]
async fn notify_tells_of_other_mailboxes_between_commands() {
    let server = ImapTestServer::start(Limits::default(), false).await;
    let mut watcher = server.login(ALICE).await;
    watcher.ok("SELECT INBOX").await;
    let bad = watcher.command("NOTIFY SET (personal (MessageNew MessageExpunge AnnotationChange))").await;
    assert!(bad.status.starts_with("NO [BADEVENT ("), "{}", bad.status);
    watcher.expect("NOTIFY SET (personal (MessageNew))", "BAD").await;
    let set = watcher
        .ok("NOTIFY SET STATUS (selected (MessageNew MessageExpunge)) (personal (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange))")
        .await;
    let archive = set.starting_with("STATUS \"Archive\"");
    assert_eq!(archive.len(), 1, "a starting STATUS per mailbox: {:?}", set.lines());
    assert!(archive[0].contains("MESSAGES 0") && archive[0].contains("UIDVALIDITY"), "{archive:?}");
    assert!(set.starting_with("STATUS \"INBOX\"").is_empty(), "not of the selected mailbox: {:?}", set.lines());

    let mut other = server.login(ALICE).await;
    let wait = Duration::from_secs(5);
    let raw = tern_tests::message("notified", "x");
    other.ok(&format!("APPEND Archive {{{}+}}\r\n{}", raw.len(), String::from_utf8_lossy(&raw))).await;
    let told = watcher.wait_for(wait, |l| l.starts_with("* STATUS \"Archive\"")).await.unwrap();
    let status = told.last().unwrap();
    assert!(status.contains("MESSAGES 1") && status.contains("UNSEEN 1"), "{status}");
    other.ok("CREATE Lists").await;
    watcher.wait_for(wait, |l| l == "* LIST () \"/\" \"Lists\"").await.unwrap();
    other.ok("RENAME Lists Groups").await;
    watcher.wait_for(wait, |l| l == "* LIST () \"/\" \"Groups\" (\"OLDNAME\" (\"Lists\"))").await.unwrap();
    // New mailboxes are subscribed; a change of that is told either way.
    other.ok("UNSUBSCRIBE Groups").await;
    watcher.wait_for(wait, |l| l == "* LIST () \"/\" \"Groups\"").await.unwrap();
    other.ok("SUBSCRIBE Groups").await;
    watcher.wait_for(wait, |l| l == "* LIST (\\Subscribed) \"/\" \"Groups\"").await.unwrap();
    other.ok("DELETE Groups").await;
    watcher.wait_for(wait, |l| l == "* LIST (\\NonExistent) \"/\" \"Groups\"").await.unwrap();
    // The selected mailbox: a new message is EXISTS, at once.
    server.deliver(ALICE, &tern_tests::message("to inbox", "y")).await;
    watcher.wait_for(wait, |l| l.ends_with(" EXISTS")).await.unwrap();

    watcher.ok("NOTIFY NONE").await;
    other.ok(&format!("APPEND Archive {{{}+}}\r\n{}", raw.len(), String::from_utf8_lossy(&raw))).await;
    let quiet = watcher.wait_for(Duration::from_millis(500), |l| l.starts_with("* STATUS")).await;
    assert!(quiet.is_err(), "NOTIFY NONE stops the notifications: {quiet:?}");
}
