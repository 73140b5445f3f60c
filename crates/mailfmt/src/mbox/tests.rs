//! Tests of the mbox reader and writer: files as Dovecot, mutt-style and Thunderbird-style
//! writers leave them, damaged and hostile ones, and the writer's output read back.

use super::*;

fn strings(flags: &[&str]) -> Vec<String> {
    flags.iter().map(|f| f.to_string()).collect()
}

/// Writes `data` as a single mbox file and lists and reads all of it.
fn read_all(data: &[u8], variant: Variant) -> Result<Vec<(Listed, Vec<u8>)>> {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("mbox");
    fs::write(&path, data).unwrap();
    let reader = MboxReader::open(&path, variant)?;
    let listed = reader.list("INBOX")?;
    listed
        .into_iter()
        .map(|l| {
            let body = reader.read(&l)?;
            Ok((l, body))
        })
        .collect()
}

#[test]
fn splits_messages_and_reads_flags_and_dates() {
    let data = b"From alice@example.com Mon Jan  1 00:00:00 2024\n\
        Subject: one\n\
        Status: RO\n\
        X-Status: AF\n\
        X-Keywords: $Junk, Work\n\
        \tLater\n\
        \n\
        body one\n\
        From inside a paragraph is no separator\n\
        \n\
        From bob Tue Feb  2 03:04:05 +0100 2021\n\
        Subject: two\n\
        Status: O\n\
        X-Status: DT\n\
        \n\
        body two\n";
    let messages = read_all(data, Variant::Mboxrd).unwrap();
    assert_eq!(messages.len(), 2);
    let (one, body) = &messages[0];
    assert_eq!(one.uid, None);
    assert_eq!(one.size, None);
    assert_eq!(one.flags, strings(&["\\Seen", "\\Answered", "\\Flagged", "$Junk", "Work", "Later"]));
    assert_eq!(one.internal_date, 1_704_067_200);
    assert_eq!(body, b"Subject: one\r\n\r\nbody one\r\nFrom inside a paragraph is no separator\r\n");
    let (two, body) = &messages[1];
    assert_eq!(two.flags, strings(&["\\Deleted", "\\Draft"]));
    assert_eq!(two.internal_date, 1_612_235_045 - 3600);
    assert_eq!(body, b"Subject: two\r\n\r\nbody two\r\n");
    let Location::Range { start, end, .. } = &one.location else { panic!() };
    assert_eq!(&data[*start as usize..*end as usize][..13], b"Subject: one\n");
}

#[test]
fn quoting_per_variant() {
    let data = b"From a Mon Jan  1 00:00:00 2024\n\
        Subject: q\n\
        \n\
        >From one\n\
        >>From two\n\
        >Fromage\n\
        From three\n\
        \n";
    let rd = read_all(data, Variant::Mboxrd).unwrap();
    assert_eq!(rd[0].1, b"Subject: q\r\n\r\nFrom one\r\n>From two\r\n>Fromage\r\nFrom three\r\n");
    let o = read_all(data, Variant::Mboxo).unwrap();
    assert_eq!(o[0].1, b"Subject: q\r\n\r\nFrom one\r\n>>From two\r\n>Fromage\r\nFrom three\r\n");
}

#[test]
fn from_lines_without_dates_fall_back_to_the_date_header() {
    let data = b"From MAILER-DAEMON\n\
        Date: Sat, 02 Mar 2024 10:11:12 -0500 (EST)\n\
        \n\
        x\n\
        \n\
        From \n\
        Subject: no date at all\n\
        \n\
        y\n\
        \n\
        From someone Garbage date here\n\
        Date: not a date\n\
        \n\
        z\n";
    let messages = read_all(data, Variant::Mboxrd).unwrap();
    let dates: Vec<i64> = messages.iter().map(|(l, _)| l.internal_date).collect();
    assert_eq!(dates, vec![1_709_337_600 + 36_672 + 5 * 3600, 0, 0]);
    assert_eq!(messages[2].1, b"Date: not a date\r\n\r\nz\r\n");
}

#[test]
fn crlf_mbox_missing_final_newline_and_header_only() {
    let data = b"From a Mon Jan  1 00:00:00 2024\r\nSubject: crlf\r\n\r\nbody\r\n\r\nFrom b Mon Jan  1 00:00:01 2024\r\nSubject: header only\r\n\r\nFrom c Mon Jan  1 00:00:02 2024\r\nSubject: last\r\n\r\nno newline";
    let messages = read_all(data, Variant::Mboxrd).unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[0].1, b"Subject: crlf\r\n\r\nbody\r\n");
    assert_eq!(messages[1].1, b"Subject: header only\r\n");
    assert_eq!(messages[2].1, b"Subject: last\r\n\r\nno newline");
    assert_eq!(messages[2].0.internal_date, 1_704_067_202);
    let header_only = read_all(b"From x Mon Jan  1 00:00:00 2024\nSubject: s", Variant::Mboxo).unwrap();
    assert_eq!(header_only[0].1, b"Subject: s");
    let nothing = read_all(b"From x Mon Jan  1 00:00:00 2024\n", Variant::Mboxo).unwrap();
    assert_eq!(nothing[0].1, b"");
}

#[test]
fn not_an_mbox_and_empty_files() {
    for data in [&b"Subject: hello\n\nbody\n"[..], b"\n\nhello", b"\x00\x01\x02", b"from lowercase\n", b"From"] {
        let err = read_all(data, Variant::Mboxrd).unwrap_err();
        assert!(matches!(&err, Error::Format { reason, .. } if reason.contains("From")), "{err}");
    }
    assert!(read_all(b"", Variant::Mboxrd).unwrap().is_empty());
    assert!(read_all(b"\n\n", Variant::Mboxrd).unwrap().is_empty());
    // Leading blank lines are tolerated.
    assert_eq!(read_all(b"\nFrom x Mon Jan  1 00:00:00 2024\n\nb\n", Variant::Mboxrd).unwrap().len(), 1);
}

/// A mailbox as Dovecot 2.3 wrote it (`doveadm save` and `doveadm flags add`): UIDs in X-UID,
/// UIDVALIDITY in X-IMAPbase, Content-Length instead of quoting.
const DOVECOT_MBOX: &[u8] = b"From nobody@vm  Sun Dec 06 09:27:08 2026\n\
From: a@b\n\
Subject: one\n\
X-IMAPbase: 1796549228 0000000002 $Forwarded $Junk\n\
X-UID: 1\n\
Status: R\n\
X-Keywords: $Forwarded $Junk                                     \n\
Content-Length: 31\n\
\n\
body one\n\
From here\n\
>From there\n\
\n\
From nobody@vm  Sun Dec 06 09:27:08 2026\n\
Return-Path: <x@y.z>\n\
Subject: two\n\
X-UID: 2\n\
Status: \n\
X-Keywords:                                                          \n\
Content-Length: 9\n\
X-Status: AFTD\n\
\n\
body two\n\
\n\
From nobody@vm  Sun Dec 06 09:27:14 2026\n\
Subject: four\n\
X-UID: 3\n\
Status: \n\
X-Keywords:                                                                        \n\
Content-Length: 35\n\
\n\
para\n\
\n\
From the start\n\
\n\
>From quoted\n\
\n";

#[test]
fn reads_an_mbox_dovecot_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("inbox");
    fs::write(&path, DOVECOT_MBOX).unwrap();
    let reader = MboxReader::open(&path, Variant::Mboxrd).unwrap();
    assert_eq!(
        reader.folders().unwrap(),
        vec![Folder { name: "INBOX".into(), uidvalidity: Some(1_796_549_228), subscribed: true }]
    );
    let listed = reader.list("INBOX").unwrap();
    assert_eq!(listed.iter().map(|l| l.uid).collect::<Vec<_>>(), vec![Some(1), Some(2), Some(3)]);
    assert_eq!(listed[0].flags, strings(&["\\Seen", "$Forwarded", "$Junk"]));
    assert_eq!(listed[1].flags, strings(&["\\Answered", "\\Flagged", "\\Deleted", "\\Draft"]));
    assert!(listed[2].flags.is_empty());
    assert_eq!(listed[0].internal_date, 1_796_549_228);
    assert_eq!(
        reader.read(&listed[0]).unwrap(),
        b"From: a@b\r\nSubject: one\r\n\r\nbody one\r\nFrom here\r\n>From there\r\n"
    );
    assert_eq!(reader.read(&listed[1]).unwrap(), b"Return-Path: <x@y.z>\r\nSubject: two\r\n\r\nbody two\r\n");
    // Content-Length holds the unquoted "From " paragraph inside the message, as Dovecot reads it.
    assert_eq!(
        reader.read(&listed[2]).unwrap(),
        b"Subject: four\r\n\r\npara\r\n\r\nFrom the start\r\n\r\n>From quoted\r\n"
    );
}

#[test]
fn content_length_that_does_not_fit_is_ignored() {
    for length in ["5", "999999", "18446744073709551615", "-1", "x"] {
        let data = format!(
            "From a Mon Jan  1 00:00:00 2024\nContent-Length: {length}\n\nbody\n\nFrom b Mon Jan  1 00:00:00 2024\n\nsecond\n"
        );
        let messages = read_all(data.as_bytes(), Variant::Mboxrd).unwrap();
        assert_eq!(messages.len(), 2, "{length}");
        assert_eq!(messages[0].1, b"\r\nbody\r\n");
    }
}

#[test]
fn uw_imap_pseudo_message_and_uids() {
    let data = b"From MAILER-DAEMON Mon Jan  1 00:00:00 2024\n\
        Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n\
        X-IMAP: 1234 0000000010 Work\n\
        \n\
        internal\n\
        \n\
        From a Mon Jan  1 00:00:00 2024\n\
        X-UID: 5\n\
        \n\
        a\n\
        \n\
        From b Mon Jan  1 00:00:00 2024\n\
        X-UID: 4\n\
        \n\
        b\n\
        \n\
        From c Mon Jan  1 00:00:00 2024\n\
        X-UID: 9\n\
        \n\
        c\n";
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("mbox");
    fs::write(&path, data).unwrap();
    let reader = MboxReader::open(&path, Variant::Mboxrd).unwrap();
    assert_eq!(reader.folders().unwrap()[0].uidvalidity, Some(1234));
    let uids: Vec<Option<u32>> = reader.list("INBOX").unwrap().iter().map(|l| l.uid).collect();
    assert_eq!(uids, vec![Some(5), None, Some(9)]);
    // Without X-IMAPbase or X-IMAP, X-UID means nothing.
    let plain = read_all(b"From a Mon Jan  1 00:00:00 2024\nX-UID: 5\n\na\n", Variant::Mboxrd).unwrap();
    assert_eq!(plain[0].0.uid, None);
    assert_eq!(plain[0].1, b"\r\na\r\n");
}

#[test]
fn directory_of_mbox_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let msg = b"From a Mon Jan  1 00:00:00 2024\n\nx\n";
    for path in [
        "Inbox",
        "Inbox.msf",
        "Archive",
        "Archive.sbd/2024",
        "Archive.sbd/2024.msf",
        "Lists/rust",
        "B&AOQ-r",
        ".hidden",
        "Trash",
    ] {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, if path.ends_with("Trash") { &b""[..] } else { msg }).unwrap();
    }
    fs::create_dir_all(root.join(".imap/INBOX")).unwrap();
    fs::write(root.join("msgFilterRules.dat"), "version=\"9\"").unwrap();
    fs::write(root.join("README"), "not an mbox").unwrap();
    let reader = MboxReader::open(root, Variant::Mboxrd).unwrap();
    let names: Vec<String> = reader.folders().unwrap().into_iter().map(|f| f.name).collect();
    assert_eq!(names, vec!["INBOX", "Archive", "Archive/2024", "Bär", "Lists/rust", "README", "Trash"]);
    assert_eq!(reader.list("INBOX").unwrap().len(), 1);
    assert_eq!(reader.list("Archive/2024").unwrap().len(), 1);
    assert!(reader.list("Trash").unwrap().is_empty());
    assert!(matches!(reader.list("README"), Err(Error::Format { .. })));
    assert!(matches!(reader.list("Missing"), Err(Error::Format { .. })));
}

#[test]
fn hostile_input_does_not_panic() {
    let mut long = b"From a Mon Jan  1 00:00:00 2024\nSubject: ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 3 * HEAD_MAX));
    long.extend_from_slice(b"\nX-Keywords: ");
    long.extend(std::iter::repeat_n(b'k', 3 * FIELD_MAX));
    long.extend_from_slice(b"\n\n");
    long.extend(std::iter::repeat_n(b'y', 5 * HEAD_MAX));
    let messages = read_all(&long, Variant::Mboxrd).unwrap();
    assert_eq!(messages.len(), 1);
    // The From_ line and the X-Keywords line go, two LFs become CRLF.
    assert_eq!(messages[0].1.len(), long.len() - 32 - (13 + 3 * FIELD_MAX) + 2);
    assert_eq!(messages[0].0.flags.len(), 1);
    let cases: &[&[u8]] = &[
        b"From \xff\xfe\x00 Mon Jan 99 99:99:99 99999\n\xff: \xff\n\n\xff\n",
        b"From a Mon Jan 31 23:59:60 9999 +9999\nDate: 1 Feb 0000 00:00:00 -9999\nStatus: \xffR\n\n",
        b"From a\n Continuation first\nX-UID: 99999999999999\nX-IMAPbase: x\n\n",
        b"From a\nX-IMAPbase: 4294967295 1\nX-UID: 4294967295\nContent-Length: 0\n\nFrom b\n\n",
        b"From a\nContent-Length: 0\n\n",
        b"From a\n\r\n\r\n\r\n",
        b"From a\r\r\n\r\r\n",
    ];
    for data in cases {
        for variant in [Variant::Mboxrd, Variant::Mboxo] {
            read_all(data, variant).unwrap();
        }
    }
}

#[test]
fn read_checks_the_range() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("mbox");
    fs::write(&path, b"From a Mon Jan  1 00:00:00 2024\n\nx\n").unwrap();
    let reader = MboxReader::open(&path, Variant::Mboxrd).unwrap();
    for (start, end) in [(5, 4), (0, 1000)] {
        let listed = Listed {
            uid: None,
            flags: Vec::new(),
            internal_date: 0,
            size: None,
            location: Location::Range { path: path.clone(), start, end },
        };
        assert!(matches!(reader.read(&listed), Err(Error::Format { .. })));
    }
    let listed = Listed { location: Location::File(path.clone()), ..reader.list("INBOX").unwrap().remove(0) };
    assert!(matches!(reader.read(&listed), Err(Error::Format { .. })));
}

#[test]
fn dates() {
    assert_eq!(parse_date("Mon Jan  1 00:00:00 2024"), Some(1_704_067_200));
    assert_eq!(parse_date("user@host  Mon Jan  1 00:00:00 2024"), Some(1_704_067_200));
    assert_eq!(parse_date("jan Mon Jan 1 00:00:00 2024 +0200"), Some(1_704_067_200 - 7200));
    assert_eq!(parse_date("x Mon Jan 1 00:00:00 UTC 2024"), Some(1_704_067_200));
    assert_eq!(parse_date("x Mon Jan 1 00:00:00 PST 2024"), Some(1_704_067_200 + 8 * 3600));
    assert_eq!(parse_date("x Jan 1 00:00 2024"), Some(1_704_067_200));
    assert_eq!(parse_date("Mon, 1 Jan 2024 00:00:00 +0000"), Some(1_704_067_200));
    assert_eq!(parse_date("1 Jan 24 01:00:00 GMT"), Some(1_704_070_800));
    assert_eq!(parse_date("Thu, 1 Jan 98 00:00:00 -0000"), Some(883_612_800));
    assert_eq!(parse_date("Mon Jan 32 00:00:00 2024"), None);
    assert_eq!(parse_date("Mon Foo 1 00:00:00 2024"), None);
    assert_eq!(parse_date("Mon Jan 1 24:00:00 2024"), None);
    assert_eq!(parse_date("Mon Jan 1 00:00:00"), None);
    assert_eq!(parse_date(""), None);
    assert_eq!(asctime(1_704_067_200), "Mon Jan  1 00:00:00 2024");
    assert_eq!(asctime(0), "Thu Jan  1 00:00:00 1970");
    assert_eq!(asctime(-5), "Thu Jan  1 00:00:00 1970");
    assert_eq!(asctime(i64::MAX), "Fri Dec 31 23:59:59 9999");
    for t in [0, 951_782_400, 1_704_067_199, 4_102_444_800, 253_402_300_799] {
        assert_eq!(parse_date(&asctime(t)), Some(t));
    }
}

/// Bodies that exercise the writer: From_ lines to quote, mbox headers of their own, CRLF and
/// LF, no header, no body, blank lines at the end.
fn bodies() -> Vec<Vec<u8>> {
    vec![
        b"Return-Path: <bounce@example.org>\r\nSubject: one\r\n\r\nFrom the start\r\n>From quoted\r\n>>From deep\r\n\r\nFrom after blank\r\n".to_vec(),
        b"Subject: no body\r\n".to_vec(),
        b"".to_vec(),
        b"\r\nbody without header\r\n".to_vec(),
        b"Subject: trailing blanks\r\n\r\nx\r\n\r\n\r\n".to_vec(),
        b"From: x@y\r\nSubject: lf only\nStatus: RO\nX-Keywords: stale\n  folded\nContent-Length: 3\n\nbody\n".to_vec(),
        b"Subject: odd cr\r\n\r\na\r\r\nb\r\n".to_vec(),
        b"Return-Path: <>\r\nSubject: empty return path\r\n\r\nFrom \r\n".to_vec(),
    ]
}

/// What the reader gives back for a body: the writer's replaced headers gone and, with mboxo,
/// the quoting of `>From ` lines lost.
fn expected(body: &[u8], variant: Variant) -> Vec<u8> {
    if body.starts_with(b"From: x@y") {
        return b"From: x@y\r\nSubject: lf only\r\n\r\nbody\r\n".to_vec();
    }
    let mut out = Vec::new();
    for line in lines(body) {
        let lossy = variant == Variant::Mboxo && line.starts_with(b">From ");
        out.extend_from_slice(if lossy { &line[1..] } else { line });
    }
    out
}

#[test]
fn writer_round_trips_with_both_variants() {
    for variant in [Variant::Mboxrd, Variant::Mboxo] {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("out.mbox");
        fs::write(&path, b"").unwrap();
        let mut writer = MboxWriter::create(&path, variant).unwrap();
        let mut folder = writer.folder(&Folder { name: "INBOX".into(), uidvalidity: None, subscribed: true }).unwrap();
        let flag_sets = [
            strings(&["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "$Forwarded", "Work"]),
            strings(&["\\Recent", "bad,keyword", "bad keyword", "$Junk", "$junk"]),
            Vec::new(),
        ];
        let bodies = bodies();
        for (i, body) in bodies.iter().enumerate() {
            folder.add(&flag_sets[i % 3], 1_700_000_000 + i as i64, body).unwrap();
        }
        assert_eq!(folder.dropped_keywords(), 3 * 2);
        folder.finish().unwrap();
        let written = fs::read(&path).unwrap();
        assert!(written.starts_with(b"From bounce@example.org Tue Nov 14 22:13:20 2023\n"));
        assert!(!written.contains(&b'\r') || bodies.iter().any(|b| b.windows(3).any(|w| w == b"\r\r\n")));

        let reader = MboxReader::open(&path, variant).unwrap();
        let listed = reader.list("INBOX").unwrap();
        assert_eq!(listed.len(), bodies.len());
        for (i, (l, body)) in listed.iter().zip(&bodies).enumerate() {
            let mut flags = flag_sets[i % 3].clone();
            flags.retain(|f| !f.contains([',', ' ']) && f != "\\Recent" && f != "$junk");
            assert_eq!(l.flags, flags, "{variant:?} {i}");
            assert_eq!(l.internal_date, 1_700_000_000 + i as i64);
            assert_eq!(l.uid, None);
            let read = reader.read(l).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&read),
                String::from_utf8_lossy(&expected(body, variant)),
                "{variant:?} {i}"
            );
        }
    }
}

#[test]
fn mboxo_loses_only_the_quoting_of_quoted_from_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("o");
    let mut writer = MboxWriter::create(&path, Variant::Mboxo).unwrap();
    let mut folder = writer.folder(&Folder { name: "INBOX".into(), uidvalidity: None, subscribed: true }).unwrap();
    folder.add(&[], 0, b"S: x\r\n\r\n>From a\r\n>>From b\r\nFrom c\r\n").unwrap();
    folder.finish().unwrap();
    let reader = MboxReader::open(&path, Variant::Mboxo).unwrap();
    let listed = reader.list("INBOX").unwrap();
    assert_eq!(reader.read(&listed[0]).unwrap(), b"S: x\r\n\r\nFrom a\r\n>>From b\r\nFrom c\r\n");
}

#[test]
fn writer_directory_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("export");
    let mut writer = MboxWriter::create(&root, Variant::Mboxrd).unwrap();
    for name in ["INBOX", "Archive", "Archive/2024", "Entwürfe", "Tom & Jerry", "a&-b", "INBOX/Sub"] {
        let mut folder = writer.folder(&Folder { name: name.into(), uidvalidity: None, subscribed: true }).unwrap();
        folder.add(&[], 0, format!("Subject: {name}\r\n\r\nx\r\n").as_bytes()).unwrap();
        folder.finish().unwrap();
    }
    for name in ["", "a//b", "..", "../x", ".hidden", "x.sbd", "y.msf", "Trash/.z", "a\0b"] {
        let folder = Folder { name: name.into(), uidvalidity: None, subscribed: true };
        assert!(matches!(writer.folder(&folder), Err(Error::Format { .. })), "{name:?}");
    }
    assert!(root.join("Archive").is_file());
    assert!(root.join("Archive.sbd/2024").is_file());
    assert!(root.join("INBOX.sbd/Sub").is_file());
    assert!(root.join("a&--b").is_file());
    let reader = MboxReader::open(&root, Variant::Mboxrd).unwrap();
    let names: Vec<String> = reader.folders().unwrap().into_iter().map(|f| f.name).collect();
    assert_eq!(names, vec!["INBOX", "Archive", "Archive/2024", "Entwürfe", "INBOX/Sub", "Tom & Jerry", "a&-b"]);
    for name in &names {
        let listed = reader.list(name).unwrap();
        assert_eq!(reader.read(&listed[0]).unwrap(), format!("Subject: {name}\r\n\r\nx\r\n").as_bytes());
    }
}

#[test]
fn appending_to_a_file_that_lacks_the_final_blank_line() {
    for existing in [&b"From a Mon Jan  1 00:00:00 2024\n\nold"[..], b"From a Mon Jan  1 00:00:00 2024\n\nold\n"] {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("mbox");
        fs::write(&path, existing).unwrap();
        let mut writer = MboxWriter::create(&path, Variant::Mboxrd).unwrap();
        let mut folder = writer.folder(&Folder { name: "X".into(), uidvalidity: None, subscribed: true }).unwrap();
        folder.add(&[], 0, b"S: new\r\n\r\nnew\r\n").unwrap();
        folder.finish().unwrap();
        let messages = read_all(&fs::read(&path).unwrap(), Variant::Mboxrd).unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].1, b"\r\nold\r\n");
        assert_eq!(messages[1].1, b"S: new\r\n\r\nnew\r\n");
    }
}
