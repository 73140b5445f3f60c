//! The semantic step: a parsed [`Script`] becomes a checked [`Program`] of typed commands and
//! tests, or an error that names the line. Here `require` is enforced (an extension's commands,
//! tests and tags are unknown until it is required), each command's tags and positional
//! arguments are checked against its grammar, literal regular expressions, comparators and
//! redirect addresses are validated, and strings that may hold `${...}` become templates.
//!
//! Nothing here runs a script or reads a message; the program is plain data that `run`
//! interprets.

use std::{
    cell::RefCell,
    collections::{BTreeSet, HashMap},
};

use regex::Regex;

use crate::{
    ast::{Argument, Command, Script, Test as AstTest, Value},
    lexer::{Error, ErrorKind, Position},
    matching::{Comparator, MatchType, Relation},
    message::Transform,
    strings::{self, Str},
};

/// The extensions Tern implements, as the `require` names and ManageSieve's SIEVE capability
/// list them.
pub const EXTENSIONS: [&str; 26] = [
    "fileinto",
    "reject",
    "ereject",
    "envelope",
    "encoded-character",
    "imap4flags",
    "variables",
    "relational",
    "subaddress",
    "body",
    "date",
    "index",
    "vacation",
    "vacation-seconds",
    "duplicate",
    "spamtest",
    "spamtestplus",
    "virustest",
    "editheader",
    "mailbox",
    "include",
    "regex",
    "copy",
    "comparator-i;ascii-numeric",
    "comparator-i;octet",
    "comparator-i;ascii-casemap",
];

/// A compiled pattern's key: the pattern, whether it is a `:matches` glob, and whether it
/// ignores ASCII case.
pub(crate) type RegexKey = (String, bool, bool);

/// A checked script.
#[derive(Debug, Clone)]
pub struct Program {
    pub(crate) commands: Vec<Cmd>,
    pub(crate) extensions: BTreeSet<String>,
    /// The literal keys of `:matches` and `:regex`, compiled.
    pub(crate) regexes: HashMap<RegexKey, Regex>,
}

impl Program {
    /// Whether the script required `extension`.
    pub fn requires(&self, extension: &str) -> bool {
        self.extensions.contains(extension)
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Cmd {
    If { branches: Vec<(Test, Vec<Cmd>)>, otherwise: Option<Vec<Cmd>> },
    Stop,
    Keep { flags: Option<Vec<Str>> },
    Discard,
    Redirect { address: Str, copy: bool },
    FileInto { mailbox: Str, flags: Option<Vec<Str>>, copy: bool, create: bool },
    Reject { reason: Str, extended: bool },
    Flags { op: FlagOp, variable: Option<String>, flags: Vec<Str> },
    Set { name: String, value: Str, modifiers: Vec<Modifier> },
    Vacation(Box<VacationCmd>),
    AddHeader { last: bool, name: Str, value: Str },
    DeleteHeader { index: Option<Index>, matcher: Matcher, name: Str, patterns: Option<Vec<Str>> },
    Include { name: Str, global: bool, once: bool, optional: bool },
    Return,
    Global { names: Vec<String> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagOp {
    Set,
    Add,
    Remove,
}

/// `set` modifiers, in the order they apply (RFC 5229 section 4.1: higher precedence first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Modifier {
    Lower,
    Upper,
    LowerFirst,
    UpperFirst,
    QuoteWildcard,
    QuoteRegex,
    Length,
}

#[derive(Debug, Clone)]
pub(crate) struct VacationCmd {
    /// The period in seconds, if given.
    pub period: Option<u64>,
    pub subject: Option<Str>,
    pub from: Option<Str>,
    pub addresses: Vec<Str>,
    pub mime: bool,
    pub handle: Option<Str>,
    pub reason: Str,
}

/// `:index N [:last]` (RFC 5260 section 6).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Index {
    pub n: u64,
    pub last: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Matcher {
    pub kind: MatchType,
    pub comparator: Comparator,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddressPart {
    All,
    LocalPart,
    Domain,
    User,
    Detail,
}

#[derive(Debug, Clone)]
pub(crate) enum Zone {
    /// The server's zone (UTC, Tern's containers run in it).
    Local,
    Original,
    Fixed(Str),
}

#[derive(Debug, Clone)]
pub(crate) enum Test {
    True,
    False,
    Not(Box<Test>),
    AllOf(Vec<Test>),
    AnyOf(Vec<Test>),
    Address { matcher: Matcher, part: AddressPart, headers: Vec<Str>, keys: Vec<Str>, index: Option<Index> },
    Envelope { matcher: Matcher, part: AddressPart, fields: Vec<Str>, keys: Vec<Str> },
    Header { matcher: Matcher, headers: Vec<Str>, keys: Vec<Str>, index: Option<Index> },
    Exists { headers: Vec<Str> },
    Size { over: bool, limit: u64 },
    HasFlag { matcher: Matcher, variables: Option<Vec<String>>, keys: Vec<Str> },
    String { matcher: Matcher, sources: Vec<Str>, keys: Vec<Str> },
    Body { matcher: Matcher, transform: Transform, keys: Vec<Str> },
    Date { matcher: Matcher, zone: Zone, header: Str, part: Str, keys: Vec<Str>, index: Option<Index> },
    CurrentDate { matcher: Matcher, zone: Zone, part: Str, keys: Vec<Str> },
    Duplicate { handle: Option<Str>, id: DuplicateId, seconds: Option<u64> },
    Spam { matcher: Matcher, percent: bool, value: Str },
    Virus { matcher: Matcher, value: Str },
    MailboxExists { names: Vec<Str> },
}

#[derive(Debug, Clone)]
pub(crate) enum DuplicateId {
    Header(Str),
    Unique(Str),
}

/// Compiles a script's text: parses it under the default limits, then checks it.
pub fn compile(script: &str) -> Result<Program, Error> {
    compile_tree(&crate::parse(script)?)
}

/// Compiles a parsed script.
pub fn compile_tree(script: &Script) -> Result<Program, Error> {
    let mut c = Compiler { extensions: BTreeSet::new(), require_allowed: true, regexes: RefCell::default() };
    let commands = c.block(&script.commands, 0)?;
    Ok(Program { commands, extensions: c.extensions, regexes: c.regexes.into_inner() })
}

struct Compiler {
    extensions: BTreeSet<String>,
    /// `require` may only come before other commands (RFC 5228 section 3.2).
    require_allowed: bool,
    /// The literal `:matches` and `:regex` keys, compiled once here.
    regexes: RefCell<HashMap<RegexKey, Regex>>,
}

fn invalid(pos: Position, message: impl Into<String>) -> Error {
    Error { pos, kind: ErrorKind::Invalid(message.into()) }
}

/// A command's or test's arguments, sorted into tags (with their values) and positional ones.
struct Args<'a> {
    name: &'a str,
    pos: Position,
    tags: HashMap<String, (Position, Option<&'a Value>)>,
    positional: Vec<&'a Argument>,
    next: usize,
}

impl<'a> Args<'a> {
    fn tag(&self, tag: &str) -> bool {
        self.tags.contains_key(tag)
    }

    fn positional(&mut self, what: &str) -> Result<&'a Argument, Error> {
        let arg = self
            .positional
            .get(self.next)
            .copied()
            .ok_or_else(|| invalid(self.pos, format!("{} expects {what}", self.name)))?;
        self.next += 1;
        Ok(arg)
    }

    fn finish(&self) -> Result<(), Error> {
        match self.positional.get(self.next) {
            Some(extra) => Err(invalid(extra.pos, format!("too many arguments for {}", self.name))),
            None => Ok(()),
        }
    }
}

impl Compiler {
    fn has(&self, extension: &str) -> bool {
        self.extensions.contains(extension)
    }

    fn need(&self, extension: &str, pos: Position, what: &str) -> Result<(), Error> {
        if self.has(extension) { Ok(()) } else { Err(invalid(pos, format!("{what} needs require \"{extension}\""))) }
    }

    fn string(&self, s: &str, pos: Position) -> Result<Str, Error> {
        let s = if self.has("encoded-character") {
            strings::decode_encoded_characters(s).map_err(|e| invalid(pos, e))?
        } else {
            s.to_string()
        };
        Ok(Str::new(&s, self.has("variables")))
    }

    fn string_arg(&self, arg: &Argument, what: &str) -> Result<Str, Error> {
        match &arg.value {
            Value::String(s) => self.string(s, arg.pos),
            _ => Err(invalid(arg.pos, format!("expected a string for {what}"))),
        }
    }

    fn list_arg(&self, arg: &Argument, what: &str) -> Result<Vec<Str>, Error> {
        match &arg.value {
            Value::String(s) => Ok(vec![self.string(s, arg.pos)?]),
            Value::StringList(list) => list.iter().map(|s| self.string(s, arg.pos)).collect(),
            _ => Err(invalid(arg.pos, format!("expected a string list for {what}"))),
        }
    }

    fn number_arg(arg: &Argument, what: &str) -> Result<u64, Error> {
        match &arg.value {
            Value::Number(n) => Ok(*n),
            _ => Err(invalid(arg.pos, format!("expected a number for {what}"))),
        }
    }

    /// The tags `name` accepts, each with whether it takes a value, given what is required.
    fn tag_spec(&self, name: &str, tag: &str) -> Option<bool> {
        let matchers = |tag: &str| match tag {
            "is" | "contains" | "matches" => Some(false),
            "comparator" => Some(true),
            "regex" if self.has("regex") => Some(false),
            "value" | "count" if self.has("relational") => Some(true),
            _ => None,
        };
        let address_parts = |tag: &str| match tag {
            "all" | "localpart" | "domain" => Some(false),
            "user" | "detail" if self.has("subaddress") => Some(false),
            _ => None,
        };
        let index = |tag: &str| match tag {
            "index" if self.has("index") => Some(true),
            "last" if self.has("index") => Some(false),
            _ => None,
        };
        match name {
            "address" => matchers(tag).or_else(|| address_parts(tag)).or_else(|| index(tag)),
            "envelope" => matchers(tag).or_else(|| address_parts(tag)),
            "header" => matchers(tag).or_else(|| index(tag)),
            "string" | "hasflag" | "virustest" => matchers(tag),
            "spamtest" => matchers(tag).or(match tag {
                "percent" if self.has("spamtestplus") => Some(false),
                _ => None,
            }),
            "body" => matchers(tag).or(match tag {
                "raw" | "text" => Some(false),
                "content" => Some(true),
                _ => None,
            }),
            "date" | "currentdate" => {
                matchers(tag).or_else(|| if name == "date" { index(tag) } else { None }).or(match tag {
                    "zone" => Some(true),
                    "originalzone" if name == "date" => Some(false),
                    _ => None,
                })
            }
            "size" => match tag {
                "over" | "under" => Some(false),
                _ => None,
            },
            "keep" => match tag {
                "flags" if self.has("imap4flags") => Some(true),
                _ => None,
            },
            "fileinto" => match tag {
                "flags" if self.has("imap4flags") => Some(true),
                "copy" if self.has("copy") => Some(false),
                "create" if self.has("mailbox") => Some(false),
                _ => None,
            },
            "redirect" => match tag {
                "copy" if self.has("copy") => Some(false),
                _ => None,
            },
            "set" => match tag {
                "lower" | "upper" | "lowerfirst" | "upperfirst" | "quotewildcard" | "length" => Some(false),
                "quoteregex" if self.has("regex") => Some(false),
                _ => None,
            },
            "vacation" => match tag {
                "days" | "subject" | "from" | "addresses" | "handle" => Some(true),
                "seconds" if self.has("vacation-seconds") => Some(true),
                "mime" => Some(false),
                _ => None,
            },
            "addheader" => match tag {
                "last" => Some(false),
                _ => None,
            },
            "deleteheader" => matchers(tag).or(match tag {
                "index" => Some(true),
                "last" => Some(false),
                _ => None,
            }),
            "duplicate" => match tag {
                "handle" | "header" | "uniqueid" | "seconds" => Some(true),
                "last" => Some(false),
                _ => None,
            },
            "include" => match tag {
                "personal" | "global" | "once" | "optional" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    fn args<'a>(&self, name: &'a str, pos: Position, args: &'a [Argument]) -> Result<Args<'a>, Error> {
        let mut out = Args { name, pos, tags: HashMap::new(), positional: Vec::new(), next: 0 };
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            match &arg.value {
                Value::Tag(tag) => {
                    let tag = tag.to_ascii_lowercase();
                    let Some(takes_value) = self.tag_spec(name, &tag) else {
                        return Err(invalid(arg.pos, format!("unknown tag :{tag} for {name}")));
                    };
                    if !out.positional.is_empty() {
                        return Err(invalid(arg.pos, format!("tag :{tag} after the positional arguments of {name}")));
                    }
                    let value = if takes_value {
                        i += 1;
                        match args.get(i) {
                            Some(a) if !matches!(a.value, Value::Tag(_)) => Some(&a.value),
                            _ => return Err(invalid(arg.pos, format!("tag :{tag} of {name} needs a value"))),
                        }
                    } else {
                        None
                    };
                    if out.tags.insert(tag.clone(), (arg.pos, value)).is_some() {
                        return Err(invalid(arg.pos, format!("tag :{tag} given twice")));
                    }
                }
                _ => out.positional.push(arg),
            }
            i += 1;
        }
        Ok(out)
    }

    fn tag_string(&self, args: &Args, tag: &str) -> Result<Option<Str>, Error> {
        match args.tags.get(tag) {
            Some((pos, Some(Value::String(s)))) => Ok(Some(self.string(s, *pos)?)),
            Some((pos, _)) => Err(invalid(*pos, format!(":{tag} expects a string"))),
            None => Ok(None),
        }
    }

    fn tag_list(&self, args: &Args, tag: &str) -> Result<Option<Vec<Str>>, Error> {
        match args.tags.get(tag) {
            Some((pos, Some(Value::String(s)))) => Ok(Some(vec![self.string(s, *pos)?])),
            Some((pos, Some(Value::StringList(list)))) => {
                Ok(Some(list.iter().map(|s| self.string(s, *pos)).collect::<Result<_, _>>()?))
            }
            Some((pos, _)) => Err(invalid(*pos, format!(":{tag} expects a string list"))),
            None => Ok(None),
        }
    }

    fn tag_number(args: &Args, tag: &str) -> Result<Option<u64>, Error> {
        match args.tags.get(tag) {
            Some((_, Some(Value::Number(n)))) => Ok(Some(*n)),
            Some((pos, _)) => Err(invalid(*pos, format!(":{tag} expects a number"))),
            None => Ok(None),
        }
    }

    fn matcher(&self, args: &Args) -> Result<Matcher, Error> {
        let mut kinds = Vec::new();
        for tag in ["is", "contains", "matches", "regex", "value", "count"] {
            if let Some((pos, value)) = args.tags.get(tag) {
                kinds.push((tag, *pos, *value));
            }
        }
        if kinds.len() > 1 {
            return Err(invalid(kinds[1].1, "more than one match type"));
        }
        let comparator = match args.tags.get("comparator") {
            None => Comparator::AsciiCasemap,
            Some((pos, Some(Value::String(name)))) => {
                let c =
                    Comparator::named(name).ok_or_else(|| invalid(*pos, format!("unknown comparator \"{name}\"")))?;
                if c == Comparator::AsciiNumeric {
                    self.need("comparator-i;ascii-numeric", *pos, "the i;ascii-numeric comparator")?;
                }
                c
            }
            Some((pos, _)) => return Err(invalid(*pos, ":comparator expects a string")),
        };
        let kind = match kinds.first() {
            None | Some(("is", ..)) => MatchType::Is,
            Some(("contains", ..)) => MatchType::Contains,
            Some(("matches", ..)) => MatchType::Matches,
            Some(("regex", ..)) => MatchType::Regex,
            Some((tag, pos, value)) => {
                let Some(Value::String(rel)) = value else {
                    return Err(invalid(*pos, format!(":{tag} expects a relation string")));
                };
                let relation =
                    Relation::named(rel).ok_or_else(|| invalid(*pos, format!("unknown relation \"{rel}\"")))?;
                if *tag == "value" { MatchType::Value(relation) } else { MatchType::Count(relation) }
            }
        };
        if comparator == Comparator::AsciiNumeric
            && matches!(kind, MatchType::Contains | MatchType::Matches | MatchType::Regex)
        {
            return Err(invalid(args.pos, "the i;ascii-numeric comparator supports only :is, :value and :count"));
        }
        Ok(Matcher { kind, comparator })
    }

    /// Checks literal keys where the match type makes it possible now: regular expressions
    /// must compile. Literal `:regex` and `:matches` keys are compiled here, once, and kept in
    /// the program, since compiling a pattern costs more than matching it.
    fn check_keys(&self, matcher: &Matcher, keys: &[Str], pos: Position) -> Result<(), Error> {
        let glob = match matcher.kind {
            MatchType::Regex => false,
            MatchType::Matches => true,
            _ => return Ok(()),
        };
        for key in keys {
            if let Some(text) = key.literal() {
                let compiled = if glob {
                    crate::matching::glob_regex(text, matcher.comparator)
                } else {
                    crate::matching::compile_regex(text, matcher.comparator)
                };
                let re = compiled.map_err(|e| invalid(pos, format!("invalid regular expression: {e}")))?;
                let key = (text.to_string(), glob, matcher.comparator == Comparator::AsciiCasemap);
                self.regexes.borrow_mut().insert(key, re);
            }
        }
        Ok(())
    }

    fn address_part(&self, args: &Args) -> Result<AddressPart, Error> {
        let mut parts = Vec::new();
        for (tag, part) in [
            ("all", AddressPart::All),
            ("localpart", AddressPart::LocalPart),
            ("domain", AddressPart::Domain),
            ("user", AddressPart::User),
            ("detail", AddressPart::Detail),
        ] {
            if let Some((pos, _)) = args.tags.get(tag) {
                parts.push((part, *pos));
            }
        }
        match parts.as_slice() {
            [] => Ok(AddressPart::All),
            [(p, _)] => Ok(*p),
            [_, (_, pos), ..] => Err(invalid(*pos, "more than one address part")),
        }
    }

    fn index(args: &Args) -> Result<Option<Index>, Error> {
        match Self::tag_number(args, "index")? {
            Some(0) => Err(invalid(args.pos, ":index counts from 1")),
            Some(n) => Ok(Some(Index { n, last: args.tag("last") })),
            None if args.tag("last") => Err(invalid(args.pos, ":last needs :index")),
            None => Ok(None),
        }
    }

    fn block(&mut self, commands: &[Command], depth: usize) -> Result<Vec<Cmd>, Error> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < commands.len() {
            let command = &commands[i];
            let name = command.name.to_ascii_lowercase();
            if name == "require" {
                if !self.require_allowed || depth > 0 {
                    return Err(invalid(command.pos, "require must come before any other command"));
                }
                self.require(command)?;
                i += 1;
                continue;
            }
            self.require_allowed = false;
            if name == "if" {
                let mut branches = vec![(self.test_of(command)?, self.body(command, depth)?)];
                let mut otherwise = None;
                while let Some(next) = commands.get(i + 1) {
                    match next.name.to_ascii_lowercase().as_str() {
                        "elsif" => branches.push((self.test_of(next)?, self.body(next, depth)?)),
                        "else" => {
                            self.no_args(next)?;
                            otherwise = Some(self.body(next, depth)?);
                            i += 1;
                            break;
                        }
                        _ => break,
                    }
                    i += 1;
                }
                out.push(Cmd::If { branches, otherwise });
            } else if name == "elsif" || name == "else" {
                return Err(invalid(command.pos, format!("{name} without a preceding if")));
            } else {
                if command.block.is_some() {
                    return Err(invalid(command.pos, format!("{name} takes no block")));
                }
                if !command.tests.is_empty() {
                    return Err(invalid(command.pos, format!("{name} takes no test")));
                }
                out.push(self.command(command, &name)?);
            }
            i += 1;
        }
        Ok(out)
    }

    fn no_args(&self, command: &Command) -> Result<(), Error> {
        match command.args.first() {
            Some(a) => Err(invalid(a.pos, format!("{} takes no arguments", command.name))),
            None if !command.tests.is_empty() => Err(invalid(command.pos, format!("{} takes no test", command.name))),
            None => Ok(()),
        }
    }

    fn test_of(&mut self, command: &Command) -> Result<Test, Error> {
        if let Some(a) = command.args.first() {
            return Err(invalid(a.pos, format!("{} takes a test, not arguments", command.name)));
        }
        match command.tests.as_slice() {
            [test] if !command.test_list => self.test(test),
            _ => Err(invalid(command.pos, format!("{} expects one test", command.name))),
        }
    }

    fn body(&mut self, command: &Command, depth: usize) -> Result<Vec<Cmd>, Error> {
        match &command.block {
            Some(block) => self.block(block, depth + 1),
            None => Err(invalid(command.pos, format!("{} needs a block", command.name))),
        }
    }

    fn require(&mut self, command: &Command) -> Result<(), Error> {
        let [arg] = command.args.as_slice() else {
            return Err(invalid(command.pos, "require expects one string list"));
        };
        let names = match &arg.value {
            Value::String(s) => vec![s.clone()],
            Value::StringList(l) => l.clone(),
            _ => return Err(invalid(arg.pos, "require expects a string list")),
        };
        for name in names {
            if !EXTENSIONS.contains(&name.as_str()) {
                return Err(invalid(arg.pos, format!("unsupported extension \"{name}\"")));
            }
            self.extensions.insert(name.clone());
            // Extensions that imply others (RFC 5235 section 3.2, RFC 6131 section 2, RFC
            // 5429 section 2.2 does not: ereject stands alone).
            match name.as_str() {
                "spamtestplus" => {
                    self.extensions.insert("spamtest".into());
                }
                "vacation-seconds" => {
                    self.extensions.insert("vacation".into());
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn command(&mut self, command: &Command, name: &str) -> Result<Cmd, Error> {
        let pos = command.pos;
        let mut args = self.args(name, pos, &command.args)?;
        let cmd = match name {
            "stop" => Cmd::Stop,
            "keep" => Cmd::Keep { flags: self.tag_list(&args, "flags")? },
            "discard" => Cmd::Discard,
            "redirect" => {
                let arg = args.positional("an address")?;
                let address = self.string_arg(arg, "redirect")?;
                if let Some(text) = address.literal()
                    && strings::redirect_address(text).is_none()
                {
                    return Err(invalid(arg.pos, format!("redirect to an invalid address \"{text}\"")));
                }
                Cmd::Redirect { address, copy: args.tag("copy") }
            }
            "fileinto" => {
                self.need("fileinto", pos, "fileinto")?;
                let mailbox = self.string_arg(args.positional("a mailbox name")?, "fileinto")?;
                Cmd::FileInto {
                    mailbox,
                    flags: self.tag_list(&args, "flags")?,
                    copy: args.tag("copy"),
                    create: args.tag("create"),
                }
            }
            "reject" | "ereject" => {
                self.need(name, pos, name)?;
                let reason = self.string_arg(args.positional("a reason")?, name)?;
                Cmd::Reject { reason, extended: name == "ereject" }
            }
            "setflag" | "addflag" | "removeflag" => {
                self.need("imap4flags", pos, name)?;
                let op = match name {
                    "setflag" => FlagOp::Set,
                    "addflag" => FlagOp::Add,
                    _ => FlagOp::Remove,
                };
                let first = args.positional("a list of flags")?;
                let (variable, flags) = match args.positional.get(args.next) {
                    Some(second) => {
                        args.next += 1;
                        let Value::String(var) = &first.value else {
                            return Err(invalid(first.pos, format!("{name} expects a variable name")));
                        };
                        self.variable_name(var, first.pos)?;
                        (Some(var.to_ascii_lowercase()), self.list_arg(second, name)?)
                    }
                    None => (None, self.list_arg(first, name)?),
                };
                Cmd::Flags { op, variable, flags }
            }
            "set" => {
                self.need("variables", pos, "set")?;
                let var = args.positional("a variable name")?;
                let Value::String(var_name) = &var.value else {
                    return Err(invalid(var.pos, "set expects a variable name"));
                };
                self.variable_name(var_name, var.pos)?;
                let value = self.string_arg(args.positional("a value")?, "set")?;
                let mut modifiers: Vec<Modifier> = [
                    ("lower", Modifier::Lower),
                    ("upper", Modifier::Upper),
                    ("lowerfirst", Modifier::LowerFirst),
                    ("upperfirst", Modifier::UpperFirst),
                    ("quotewildcard", Modifier::QuoteWildcard),
                    ("quoteregex", Modifier::QuoteRegex),
                    ("length", Modifier::Length),
                ]
                .into_iter()
                .filter(|(tag, _)| args.tag(tag))
                .map(|(_, m)| m)
                .collect();
                modifiers.sort();
                // RFC 5229 section 4.1: two modifiers of the same precedence are an error.
                if modifiers.contains(&Modifier::Lower) && modifiers.contains(&Modifier::Upper)
                    || modifiers.contains(&Modifier::LowerFirst) && modifiers.contains(&Modifier::UpperFirst)
                {
                    return Err(invalid(pos, "set with two modifiers of the same precedence"));
                }
                Cmd::Set { name: var_name.to_ascii_lowercase(), value, modifiers }
            }
            "vacation" => {
                self.need("vacation", pos, "vacation")?;
                let days = Self::tag_number(&args, "days")?;
                let seconds = Self::tag_number(&args, "seconds")?;
                if days.is_some() && seconds.is_some() {
                    return Err(invalid(pos, "vacation takes :days or :seconds, not both"));
                }
                let reason = self.string_arg(args.positional("a reason")?, "vacation")?;
                Cmd::Vacation(Box::new(VacationCmd {
                    period: seconds.or(days.map(|d| d.saturating_mul(86_400))),
                    subject: self.tag_string(&args, "subject")?,
                    from: self.tag_string(&args, "from")?,
                    addresses: self.tag_list(&args, "addresses")?.unwrap_or_default(),
                    mime: args.tag("mime"),
                    handle: self.tag_string(&args, "handle")?,
                    reason,
                }))
            }
            "addheader" => {
                self.need("editheader", pos, "addheader")?;
                let field = self.string_arg(args.positional("a field name")?, "addheader")?;
                let value = self.string_arg(args.positional("a value")?, "addheader")?;
                if let Some(text) = field.literal()
                    && !strings::is_field_name(text)
                {
                    return Err(invalid(pos, format!("invalid header field name \"{text}\"")));
                }
                Cmd::AddHeader { last: args.tag("last"), name: field, value }
            }
            "deleteheader" => {
                self.need("editheader", pos, "deleteheader")?;
                let matcher = self.matcher(&args)?;
                let index = match Self::tag_number(&args, "index")? {
                    Some(0) => return Err(invalid(pos, ":index counts from 1")),
                    Some(n) => Some(Index { n, last: args.tag("last") }),
                    None => None,
                };
                let field = self.string_arg(args.positional("a field name")?, "deleteheader")?;
                let patterns = match args.positional.get(args.next) {
                    Some(a) => {
                        args.next += 1;
                        Some(self.list_arg(a, "deleteheader")?)
                    }
                    None => None,
                };
                if let Some(p) = &patterns {
                    self.check_keys(&matcher, p, pos)?;
                }
                Cmd::DeleteHeader { index, matcher, name: field, patterns }
            }
            "include" => {
                self.need("include", pos, "include")?;
                if args.tag("personal") && args.tag("global") {
                    return Err(invalid(pos, "include takes :personal or :global, not both"));
                }
                let script = self.string_arg(args.positional("a script name")?, "include")?;
                Cmd::Include {
                    name: script,
                    global: args.tag("global"),
                    once: args.tag("once"),
                    optional: args.tag("optional"),
                }
            }
            "return" => {
                self.need("include", pos, "return")?;
                Cmd::Return
            }
            "global" => {
                self.need("include", pos, "global")?;
                self.need("variables", pos, "global")?;
                let arg = args.positional("variable names")?;
                let names = match &arg.value {
                    Value::String(s) => vec![s.clone()],
                    Value::StringList(l) => l.clone(),
                    _ => return Err(invalid(arg.pos, "global expects variable names")),
                };
                for n in &names {
                    self.variable_name(n, arg.pos)?;
                }
                Cmd::Global { names: names.iter().map(|n| n.to_ascii_lowercase()).collect() }
            }
            _ => return Err(invalid(pos, format!("unknown command \"{name}\""))),
        };
        args.finish()?;
        Ok(cmd)
    }

    fn variable_name(&self, name: &str, pos: Position) -> Result<(), Error> {
        if strings::is_variable_name(name) {
            Ok(())
        } else {
            Err(invalid(pos, format!("invalid variable name \"{name}\"")))
        }
    }

    fn tests(&mut self, test: &AstTest) -> Result<Vec<Test>, Error> {
        if !test.test_list {
            return Err(invalid(test.pos, format!("{} expects a parenthesised test list", test.name)));
        }
        test.tests.iter().map(|t| self.test(t)).collect()
    }

    fn test(&mut self, test: &AstTest) -> Result<Test, Error> {
        let name = test.name.to_ascii_lowercase();
        let pos = test.pos;
        if !matches!(name.as_str(), "not" | "anyof" | "allof") && !test.tests.is_empty() {
            return Err(invalid(pos, format!("{name} takes no tests")));
        }
        let mut args = self.args(&name, pos, &test.args)?;
        let t = match name.as_str() {
            "true" => Test::True,
            "false" => Test::False,
            "not" => match test.tests.as_slice() {
                [inner] if !test.test_list => Test::Not(Box::new(self.test(inner)?)),
                _ => return Err(invalid(pos, "not expects one test")),
            },
            "anyof" => Test::AnyOf(self.tests(test)?),
            "allof" => Test::AllOf(self.tests(test)?),
            "address" => {
                let matcher = self.matcher(&args)?;
                let part = self.address_part(&args)?;
                let index = Self::index(&args)?;
                let headers = self.list_arg(args.positional("header names")?, "address")?;
                for h in &headers {
                    if let Some(text) = h.literal()
                        && !strings::is_address_header(text)
                    {
                        return Err(invalid(pos, format!("\"{text}\" is not an address header")));
                    }
                }
                let keys = self.list_arg(args.positional("keys")?, "address")?;
                self.check_keys(&matcher, &keys, pos)?;
                Test::Address { matcher, part, headers, keys, index }
            }
            "envelope" => {
                self.need("envelope", pos, "envelope")?;
                let matcher = self.matcher(&args)?;
                let part = self.address_part(&args)?;
                let fields = self.list_arg(args.positional("envelope parts")?, "envelope")?;
                for f in &fields {
                    if let Some(text) = f.literal()
                        && !["from", "to", "orcpt"].contains(&text.to_ascii_lowercase().as_str())
                    {
                        return Err(invalid(pos, format!("unknown envelope part \"{text}\"")));
                    }
                }
                let keys = self.list_arg(args.positional("keys")?, "envelope")?;
                self.check_keys(&matcher, &keys, pos)?;
                Test::Envelope { matcher, part, fields, keys }
            }
            "header" => {
                let matcher = self.matcher(&args)?;
                let index = Self::index(&args)?;
                let headers = self.list_arg(args.positional("header names")?, "header")?;
                let keys = self.list_arg(args.positional("keys")?, "header")?;
                self.check_keys(&matcher, &keys, pos)?;
                Test::Header { matcher, headers, keys, index }
            }
            "exists" => Test::Exists { headers: self.list_arg(args.positional("header names")?, "exists")? },
            "size" => {
                let over = args.tag("over");
                if over == args.tag("under") {
                    return Err(invalid(pos, "size needs exactly one of :over and :under"));
                }
                let limit = Self::number_arg(args.positional("a number")?, "size")?;
                Test::Size { over, limit }
            }
            "hasflag" => {
                self.need("imap4flags", pos, "hasflag")?;
                let matcher = self.matcher(&args)?;
                let first = args.positional("flags")?;
                let (variables, keys) = match args.positional.get(args.next) {
                    Some(second) => {
                        args.next += 1;
                        let vars = match &first.value {
                            Value::String(s) => vec![s.clone()],
                            Value::StringList(l) => l.clone(),
                            _ => return Err(invalid(first.pos, "hasflag expects variable names")),
                        };
                        for v in &vars {
                            self.variable_name(v, first.pos)?;
                        }
                        (Some(vars.iter().map(|v| v.to_ascii_lowercase()).collect()), self.list_arg(second, "hasflag")?)
                    }
                    None => (None, self.list_arg(first, "hasflag")?),
                };
                Test::HasFlag { matcher, variables, keys }
            }
            "string" => {
                self.need("variables", pos, "string")?;
                let matcher = self.matcher(&args)?;
                let sources = self.list_arg(args.positional("source strings")?, "string")?;
                let keys = self.list_arg(args.positional("keys")?, "string")?;
                self.check_keys(&matcher, &keys, pos)?;
                Test::String { matcher, sources, keys }
            }
            "body" => {
                self.need("body", pos, "body")?;
                let matcher = self.matcher(&args)?;
                let transforms = ["raw", "content", "text"].iter().filter(|t| args.tag(t)).count();
                if transforms > 1 {
                    return Err(invalid(pos, "body takes one of :raw, :content and :text"));
                }
                let transform = if args.tag("raw") {
                    Transform::Raw
                } else if let Some(types) = self.tag_list(&args, "content")? {
                    Transform::Content(types.iter().map(|t| t.literal().unwrap_or("").to_string()).collect())
                } else {
                    Transform::Content(vec!["text".into()])
                };
                let keys = self.list_arg(args.positional("keys")?, "body")?;
                self.check_keys(&matcher, &keys, pos)?;
                Test::Body { matcher, transform, keys }
            }
            "date" | "currentdate" => {
                self.need("date", pos, &name)?;
                let matcher = self.matcher(&args)?;
                let zone = if args.tag("originalzone") {
                    if args.tag("zone") {
                        return Err(invalid(pos, "date takes :zone or :originalzone, not both"));
                    }
                    Zone::Original
                } else {
                    match self.tag_string(&args, "zone")? {
                        Some(z) => Zone::Fixed(z),
                        None => Zone::Local,
                    }
                };
                let index = if name == "date" { Self::index(&args)? } else { None };
                let header = if name == "date" {
                    Some(self.string_arg(args.positional("a header name")?, "date")?)
                } else {
                    None
                };
                // An unknown part is no error: the test is false (as Pigeonhole does; RFC 5260
                // section 4.2 lists the parts but says nothing of others).
                let part = self.string_arg(args.positional("a date part")?, &name)?;
                let keys = self.list_arg(args.positional("keys")?, &name)?;
                self.check_keys(&matcher, &keys, pos)?;
                match header {
                    Some(header) => Test::Date { matcher, zone, header, part, keys, index },
                    None => Test::CurrentDate { matcher, zone, part, keys },
                }
            }
            "duplicate" => {
                self.need("duplicate", pos, "duplicate")?;
                let id = match (self.tag_string(&args, "header")?, self.tag_string(&args, "uniqueid")?) {
                    (Some(_), Some(_)) => return Err(invalid(pos, "duplicate takes :header or :uniqueid, not both")),
                    (Some(h), None) => DuplicateId::Header(h),
                    (None, Some(u)) => DuplicateId::Unique(u),
                    (None, None) => DuplicateId::Header(Str::new("Message-ID", false)),
                };
                Test::Duplicate {
                    handle: self.tag_string(&args, "handle")?,
                    id,
                    seconds: Self::tag_number(&args, "seconds")?,
                }
            }
            "spamtest" | "virustest" => {
                self.need(&name, pos, &name)?;
                let matcher = self.matcher(&args)?;
                let value = self.string_arg(args.positional("a value")?, &name)?;
                if name == "spamtest" {
                    Test::Spam { matcher, percent: args.tag("percent"), value }
                } else {
                    Test::Virus { matcher, value }
                }
            }
            "mailboxexists" => {
                self.need("mailbox", pos, "mailboxexists")?;
                Test::MailboxExists { names: self.list_arg(args.positional("mailbox names")?, "mailboxexists")? }
            }
            _ => return Err(invalid(pos, format!("unknown test \"{name}\""))),
        };
        args.finish()?;
        Ok(t)
    }
}
