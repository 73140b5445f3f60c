//! The stored format stays readable: records written by an earlier version, committed as
//! encoded fixtures under `tests/fixtures/records/`, still decode to the same values, and the
//! current types encode those values to the same bytes.
//!
//! Every field of every fixture is set to a value other than its default, so a field that
//! changes its number or its type decodes to something else (or is dropped as unknown) and this
//! test fails. The fixtures are never rewritten: when a record gains a field, add a new fixture
//! next to the old ones instead, because the old bytes are what existing databases and logs
//! hold. `TERN_WRITE_RECORD_FIXTURES=1 cargo test -p tern-mailbox --test records_compat --
//! --ignored` writes the fixtures that do not exist yet.

use std::path::PathBuf;

use prost::Message;
use tern_mailbox::records::{
    AccountRecord, AccountSnapshot, AddressRecord, BodyPartRecord, ChangeRecord, DomainRecord, EnvelopeRecord,
    EventKind, EventMessage, EventRecord, Expunged, FolderMessage, FolderRecord, FolderSnapshot, LogEntry,
    MessageRecord, MetadataEntry, ParamRecord, ParsedRecord, Pop3DeletePolicy, SieveRecord, SieveScriptRecord,
    SpamScan, SpamSettingsRecord, SpecialUse,
};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/records")
}

fn domain() -> DomainRecord {
    DomainRecord {
        name: "example.org".into(),
        catch_all: "postmaster@example.org".into(),
        default_quota_bytes: 1 << 30,
        dkim_selector: "tern1".into(),
        dkim_private_key: "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n".into(),
        // Added later: the `*_spam.pb` fixtures hold it.
        spam: None,
    }
}

fn account() -> AccountRecord {
    AccountRecord {
        id: 7,
        address: "alice@example.org".into(),
        display_name: "Alice Liddell".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        quota_bytes: 50_000_000,
        suspended: true,
        aliases: vec!["a@example.org".into(), "liddell@example.org".into()],
        pop3_delete: Pop3DeletePolicy::Keep as i32,
        // Added after the first fixtures, as `folder.metadata` was: the `*_metadata.pb` fixtures hold them.
        metadata: vec![],
        spam: None,
        // Added later still: `account_sieve.pb` holds it.
        sieve: None,
    }
}

fn folder(id: u64, name: &str, special_use: SpecialUse) -> FolderRecord {
    FolderRecord {
        id,
        account_id: 7,
        name: name.into(),
        uidvalidity: 1_700_000_000 + id as u32,
        uidnext: 43,
        highest_modseq: 120,
        special_use: special_use as i32,
        subscribed: true,
        messages: 40,
        unseen: 3,
        deleted: 2,
        size: 1_234_567,
        recent_uid: 41,
        metadata: vec![],
    }
}

/// IMAP METADATA annotations, on an account (the server's) and on a folder.
fn with_metadata() -> (AccountRecord, FolderRecord) {
    let entries = vec![
        MetadataEntry { name: "/private/comment".into(), value: b"mine".to_vec() },
        MetadataEntry { name: "/shared/vendor/tern/x".into(), value: vec![0, 1, 2] },
    ];
    let account = AccountRecord { metadata: entries.clone(), ..account() };
    let folder = FolderRecord { metadata: entries, ..folder(5, "Lists", SpecialUse::None) };
    (account, folder)
}

/// Spam filtering settings, on a domain and on an account.
fn with_spam() -> (DomainRecord, AccountRecord) {
    let spam = SpamSettingsRecord {
        scan: SpamScan::Off as i32,
        junk_folder: "Spam".into(),
        allow_senders: vec!["@partner.example".into(), "bob@example.net".into()],
        block_senders: vec!["eve@example.com".into()],
    };
    let domain = DomainRecord { spam: Some(spam.clone()), ..domain() };
    let account = AccountRecord { spam: Some(SpamSettingsRecord { scan: SpamScan::On as i32, ..spam }), ..account() };
    (domain, account)
}

/// Sieve scripts on an account, one of them active.
fn with_sieve() -> AccountRecord {
    let script = |name: &str, text: &str| SieveScriptRecord { name: name.into(), text: text.into() };
    let sieve = SieveRecord {
        scripts: vec![
            script("Ferien", "require \"vacation\";\r\nvacation \"Bin weg.\";\r\n"),
            script(
                "junk",
                "require \"fileinto\";\nif header :contains \"subject\" \"[SPAM]\" { fileinto \"Junk\"; }\n",
            ),
        ],
        active: "junk".into(),
    };
    AccountRecord { sieve: Some(sieve), ..account() }
}

fn message(uid: u32) -> MessageRecord {
    MessageRecord {
        uid,
        flags: vec!["\\Seen".into(), "$Forwarded".into()],
        modseq: 100 + u64::from(uid),
        size: 4096,
        internal_date: 1_733_000_000,
        blob_id: "b3f1c0ffee".into(),
        email_id: 900 + u64::from(uid),
        // Added after the first fixtures: they hold the default, and `message_save_date.pb`
        // the field.
        save_date: 0,
    }
}

/// A message with the fields added since the first fixtures.
fn message_save_date() -> MessageRecord {
    MessageRecord { save_date: 1_733_000_500, ..message(13) }
}

fn address(name: &str, mailbox: &str) -> AddressRecord {
    AddressRecord {
        name: name.into(),
        adl: "@relay.example".into(),
        mailbox: mailbox.into(),
        host: "example.org".into(),
    }
}

fn envelope(subject: &str) -> EnvelopeRecord {
    EnvelopeRecord {
        date: "Thu, 3 Dec 2026 10:00:00 +0000".into(),
        subject: subject.into(),
        from: vec![address("Alice", "alice")],
        sender: vec![address("Secretary", "sec")],
        reply_to: vec![address("List", "list")],
        to: vec![address("Bob", "bob"), address("Carol", "carol")],
        cc: vec![address("Dave", "dave")],
        bcc: vec![address("Eve", "eve")],
        in_reply_to: "<parent@example.org>".into(),
        message_id: "<child@example.org>".into(),
        references: "<root@example.org> <parent@example.org>".into(),
    }
}

fn param(name: &str, value: &str) -> ParamRecord {
    ParamRecord { name: name.into(), value: value.into() }
}

/// A leaf part with every field set; `parts`, `message_envelope` and `message_body` are the
/// caller's.
fn leaf(media_type: &str, media_subtype: &str, offset: u64) -> BodyPartRecord {
    BodyPartRecord {
        media_type: media_type.into(),
        media_subtype: media_subtype.into(),
        params: vec![param("charset", "utf-8"), param("format", "flowed")],
        content_id: "<part@example.org>".into(),
        description: "a part".into(),
        encoding: "quoted-printable".into(),
        size: 321,
        lines: 12,
        md5: "Q2hlY2sgSW50ZWdyaXR5IQ==".into(),
        disposition: "inline".into(),
        disposition_params: vec![param("filename", "note.txt")],
        language: vec!["en".into(), "fr".into()],
        location: "https://example.org/part".into(),
        header_offset: offset,
        body_offset: offset + 80,
        end_offset: offset + 401,
        parts: vec![],
        message_envelope: None,
        message_body: None,
    }
}

fn parsed() -> ParsedRecord {
    // multipart/mixed holding a text part and a message/rfc822 that is itself multipart, so
    // both kinds of nesting (parts and message_body) are in the fixture.
    let inner = BodyPartRecord {
        parts: vec![leaf("text", "plain", 900), leaf("text", "html", 1400)],
        ..leaf("multipart", "alternative", 800)
    };
    let attached = BodyPartRecord {
        message_envelope: Some(envelope("Fwd: the attached one")),
        message_body: Some(Box::new(inner)),
        ..leaf("message", "rfc822", 600)
    };
    let body = BodyPartRecord { parts: vec![leaf("text", "plain", 200), attached], ..leaf("multipart", "mixed", 0) };
    ParsedRecord { envelope: Some(envelope("Re: the fixture")), body: Some(body) }
}

fn change() -> ChangeRecord {
    ChangeRecord { kind: EventKind::Flags as i32, uids: vec![3, 5, 8] }
}

fn summary(uid: u32) -> EventMessage {
    EventMessage { uid, flags: vec!["\\Flagged".into()], modseq: 130 + u64::from(uid), size: 2048 }
}

fn event(kind: EventKind, folder_id: u64, folder_name: &str) -> EventRecord {
    EventRecord {
        account_id: 7,
        folder_id,
        kind: kind as i32,
        modseq: 131,
        messages: vec![summary(1), summary(2)],
        folder_name: folder_name.into(),
    }
}

fn log_entry() -> LogEntry {
    LogEntry {
        folders: vec![folder(1, "INBOX", SpecialUse::None), folder(4, "Archive/2026", SpecialUse::Archive)],
        deleted_folders: vec![9, 10],
        messages: vec![
            FolderMessage { folder_id: 1, message: Some(message(41)) },
            FolderMessage { folder_id: 4, message: Some(message(2)) },
        ],
        expunged: vec![Expunged { folder_id: 1, uid: 17, modseq: 125 }],
        events: vec![
            event(EventKind::Append, 1, "INBOX"),
            event(EventKind::Flags, 4, "Archive/2026"),
            event(EventKind::Expunge, 1, "INBOX"),
            event(EventKind::FolderCreated, 4, "Archive/2026"),
            event(EventKind::FolderDeleted, 9, "Old"),
            event(EventKind::FolderRenamed, 4, "Archive/2026"),
        ],
        subscriptions_added: vec!["Old".into()],
        subscriptions_removed: vec!["Archive/2026".into()],
        batch: Vec::new(),
    }
}

fn snapshot() -> AccountSnapshot {
    // One folder of each special use, so that every value of the enum is in a fixture.
    let uses = [
        (SpecialUse::None, "INBOX"),
        (SpecialUse::All, "All"),
        (SpecialUse::Archive, "Archive"),
        (SpecialUse::Drafts, "Drafts"),
        (SpecialUse::Flagged, "Flagged"),
        (SpecialUse::Junk, "Junk"),
        (SpecialUse::Sent, "Sent"),
        (SpecialUse::Trash, "Trash"),
    ];
    let folders = uses
        .into_iter()
        .zip(1u64..)
        .map(|((special_use, name), id)| FolderSnapshot {
            folder: Some(folder(id, name, special_use)),
            messages: (1..=id as u32 % 3).map(message).collect(),
            expunged: (0..id % 2).map(|i| Expunged { folder_id: id, uid: 3 + i as u32, modseq: 99 }).collect(),
        })
        .collect();
    AccountSnapshot {
        sequence: 4711,
        folders,
        max_uidvalidity: 1_700_000_010,
        subscribed_without_folder: vec!["Gone".into(), "Lists/rust".into()],
    }
}

/// Every fixture: its file name and the value it holds, encoded.
fn fixtures() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("domain.pb", domain().encode_to_vec()),
        ("account.pb", account().encode_to_vec()),
        ("folder.pb", folder(6, "Junk", SpecialUse::Junk).encode_to_vec()),
        ("message.pb", message(12).encode_to_vec()),
        ("message_save_date.pb", message_save_date().encode_to_vec()),
        ("account_metadata.pb", with_metadata().0.encode_to_vec()),
        ("domain_spam.pb", with_spam().0.encode_to_vec()),
        ("account_spam.pb", with_spam().1.encode_to_vec()),
        ("account_sieve.pb", with_sieve().encode_to_vec()),
        ("folder_metadata.pb", with_metadata().1.encode_to_vec()),
        ("parsed.pb", parsed().encode_to_vec()),
        ("change.pb", change().encode_to_vec()),
        ("log_entry.pb", log_entry().encode_to_vec()),
        ("snapshot.pb", snapshot().encode_to_vec()),
    ]
}

fn read(name: &str) -> Vec<u8> {
    let path = dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Decodes the fixture `name` as a `T`, checks it holds `expected`, and that encoding
/// `expected` gives the fixture's bytes back (so what this version writes, the previous one
/// reads).
fn check<T: Message + Default + PartialEq + std::fmt::Debug>(name: &str, expected: T) {
    let bytes = read(name);
    let decoded = T::decode(bytes.as_slice()).unwrap_or_else(|e| panic!("decoding {name}: {e}"));
    assert_eq!(decoded, expected, "{name} decodes to other values");
    assert_eq!(expected.encode_to_vec(), bytes, "{name} encodes to other bytes");
}

#[test]
fn records_written_before_decode_unchanged() {
    check("domain.pb", domain());
    check("account.pb", account());
    check("folder.pb", folder(6, "Junk", SpecialUse::Junk));
    check("message.pb", message(12));
    check("message_save_date.pb", message_save_date());
    check("account_metadata.pb", with_metadata().0);
    check("domain_spam.pb", with_spam().0);
    check("account_spam.pb", with_spam().1);
    check("account_sieve.pb", with_sieve());
    check("folder_metadata.pb", with_metadata().1);
    check("parsed.pb", parsed());
    check("change.pb", change());
    check("log_entry.pb", log_entry());
    check("snapshot.pb", snapshot());
}

#[test]
fn fixtures_set_the_enums_by_number() {
    // The enums are stored as numbers; these are the numbers the fixtures hold, spelled out so
    // that renumbering a value fails here too.
    assert_eq!(AccountRecord::decode(read("account.pb").as_slice()).unwrap().pop3_delete, 1);
    assert_eq!(FolderRecord::decode(read("folder.pb").as_slice()).unwrap().special_use, 5);
    assert_eq!(ChangeRecord::decode(read("change.pb").as_slice()).unwrap().kind, 2);
    let kinds: Vec<i32> =
        LogEntry::decode(read("log_entry.pb").as_slice()).unwrap().events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [1, 2, 3, 4, 5, 6]);
    let uses: Vec<i32> = AccountSnapshot::decode(read("snapshot.pb").as_slice())
        .unwrap()
        .folders
        .iter()
        .map(|f| f.folder.as_ref().unwrap().special_use)
        .collect();
    assert_eq!(uses, [0, 1, 2, 3, 4, 5, 6, 7]);
}

/// Writes the fixtures that do not exist yet (see the module's documentation).
#[test]
#[ignore = "writes fixtures; run by hand with TERN_WRITE_RECORD_FIXTURES=1"]
fn write_fixtures() {
    if std::env::var_os("TERN_WRITE_RECORD_FIXTURES").is_none() {
        return;
    }
    std::fs::create_dir_all(dir()).unwrap();
    for (name, bytes) in fixtures() {
        let path = dir().join(name);
        if !path.exists() {
            std::fs::write(&path, bytes).unwrap();
        }
    }
}
