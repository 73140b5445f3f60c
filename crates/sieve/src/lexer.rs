//! The lexical structure of Sieve (RFC 5228 section 2 and the grammar of section 8.1): the
//! script's text as a sequence of tokens with their line and column.
//!
//! Tokens are identifiers, tags (`:is`), numbers with an optional quantifier (`K`, `M`, `G`:
//! powers of 1024; a value beyond `u64` is an error), strings (quoted, with `\"` and `\\` as
//! the only escapes and any other backslash dropped; or multi-line `text:` strings ended by a
//! line holding only `.`, with dot-unstuffing) and the punctuation `[ ] ( ) { } , ;`. White
//! space, `#` comments and `/* */` comments separate tokens and are dropped. Lines may end with
//! CRLF, as the RFC says, or with a bare LF, as scripts edited on Unix do; a CR not followed by
//! LF is an error outside comments. String values keep the line ends of the source.
//!
//! The lexer knows nothing of the grammar (which token may follow which is the parser's) nor of
//! what any identifier means. It does no I/O: it reads a `&str` already in memory.

use std::fmt;

/// Where something is in a script: 1-based line and column (columns count characters, not
/// bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The start of a script.
    pub const START: Position = Position { line: 1, column: 1 };
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// A syntax error (or a limit exceeded) with the place in the script it refers to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {kind}")]
pub struct Error {
    pub pos: Position,
    pub kind: ErrorKind,
}

impl Error {
    pub(crate) fn new(pos: Position, kind: ErrorKind) -> Self {
        Error { pos, kind }
    }

    /// The 1-based line the error refers to (what ManageSieve and the operator report).
    pub fn line(&self) -> usize {
        self.pos.line
    }
}

/// What is wrong, each saying what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// A character that starts no token.
    #[error(
        "unexpected character {0:?}, expected an identifier, a tag, a number, a string or one of [ ] ( ) {{ }} , ;"
    )]
    UnexpectedChar(char),
    /// A `:` not followed by an identifier.
    #[error("expected an identifier after ':' to make a tag")]
    EmptyTag,
    /// A number that does not fit in 64 bits (with its quantifier applied).
    #[error("number too large: expected at most {max}", max = u64::MAX)]
    NumberOverflow,
    /// A quoted string that the script ends inside (the position is its opening quote).
    #[error("unterminated quoted string: expected '\"' before the end of the script")]
    UnterminatedString,
    /// A multi-line string that the script ends inside (the position is its `text:`).
    #[error("unterminated multi-line string: expected a line holding only '.' before the end of the script")]
    UnterminatedMultiLine,
    /// Something other than white space or a `#` comment after `text:` on its line.
    #[error("expected a line end or a '#' comment after 'text:'")]
    TextColonNotAtLineEnd,
    /// A bracket comment that the script ends inside (the position is its `/*`).
    #[error("unterminated comment: expected '*/' before the end of the script")]
    UnterminatedComment,
    /// A carriage return not followed by a line feed.
    #[error("expected a line feed after a carriage return")]
    BareCr,
    /// A NUL byte in a string, which RFC 5228 does not allow.
    #[error("NUL is not allowed in a string")]
    NulInString,
    /// The script's bytes are not UTF-8 (RFC 5228 section 2.2).
    #[error("the script is not valid UTF-8")]
    InvalidUtf8,
    /// The parser found a token (or the end) where the grammar wants something else.
    #[error("expected {expected}, found {found}")]
    Expected { expected: &'static str, found: String },
    /// The script is longer than [`crate::Limits::max_script_size`] (the position is the first
    /// byte beyond it).
    #[error("script too large: {size} bytes, expected at most {limit}")]
    ScriptTooLarge { size: usize, limit: usize },
    /// Blocks nested deeper than [`crate::Limits::max_block_depth`].
    #[error("blocks nested too deeply: expected at most {limit} levels")]
    BlocksTooDeep { limit: usize },
    /// Tests nested deeper than [`crate::Limits::max_test_depth`].
    #[error("tests nested too deeply: expected at most {limit} levels")]
    TestsTooDeep { limit: usize },
    /// More commands than [`crate::Limits::max_commands`].
    #[error("too many commands: expected at most {limit}")]
    TooManyCommands { limit: usize },
    /// The script is grammatical but means nothing valid: an unknown command or test, an
    /// extension used without `require`, arguments that do not suit the command (the
    /// compiler's errors, [`crate::compile`]).
    #[error("{0}")]
    Invalid(String),
}

/// A token and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub pos: Position,
}

/// The kinds of tokens. Identifiers and tags keep the case they are written in (Sieve compares
/// them without regard to ASCII case; that is the semantic step's to do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    Identifier(String),
    /// A tag, without its leading `:`.
    Tag(String),
    Number(u64),
    /// A quoted or multi-line string, its escapes and dot-stuffing undone.
    String(String),
    LeftBracket,
    RightBracket,
    LeftParen,
    RightParen,
    LeftBrace,
    RightBrace,
    Comma,
    Semicolon,
}

impl fmt::Display for TokenKind {
    /// How error messages name what they found.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenKind::Identifier(name) => write!(f, "identifier '{name}'"),
            TokenKind::Tag(name) => write!(f, "tag ':{name}'"),
            TokenKind::Number(n) => write!(f, "number {n}"),
            TokenKind::String(_) => f.write_str("a string"),
            TokenKind::LeftBracket => f.write_str("'['"),
            TokenKind::RightBracket => f.write_str("']'"),
            TokenKind::LeftParen => f.write_str("'('"),
            TokenKind::RightParen => f.write_str("')'"),
            TokenKind::LeftBrace => f.write_str("'{'"),
            TokenKind::RightBrace => f.write_str("'}'"),
            TokenKind::Comma => f.write_str("','"),
            TokenKind::Semicolon => f.write_str("';'"),
        }
    }
}

/// Turns a script into tokens, one [`Lexer::next_token`] at a time (or all at once with
/// [`tokenize`]). After an error it should not be called again.
#[derive(Debug, Clone)]
pub struct Lexer<'a> {
    src: &'a [u8],
    at: usize,
    line: usize,
    column: usize,
}

/// Every token of `script`, or the first error.
pub fn tokenize(script: &str) -> Result<Vec<Token>, Error> {
    let mut lexer = Lexer::new(script);
    let mut tokens = Vec::new();
    while let Some(token) = lexer.next_token()? {
        tokens.push(token);
    }
    Ok(tokens)
}

fn is_identifier_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_identifier_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl<'a> Lexer<'a> {
    pub fn new(script: &'a str) -> Self {
        Lexer { src: script.as_bytes(), at: 0, line: 1, column: 1 }
    }

    /// Where the next unread character is (at the end: just past the last one).
    pub fn position(&self) -> Position {
        Position { line: self.line, column: self.column }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.at).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.src.get(self.at + ahead).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        if b == b'\n' {
            self.line += 1;
            self.column = 1;
        } else if b & 0xC0 != 0x80 {
            // Not a UTF-8 continuation byte: the start of a character.
            self.column += 1;
        }
        Some(b)
    }

    fn error(&self, kind: ErrorKind) -> Error {
        Error::new(self.position(), kind)
    }

    /// The next token, `None` at the end of the script.
    pub fn next_token(&mut self) -> Result<Option<Token>, Error> {
        self.skip_white_space()?;
        let pos = self.position();
        let Some(b) = self.peek() else { return Ok(None) };
        let punctuation = match b {
            b'[' => Some(TokenKind::LeftBracket),
            b']' => Some(TokenKind::RightBracket),
            b'(' => Some(TokenKind::LeftParen),
            b')' => Some(TokenKind::RightParen),
            b'{' => Some(TokenKind::LeftBrace),
            b'}' => Some(TokenKind::RightBrace),
            b',' => Some(TokenKind::Comma),
            b';' => Some(TokenKind::Semicolon),
            _ => None,
        };
        let kind = if let Some(kind) = punctuation {
            self.bump();
            kind
        } else if b == b'"' {
            self.quoted_string(pos)?
        } else if b == b':' {
            self.bump();
            match self.peek() {
                Some(b) if is_identifier_start(b) => TokenKind::Tag(self.identifier()),
                _ => return Err(self.error(ErrorKind::EmptyTag)),
            }
        } else if b.is_ascii_digit() {
            self.number(pos)?
        } else if is_identifier_start(b) {
            let name = self.identifier();
            if name.eq_ignore_ascii_case("text") && self.peek() == Some(b':') {
                self.bump();
                self.multi_line(pos)?
            } else {
                TokenKind::Identifier(name)
            }
        } else {
            let c = std::str::from_utf8(&self.src[self.at..])
                .ok()
                .and_then(|rest| rest.chars().next())
                .unwrap_or(char::REPLACEMENT_CHARACTER);
            return Err(self.error(ErrorKind::UnexpectedChar(c)));
        };
        Ok(Some(Token { kind, pos }))
    }

    /// Consumes a line end (CRLF or LF) if one is next; a CR without LF is an error.
    fn line_end(&mut self) -> Result<bool, Error> {
        match self.peek() {
            Some(b'\n') => {
                self.bump();
                Ok(true)
            }
            Some(b'\r') if self.peek_at(1) == Some(b'\n') => {
                self.bump();
                self.bump();
                Ok(true)
            }
            Some(b'\r') => Err(self.error(ErrorKind::BareCr)),
            _ => Ok(false),
        }
    }

    /// Skips the rest of a `#` comment and its line end (a comment may also end the script).
    fn hash_comment(&mut self) {
        while let Some(b) = self.bump() {
            if b == b'\n' {
                break;
            }
        }
    }

    fn skip_white_space(&mut self) -> Result<(), Error> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t') => {
                    self.bump();
                }
                Some(b'\r' | b'\n') => {
                    self.line_end()?;
                }
                Some(b'#') => self.hash_comment(),
                Some(b'/') if self.peek_at(1) == Some(b'*') => {
                    let start = self.position();
                    self.bump();
                    self.bump();
                    loop {
                        match self.bump() {
                            None => return Err(Error::new(start, ErrorKind::UnterminatedComment)),
                            Some(b'*') if self.peek() == Some(b'/') => {
                                self.bump();
                                break;
                            }
                            Some(_) => {}
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn identifier(&mut self) -> String {
        let start = self.at;
        while self.peek().is_some_and(is_identifier_char) {
            self.bump();
        }
        // Identifier characters are ASCII.
        String::from_utf8_lossy(&self.src[start..self.at]).into_owned()
    }

    fn number(&mut self, pos: Position) -> Result<TokenKind, Error> {
        let overflow = || Error::new(pos, ErrorKind::NumberOverflow);
        let mut value: u64 = 0;
        while let Some(digit @ b'0'..=b'9') = self.peek() {
            self.bump();
            value = value.checked_mul(10).and_then(|v| v.checked_add(u64::from(digit - b'0'))).ok_or_else(overflow)?;
        }
        let shift = match self.peek() {
            Some(b'K' | b'k') => 10,
            Some(b'M' | b'm') => 20,
            Some(b'G' | b'g') => 30,
            _ => 0,
        };
        if shift > 0 {
            self.bump();
            value = value.checked_mul(1 << shift).ok_or_else(overflow)?;
        }
        Ok(TokenKind::Number(value))
    }

    /// Turns collected bytes into a string. They are whole UTF-8 characters of the `&str` the
    /// lexer reads (only ASCII backslashes and dots are ever left out), so this never replaces.
    fn string(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    fn quoted_string(&mut self, pos: Position) -> Result<TokenKind, Error> {
        self.bump();
        let mut value = Vec::new();
        loop {
            match self.peek() {
                None => return Err(Error::new(pos, ErrorKind::UnterminatedString)),
                Some(b'"') => {
                    self.bump();
                    return Ok(TokenKind::String(Self::string(value)));
                }
                Some(b'\\') => {
                    // `\"` and `\\` stand for the second character; any other backslash is
                    // dropped and the character after it kept (RFC 5228 section 2.4.2).
                    self.bump();
                    match self.peek() {
                        None => return Err(Error::new(pos, ErrorKind::UnterminatedString)),
                        Some(b'\r' | b'\n') => {}
                        Some(b) => {
                            self.bump();
                            value.push(b);
                        }
                    }
                }
                Some(b'\r') => {
                    self.line_end()?;
                    value.extend_from_slice(b"\r\n");
                }
                Some(0) => return Err(self.error(ErrorKind::NulInString)),
                Some(b) => {
                    self.bump();
                    value.push(b);
                }
            }
        }
    }

    /// A multi-line string, its `text:` already read (RFC 5228 section 2.4.2): white space and
    /// an optional `#` comment to the end of that line, then lines up to one holding only `.`.
    /// A line starting with `..` loses its first dot.
    fn multi_line(&mut self, pos: Position) -> Result<TokenKind, Error> {
        while let Some(b' ' | b'\t') = self.peek() {
            self.bump();
        }
        if self.peek() == Some(b'#') {
            let comment_line = self.line;
            self.hash_comment();
            if self.line == comment_line {
                return Err(Error::new(pos, ErrorKind::UnterminatedMultiLine));
            }
        } else if !self.line_end()? {
            return Err(match self.peek() {
                None => Error::new(pos, ErrorKind::UnterminatedMultiLine),
                Some(_) => self.error(ErrorKind::TextColonNotAtLineEnd),
            });
        }
        let mut value = Vec::new();
        loop {
            if self.peek().is_none() {
                return Err(Error::new(pos, ErrorKind::UnterminatedMultiLine));
            }
            if self.peek() == Some(b'.') {
                if matches!(self.peek_at(1), None | Some(b'\r' | b'\n')) {
                    // The terminating line; a script may end right after its dot.
                    self.bump();
                    self.line_end()?;
                    return Ok(TokenKind::String(Self::string(value)));
                }
                if self.peek_at(1) == Some(b'.') {
                    self.bump();
                }
            }
            loop {
                match self.peek() {
                    None => return Err(Error::new(pos, ErrorKind::UnterminatedMultiLine)),
                    Some(b'\n') => {
                        self.bump();
                        value.push(b'\n');
                        break;
                    }
                    Some(b'\r') => {
                        self.line_end()?;
                        value.extend_from_slice(b"\r\n");
                        break;
                    }
                    Some(0) => return Err(self.error(ErrorKind::NulInString)),
                    Some(b) => {
                        self.bump();
                        value.push(b);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ErrorKind, Position, TokenKind, tokenize};

    fn kinds(script: &str) -> Vec<TokenKind> {
        tokenize(script).unwrap_or_else(|e| panic!("{script:?}: {e}")).into_iter().map(|t| t.kind).collect()
    }

    fn string(s: &str) -> TokenKind {
        TokenKind::String(s.to_owned())
    }

    fn error(script: &str) -> (usize, usize, ErrorKind) {
        let e = tokenize(script).expect_err(script);
        (e.pos.line, e.pos.column, e.kind)
    }

    #[test]
    fn identifiers_and_tags() {
        assert_eq!(
            kinds("if _x9 FileInto :is :Over_2"),
            [
                TokenKind::Identifier("if".into()),
                TokenKind::Identifier("_x9".into()),
                TokenKind::Identifier("FileInto".into()),
                TokenKind::Tag("is".into()),
                TokenKind::Tag("Over_2".into()),
            ]
        );
        // A tag is ':' immediately followed by an identifier.
        assert_eq!(error("size : over"), (1, 7, ErrorKind::EmptyTag));
        assert_eq!(error(":9"), (1, 2, ErrorKind::EmptyTag));
    }

    #[test]
    fn punctuation() {
        use TokenKind::*;
        assert_eq!(
            kinds("[ ] ( ) { } , ;"),
            [LeftBracket, RightBracket, LeftParen, RightParen, LeftBrace, RightBrace, Comma, Semicolon]
        );
        assert_eq!(kinds("[\"a\",\"b\"];"), [LeftBracket, string("a"), Comma, string("b"), RightBracket, Semicolon]);
    }

    #[test]
    fn numbers_and_quantifiers() {
        use TokenKind::Number;
        assert_eq!(
            kinds("0 007 100 1K 2M 3G 4k 5m 6g"),
            [
                Number(0),
                Number(7),
                Number(100),
                Number(1024),
                Number(2 << 20),
                Number(3 << 30),
                Number(4096),
                Number(5 << 20),
                Number(6 << 30)
            ]
        );
        assert_eq!(kinds("18446744073709551615"), [Number(u64::MAX)]);
        assert_eq!(error("size\n  18446744073709551616"), (2, 3, ErrorKind::NumberOverflow));
        assert_eq!(kinds("17179869183G"), [Number(17_179_869_183 << 30)]);
        assert_eq!(error("17179869184G"), (1, 1, ErrorKind::NumberOverflow));
        // The quantifier is part of the number; what follows is a new token.
        assert_eq!(kinds("10Kx"), [Number(10240), TokenKind::Identifier("x".into())]);
    }

    #[test]
    fn quoted_strings_and_escapes() {
        assert_eq!(kinds(r#""""#), [string("")]);
        assert_eq!(kinds(r#""a \"b\" c""#), [string("a \"b\" c")]);
        assert_eq!(kinds(r#""back\\slash""#), [string("back\\slash")]);
        // Other backslashes are dropped, the character after them kept.
        assert_eq!(kinds(r#""\a\b\*\?""#), [string("ab*?")]);
        assert_eq!(kinds("\"two\r\nlines\nthree\""), [string("two\r\nlines\nthree")]);
        assert_eq!(kinds("\"héllo ✉\""), [string("héllo ✉")]);
        assert_eq!(error("x \"open\n\n"), (1, 3, ErrorKind::UnterminatedString));
        assert_eq!(error("\"open\\"), (1, 1, ErrorKind::UnterminatedString));
        assert_eq!(error("\"a\rb\""), (1, 3, ErrorKind::BareCr));
        assert_eq!(error("\n \"a\0\""), (2, 4, ErrorKind::NulInString));
    }

    #[test]
    fn multi_line_strings() {
        assert_eq!(
            kinds("text:\r\nline 1\r\nline 2\r\n.\r\n;"),
            [string("line 1\r\nline 2\r\n"), TokenKind::Semicolon]
        );
        assert_eq!(kinds("text:\n.\n"), [string("")]);
        // White space and a hash comment may follow `text:`; case does not matter.
        assert_eq!(kinds("TEXT: \t # note\nbody\n."), [string("body\n")]);
        // Dot-unstuffing: a leading ".." loses one dot; other leading dots stay.
        assert_eq!(kinds("text:\n..\n...x\n.y\n. \n.\n"), [string(".\n..x\n.y\n. \n")]);
        // Escapes mean nothing in a multi-line string.
        assert_eq!(kinds("text:\n\\\" \"\n.\n"), [string("\\\" \"\n")]);
        assert_eq!(kinds("text:\ntext:\n.\n"), [string("text:\n")]);
        assert_eq!(error("a\ntext: b\n.\n"), (2, 7, ErrorKind::TextColonNotAtLineEnd));
        assert_eq!(error("a\ntext:\nno end\n"), (2, 1, ErrorKind::UnterminatedMultiLine));
        assert_eq!(error("text:"), (1, 1, ErrorKind::UnterminatedMultiLine));
        assert_eq!(error("text: # comment"), (1, 1, ErrorKind::UnterminatedMultiLine));
        assert_eq!(error("text:\nab\rc\n.\n"), (2, 3, ErrorKind::BareCr));
        assert_eq!(error("text:\na\0\n.\n"), (2, 2, ErrorKind::NulInString));
        // `text` not followed by ':' is an identifier.
        assert_eq!(kinds("text :x"), [TokenKind::Identifier("text".into()), TokenKind::Tag("x".into())]);
    }

    #[test]
    fn comments_and_white_space() {
        assert_eq!(kinds("# only a comment"), []);
        assert_eq!(
            kinds("a # one\r\n/* two\n * lines **/ b/**/c\t\n"),
            [TokenKind::Identifier("a".into()), TokenKind::Identifier("b".into()), TokenKind::Identifier("c".into())]
        );
        // A '#' inside a bracket comment, and a "/*" inside a hash comment, mean nothing.
        assert_eq!(
            kinds("/* # */ a # /* \n b"),
            [TokenKind::Identifier("a".into()), TokenKind::Identifier("b".into())]
        );
        assert_eq!(error("a\n  /* open * /\n"), (2, 3, ErrorKind::UnterminatedComment));
        assert_eq!(error("a / b"), (1, 3, ErrorKind::UnexpectedChar('/')));
        assert_eq!(error("a\r b"), (1, 2, ErrorKind::BareCr));
        assert_eq!(error("\n\n   é"), (3, 4, ErrorKind::UnexpectedChar('é')));
        assert_eq!(error("ab@"), (1, 3, ErrorKind::UnexpectedChar('@')));
    }

    #[test]
    fn positions_count_lines_and_characters() {
        let tokens = tokenize("a\r\n  \"é\" b\n\ttext:\nx\n.\n c").unwrap();
        let positions: Vec<(usize, usize)> = tokens.iter().map(|t| (t.pos.line, t.pos.column)).collect();
        assert_eq!(positions, [(1, 1), (2, 3), (2, 7), (3, 2), (6, 2)]);
        assert_eq!(Position::START.to_string(), "line 1, column 1");
    }

    #[test]
    fn errors_say_where_and_what_was_expected() {
        let e = tokenize("if\n  \"open").unwrap_err();
        assert_eq!(e.line(), 2);
        assert_eq!(
            e.to_string(),
            "line 2, column 3: unterminated quoted string: expected '\"' before the end of the script"
        );
    }
}
