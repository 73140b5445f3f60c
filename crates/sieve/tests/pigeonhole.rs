//! The differential corpus against Dovecot Pigeonhole (issue #18): scripts, messages and what
//! Pigeonhole's `sieve-test` does with them, recorded as canonical lines in
//! `tests/pigeonhole/cases/*.case` (the format is in `tests/pigeonhole/README.md`).
//!
//! - `tern_agrees_with_pigeonhole` runs Tern's interpreter ([`tern_sieve::describe_run`]) on
//!   every case and compares with the recorded lines, or with the case's `--- tern` lines where
//!   Tern disagrees with Pigeonhole on purpose. It needs no Pigeonhole.
//! - `record_pigeonhole` (ignored: it needs Debian's `dovecot-sieve`) runs `sieve-test` on every
//!   case. With `TERN_PIGEONHOLE_RECORD=1` it rewrites the `--- pigeonhole` sections; without, it
//!   checks that they are still what Pigeonhole says, so that an upgrade that changes an answer
//!   is noticed (`cargo xtask ci` runs it).

// The modules live beside the corpus they read, not as test targets of their own.
#[path = "pigeonhole/corpus.rs"]
mod corpus;
#[path = "pigeonhole/normalise.rs"]
mod normalise;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use corpus::{Case, Location};
use normalise::DryRun;

/// The corpus must not shrink to nothing unnoticed: an empty or unreadable directory fails.
const MIN_CASES: usize = 100;

/// Where Debian's `dovecot-sieve` installs `sieve-test`; `TERN_SIEVE_TEST` names another.
const SIEVE_TEST: &str = "/usr/bin/sieve-test";

#[test]
fn tern_agrees_with_pigeonhole() {
    let files = corpus::load_all();
    let count: usize = files.iter().map(|file| file.cases.len()).sum();
    assert!(
        count >= MIN_CASES,
        "the corpus has {count} cases, fewer than {MIN_CASES}: is tests/pigeonhole/cases intact?"
    );
    let mut disagreements = Vec::new();
    for file in &files {
        for case in &file.cases {
            let name = case_name(&file.path, case);
            if case.pigeonhole.is_empty() && case.tern.is_none() {
                disagreements.push(format!("{name}: not recorded yet (run the recorder, see README.md)"));
                continue;
            }
            let message = read_message(case);
            let includes: Vec<(bool, &str, &str)> = case
                .includes
                .iter()
                .map(|i| (matches!(i.location, corpus::Location::Global), i.name.as_str(), i.text.as_str()))
                .collect();
            let got = tern_sieve::describe_run(&case.script, &message, &case.from, &case.to, &includes);
            if got != case.expected() {
                let source = if case.tern.is_some() { "--- tern" } else { "--- pigeonhole" };
                disagreements.push(format!(
                    "{name} (message {}, from {}, to {})\n  script:\n{}  expected ({source}):\n{}  got:\n{}",
                    case.message,
                    case.from,
                    case.to,
                    indent(&case.script),
                    indent_lines(case.expected()),
                    indent_lines(&got),
                ));
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "Tern disagrees with the corpus on {} of {count} cases:\n\n{}",
        disagreements.len(),
        disagreements.join("\n\n")
    );
}

/// The case files are in the layout the recorder prints, so that recording rewrites only the
/// `--- pigeonhole` sections and a review's diff shows nothing else.
#[test]
fn case_files_are_in_the_recorders_layout() {
    for file in corpus::load_all() {
        let text = std::fs::read_to_string(&file.path).expect("read a case file");
        assert!(
            corpus::print(&file) == text,
            "{} is not in the recorder's layout (see README.md)",
            file.path.display()
        );
    }
}

#[test]
#[ignore = "needs Pigeonhole's sieve-test (Debian's dovecot-sieve); `cargo xtask ci` runs it"]
fn record_pigeonhole() {
    let sieve_test = std::env::var_os("TERN_SIEVE_TEST").map_or_else(|| PathBuf::from(SIEVE_TEST), PathBuf::from);
    assert!(
        sieve_test.is_file(),
        "{} is missing: install Debian's dovecot-sieve (`cargo xtask clients` does), or name sieve-test in TERN_SIEVE_TEST",
        sieve_test.display()
    );
    let record = std::env::var("TERN_PIGEONHOLE_RECORD").is_ok_and(|value| value == "1");
    let mut stale = Vec::new();
    let mut count = 0;
    for mut file in corpus::load_all() {
        let mut changed = false;
        for case in &mut file.cases {
            count += 1;
            let name = case_name(&file.path, case);
            let lines = run_pigeonhole(&sieve_test, case).unwrap_or_else(|e| panic!("{name}: {e}"));
            if lines != case.pigeonhole {
                if !record {
                    stale.push(format!(
                        "{name}\n  recorded:\n{}  Pigeonhole says:\n{}",
                        indent_lines(&case.pigeonhole),
                        indent_lines(&lines)
                    ));
                }
                case.pigeonhole = lines;
                changed = true;
            }
        }
        if record && changed {
            std::fs::write(&file.path, corpus::print(&file))
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", file.path.display()));
            println!("recorded {}", file.path.display());
        }
    }
    assert!(count >= MIN_CASES, "the corpus has {count} cases, fewer than {MIN_CASES}");
    assert!(
        stale.is_empty(),
        "Pigeonhole now answers {} cases differently from the recording (record again with \
         TERN_PIGEONHOLE_RECORD=1 if that is right):\n\n{}",
        stale.len(),
        stale.join("\n\n")
    );
}

/// The name failures give a case: its file's stem and its own name.
fn case_name(path: &Path, case: &Case) -> String {
    let stem = path.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_default();
    format!("{stem}/{}", case.name)
}

fn read_message(case: &Case) -> Vec<u8> {
    let path = corpus::root().join("messages").join(&case.message);
    std::fs::read(&path).unwrap_or_else(|e| panic!("case {}: cannot read {}: {e}", case.name, path.display()))
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("    {line}\n")).collect()
}

fn indent_lines(lines: &[String]) -> String {
    lines.iter().map(|line| format!("    {line}\n")).collect()
}

/// Pigeonhole's configuration for the corpus. The extensions that are off by default
/// (editheader, vacation-seconds, spamtest, spamtestplus, virustest) are on; vacation may be
/// given any period, so that `:seconds 1` is not raised to a minimum; spamtest reads a score out
/// of 10 from X-Spam-Score and virustest one out of 5 from X-Virus-Scan; `include` finds
/// personal scripts in `personal/` and global ones in `global/`. Dovecot drops its privileges
/// to `mail_uid` when started as root, and only root may change them.
fn config(dir: &Path) -> String {
    let root = std::fs::metadata("/proc/self").map(|meta| meta.uid() == 0).unwrap_or(false);
    let privileges = if root { "mail_uid = nobody\nmail_gid = nogroup\n" } else { "" };
    let dir = dir.display();
    format!(
        "{privileges}first_valid_uid = 0\n\
         first_valid_gid = 0\n\
         log_path = /dev/stderr\n\
         plugin {{\n  \
           sieve_extensions = +editheader +vacation-seconds +spamtest +spamtestplus +virustest\n  \
           sieve_vacation_min_period = 0\n  \
           sieve_spamtest_status_type = score\n  \
           sieve_spamtest_status_header = X-Spam-Score\n  \
           sieve_spamtest_max_value = 10\n  \
           sieve_virustest_status_type = score\n  \
           sieve_virustest_status_header = X-Virus-Scan\n  \
           sieve_virustest_max_value = 5\n  \
           sieve = file:{dir}/personal;active={dir}/active.sieve\n  \
           sieve_global = {dir}/global\n\
         }}\n"
    )
}

/// Writes `contents` readable by everyone, since `sieve-test` reads as `nobody`.
fn write_shared(path: &Path, contents: &[u8]) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).expect("chmod a file");
}

/// Makes a directory that `nobody` may write in: Pigeonhole writes the compiled script next to
/// the script, and the executed run stores into the maildir.
fn shared_dir(path: &Path) {
    std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).expect("chmod a directory");
}

/// Runs `sieve-test` on one case in a fresh directory and gives the canonical lines.
fn run_pigeonhole(sieve_test: &Path, case: &Case) -> Result<Vec<String>, String> {
    let temp = tempfile::Builder::new().prefix("tern-pigeonhole-").tempdir().map_err(|e| e.to_string())?;
    let dir = temp.path();
    shared_dir(dir);
    for sub in ["personal", "global"] {
        shared_dir(&dir.join(sub));
    }
    for include in &case.includes {
        let sub = match include.location {
            Location::Personal => "personal",
            Location::Global => "global",
        };
        write_shared(&dir.join(sub).join(format!("{}.sieve", include.name)), include.text.as_bytes());
    }
    write_shared(&dir.join("dc.conf"), config(dir).as_bytes());
    write_shared(&dir.join("script.sieve"), case.script.as_bytes());
    write_shared(&dir.join("message.eml"), &read_message(case));

    let run = |execute: bool| -> Result<(String, String), String> {
        // The dry run and the executed run have maildirs of their own, so that what one
        // stores or tracks is not seen by the other.
        let mail = dir.join(if execute { "mail-executed" } else { "mail" });
        let mut command = Command::new(sieve_test);
        if execute {
            command.arg("-e");
        }
        command
            .arg("-c")
            .arg(dir.join("dc.conf"))
            .arg("-l")
            .arg(format!("maildir:{}:LAYOUT=fs", mail.display()))
            .args(["-f", &case.from, "-a", &case.to, "-r", &case.to])
            .arg(dir.join("script.sieve"))
            .arg(dir.join("message.eml"))
            // Dovecot looks for its per-user state (duplicate tracking) under HOME.
            .env("HOME", dir);
        let output = command.output().map_err(|e| format!("cannot run {}: {e}", sieve_test.display()))?;
        Ok((String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned()))
    };

    let (stdout, stderr) = run(false)?;
    let (mut lines, vacation_seconds, mailboxes) = match normalise::dry_run(&stdout, &stderr)? {
        DryRun::CompileError => return Ok(vec!["compile error".to_string()]),
        DryRun::RuntimeError => return Ok(vec!["error".to_string(), "store INBOX".to_string()]),
        DryRun::Done { lines, vacation_seconds, mailboxes } => (lines, vacation_seconds, mailboxes),
    };
    if let Some(seconds) = vacation_seconds {
        // The executed run really stores, so the mailboxes the dry run stored into must exist
        // (the fs layout makes a mailbox a directory of the same name), or a failed store would
        // stop the run before the vacation action.
        let mail = dir.join("mail-executed");
        shared_dir(&mail);
        for mailbox in mailboxes.iter().filter(|mailbox| !mailbox.is_empty() && *mailbox != "INBOX") {
            let mut path = mail.clone();
            for part in mailbox.split('/') {
                path.push(part);
                shared_dir(&path);
            }
            for sub in ["cur", "new", "tmp"] {
                shared_dir(&path.join(sub));
            }
        }
        let (stdout, stderr) = run(true)?;
        if !stderr.contains("final result: success") {
            return Err(format!("the executed run (for the vacation reply) failed\nstderr:\n{stderr}"));
        }
        if let Some((recipient, subject)) = normalise::executed_vacation(&stdout, &stderr)? {
            lines.push(normalise::vacation_line(&recipient, seconds, &subject));
        }
    }
    Ok(normalise::canonical(lines))
}

/// The normaliser on output captured from Pigeonhole 0.5.19 (Debian 12's dovecot-sieve).
mod normaliser {
    use super::normalise::{DryRun, canonical, decode_words, dry_run, executed_vacation};

    const OK: &str = "sieve-test: Info: final result: success\n";

    fn done(stdout: &str) -> Vec<String> {
        match dry_run(stdout, OK).expect("understood") {
            DryRun::Done { lines, .. } => canonical(lines),
            other => panic!("not a finished run: {other:?}"),
        }
    }

    #[test]
    fn stores_with_flags_and_implicit_keep() {
        let out = "\nPerformed actions:\n\n * store message in folder: Foo\n        + add IMAP flags: \\flagged \\seen\n \
                   * store message in folder: INBOX\n\nImplicit keep:\n\n  (none)\n\n";
        assert_eq!(done(out), ["store Foo flags \\flagged \\seen", "store INBOX"]);
        let out = "\nPerformed actions:\n\n  (none)\n\nImplicit keep:\n\n * store message in folder: INBOX\n        \
                   + add IMAP flags: \\seen Foo bar $Junk\n\n";
        assert_eq!(done(out), ["store INBOX flags $junk \\seen bar foo"]);
    }

    #[test]
    fn copy_and_create_leave_the_store_alone() {
        let out = "\nPerformed actions:\n\n * store message in folder: A/B\n        + create mailbox if it does not exist\n        \
                   + preserve implicit keep\n\nImplicit keep:\n\n * store message in folder: INBOX\n\n";
        assert_eq!(done(out), ["store A/B", "store INBOX"]);
    }

    #[test]
    fn discard_redirect_and_duplicate() {
        assert_eq!(done("\nPerformed actions:\n\n * discard\n\nImplicit keep:\n\n  (none)\n\n"), ["(none)"]);
        let out = "\nPerformed actions:\n\n * redirect message to: <y@example.net>\n * redirect message to: <x@example.net>\n\n\
                   Implicit keep:\n\n  (none)\n\n";
        assert_eq!(done(out), ["redirect x@example.net", "redirect y@example.net"]);
        let out =
            "\nPerformed actions:\n\n * track duplicate\n\nImplicit keep:\n\n * store message in folder: INBOX\n\n";
        assert_eq!(done(out), ["store INBOX"]);
    }

    #[test]
    fn reject_reasons_get_their_line_breaks_back() {
        let out = "\nPerformed actions:\n\n * reject message with reason: no thanks??line2??\n\nImplicit keep:\n\n  (none)\n\n";
        assert_eq!(done(out), ["reject no thanks\\nline2"]);
        let long = format!("{}...", "x".repeat(128));
        let out =
            format!("\nPerformed actions:\n\n * reject message with reason: {long}\n\nImplicit keep:\n\n  (none)\n\n");
        assert!(dry_run(&out, OK).is_err(), "a reason cut short must not be recorded");
    }

    #[test]
    fn vacation_period_from_the_dry_run() {
        let out = "\nPerformed actions:\n\n * send vacation message:\n    => seconds : 259200\n    => subject : Out\n    \
                   => from    : me@example.com\n    => handle  : awayOutme@example.com<NO-MIME>\n\nSTART MESSAGE\naway\n * not an action\n\
                   END MESSAGE\n\nImplicit keep:\n\n * store message in folder: INBOX\n\n";
        match dry_run(out, OK).expect("understood") {
            DryRun::Done { lines, vacation_seconds, .. } => {
                assert_eq!(lines, ["store INBOX"]);
                assert_eq!(vacation_seconds, Some(259_200));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_and_unknown_output() {
        let compile = "s: line 1: error: unknown command 'foo'.\ns: error: validation failed.\n\
                       sieve-test: Fatal: failed to compile sieve script\n";
        assert_eq!(dry_run("", compile), Ok(DryRun::CompileError));
        let runtime = "error: specified redirect address 'x' is invalid.\n\
                       sieve-test: Info: final result: failed; resolved with successful implicit keep\n";
        assert_eq!(dry_run("", runtime), Ok(DryRun::RuntimeError));
        assert!(dry_run("\nPerformed actions:\n\n * teleport message\n\nImplicit keep:\n\n  (none)\n", OK).is_err());
        assert!(dry_run("", "sieve-test: Fatal: Invalid -f parameter\n").is_err());
    }

    #[test]
    fn executed_vacation_reply() {
        let stdout = "X-Sieve: Pigeonhole Sieve 0.5.19 (4eae2f79)\nMessage-ID: <dovecot-sieve-1@vm>\nFrom: <user@example.com>\n\
                      To: Alice <alice@example.org>\nSubject: Auto: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\n =?utf-8?b?IGF1cw==?=\n\
                      Auto-Submitted: auto-replied (vacation)\nPrecedence: bulk\n\naway\nX-Sieve: Pigeonhole\nSubject: other\n\n\
                      RECIPIENT: alice@example.org\n";
        let stderr = "sieve-test: Info: sieve: msgid=<1@example.org>: vacation action: sent vacation response to <alice@example.org>\n";
        assert_eq!(
            executed_vacation(stdout, stderr),
            Ok(Some(("alice@example.org".to_string(), "Auto: Grüße aus".to_string())))
        );
        let skipped = "sieve-test: Info: sieve: msgid=<2@example.org>: vacation action: discarding vacation response to \
                       mailinglist recipient <alice@example.org>\n";
        assert_eq!(executed_vacation("", skipped), Ok(None));
    }

    #[test]
    fn encoded_words() {
        assert_eq!(decode_words("=?UTF-8?Q?Caf=C3=A9?= news"), "Café news");
        assert_eq!(decode_words("=?ISO-8859-1?Q?=E0_vous?= =?UTF-8?B?w6k=?= x"), "à vousé x");
        assert_eq!(decode_words("plain  text =?bogus"), "plain  text =?bogus");
    }
}
