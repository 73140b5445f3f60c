//! The codec's framing: commands split anywhere, literals of both forms, and hostile input
//! (over-long lines, huge or malformed literals) reported without losing the next command.

use super::*;

const LIMITS: Limits = Limits { max_line: 64, max_literal: 100 };

/// Parses every command of `input`, fed to the parser as if only the first `cut` bytes had
/// come: the commands complete within them, and how many bytes they used.
fn parse_all(input: &[u8], cut: usize) -> (Vec<Result<Command, ParseError>>, usize) {
    let mut used = 0;
    let mut out = Vec::new();
    loop {
        match parse_command(&input[used..cut], &LIMITS) {
            Decoded::Done(r, n) => {
                out.push(r);
                used += n;
            }
            Decoded::NeedMore(n) => {
                assert!(n > cut - used, "asked for {n} with {} there", cut - used);
                return (out, used);
            }
            Decoded::Fault(f) => panic!("fault {f:?} at {used} of {cut}"),
        }
    }
}

#[test]
fn commands_split_anywhere() {
    let input: &[u8] =
        b"PUTSCRIPT \"s\" {9+}\r\nkeep;\r\n\r\n\r\nNOOP \"a\\\"b\"\nCHECKSCRIPT {3}\r\nx\ry\r\nLISTSCRIPTS\r\n";
    let (whole, used) = parse_all(input, input.len());
    assert_eq!(used, input.len());
    assert_eq!(
        whole,
        vec![
            Ok(Command::PutScript { name: "s".into(), script: b"keep;\r\n\r\n".to_vec() }),
            Ok(Command::Noop { tag: Some("a\"b".into()) }),
            Ok(Command::CheckScript { script: b"x\ry".to_vec() }),
            Ok(Command::ListScripts),
        ]
    );
    // Where each command ends: the used bytes of the commands one after another.
    let mut ends = Vec::new();
    let mut at = 0;
    while let Decoded::Done(_, n) = parse_command(&input[at..], &LIMITS) {
        at += n;
        ends.push(at);
    }
    assert_eq!(ends.len(), 4);
    for cut in 0..=input.len() {
        let (some, used) = parse_all(input, cut);
        let complete = ends.iter().filter(|e| **e <= cut).count();
        assert_eq!(some, whole[..complete], "cut at {cut}");
        assert_eq!(used, if complete == 0 { 0 } else { ends[complete - 1] });
    }
}

#[test]
fn need_more_says_how_much() {
    // Inside a literal the parser knows exactly where it ends.
    assert_eq!(parse_command(b"PUTSCRIPT \"s\" {10+}\r\nab", &LIMITS), Decoded::NeedMore(31));
    assert_eq!(parse_command(b"PUTSCRIPT \"s\" {10+}\r", &LIMITS), Decoded::NeedMore(21));
    assert_eq!(parse_command(b"NOOP", &LIMITS), Decoded::NeedMore(5));
    assert_eq!(parse_command(b"", &LIMITS), Decoded::NeedMore(1));
}

#[test]
fn literal_data_is_not_the_line() {
    // A literal may hold CRLFs, quotes and braces, and its length is not the line's.
    let script = b"if true {\r\n  fileinto \"x\";\r\n}\r\n".repeat(3);
    let mut input = format!("PUTSCRIPT {{1+}}\r\nn {{{}+}}\r\n", script.len()).into_bytes();
    input.extend_from_slice(&script);
    input.extend_from_slice(b"\r\n");
    let Decoded::Done(Ok(Command::PutScript { name, script: got }), used) = parse_command(&input, &LIMITS) else {
        panic!()
    };
    assert_eq!((name.as_str(), got, used), ("n", script, input.len()));
}

#[test]
fn over_long_lines_are_skipped_to_their_end() {
    let mut input = b"NOOP \"".to_vec();
    input.extend_from_slice(&[b'a'; 100]);
    input.extend_from_slice(b"\"\r\nLOGOUT\r\n");
    let Decoded::Fault(Fault::LineTooLong { skip, ended: true }) = parse_command(&input, &LIMITS) else { panic!() };
    assert_eq!(&input[skip..], b"LOGOUT\r\n");
    // Without its end yet, all there is goes, and the caller goes on discarding.
    assert_eq!(parse_command(&input[..80], &LIMITS), Decoded::Fault(Fault::LineTooLong { skip: 80, ended: false }));
    // An atom as long, and a line that is just too long for its CRLF.
    assert!(matches!(parse_command(&[b'A'; 70], &LIMITS), Decoded::Fault(Fault::LineTooLong { ended: false, .. })));
    let mut exact = vec![b'A'; 62];
    exact.extend_from_slice(b"\r\n");
    assert!(matches!(parse_command(&exact, &LIMITS), Decoded::Done(Err(ParseError::Unknown), 64)));
    exact.insert(0, b'A');
    assert!(matches!(parse_command(&exact, &LIMITS), Decoded::Fault(Fault::LineTooLong { skip: 65, ended: true })));
}

#[test]
fn large_literals_are_refused_before_their_data() {
    assert_eq!(
        parse_command(b"PUTSCRIPT \"s\" {101+}\r\n", &LIMITS),
        Decoded::Fault(Fault::LiteralTooLarge { command: Some("PUTSCRIPT"), size: 101, header: 22 })
    );
    // Two literals share the limit of one command.
    assert_eq!(
        parse_command(b"putscript {60+}\r\n", &LIMITS),
        Decoded::NeedMore(77),
        "one literal within the limit waits for its data"
    );
    let mut two = b"putscript {60+}\r\n".to_vec();
    two.extend_from_slice(&[b'n'; 60]);
    two.extend_from_slice(b" {41+}\r\n");
    assert!(matches!(
        parse_command(&two, &LIMITS),
        Decoded::Fault(Fault::LiteralTooLarge { command: Some("PUTSCRIPT"), size: 41, .. })
    ));
    // A length past 64 bits, and an unknown command's.
    assert!(matches!(
        parse_command(b"X {99999999999999999999999+}\r\n", &LIMITS),
        Decoded::Fault(Fault::LiteralTooLarge { command: None, size: u64::MAX, .. })
    ));
}

#[test]
fn malformed_literals_are_faults() {
    for bad in
        [&b"PUTSCRIPT {+}\r\n"[..], b"PUTSCRIPT {x}\r\n", b"PUTSCRIPT {5++}\r\n", b"PUTSCRIPT {5+} \r\n", b"A {5+}x"]
    {
        assert!(matches!(parse_command(bad, &LIMITS), Decoded::Fault(Fault::BadLiteral(_))), "{bad:?}");
    }
    let endless = [b"A {".as_slice(), &[b'1'; 40]].concat();
    assert!(matches!(parse_command(&endless, &LIMITS), Decoded::Fault(Fault::BadLiteral(_))));
    // Still incomplete, not wrong.
    assert_eq!(parse_command(b"PUTSCRIPT {12", &LIMITS), Decoded::NeedMore(14));
    assert_eq!(parse_command(b"PUTSCRIPT {12+}", &LIMITS), Decoded::NeedMore(16));
}

#[test]
fn hostile_bytes_stay_in_their_command() {
    let input = b"NO\0OP \xff\xfe \"a\0\"\r\nLOGOUT\r\n";
    let Decoded::Done(Err(ParseError::Syntax(_)), used) = parse_command(input, &LIMITS) else { panic!() };
    assert_eq!(&input[used..], b"LOGOUT\r\n");
    let input = b"GETSCRIPT \"no end\r\nLOGOUT\r\n";
    let Decoded::Done(Err(ParseError::Syntax(_)), used) = parse_command(input, &LIMITS) else { panic!() };
    assert_eq!(&input[used..], b"LOGOUT\r\n");
}

#[test]
fn sasl_answers() {
    let answer = |s: &[u8]| match parse_sasl_answer(s, &LIMITS) {
        Decoded::Done(r, _) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(answer(b"\"AGEAYg==\"\r\n"), Ok(SaslAnswer::Data(Secret::new(*b"AGEAYg=="))));
    assert_eq!(answer(b"{8+}\r\nAGEAYg==\r\n"), Ok(SaslAnswer::Data(Secret::new(*b"AGEAYg=="))));
    assert_eq!(answer(b"\"*\"\r\n"), Ok(SaslAnswer::Cancel));
    assert_eq!(answer(b"*\r\n"), Ok(SaslAnswer::Cancel));
    assert_eq!(answer(b"\"\"\r\n"), Ok(SaslAnswer::Data(Secret::new(*b""))));
    assert!(answer(b"AGEAYg==\r\n").is_err());
    assert!(answer(b"\"a\" \"b\"\r\n").is_err());
    assert!(answer(b"\r\n").is_err());
}
