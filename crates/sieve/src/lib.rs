//! Tern's own Sieve interpreter (RFC 5228), server-side mail filtering (issue #18). This crate
//! is so far its foundation: the lexer ([`lexer`]) and the parser ([`parser`]) that turn a
//! script into a generic syntax tree ([`ast`]), under explicit [`Limits`] on size, nesting and
//! the number of commands, with errors that give the line and column.
//!
//! It is a pure function of the script's text. **It does no I/O, runs nothing and stores
//! nothing**, and it does not yet know what any command means: which commands and tests exist,
//! `require`, the arguments each takes and the extensions are the semantic step that follows
//! (a compiler from this tree to a checked program), and executing that program at delivery is
//! the mailbox service's. The tree is generic on purpose, so the grammar here never changes when
//! an extension is added.

pub mod ast;
pub mod compile;
pub mod dates;
pub mod lexer;
pub mod matching;
pub mod message;
pub mod parser;
pub mod run;
pub mod strings;

pub use ast::{Argument, Command, Script, Test, Value};
pub use compile::{EXTENSIONS, Program, compile, compile_tree};
pub use lexer::{Error, ErrorKind, Lexer, Position, Token, TokenKind};
pub use parser::{Limits, parse, parse_bytes, parse_with};
pub use run::{Action, Environment, Input, Isolated, Mark, Outcome, Reply, RunLimits};

/// Checks a script as an upload (ManageSieve PUTSCRIPT and CHECKSCRIPT, `tern admin sieve put`,
/// the operator's `spec.sieve`) is checked before it is stored: it must parse under the default
/// limits and compile. The error says where, with the line and column.
pub fn check(script: &str) -> Result<(), Error> {
    compile(script).map(|_| ())
}

/// Runs `script` on `message` for one recipient and describes what it did in the canonical
/// lines the Pigeonhole differential corpus compares (`tests/pigeonhole/README.md`): sorted,
/// one per action, `compile error` alone when the script is refused. `includes` are the
/// scripts `include` may load, as (global, name, text).
///
/// It runs as the corpus's Pigeonhole is configured: no minimum vacation period, spamtest's
/// verdict read as a score out of 10 from `X-Spam-Score` and virustest's out of 5 from
/// `X-Virus-Scan` (at delivery the mailbox service gives the spam filter's verdict instead).
pub fn describe_run(
    script: &str,
    message: &[u8],
    envelope_from: &str,
    envelope_to: &str,
    includes: &[(bool, &str, &str)],
) -> Vec<String> {
    let Ok(program) = compile(script) else { return vec!["compile error".to_string()] };
    let parsed = message::Parsed::new(message);
    let header_number = |name: &str| -> Option<f64> {
        parsed.raw_values(name).next().and_then(|raw| message::decode_text(raw).parse::<f64>().ok())
    };
    let input = Input {
        message,
        envelope_from,
        envelope_to,
        original_to: None,
        spam_percent: header_number("x-spam-score").map(|s| (s * 10.0).clamp(0.0, 100.0) as u8),
        virus: header_number("x-virus-scan").map(|v| v.clamp(0.0, 5.0) as u8),
        now: 1_700_000_000,
    };
    let limits = RunLimits { vacation_min_period: 0, ..RunLimits::default() };
    let mut env = Scripts(includes);
    program.run(&input, &mut env, &limits).describe()
}

/// [`describe_run`]'s environment: only INBOX, nothing seen, the given scripts to include.
struct Scripts<'a>(&'a [(bool, &'a str, &'a str)]);

impl Environment for Scripts<'_> {
    fn mailbox_exists(&mut self, name: &str) -> bool {
        name.eq_ignore_ascii_case("INBOX")
    }
    fn seen(&mut self, _key: &str) -> bool {
        false
    }
    fn script(&mut self, name: &str, global: bool) -> Option<String> {
        self.0.iter().find(|(g, n, _)| *g == global && *n == name).map(|(_, _, text)| text.to_string())
    }
}

/// The message the fuzz body runs compiled scripts on.
const FUZZ_MESSAGE: &[u8] = b"From: A <a@example.org>\r\nTo: b+x@example.com\r\nSubject: =?UTF-8?Q?caf=C3=A9?=\r\nDate: Sat, 14 Feb 2009 14:31:30 +0100\r\nMessage-ID: <x@y>\r\n\r\nbody\r\n";

/// The body of the `sieve_parse` fuzz target: any bytes parse or fail without panicking, under
/// the default limits and under tight ones, and an error's position lies within the input. A
/// script that parses prints ([`Script`]'s `Display`) to text that parses again to the same
/// tree, and the tree respects the limits it was parsed under.
pub fn fuzz_parse(data: &[u8]) {
    let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
    let tight = Limits { max_script_size: 4096, max_block_depth: 3, max_test_depth: 3, max_commands: 20 };
    for limits in [Limits::default(), tight] {
        match parse_bytes(data, &limits) {
            Ok(script) => {
                assert!(data.len() <= limits.max_script_size);
                assert!(script.command_count() <= limits.max_commands);
                assert!(script.block_depth() <= limits.max_block_depth);
                assert!(script.test_depth() <= limits.max_test_depth);
                let printed = script.to_string();
                let roomy = Limits { max_script_size: usize::MAX, ..Limits::default() };
                let again = parse_with(&printed, &roomy)
                    .unwrap_or_else(|e| panic!("printed script does not parse: {e}\n{printed}"));
                assert!(again.same_tree(&script), "printed script parses differently:\n{printed}");
                // A script that compiles runs to an outcome with at least one line, within
                // the limits, whatever it says.
                if let Ok(program) = compile_tree(&script) {
                    let input = Input {
                        message: FUZZ_MESSAGE,
                        envelope_from: "a@example.org",
                        envelope_to: "b+x@example.com",
                        original_to: None,
                        spam_percent: Some(50),
                        virus: None,
                        now: 0,
                    };
                    let limits = RunLimits { max_steps: 10_000, ..RunLimits::default() };
                    let outcome = program.run(&input, &mut Isolated, &limits);
                    assert!(!outcome.describe().is_empty());
                    assert!(outcome.actions.len() <= limits.max_actions + 1);
                }
            }
            Err(e) => {
                assert!(e.pos.line >= 1 && e.pos.line <= lines, "error line {} beyond the input", e.pos.line);
                assert!(e.pos.column >= 1);
                assert!(!e.to_string().is_empty());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tern_runtime::generated;

    /// Scripts that use every construct, for the split-input property and as fuzz seeds.
    const VALID: [&str; 4] = [
        "require [\"fileinto\", \"reject\"];\r\n# a comment\r\nif anyof (not exists [\"From\",\"Date\"], size :over 1M) {\r\n  fileinto :copy \"Junk\";\r\n} elsif header :matches \"Subject\" \"*\\\"x\\\\*\" { /* c */ discard; }\r\nelse { reject text: # why\r\nNo.\r\n..dotted\r\n.\r\n; stop; }\r\n",
        "if allof(true, not false) { keep; }\nredirect \"a@example.com\";\nif size :under 10K {}\n",
        "vacation :days 7 :subject \"Away\" text:\nBack soon.\n.\n;\n",
        "require [\"variables\", \"fileinto\", \"imap4flags\", \"editheader\"];\nif header :matches \"subject\" \"*f?\" { set :upper \"s\" \"${1}\"; addflag \"${s}\"; }\naddheader \"X-A\" \"${s}\";\nfileinto \"F-${s}\";\n",
    ];

    /// Every prefix of a valid script (a script cut off anywhere, as an upload may be) parses
    /// or fails with an error inside it, never panics.
    #[test]
    fn every_prefix_of_a_valid_script_is_handled() {
        for script in VALID {
            assert!(crate::parse(script).is_ok(), "{script}");
            for end in 0..=script.len() {
                super::fuzz_parse(&script.as_bytes()[..end]);
            }
        }
    }

    #[test]
    fn fuzz_body_holds_on_random_bytes() {
        let all: Vec<u8> = (0..=255).collect();
        for input in generated::inputs(0x5eed_5eed_1234_5678, 3000, 64, &generated::bytes_of(&all)) {
            super::fuzz_parse(&input);
        }
    }

    /// Sieve's own tokens make many inputs parse, so the checks after a successful parse run
    /// too (printing and parsing again, the limits).
    #[test]
    fn fuzz_body_holds_on_generated_scripts() {
        let tokens: [&[u8]; 38] = [
            b"if ",
            b"true",
            b"not ",
            b"anyof",
            b"allof",
            b"keep",
            b"header",
            b":is ",
            b":Over",
            b" ",
            b"\r\n",
            b"\n",
            b"\r",
            b"\"a\"",
            b"\"\\\"\\\\\\x\"",
            b"\"",
            b"[",
            b"]",
            b"(",
            b")",
            b"{",
            b"}",
            b",",
            b";",
            b"10K ",
            b"99999999999999999999",
            b"text:\n",
            b"text: #c\r\n",
            b"..x\n",
            b".\n",
            b"# c\n",
            b"/* c */",
            b"/*",
            b"\xc3\xa9",
            b"require [\"variables\", \"fileinto\", \"imap4flags\"];",
            b"set \"a\" \"${1}x\";",
            b"fileinto \"${a}\";",
            b"header :matches \"subject\" \"*\" ",
        ];
        let mut parsed = 0;
        for input in generated::inputs(0x9e37_79b9_7f4a_7c15, 5000, 48, &tokens) {
            super::fuzz_parse(&input);
            parsed += usize::from(crate::parse_bytes(&input, &crate::Limits::default()).is_ok());
        }
        assert!(parsed >= 100, "only {parsed} generated inputs parse: the checks after a parse barely run");
        for script in VALID {
            super::fuzz_parse(script.as_bytes());
        }
    }
}
