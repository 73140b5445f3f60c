//! The interpreter's behaviour where the differential corpus cannot reach: the environment
//! (mailboxes, seen keys, included scripts), the limits, the fallback keep on runtime errors,
//! the edited message, spam verdicts and the compiler's errors with their lines.

use std::collections::{HashMap, HashSet};

use tern_sieve::{Action, Environment, Input, Outcome, RunLimits, compile};

const MESSAGE: &[u8] = b"Return-Path: <alice@example.org>\r\n\
Received: from a by b; Sat, 14 Feb 2009 14:31:30 +0100\r\n\
From: Alice <alice@example.org>\r\n\
To: Bob <bob+lists@example.com>, carol@example.com\r\n\
Subject: =?UTF-8?Q?Caf=C3=A9?= meeting\r\n\
Date: Sat, 14 Feb 2009 14:31:30 +0100\r\n\
Message-ID: <m1@example.org>\r\n\
X-Spam: no\r\n\
\r\n\
Hello Bob,\r\nsee you at the cafe.\r\n";

#[derive(Default)]
struct Env {
    mailboxes: HashSet<String>,
    seen: HashSet<String>,
    scripts: HashMap<String, String>,
}

impl Environment for Env {
    fn mailbox_exists(&mut self, name: &str) -> bool {
        name == "INBOX" || self.mailboxes.contains(name)
    }
    fn seen(&mut self, key: &str) -> bool {
        self.seen.contains(key)
    }
    fn script(&mut self, name: &str, _global: bool) -> Option<String> {
        self.scripts.get(name).cloned()
    }
}

fn input(message: &[u8]) -> Input<'_> {
    Input {
        message,
        envelope_from: "alice@example.org",
        envelope_to: "bob+lists@example.com",
        original_to: None,
        spam_percent: None,
        virus: None,
        now: 1_234_618_290,
    }
}

fn run_with(script: &str, env: &mut Env, input: &Input<'_>, limits: &RunLimits) -> Outcome {
    let program = compile(script).unwrap_or_else(|e| panic!("{e}\n{script}"));
    program.run(input, env, limits)
}

fn run(script: &str) -> Outcome {
    run_with(script, &mut Env::default(), &input(MESSAGE), &RunLimits::default())
}

fn lines(script: &str) -> Vec<String> {
    run(script).describe()
}

#[test]
fn base_commands_and_the_implicit_keep() {
    assert_eq!(lines("keep;"), ["store INBOX"]);
    assert_eq!(lines(""), ["store INBOX"]);
    assert_eq!(lines("discard;"), ["(none)"]);
    assert_eq!(lines("require \"fileinto\"; fileinto \"Work\";"), ["store Work"]);
    assert_eq!(lines("require [\"fileinto\", \"copy\"]; fileinto :copy \"Work\";"), ["store INBOX", "store Work"]);
    assert_eq!(lines("redirect \"x@example.net\"; redirect \"X@example.net\";"), ["redirect x@example.net"]);
    assert_eq!(lines("if header :contains \"subject\" \"café\" { discard; stop; } keep;"), ["(none)"]);
    assert_eq!(lines("if address :domain \"to\" \"example.com\" { discard; }"), ["(none)"]);
    assert_eq!(lines("if exists [\"X-Spam\", \"X-None\"] { discard; }"), ["store INBOX"]);
    assert_eq!(lines("if size :over 100 { discard; }"), ["(none)"]);
    assert_eq!(lines("if size :under 100 { discard; }"), ["store INBOX"]);
}

#[test]
fn match_variables_and_modifiers() {
    let script = "require [\"variables\", \"fileinto\", \"subaddress\"];\n\
        if address :matches \"from\" \"*@*.*\" { set :upperfirst \"who\" \"${1}\"; }\n\
        if address :matches :detail \"to\" \"*\" { set \"list\" \"${0}\"; }\n\
        fileinto \"${list}/${who}\";";
    assert_eq!(lines(script), ["store lists/Alice"]);
    let script = "require [\"variables\", \"fileinto\"]; set :length \"n\" \"abcd\"; set :quotewildcard \"q\" \"a*b\"; fileinto \"${n}-${q}-${unknown}\";";
    assert_eq!(lines(script), ["store 4-a\\*b-"]);
}

#[test]
fn flags_follow_the_internal_variable() {
    let script = "require [\"imap4flags\", \"fileinto\"]; addflag \"\\\\Seen\"; fileinto \"A\"; addflag \"$x\"; removeflag \"\\\\seen\"; if hasflag \"$X\" { keep; }";
    assert_eq!(lines(script), ["store A flags \\seen", "store INBOX flags $x"]);
}

#[test]
fn a_runtime_error_keeps_and_drops_every_other_action() {
    let script = "require [\"fileinto\", \"reject\"]; fileinto \"A\"; reject \"no\";";
    let outcome = run(script);
    assert!(outcome.error.as_deref().unwrap().contains("reject"), "{outcome:?}");
    assert_eq!(outcome.describe(), ["error", "store INBOX"]);
    let limits = RunLimits { max_redirects: 2, ..RunLimits::default() };
    let script = "redirect \"a@x.org\"; redirect \"b@x.org\"; redirect \"c@x.org\";";
    let outcome = run_with(script, &mut Env::default(), &input(MESSAGE), &limits);
    assert_eq!(outcome.describe(), ["error", "store INBOX"]);
}

#[test]
fn steps_are_bounded() {
    let mut script = String::from("require \"body\";\n");
    for _ in 0..200 {
        script.push_str("if body :contains [\"x\", \"y\", \"z\"] { keep; }\n");
    }
    let limits = RunLimits { max_steps: 500, ..RunLimits::default() };
    let outcome = run_with(&script, &mut Env::default(), &input(MESSAGE), &limits);
    assert!(outcome.error.as_deref().unwrap().contains("steps"), "{outcome:?}");
    assert_eq!(outcome.describe(), ["error", "store INBOX"]);
}

#[test]
fn vacation_replies_once_and_not_to_automatic_mail() {
    let script = "require \"vacation\"; vacation :days 3 \"Away\";";
    let outcome = run(script);
    let reply = outcome.actions.iter().find_map(|a| if let Action::Vacation(r) = a { Some(r) } else { None }).unwrap();
    assert_eq!(reply.to, "alice@example.org");
    assert_eq!(reply.subject, "Auto: Café meeting");
    assert_eq!(reply.period, 3 * 86_400);
    assert_eq!(reply.in_reply_to.as_deref(), Some("<m1@example.org>"));
    assert_eq!(outcome.marks.len(), 1);
    // Seen within the period: no second reply.
    let mut env = Env::default();
    env.seen.insert(outcome.marks[0].key.clone());
    let again = run_with(script, &mut env, &input(MESSAGE), &RunLimits::default());
    assert_eq!(again.describe(), ["store INBOX"]);
    // A list message, a null sender, and mail not addressed to the recipient get none.
    let mut list = b"List-Id: <l.example.org>\r\n".to_vec();
    list.extend_from_slice(MESSAGE);
    assert_eq!(run_with(script, &mut Env::default(), &input(&list), &RunLimits::default()).describe(), ["store INBOX"]);
    let null = Input { envelope_from: "", ..input(MESSAGE) };
    assert_eq!(run_with(script, &mut Env::default(), &null, &RunLimits::default()).describe(), ["store INBOX"]);
    let other = Input { envelope_to: "dave@example.com", ..input(MESSAGE) };
    assert_eq!(run_with(script, &mut Env::default(), &other, &RunLimits::default()).describe(), ["store INBOX"]);
    // The minimum period holds a script's shorter one up.
    let short = run("require \"vacation-seconds\"; vacation :seconds 10 \"Away\";");
    assert!(
        short
            .describe()
            .contains(&"vacation to alice@example.org seconds 86400 subject Auto: Café meeting".to_string())
    );
}

#[test]
fn duplicate_marks_and_reads_the_environment() {
    let script = "require \"duplicate\"; if duplicate { discard; }";
    let first = run(script);
    assert_eq!(first.describe(), ["store INBOX"]);
    assert_eq!(first.marks.len(), 1);
    let mut env = Env::default();
    env.seen.insert(first.marks[0].key.clone());
    assert_eq!(run_with(script, &mut env, &input(MESSAGE), &RunLimits::default()).describe(), ["(none)"]);
}

#[test]
fn editheader_changes_the_stored_message_and_later_tests() {
    let script = "require \"editheader\"; addheader \"X-Filed\" \"yes\"; deleteheader \"x-spam\"; deleteheader \"received\"; if exists \"x-filed\" { keep; }";
    let outcome = run(script);
    let edited = String::from_utf8(outcome.message.clone().unwrap()).unwrap();
    assert!(edited.starts_with("X-Filed: yes\r\n"), "{edited}");
    assert!(!edited.contains("X-Spam"));
    assert!(edited.contains("Received: from a by b"), "Received is protected");
    assert!(edited.ends_with("\r\n\r\nHello Bob,\r\nsee you at the cafe.\r\n"));
}

#[test]
fn include_runs_the_named_script_with_globals() {
    let mut env = Env::default();
    env.scripts.insert(
        "lists".into(),
        "require [\"include\", \"variables\", \"fileinto\"]; global \"box\"; fileinto \"${box}\"; return; discard;"
            .into(),
    );
    let script = "require [\"include\", \"variables\"]; global \"box\"; set \"box\" \"Lists\"; include \"lists\"; include :optional \"missing\";";
    let outcome = run_with(script, &mut env, &input(MESSAGE), &RunLimits::default());
    assert_eq!(outcome.describe(), ["store Lists"]);
    let missing =
        run_with("require \"include\"; include \"missing\";", &mut env, &input(MESSAGE), &RunLimits::default());
    assert_eq!(missing.describe(), ["error", "store INBOX"]);
    env.scripts.insert("loop".into(), "require \"include\"; include \"loop\";".into());
    let looped = run_with("require \"include\"; include \"loop\";", &mut env, &input(MESSAGE), &RunLimits::default());
    assert!(looped.error.unwrap().contains("loops"));
}

#[test]
fn mailboxexists_and_create() {
    let mut env = Env::default();
    env.mailboxes.insert("Work".into());
    let script = "require [\"mailbox\", \"fileinto\"]; if mailboxexists \"Work\" { fileinto :create \"New\"; }";
    let outcome = run_with(script, &mut env, &input(MESSAGE), &RunLimits::default());
    assert_eq!(outcome.actions, [Action::Store { mailbox: "New".into(), flags: vec![], create: true }]);
}

#[test]
fn spamtest_reads_the_scan_and_dates_read_headers() {
    let script = "require [\"spamtest\", \"relational\", \"comparator-i;ascii-numeric\"]; if spamtest :value \"ge\" :comparator \"i;ascii-numeric\" \"6\" { discard; }";
    let spam = Input { spam_percent: Some(90), ..input(MESSAGE) };
    assert_eq!(run_with(script, &mut Env::default(), &spam, &RunLimits::default()).describe(), ["(none)"]);
    assert_eq!(run(script).describe(), ["store INBOX"], "unscanned is 0");
    let script = "require [\"date\", \"relational\"]; if date :zone \"+0000\" \"date\" \"hour\" \"13\" { discard; }";
    assert_eq!(lines(script), ["(none)"]);
    let script = "require \"date\"; if date :originalzone \"received\" \"time\" \"14:31:30\" { discard; }";
    assert_eq!(lines(script), ["(none)"]);
    let script = "require \"date\"; if currentdate :zone \"+0100\" \"date\" \"2009-02-14\" { discard; }";
    assert_eq!(lines(script), ["(none)"]);
}

#[test]
fn compile_errors_name_the_line() {
    let cases = [
        ("keep;\nfileinto \"x\";", 2, "require \"fileinto\""),
        ("if true {\n  frobnicate;\n}", 2, "unknown command"),
        ("require \"nonesuch\";", 1, "unsupported extension"),
        ("keep;\nrequire \"fileinto\";", 2, "require must come before"),
        ("if header :is \"a\" {}", 1, "expects keys"),
        ("require \"regex\";\nif header :regex \"a\" \"(\" {}", 2, "regular expression"),
        ("redirect \"not an address\";", 1, "invalid address"),
        ("if size 10 {}", 1, ":over and :under"),
        ("else { keep; }", 1, "without a preceding if"),
        ("keep :flags \"x\";", 1, "unknown tag"),
    ];
    for (script, line, text) in cases {
        let e = compile(script).expect_err(script);
        assert_eq!(e.pos.line, line, "{script}: {e}");
        assert!(e.to_string().contains(text), "{script}: {e}");
    }
}
