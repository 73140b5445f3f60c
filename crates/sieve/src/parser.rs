//! The grammar of Sieve (RFC 5228 section 8.2) over the lexer's tokens, to a generic
//! [`Script`] tree:
//!
//! ```text
//! commands  = *command
//! command   = identifier arguments (";" / block)
//! block     = "{" commands "}"
//! arguments = *argument [ test / test-list ]
//! argument  = string-list / number / tag        ; a string is a one-element list in the RFC,
//!                                               ; here it stays a `Value::String`
//! test      = identifier arguments
//! test-list = "(" test *("," test) ")"
//! ```
//!
//! Under [`Limits`]: the script's size, how deeply blocks and tests nest, and how many commands
//! there are. The depth is checked before the parser descends, so the recursion is bounded by
//! the limits (each at most [`DEPTH_CEILING`]) and no script can overflow the stack.
//!
//! The parser knows only the grammar: not which commands exist, what `require` allows, or
//! whether a command's arguments suit it (the semantic step's). It does no I/O and runs nothing.

use crate::ast::{Argument, Command, Script, Test, Value};
use crate::lexer::{Error, ErrorKind, Lexer, Position, Token, TokenKind};

/// The most that [`Limits::max_block_depth`] and [`Limits::max_test_depth`] can allow: larger
/// values count as this, which keeps the parser's recursion well within a thread's stack.
pub const DEPTH_CEILING: usize = 256;

/// What a script may not exceed. The defaults suit scripts that people write by hand or with a
/// filter editor, and keep a hostile script cheap to refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The script's size in bytes (default 1 MiB).
    pub max_script_size: usize,
    /// How deeply blocks may nest (default 32): `if true { if true { } }` has depth 2.
    pub max_block_depth: usize,
    /// How deeply tests may nest (default 32): `if not not true` has depth 3.
    pub max_test_depth: usize,
    /// How many commands a script may have, those in blocks included (default 10,000).
    pub max_commands: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_script_size: 1 << 20, max_block_depth: 32, max_test_depth: 32, max_commands: 10_000 }
    }
}

/// Parses `script` under the default [`Limits`].
pub fn parse(script: &str) -> Result<Script, Error> {
    parse_with(script, &Limits::default())
}

/// Parses `script` under `limits`.
pub fn parse_with(script: &str, limits: &Limits) -> Result<Script, Error> {
    check_size(script.as_bytes(), limits)?;
    let mut parser = Parser {
        lexer: Lexer::new(script),
        peeked: None,
        limits: limits.clone(),
        commands: 0,
        block_depth: 0,
        test_depth: 0,
    };
    let commands = parser.commands(false)?;
    Ok(Script { commands })
}

/// Parses a script given as bytes (as ManageSieve and storage hold it): too large or not UTF-8
/// is an error at the first byte that is.
pub fn parse_bytes(script: &[u8], limits: &Limits) -> Result<Script, Error> {
    check_size(script, limits)?;
    match std::str::from_utf8(script) {
        Ok(script) => parse_with(script, limits),
        Err(e) => Err(Error::new(position_at(script, e.valid_up_to()), ErrorKind::InvalidUtf8)),
    }
}

fn check_size(script: &[u8], limits: &Limits) -> Result<(), Error> {
    if script.len() > limits.max_script_size {
        let kind = ErrorKind::ScriptTooLarge { size: script.len(), limit: limits.max_script_size };
        return Err(Error::new(position_at(script, limits.max_script_size), kind));
    }
    Ok(())
}

/// The position of byte `offset` of `script`.
fn position_at(script: &[u8], offset: usize) -> Position {
    let before = &script[..offset.min(script.len())];
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    Position {
        line: 1 + before.iter().filter(|&&b| b == b'\n').count(),
        column: 1 + before[line_start..].iter().filter(|&&b| b & 0xC0 != 0x80).count(),
    }
}

#[derive(Debug)]
struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Token>,
    limits: Limits,
    commands: usize,
    block_depth: usize,
    test_depth: usize,
}

impl Parser<'_> {
    fn peek(&mut self) -> Result<Option<&TokenKind>, Error> {
        if self.peeked.is_none() {
            self.peeked = self.lexer.next_token()?;
        }
        Ok(self.peeked.as_ref().map(|t| &t.kind))
    }

    fn next(&mut self) -> Result<Option<Token>, Error> {
        match self.peeked.take() {
            Some(token) => Ok(Some(token)),
            None => self.lexer.next_token(),
        }
    }

    /// The error for finding the next token (or the end) where `expected` should be.
    fn expected(&mut self, expected: &'static str) -> Error {
        match self.next() {
            Ok(Some(token)) => Error::new(token.pos, ErrorKind::Expected { expected, found: token.kind.to_string() }),
            Ok(None) => Error::new(
                self.lexer.position(),
                ErrorKind::Expected { expected, found: "the end of the script".into() },
            ),
            Err(e) => e,
        }
    }

    /// Consumes the next token if it is `kind`.
    fn eat(&mut self, kind: &TokenKind) -> Result<bool, Error> {
        if self.peek()? == Some(kind) {
            self.next()?;
            return Ok(true);
        }
        Ok(false)
    }

    fn identifier(&mut self, expected: &'static str) -> Result<(String, Position), Error> {
        if let Some(TokenKind::Identifier(_)) = self.peek()?
            && let Some(Token { kind: TokenKind::Identifier(name), pos }) = self.next()?
        {
            return Ok((name, pos));
        }
        Err(self.expected(expected))
    }

    /// Commands up to the end of the script, or (in a block) up to its `}`, left unread.
    fn commands(&mut self, in_block: bool) -> Result<Vec<Command>, Error> {
        let mut commands = Vec::new();
        loop {
            match self.peek()? {
                None if !in_block => return Ok(commands),
                Some(TokenKind::RightBrace) if in_block => return Ok(commands),
                Some(TokenKind::Identifier(_)) => commands.push(self.command()?),
                _ if in_block => return Err(self.expected("a command or '}'")),
                _ => return Err(self.expected("a command")),
            }
        }
    }

    fn command(&mut self) -> Result<Command, Error> {
        let (name, pos) = self.identifier("a command")?;
        self.commands += 1;
        if self.commands > self.limits.max_commands {
            return Err(Error::new(pos, ErrorKind::TooManyCommands { limit: self.limits.max_commands }));
        }
        let (args, tests, test_list) = self.arguments()?;
        let block = match self.peek()? {
            Some(TokenKind::Semicolon) => {
                self.next()?;
                None
            }
            Some(TokenKind::LeftBrace) => {
                let Some(open) = self.next()? else { return unreachable_end() };
                let limit = self.limits.max_block_depth.min(DEPTH_CEILING);
                if self.block_depth >= limit {
                    return Err(Error::new(open.pos, ErrorKind::BlocksTooDeep { limit }));
                }
                self.block_depth += 1;
                let block = self.commands(true)?;
                self.block_depth -= 1;
                // `commands(true)` returns only before a '}'.
                self.next()?;
                Some(block)
            }
            _ => return Err(self.expected("';' or '{' after the command's arguments")),
        };
        Ok(Command { name, args, tests, test_list, block, pos })
    }

    /// The arguments, then a test or a test-list if one follows.
    fn arguments(&mut self) -> Result<(Vec<Argument>, Vec<Test>, bool), Error> {
        let mut args = Vec::new();
        loop {
            match self.peek()? {
                Some(TokenKind::String(_) | TokenKind::Number(_) | TokenKind::Tag(_)) => {
                    let Some(token) = self.next()? else { return unreachable_end() };
                    let value = match token.kind {
                        TokenKind::String(s) => Value::String(s),
                        TokenKind::Number(n) => Value::Number(n),
                        TokenKind::Tag(t) => Value::Tag(t),
                        _ => return unreachable_end(),
                    };
                    args.push(Argument { value, pos: token.pos });
                }
                Some(TokenKind::LeftBracket) => {
                    let Some(open) = self.next()? else { return unreachable_end() };
                    let mut list = Vec::new();
                    loop {
                        match self.next()? {
                            Some(Token { kind: TokenKind::String(s), .. }) => list.push(s),
                            Some(token) => {
                                let kind = ErrorKind::Expected { expected: "a string", found: token.kind.to_string() };
                                return Err(Error::new(token.pos, kind));
                            }
                            None => return Err(self.expected("a string")),
                        }
                        if !self.eat(&TokenKind::Comma)? {
                            break;
                        }
                    }
                    if !self.eat(&TokenKind::RightBracket)? {
                        return Err(self.expected("',' or ']' in a string list"));
                    }
                    args.push(Argument { value: Value::StringList(list), pos: open.pos });
                }
                Some(TokenKind::Identifier(_)) => return Ok((args, vec![self.test()?], false)),
                Some(TokenKind::LeftParen) => {
                    self.next()?;
                    let mut tests = vec![self.test()?];
                    while self.eat(&TokenKind::Comma)? {
                        tests.push(self.test()?);
                    }
                    if !self.eat(&TokenKind::RightParen)? {
                        return Err(self.expected("',' or ')' in a test list"));
                    }
                    return Ok((args, tests, true));
                }
                _ => return Ok((args, Vec::new(), false)),
            }
        }
    }

    fn test(&mut self) -> Result<Test, Error> {
        let (name, pos) = self.identifier("a test")?;
        let limit = self.limits.max_test_depth.min(DEPTH_CEILING);
        if self.test_depth >= limit {
            return Err(Error::new(pos, ErrorKind::TestsTooDeep { limit }));
        }
        self.test_depth += 1;
        let (args, tests, test_list) = self.arguments()?;
        self.test_depth -= 1;
        Ok(Test { name, args, tests, test_list, pos })
    }
}

/// For the branches where a token was just peeked, so reading it cannot come up empty.
fn unreachable_end<T>() -> Result<T, Error> {
    Err(Error::new(Position::START, ErrorKind::Expected { expected: "a token", found: "nothing".into() }))
}

#[cfg(test)]
mod tests {
    use super::{DEPTH_CEILING, Limits, parse, parse_bytes, parse_with};
    use crate::ast::{Command, Script, Value};
    use crate::lexer::ErrorKind;

    fn ok(script: &str) -> Script {
        parse(script).unwrap_or_else(|e| panic!("{e}\n{script}"))
    }

    /// The line, column and kind of the error `script` gives.
    fn error(script: &str) -> (usize, usize, ErrorKind) {
        let e = parse(script).expect_err(script);
        (e.pos.line, e.pos.column, e.kind)
    }

    fn expected(expected: &'static str, found: &str) -> ErrorKind {
        ErrorKind::Expected { expected, found: found.into() }
    }

    fn values(command: &Command) -> Vec<Value> {
        command.args.iter().map(|a| a.value.clone()).collect()
    }

    fn s(s: &str) -> Value {
        Value::String(s.into())
    }

    fn list(items: &[&str]) -> Value {
        Value::StringList(items.iter().map(|s| (*s).to_owned()).collect())
    }

    fn tag(t: &str) -> Value {
        Value::Tag(t.into())
    }

    /// Every script parses, prints, and parses again to the same tree.
    fn round_trip(script: &Script) {
        let printed = script.to_string();
        assert!(ok(&printed).same_tree(script), "{printed}");
    }

    #[test]
    fn empty_scripts() {
        assert_eq!(ok(""), Script::default());
        assert_eq!(ok("  # nothing\r\n/* at all */\n"), Script::default());
    }

    #[test]
    fn commands_arguments_and_blocks() {
        let script = ok("require [\"fileinto\", \"reject\"];\nkeep;\r\nfileinto :copy \"a\" ; stop;");
        let names: Vec<&str> = script.commands.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["require", "keep", "fileinto", "stop"]);
        assert_eq!(values(&script.commands[0]), [list(&["fileinto", "reject"])]);
        assert_eq!(values(&script.commands[2]), [tag("copy"), s("a")]);
        assert!(script.commands.iter().all(|c| c.block.is_none() && c.tests.is_empty()));
        assert_eq!((script.commands[1].pos.line, script.commands[1].pos.column), (2, 1));
        assert_eq!((script.commands[2].args[1].pos.line, script.commands[2].args[1].pos.column), (3, 16));

        let script = ok("if size :over 100K { discard; } else { keep; }");
        let [iff, els] = &script.commands[..] else { panic!("{script:?}") };
        assert_eq!(iff.tests.len(), 1);
        assert!(!iff.test_list);
        assert_eq!(iff.tests[0].name, "size");
        assert_eq!(
            iff.tests[0].args.iter().map(|a| a.value.clone()).collect::<Vec<_>>(),
            [tag("over"), Value::Number(102_400)]
        );
        assert_eq!(iff.block.as_ref().map(|b| b[0].name.as_str()), Some("discard"));
        assert_eq!(els.block.as_ref().map(|b| b[0].name.as_str()), Some("keep"));
        // An empty block and a block-less `if` are both grammatical (the semantic step decides).
        let script = ok("if true {}\nif true;");
        assert_eq!(script.commands[0].block, Some(Vec::new()));
        assert_eq!(script.commands[1].block, None);
        round_trip(&script);
    }

    #[test]
    fn tests_test_lists_and_nesting() {
        let script = ok("if anyof (not exists [\"From\", \"Date\"], header :contains \"x\" \"y\", true) { stop; }");
        let iff = &script.commands[0];
        assert!(iff.test_list || iff.tests.len() == 1);
        let anyof = &iff.tests[0];
        assert_eq!(anyof.name, "anyof");
        assert!(anyof.test_list);
        let names: Vec<&str> = anyof.tests.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["not", "header", "true"]);
        let not = &anyof.tests[0];
        assert!(!not.test_list);
        assert_eq!(not.tests[0].name, "exists");
        assert_eq!(not.tests[0].args[0].value, list(&["From", "Date"]));
        assert_eq!(script.test_depth(), 3);
        assert_eq!(script.block_depth(), 1);
        assert_eq!(script.command_count(), 2);
        // A test-list directly after a command, and a one-element test-list.
        let script = ok("if (true) { }");
        assert!(script.commands[0].test_list);
        round_trip(&ok("if allof(not not false, anyof(true)) { if true { keep; } }"));
    }

    /// RFC 5228 section 2.3 (comments), 2.4.1 (numbers), 2.4.2 (strings), 2.6 (arguments)
    /// and 3.1 (control if), as written out there.
    #[test]
    fn rfc_5228_section_2_and_3_examples() {
        let comments = ok("if size :over 100k { # this is a comment\n    discard;\n}\n");
        assert_eq!(comments.commands[0].tests[0].args[1].value, Value::Number(100 * 1024));
        let bracket = ok(
            "if size :over 100K { /* this is a comment\n    this is still a comment */ discard /* this is a comment\n    */ ;\n}\n",
        );
        assert!(bracket.same_tree(&comments));

        let script =
            ok("require \"fileinto\";\r\nif header :contains \"Subject\" \"$$$\" {\r\n  fileinto \"spam\";\r\n}\r\n");
        assert_eq!(values(&script.commands[0]), [s("fileinto")]);

        let script = ok(r#"if header :contains "from" "coyote" {
    discard;
} elsif header :contains ["subject"] ["$$$"] {
    discard;
} else {
    fileinto "INBOX";
}
"#);
        let names: Vec<&str> = script.commands.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["if", "elsif", "else"]);
        assert_eq!(script.commands[1].tests[0].args[1].value, list(&["subject"]));
        round_trip(&script);

        // Section 2.4.2: a multi-line string, with a dot-stuffed line, in `vacation`'s place.
        let script = ok("require \"vacation\";\r\nvacation text:\r\nI'm away.\r\n..and a dotted line\r\n.\r\n;\r\n");
        assert_eq!(values(&script.commands[1]), [s("I'm away.\r\n.and a dotted line\r\n")]);
        round_trip(&script);

        let script =
            ok("redirect \"bart@example.com\";\nif header :is [\"From\",\"To\"] \"\\\"quoted\\\" \\\\ \\q\" { stop; }");
        assert_eq!(script.commands[1].tests[0].args[2].value, s("\"quoted\" \\ q"));
    }

    /// The example script of RFC 5228 section 9, written out.
    #[test]
    fn rfc_5228_section_9_example() {
        let script = ok(r#"#
# Example Sieve Filter
# Declare any optional features or extension used by the script
#
require ["fileinto"];

#
# Handle messages from known mailing lists
# Move messages from IETF filter discussion list to filter mailbox
#
if header :is "Sender" "owner-ietf-mta-filters@imc.org"
        {
        fileinto "filter";  # move to "filter" mailbox
        }
#
# Keep all messages to or from people in my company
#
elsif address :DOMAIN :is ["From", "To"] "example.com"
        {
        keep;               # keep in "In" mailbox
        }

#
# Try and catch unsolicited email.  If a message is not to me,
# or it contains a subject known to be spam, file it away.
#
elsif anyof (NOT address :all :contains
               ["To", "Cc", "Bcc"] "me@example.com",
             header :matches "subject"
               ["*make*money*fast*", "*university*dipl*mas*"])
        {
        fileinto "spam";   # move to "spam" mailbox
        }
else
        {
        # Move all other (non-company) mail to "personal"
        # mailbox.
        fileinto "personal";
        }
"#);
        let names: Vec<(&str, usize)> = script.commands.iter().map(|c| (c.name.as_str(), c.pos.line)).collect();
        assert_eq!(names, [("require", 5), ("if", 11), ("elsif", 18), ("elsif", 27), ("else", 34)]);
        let address = &script.commands[2].tests[0];
        assert_eq!(
            address.args.iter().map(|a| a.value.clone()).collect::<Vec<_>>(),
            [tag("DOMAIN"), tag("is"), list(&["From", "To"]), s("example.com")]
        );
        let anyof = &script.commands[3].tests[0];
        assert_eq!((anyof.name.as_str(), anyof.tests.len(), anyof.test_list), ("anyof", 2, true));
        assert_eq!(anyof.tests[0].name, "NOT");
        assert_eq!(anyof.tests[0].tests[0].args[3].value, s("me@example.com"));
        assert_eq!(anyof.tests[1].args[2].value, list(&["*make*money*fast*", "*university*dipl*mas*"]));
        assert_eq!(anyof.tests[1].pos.line, 29);
        assert_eq!(script.commands[4].block.as_ref().map(|b| b[0].pos.line), Some(38));
        assert_eq!(script.command_count(), 9);
        round_trip(&script);
    }

    /// RFC 5429 section 2.2's reject, with its multi-line reason.
    #[test]
    fn multi_line_argument_then_semicolon() {
        let script = ok(r#"require ["reject"];

if header :contains "from" "coyote@desert.example.org" {
   reject text:
I am not taking mail from you, and I don't
want your birdseed, either.
.
   ;
}
"#);
        let reject = &script.commands[1].block.as_ref().unwrap()[0];
        assert_eq!(values(reject), [s("I am not taking mail from you, and I don't\nwant your birdseed, either.\n")]);
        round_trip(&script);
    }

    #[test]
    fn grammar_errors_say_what_was_expected_and_where() {
        assert_eq!(
            error("keep"),
            (1, 5, expected("';' or '{' after the command's arguments", "the end of the script"))
        );
        assert_eq!(error("keep;\nstop\n}"), (3, 1, expected("';' or '{' after the command's arguments", "'}'")));
        assert_eq!(error("\n\"a\";"), (2, 1, expected("a command", "a string")));
        assert_eq!(error("keep; }"), (1, 7, expected("a command", "'}'")));
        assert_eq!(error("if true {\n keep;\n"), (3, 1, expected("a command or '}'", "the end of the script")));
        assert_eq!(error("if true { 5 }"), (1, 11, expected("a command or '}'", "number 5")));
        assert_eq!(error("x [];"), (1, 4, expected("a string", "']'")));
        assert_eq!(error("x [\"a\",];"), (1, 8, expected("a string", "']'")));
        assert_eq!(error("x [\"a\" \"b\"];"), (1, 8, expected("',' or ']' in a string list", "a string")));
        assert_eq!(error("x [\"a\", 1];"), (1, 9, expected("a string", "number 1")));
        assert_eq!(error("x [\"a\""), (1, 7, expected("',' or ']' in a string list", "the end of the script")));
        assert_eq!(error("if () {}"), (1, 5, expected("a test", "')'")));
        assert_eq!(error("if (true ;) {}"), (1, 10, expected("',' or ')' in a test list", "';'")));
        assert_eq!(error("if (true,) {}"), (1, 10, expected("a test", "')'")));
        assert_eq!(error("if anyof(true\n"), (2, 1, expected("',' or ')' in a test list", "the end of the script")));
        assert_eq!(
            error("if true {} else"),
            (1, 16, expected("';' or '{' after the command's arguments", "the end of the script"))
        );
        assert_eq!(error("x ( ;"), (1, 5, expected("a test", "';'")));
        assert_eq!(error("x ,"), (1, 3, expected("';' or '{' after the command's arguments", "','")));
        assert_eq!(error("x ] ;"), (1, 3, expected("';' or '{' after the command's arguments", "']'")));
        assert_eq!(error("x ) ;"), (1, 3, expected("';' or '{' after the command's arguments", "')'")));
        assert_eq!(error("x ;;"), (1, 4, expected("a command", "';'")));
        assert_eq!(error("x [ ;"), (1, 5, expected("a string", "';'")));
        assert_eq!(error("x [ "), (1, 5, expected("a string", "the end of the script")));
        // The lexer's errors come through the parser unchanged.
        assert_eq!(error("if true {\n  fileinto \"x;\n}\n"), (2, 12, ErrorKind::UnterminatedString));
        assert_eq!(error("x 99999999999999999999;"), (1, 3, ErrorKind::NumberOverflow));
        let e = parse("keep;\n\nstop").unwrap_err();
        assert_eq!(e.line(), 3);
        assert_eq!(
            e.to_string(),
            "line 3, column 5: expected ';' or '{' after the command's arguments, found the end of the script"
        );
    }

    #[test]
    fn the_script_size_limit() {
        let limits = Limits { max_script_size: 12, ..Limits::default() };
        assert!(parse_with("keep;\nstop;\n", &limits).is_ok());
        let e = parse_with("keep;\nstop;\nkeep;\n", &limits).unwrap_err();
        assert_eq!((e.pos.line, e.pos.column), (3, 1));
        assert_eq!(e.kind, ErrorKind::ScriptTooLarge { size: 18, limit: 12 });
        let big = format!("keep;{}", " ".repeat(1 << 20));
        assert!(matches!(parse(&big).unwrap_err().kind, ErrorKind::ScriptTooLarge { limit: 1_048_576, .. }));
        let e = parse_bytes(b"keep;\nstop;\nkeep;\n", &limits).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ScriptTooLarge { size: 18, limit: 12 });
    }

    #[test]
    fn the_command_limit() {
        let limits = Limits { max_commands: 3, ..Limits::default() };
        assert_eq!(parse_with("if true { keep; }\nstop;", &limits).map(|s| s.command_count()), Ok(3));
        let e = parse_with("if true { keep; }\nstop;\nif false { discard; }", &limits).unwrap_err();
        assert_eq!((e.pos.line, e.pos.column, e.kind), (3, 1, ErrorKind::TooManyCommands { limit: 3 }));
        let e = parse_with("if true { keep; keep; keep; }", &limits).unwrap_err();
        assert_eq!((e.pos.line, e.pos.column), (1, 23));
    }

    #[test]
    fn nesting_limits() {
        let limits = Limits { max_block_depth: 2, max_test_depth: 2, ..Limits::default() };
        assert!(parse_with("if true { if not true { keep; } }", &limits).is_ok());
        let e = parse_with("if true {\n if true {\n  if true { keep; } } }", &limits).unwrap_err();
        assert_eq!((e.pos.line, e.pos.column, e.kind), (3, 11, ErrorKind::BlocksTooDeep { limit: 2 }));
        let e = parse_with("if\nanyof(true, not\n not true) {}", &limits).unwrap_err();
        assert_eq!((e.pos.line, e.pos.column, e.kind), (3, 2, ErrorKind::TestsTooDeep { limit: 2 }));
        let e = parse_with("if not (not true) {}", &limits).unwrap_err();
        assert_eq!(e.kind, ErrorKind::TestsTooDeep { limit: 2 });
    }

    /// Nesting far beyond the limits is refused with an error, not a stack overflow: the depth
    /// is checked before the parser descends.
    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let n = 100_000;
        let blocks = format!("{}keep;{}", "if true {".repeat(n), "}".repeat(n));
        let e = parse(&blocks).unwrap_err();
        assert_eq!((e.pos.line, e.kind), (1, ErrorKind::BlocksTooDeep { limit: 32 }));
        let tests = format!("if {}true {{}}", "not ".repeat(n));
        assert_eq!(parse(&tests).unwrap_err().kind, ErrorKind::TestsTooDeep { limit: 32 });
        let lists = format!("if {}true{} {{}}", "anyof(".repeat(n), ")".repeat(n));
        assert_eq!(parse(&lists).unwrap_err().kind, ErrorKind::TestsTooDeep { limit: 32 });
        // Limits above the ceiling count as the ceiling.
        let limits = Limits { max_block_depth: usize::MAX, max_test_depth: usize::MAX, ..Limits::default() };
        assert_eq!(parse_with(&blocks, &limits).unwrap_err().kind, ErrorKind::BlocksTooDeep { limit: DEPTH_CEILING });
        assert_eq!(parse_with(&tests, &limits).unwrap_err().kind, ErrorKind::TestsTooDeep { limit: DEPTH_CEILING });
        // Exactly at the limit is fine.
        let at = format!("{}keep;{}", "if true {".repeat(32), "}".repeat(32));
        assert_eq!(ok(&at).block_depth(), 32);
        let at = format!("if {}true {{}}", "not ".repeat(31));
        assert_eq!(ok(&at).test_depth(), 32);
    }

    #[test]
    fn bytes_must_be_utf8() {
        let limits = Limits::default();
        assert_eq!(parse_bytes("keep; # é\n".as_bytes(), &limits).map(|s| s.command_count()), Ok(1));
        let e = parse_bytes(b"keep;\n# \xe9t\xe9\n", &limits).unwrap_err();
        assert_eq!((e.pos.line, e.pos.column, e.kind), (2, 3, ErrorKind::InvalidUtf8));
    }
}
