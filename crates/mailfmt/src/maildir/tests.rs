//! Tests of the Maildir reader and writer: Dovecot's files as Dovecot writes them, damaged
//! and hostile variants of them, and the writer's output read back.

use super::*;
use crate::Error;

/// Writes a file with the given mtime, creating its directory.
fn put(path: &Path, data: &[u8], mtime: i64) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
    let file = File::options().write(true).open(path).unwrap();
    file.set_modified(system_time(mtime)).unwrap();
}

/// A Maildir folder directory with cur/, new/ and tmp/.
fn folder(dir: &Path) {
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
}

fn strings(flags: &[&str]) -> Vec<String> {
    flags.iter().map(|f| f.to_string()).collect()
}

fn file_name(listed: &Listed) -> String {
    match &listed.location {
        Location::File(path) => path.file_name().unwrap().to_string_lossy().into_owned(),
        Location::Range { .. } => panic!("a range"),
    }
}

#[test]
fn uidlist_version_3_with_extensions_and_garbage() {
    let data = b"3 V1275660208 N25022 G3085f01b7f11094c501100008c4a11c1\n\
        25006 :1276528487.M364837P9451.kurkku,S=1355,W=1394:2,\n\
        25017 W2481 :1276533073.M242911P3632.kurkku:2,F\n\
        garbage line\n\
        0 :zero-uid\n\
        99999999999 :too-large\n\
        25018 :with/slash\n\
        25019 W1\n\
        \n\
        25020   X1   Y2 :spaced\n\
        25021 :torn-without-newline";
    let list = parse_uidlist(data).unwrap();
    assert_eq!(list.uidvalidity, Some(1_275_660_208));
    assert_eq!(list.next_uid, 25022);
    assert_eq!(list.header_ext, vec!["G3085f01b7f11094c501100008c4a11c1"]);
    let uids: Vec<u32> = list.records.iter().map(|r| r.uid).collect();
    assert_eq!(uids, vec![25006, 25017, 25020]);
    assert_eq!(list.records[0].filename, b"1276528487.M364837P9451.kurkku,S=1355,W=1394:2,");
    assert_eq!(list.records[1].vsize(), Some(2481));
    assert_eq!(list.records[2].ext, vec!["X1", "Y2"]);
    assert_eq!(list.records[2].filename, b"spaced");
}

#[test]
fn uidlist_version_1_and_2() {
    let list = parse_uidlist(b"1 1000 7\n3 1000.M1P1.host\n5 1001.M1P1.host:2,S\n").unwrap();
    assert_eq!(list.uidvalidity, Some(1000));
    assert_eq!(list.next_uid, 7);
    assert_eq!(list.records.iter().map(|r| r.uid).collect::<Vec<_>>(), vec![3, 5]);
    assert_eq!(list.records[1].filename, b"1001.M1P1.host:2,S");
    let list = parse_uidlist(b"2 1000 7\n3 S 1000.M1P1.host\n").unwrap();
    assert_eq!(list.records[0].filename, b"1000.M1P1.host");
}

#[test]
fn uidlist_headers_that_do_not_parse() {
    for data in [&b""[..], b"\n", b"9 V1 N2\n1 :a\n", b"x", b"1 abc\n", b"3\n", b"\xff\xfe 1 2\n", b"1 5\n"] {
        assert!(parse_uidlist(data).is_none(), "{data:?}");
    }
    // A version 3 header without V has no UIDVALIDITY, but its records stand.
    let list = parse_uidlist(b"3 N5\n1 :a\n").unwrap();
    assert_eq!(list.uidvalidity, None);
    assert_eq!(list.records.len(), 1);
    assert_eq!(parse_uidlist(b"3 V0 N5\n").unwrap().uidvalidity, None);
}

#[test]
fn keywords_with_gaps_and_garbage() {
    let slots = parse_keywords(b"0 $Junk\n2 Work\r\n26 TooFar\nx Bad\n3\n4 \n0 Again\n25 Last\n\xff\xfe \n");
    assert_eq!(slots.len(), 26);
    assert_eq!(slots[0].as_deref(), Some("$Junk"));
    assert_eq!(slots[1], None);
    assert_eq!(slots[2].as_deref(), Some("Work"));
    assert_eq!(slots[3], None);
    assert_eq!(slots[4], None);
    assert_eq!(slots[25].as_deref(), Some("Last"));
}

#[test]
fn flags_from_file_names() {
    let mut keywords = vec![None; 26];
    keywords[0] = Some("$Junk".to_string());
    keywords[2] = Some("Work".to_string());
    assert_eq!(parse_flags(b"1.M1P1.h,S=1,W=2:2,FRS", &keywords), strings(&["\\Seen", "\\Answered", "\\Flagged"]));
    assert_eq!(
        parse_flags(b"1.M1P1.h:2,DPTac", &keywords),
        strings(&["\\Deleted", "\\Draft", "$Forwarded", "$Junk", "Work"])
    );
    // Unknown letters, a keyword letter without a name, Dovecot's extension fields after `,`.
    assert_eq!(parse_flags(b"1.h:2,SXb9z,F", &keywords), strings(&["\\Seen"]));
    assert_eq!(parse_flags(b"1.h", &keywords), Vec::<String>::new());
    assert_eq!(parse_flags(b"1.h:1,S", &keywords), Vec::<String>::new());
    assert_eq!(parse_flags(b"1.h:2,", &keywords), Vec::<String>::new());
    assert_eq!(parse_flags(b":", &keywords), Vec::<String>::new());
    // The info is after the last colon, as Dovecot takes it.
    assert_eq!(parse_flags(b"1.h:x:2,S", &keywords), strings(&["\\Seen"]));
}

#[test]
fn sizes_and_names() {
    assert_eq!(size_field(b"1.M1.h,S=1000,W=1030", b'W'), Some(1030));
    assert_eq!(size_field(b"1.M1.h,S=1000,W=1030", b'S'), Some(1000));
    assert_eq!(size_field(b"1.M1.h,S=1000", b'W'), None);
    assert_eq!(size_field(b"1.M1.h,W=", b'W'), None);
    assert_eq!(size_field(b"1.M1.h,W=12x", b'W'), None);
    assert_eq!(size_field(b"1.M1.h,W=99999999999999999999999", b'W'), None);
    assert_eq!(size_field(b",W", b'W'), None);
    assert_eq!(base_name(b"1.M1.h,S=1:2,S"), b"1.M1.h,S=1");
    assert_eq!(base_name(b"1.M1.h"), b"1.M1.h");
    assert_eq!(leading_number(b"1700000000.M1"), 1_700_000_000);
    assert_eq!(leading_number(b"x"), 0);
    assert_eq!(leading_number(b"99999999999999999999999999"), 999_999_999_999_999_999);
}

#[test]
fn subscriptions_both_formats() {
    let v2 = parse_subscriptions(b"V\t2\n\nINBOX\nFoo\tB&AOQ-r\nTom & Jerry\nA\x01tB\ninbox\tSub\n");
    let expected: BTreeSet<String> =
        ["INBOX", "Foo/Bär", "Tom & Jerry", "A\tB", "INBOX/Sub"].iter().map(|s| s.to_string()).collect();
    assert_eq!(v2, expected);
    let old = parse_subscriptions(b"INBOX\r\nFoo.B&AOQ-r\nA/B\n\n");
    let expected: BTreeSet<String> = ["INBOX", "Foo/Bär", "A/B"].iter().map(|s| s.to_string()).collect();
    assert_eq!(old, expected);
    assert!(parse_subscriptions(b"").is_empty());
    assert!(parse_subscriptions(b"V\t2\n\n").is_empty());
    assert_eq!(tab_unescape(&tab_escape("a\tb\u{1}c\nd\re\0")), "a\tb\u{1}c\nd\re\0");
    assert_eq!(tab_unescape("x\u{1}"), "x");
}

/// A Maildir as Dovecot 2.3 left it after `doveadm save` and `doveadm flags add` (file names,
/// UID list and keywords copied from such a run).
fn dovecot_maildir(root: &Path) {
    folder(root);
    fs::write(root.join("dovecot-uidlist"), "3 V1796549209 N3 G0a22012e5c2a156bd220000083ecc375\n1 :1796549212.M771632P8402.vm,S=33,W=37\n2 :1796549212.M783980P8404.vm,S=33,W=37\n").unwrap();
    fs::write(root.join("dovecot-keywords"), "0 $Forwarded\n1 $Junk\n2 Custom\n").unwrap();
    fs::write(root.join("subscriptions"), "V\t2\n\nFoo\tB&AOQ-r\nINBOX\n").unwrap();
    put(
        &root.join("new/1796549212.M771632P8402.vm,S=33,W=37:2,Sab"),
        b"From: a@b\nSubject: one\n\nbody one\n",
        1_796_549_212,
    );
    put(
        &root.join("new/1796549212.M783980P8404.vm,S=33,W=37:2,FRc"),
        b"From: a@b\r\nSubject: two\r\n\r\nbody two\r\n",
        1_796_549_213,
    );
    let sub = root.join(".Foo.B&AOQ-r");
    folder(&sub);
    fs::write(sub.join("maildirfolder"), "").unwrap();
    fs::write(
        sub.join("dovecot-uidlist"),
        "3 V1796549208 N1 Gea98c818582a156bbe20000083ecc375\n1 :1796549212.M799513P8406.vm,S=18,W=21\n",
    )
    .unwrap();
    put(&sub.join("new/1796549212.M799513P8406.vm,S=18,W=21"), b"Subject: three\n\nx\n", 1_796_549_214);
}

#[test]
fn reads_a_maildir_dovecot_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("Maildir");
    dovecot_maildir(&root);
    let reader = MaildirReader::open(&root).unwrap();
    let folders = reader.folders().unwrap();
    assert_eq!(
        folders,
        vec![
            Folder { name: "INBOX".into(), uidvalidity: Some(1_796_549_209), subscribed: true },
            Folder { name: "Foo/Bär".into(), uidvalidity: Some(1_796_549_208), subscribed: true },
        ]
    );
    let inbox = reader.list("INBOX").unwrap();
    assert_eq!(inbox.len(), 2);
    assert_eq!(inbox[0].uid, Some(1));
    assert_eq!(inbox[0].flags, strings(&["\\Seen", "$Forwarded", "$Junk"]));
    assert_eq!(inbox[0].internal_date, 1_796_549_212);
    assert_eq!(inbox[0].size, Some(37));
    assert_eq!(inbox[1].uid, Some(2));
    assert_eq!(inbox[1].flags, strings(&["\\Answered", "\\Flagged", "Custom"]));
    assert_eq!(inbox[1].internal_date, 1_796_549_213);
    let one = reader.read(&inbox[0]).unwrap();
    assert_eq!(one, b"From: a@b\r\nSubject: one\r\n\r\nbody one\r\n");
    assert_eq!(one.len() as u64, inbox[0].size.unwrap());
    assert_eq!(reader.read(&inbox[1]).unwrap(), b"From: a@b\r\nSubject: two\r\n\r\nbody two\r\n");
    let foo = reader.list("Foo/Bär").unwrap();
    assert_eq!(foo.len(), 1);
    assert_eq!((foo[0].uid, foo[0].flags.is_empty(), foo[0].size), (Some(1), true, Some(21)));
    assert_eq!(reader.read(&foo[0]).unwrap(), b"Subject: three\r\n\r\nx\r\n");
    assert!(matches!(reader.list("Nope"), Err(Error::Format { .. })));
    assert_eq!(reader.list("inbox").unwrap().len(), 2);
}

#[test]
fn messages_without_uids_sizes_or_info() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    folder(root);
    // No dovecot-uidlist at all: no UIDs; order by the time in the name, then the name.
    put(&root.join("cur/300.b.host:2,S"), b"c\n", 10);
    put(&root.join("cur/200.a.host"), b"b\r\n", 20);
    put(&root.join("new/100.z.host"), b"a", 30);
    put(&root.join("cur/.hidden"), b"x", 1);
    fs::create_dir_all(root.join("cur/subdir")).unwrap();
    put(&root.join("tmp/400.t.host"), b"in tmp", 1);
    let reader = MaildirReader::open(root).unwrap();
    let listed = reader.list("INBOX").unwrap();
    let names: Vec<String> = listed.iter().map(file_name).collect();
    assert_eq!(names, vec!["100.z.host", "200.a.host", "300.b.host:2,S"]);
    assert!(listed.iter().all(|l| l.uid.is_none() && l.size.is_none()));
    assert_eq!(listed.iter().map(|l| l.internal_date).collect::<Vec<_>>(), vec![30, 20, 10]);
    assert_eq!(reader.read(&listed[0]).unwrap(), b"a");
    assert_eq!(reader.read(&listed[1]).unwrap(), b"b\r\n");
    assert_eq!(reader.read(&listed[2]).unwrap(), b"c\r\n");
    assert_eq!(listed[2].flags, strings(&["\\Seen"]));
}

#[test]
fn uidlist_joins_by_base_name_and_keeps_uids_unique() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    folder(root);
    fs::write(
        root.join("dovecot-uidlist"),
        "3 V5 N20\n4 :10.a.h:2,S\n7 W99 :11.b.h\n9 :gone.h\n11 :12.c.h\n12 :12.c.h\n",
    )
    .unwrap();
    // The uidlist's last known name has other flags than the file now: the base matches.
    put(&root.join("cur/10.a.h:2,FS"), b"a\n", 1);
    put(&root.join("cur/11.b.h:2,"), b"b\n", 1);
    // The same base twice (in cur/ and new/): the UID goes to one of them.
    put(&root.join("cur/12.c.h:2,"), b"c\n", 1);
    put(&root.join("new/12.c.h"), b"c\n", 1);
    put(&root.join("cur/13.d.h:2,"), b"d\n", 1);
    let reader = MaildirReader::open(root).unwrap();
    assert_eq!(reader.folders().unwrap()[0].uidvalidity, Some(5));
    let listed = reader.list("INBOX").unwrap();
    let uids: Vec<Option<u32>> = listed.iter().map(|l| l.uid).collect();
    assert_eq!(uids, vec![Some(4), Some(7), Some(11), None, None]);
    assert_eq!(listed[1].size, Some(99));
    assert_eq!(file_name(&listed[2]), "12.c.h:2,");
}

#[test]
fn reads_a_file_that_moved_after_listing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    folder(root);
    put(&root.join("new/5.x.h"), b"moved\n", 5);
    let reader = MaildirReader::open(root).unwrap();
    let listed = reader.list("INBOX").unwrap();
    fs::rename(root.join("new/5.x.h"), root.join("cur/5.x.h:2,S")).unwrap();
    assert_eq!(reader.read(&listed[0]).unwrap(), b"moved\r\n");
    fs::remove_file(root.join("cur/5.x.h:2,S")).unwrap();
    assert!(matches!(reader.read(&listed[0]), Err(Error::Io { .. })));
}

#[test]
fn folder_names_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    folder(root);
    folder(&root.join(".Entw&APw-rfe"));
    folder(&root.join(".Tom & Jerry"));
    folder(&root.join(".A.B.C"));
    folder(&root.join(".INBOX"));
    folder(&root.join(".inbox.Child"));
    fs::create_dir_all(root.join(".NoMail")).unwrap();
    fs::create_dir_all(root.join(".cache")).unwrap();
    fs::write(root.join(".file"), "").unwrap();
    let names: Vec<String> =
        MaildirReader::open(root).unwrap().folders().unwrap().into_iter().map(|f| f.name).collect();
    assert_eq!(names, vec!["INBOX", "A/B/C", "Entwürfe", "INBOX/Child", "Tom & Jerry"]);
    // Without cur/ or new/ at the root there is no INBOX.
    let other = tempfile::tempdir().unwrap();
    folder(&other.path().join(".Only"));
    let names: Vec<String> =
        MaildirReader::open(other.path()).unwrap().folders().unwrap().into_iter().map(|f| f.name).collect();
    assert_eq!(names, vec!["Only"]);
}

#[test]
fn open_needs_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(MaildirReader::open(&tmp.path().join("missing")), Err(Error::Io { .. })));
    fs::write(tmp.path().join("file"), "x").unwrap();
    assert!(matches!(MaildirReader::open(&tmp.path().join("file")), Err(Error::Format { .. })));
}

#[test]
fn hostile_names_and_files_do_not_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    folder(root);
    fs::write(root.join("dovecot-uidlist"), b"3 V\xff N\xfe\n\xff\xff\n1 :\xff\xfe\n4294967295 :max\n:\n \n").unwrap();
    fs::write(root.join("dovecot-keywords"), b"\xff\n99999999999999999999 x\n-1 y\n").unwrap();
    fs::write(root.join("subscriptions"), b"V\t2\n\n\xff\t&\t&AOQ\t\x01\n").unwrap();
    let names: &[&[u8]] = &[
        b"\xff\xfe:2,\xffS",
        b":",
        b":2,",
        b"x:2,,,,",
        b"1,W=,S=:2,zzzz",
        b"18446744073709551616.x,W=18446744073709551616",
    ];
    for name in names {
        let name = std::ffi::OsStr::from_bytes(name);
        put(&root.join("cur").join(name), b"\r\r\n\n\r", 0);
    }
    folder(&root.join(std::ffi::OsStr::from_bytes(b".\xff&.x")));
    let reader = MaildirReader::open(root).unwrap();
    let folders = reader.folders().unwrap();
    assert_eq!(folders.len(), 2);
    let listed = reader.list("INBOX").unwrap();
    assert_eq!(listed.len(), names.len());
    for l in &listed {
        assert_eq!(reader.read(l).unwrap(), b"\r\r\n\r\n\r");
    }
    reader.list(&folders[1].name).unwrap();
}

#[test]
fn writer_output_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("Maildir");
    let mut writer = MaildirWriter::create(&root).unwrap();
    let mut inbox = writer.folder(&Folder { name: "INBOX".into(), uidvalidity: Some(42), subscribed: true }).unwrap();
    assert_eq!(inbox.uidvalidity(), 42);
    let body1 = b"Subject: one\r\n\r\nline\r\nFrom here\r\n".to_vec();
    let body2 = b"Subject: two\nbare lf\n".to_vec();
    let body3 = b"Subject: three\r\n\r\nodd\r\r\nend".to_vec();
    inbox.add(3, &strings(&["\\Seen", "\\Recent", "$Forwarded", "Work", "$Junk"]), 1_700_000_000, &body1).unwrap();
    inbox.add(5, &strings(&["\\Flagged", "\\Answered", "\\Draft", "\\Deleted", "work"]), -86_400, &body2).unwrap();
    inbox.add(4, &[], 1_600_000_000, &body3).unwrap();
    // A UID the folder has is skipped.
    inbox.add(3, &[], 0, b"duplicate").unwrap();
    assert!(inbox.has(3) && inbox.has(4) && inbox.has(5) && !inbox.has(6));
    assert!(matches!(inbox.add(0, &[], 0, b""), Err(Error::Format { .. })));
    inbox.finish(10).unwrap();
    let mut sub = writer.folder(&Folder { name: "Entwürfe/A".into(), uidvalidity: Some(7), subscribed: true }).unwrap();
    sub.add(1, &[], 1_500_000_000, b"").unwrap();
    sub.finish(1).unwrap();
    let quiet = writer.folder(&Folder { name: "Quiet".into(), uidvalidity: None, subscribed: false }).unwrap();
    quiet.finish(0).unwrap();
    writer.finish().unwrap();

    assert!(root.join(".Entw&APw-rfe.A/maildirfolder").exists());
    assert_eq!(fs::read(root.join("subscriptions")).unwrap(), b"V\t2\n\nEntw&APw-rfe\tA\nINBOX\n");
    let uidlist = fs::read_to_string(root.join("dovecot-uidlist")).unwrap();
    assert!(uidlist.starts_with("3 V42 N10\n3 :1700000000.M"), "{uidlist}");
    assert_eq!(uidlist.lines().count(), 4);
    assert!(!uidlist.contains(":2,"));
    assert_eq!(fs::read_to_string(root.join("dovecot-keywords")).unwrap(), "0 $Forwarded\n1 Work\n2 $Junk\n");
    assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);

    let reader = MaildirReader::open(&root).unwrap();
    let folders = reader.folders().unwrap();
    assert_eq!(
        folders,
        vec![
            Folder { name: "INBOX".into(), uidvalidity: Some(42), subscribed: true },
            Folder { name: "Entwürfe/A".into(), uidvalidity: Some(7), subscribed: true },
            Folder { name: "Quiet".into(), uidvalidity: Some(folders[2].uidvalidity.unwrap()), subscribed: false },
        ]
    );
    let listed = reader.list("INBOX").unwrap();
    assert_eq!(listed.iter().map(|l| l.uid).collect::<Vec<_>>(), vec![Some(3), Some(4), Some(5)]);
    assert_eq!(listed[0].flags, strings(&["\\Seen", "$Forwarded", "Work", "$Junk"]));
    assert!(file_name(&listed[0]).ends_with(":2,Sabc"), "{}", file_name(&listed[0]));
    assert_eq!(listed[2].flags, strings(&["\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "Work"]));
    assert!(file_name(&listed[2]).ends_with(":2,DFRTb"));
    assert_eq!(listed.iter().map(|l| l.internal_date).collect::<Vec<_>>(), vec![1_700_000_000, 1_600_000_000, -86_400]);
    for (l, body) in listed.iter().zip([&body1, &body3, &body2]) {
        let read = reader.read(l).unwrap();
        assert_eq!(read, to_crlf(body));
        assert_eq!(l.size, Some(read.len() as u64));
    }
    // On disk the message has LF line ends, as Dovecot keeps it, and S= is its size.
    let Location::File(path) = &listed[0].location else { panic!() };
    let on_disk = fs::read(path).unwrap();
    assert_eq!(on_disk, b"Subject: one\n\nline\nFrom here\n");
    assert!(file_name(&listed[0]).contains(&format!(",S={},W={}:", on_disk.len(), body1.len())));
    let sub = reader.list("Entwürfe/A").unwrap();
    assert_eq!((sub.len(), sub[0].uid, sub[0].internal_date), (1, Some(1), 1_500_000_000));
}

#[test]
fn export_is_incremental_and_refuses_another_source() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let inbox = Folder { name: "INBOX".into(), uidvalidity: Some(9), subscribed: true };
    let mut writer = MaildirWriter::create(root).unwrap();
    let mut folder = writer.folder(&inbox).unwrap();
    folder.add(1, &strings(&["K1"]), 1, b"one\r\n").unwrap();
    folder.add(2, &[], 2, b"two\r\n").unwrap();
    // Dropped without finish, as after a crash: the appended records are there.
    drop(folder);
    let uidlist = fs::read_to_string(root.join("dovecot-uidlist")).unwrap();
    assert_eq!(uidlist.lines().count(), 3, "{uidlist}");
    assert!(uidlist.starts_with("3 V9 N1\n1 :"));
    let mut folder = writer.folder(&inbox).unwrap();
    assert!(folder.has(1) && folder.has(2) && !folder.has(3));
    folder.add(3, &strings(&["K2", "k1"]), 3, b"three\r\n").unwrap();
    folder.finish(100).unwrap();
    writer.finish().unwrap();
    let uidlist = fs::read_to_string(root.join("dovecot-uidlist")).unwrap();
    assert!(uidlist.starts_with("3 V9 N100\n"), "{uidlist}");
    assert_eq!(fs::read_to_string(root.join("dovecot-keywords")).unwrap(), "0 K1\n1 K2\n");
    let listed = MaildirReader::open(root).unwrap().list("INBOX").unwrap();
    assert_eq!(listed.iter().map(|l| l.uid).collect::<Vec<_>>(), vec![Some(1), Some(2), Some(3)]);
    assert_eq!(listed[2].flags, strings(&["K1", "K2"]));

    let mut writer = MaildirWriter::create(root).unwrap();
    let other = Folder { uidvalidity: Some(10), ..inbox };
    let err = writer.folder(&other).unwrap_err();
    assert!(matches!(&err, Error::Format { reason, .. } if reason.contains("UIDVALIDITY 9")), "{err}");
}

#[test]
fn an_empty_existing_folder_takes_the_sources_uidvalidity() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    folder(root);
    fs::write(root.join("dovecot-uidlist"), "3 V1 N1\n").unwrap();
    let mut writer = MaildirWriter::create(root).unwrap();
    let folder = writer.folder(&Folder { name: "INBOX".into(), uidvalidity: Some(2), subscribed: false }).unwrap();
    assert_eq!(folder.uidvalidity(), 2);
}

#[test]
fn out_of_order_uids_and_existing_records_are_kept_sorted() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    folder(root);
    // A version 1 list by another program, with a record whose file is gone.
    fs::write(root.join("dovecot-uidlist"), "1 77 6\n5 5.gone.h\n").unwrap();
    let mut writer = MaildirWriter::create(root).unwrap();
    let mut folder = writer.folder(&Folder { name: "INBOX".into(), uidvalidity: Some(77), subscribed: true }).unwrap();
    folder.add(9, &[], 9, b"nine\n").unwrap();
    folder.add(2, &[], 2, b"two\n").unwrap();
    folder.add(7, &[], 7, b"seven\n").unwrap();
    folder.finish(0).unwrap();
    let list = parse_uidlist(&fs::read(root.join("dovecot-uidlist")).unwrap()).unwrap();
    assert_eq!(list.records.iter().map(|r| r.uid).collect::<Vec<_>>(), vec![2, 5, 7, 9]);
    assert_eq!(list.next_uid, 10);
    assert_eq!(list.records[1].filename, b"5.gone.h");
}

#[test]
fn more_than_26_keywords_are_dropped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let mut writer = MaildirWriter::create(tmp.path()).unwrap();
    let mut folder = writer.folder(&Folder { name: "INBOX".into(), uidvalidity: Some(1), subscribed: true }).unwrap();
    let many: Vec<String> = (0..30).map(|i| format!("kw{i}")).collect();
    folder.add(1, &many, 0, b"x\n").unwrap();
    folder.add(2, &strings(&["kw29", "bad keyword", "\\Unknown"]), 0, b"y\n").unwrap();
    assert_eq!(folder.dropped_keywords(), 4 + 2);
    folder.finish(3).unwrap();
    let listed = MaildirReader::open(tmp.path()).unwrap().list("INBOX").unwrap();
    assert_eq!(listed[0].flags.len(), 26);
    assert!(listed[1].flags.is_empty());
}

#[test]
fn names_maildir_plus_plus_cannot_store() {
    let tmp = tempfile::tempdir().unwrap();
    let mut writer = MaildirWriter::create(tmp.path()).unwrap();
    for name in ["a.b", "a//b", "/a", "a/", ""] {
        let folder = Folder { name: name.into(), uidvalidity: None, subscribed: false };
        assert!(matches!(writer.folder(&folder), Err(Error::Format { .. })), "{name:?}");
    }
}

#[test]
fn subscriptions_are_merged_with_an_existing_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    folder(root);
    fs::write(root.join("subscriptions"), "Old\nGone\n").unwrap();
    let mut writer = MaildirWriter::create(root).unwrap();
    for (name, subscribed) in [("Gone", false), ("Tom & Jerry", true)] {
        writer.folder(&Folder { name: name.into(), uidvalidity: None, subscribed }).unwrap().finish(0).unwrap();
    }
    writer.finish().unwrap();
    assert_eq!(fs::read(root.join("subscriptions")).unwrap(), b"V\t2\n\nOld\nTom &- Jerry\n");
    let folders = MaildirReader::open(root).unwrap().folders().unwrap();
    assert!(folders.iter().any(|f| f.name == "Tom & Jerry" && f.subscribed));
}
