//! The interpreter: runs a [`Program`] on one message for one recipient and returns what it
//! decided, an [`Outcome`] of actions for the mailbox service to carry out.
//!
//! Running is synchronous and has no I/O of its own: the little it needs from outside (does a
//! mailbox exist, was a duplicate or vacation key seen, the text of an included script) it asks
//! of an [`Environment`]. Actions are collected, not performed, as RFC 5228 section 2.10
//! describes: a script that fails part way (a runtime error, a limit reached) performs none of
//! them and the message is kept in INBOX instead, so a broken script never loses mail.

use std::collections::{HashMap, HashSet};

use regex::Regex;

use crate::{
    compile::{AddressPart, Cmd, DuplicateId, FlagOp, Index, Matcher, Program, Test, VacationCmd, Zone},
    dates,
    matching::{self, Comparator, MatchType, Matched},
    message::{self, Field, Parsed},
    strings::{self, Str},
};

/// What the script runs on.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub message: &'a [u8],
    /// The envelope sender (`MAIL FROM`), empty for the null sender `<>`.
    pub envelope_from: &'a str,
    /// The recipient this run is for (`RCPT TO`).
    pub envelope_to: &'a str,
    /// The recipient as first given (`ORCPT`), if known.
    pub original_to: Option<&'a str>,
    /// The spam scan's verdict as a percentage (0 certainly not spam, 100 certainly spam), or
    /// `None` when the message was not scanned.
    pub spam_percent: Option<u8>,
    /// The virus scan's verdict on RFC 5235's scale of 1 to 5, or `None` when not scanned.
    pub virus: Option<u8>,
    /// Now, in seconds since the epoch (for `currentdate`).
    pub now: i64,
}

/// What the interpreter asks of the world around it.
pub trait Environment {
    /// Whether the recipient has a mailbox (folder) of this name.
    fn mailbox_exists(&mut self, name: &str) -> bool;
    /// Whether a tracking key (a `duplicate` id or a vacation reply's sender) was recorded and
    /// has not expired.
    fn seen(&mut self, key: &str) -> bool;
    /// The text of the script `include` names, from the recipient's scripts or, with
    /// `global`, the server's; `None` if there is none.
    fn script(&mut self, name: &str, global: bool) -> Option<String>;
}

/// An environment with only INBOX, where nothing was seen and nothing can be included.
#[derive(Debug, Default, Clone)]
pub struct Isolated;

impl Environment for Isolated {
    fn mailbox_exists(&mut self, name: &str) -> bool {
        name.eq_ignore_ascii_case("INBOX")
    }
    fn seen(&mut self, _key: &str) -> bool {
        false
    }
    fn script(&mut self, _name: &str, _global: bool) -> Option<String> {
        None
    }
}

/// Explicit bounds on one run, so a hostile script cannot stall delivery.
#[derive(Debug, Clone)]
pub struct RunLimits {
    /// Commands and tests executed, comparisons made, plus one per KiB of text compared.
    pub max_steps: u64,
    /// Actions (stores, redirects, rejects, vacation replies) one run may collect.
    pub max_actions: usize,
    /// Redirects one run may collect.
    pub max_redirects: usize,
    /// How deeply `include` may nest.
    pub max_include_depth: usize,
    /// The longest variable value, in bytes; longer values are cut.
    pub max_variable_size: usize,
    /// The vacation period when the script names none, and the bounds a named one is held to.
    pub vacation_default_period: u64,
    pub vacation_min_period: u64,
    pub vacation_max_period: u64,
    /// How long a `duplicate` id is remembered when the script does not say.
    pub duplicate_default_period: u64,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            max_steps: 200_000,
            max_actions: 32,
            max_redirects: 4,
            max_include_depth: 5,
            max_variable_size: 4096,
            vacation_default_period: 7 * 86_400,
            vacation_min_period: 86_400,
            vacation_max_period: 90 * 86_400,
            duplicate_default_period: 14 * 86_400,
        }
    }
}

/// A vacation reply to send (RFC 5230): the mailbox service builds and queues it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The envelope sender of the message, to whom the reply goes.
    pub to: String,
    /// The `:from` address, if the script gave one; otherwise the recipient.
    pub from: Option<String>,
    pub subject: String,
    /// The reply's text, or with `mime` a MIME entity (its own headers and body).
    pub reason: String,
    pub mime: bool,
    /// The period, in seconds, during which the same sender gets no second reply.
    pub period: u64,
    /// The original's Message-ID, for In-Reply-To and References.
    pub in_reply_to: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Deliver into a mailbox (keep, fileinto and the implicit keep alike), with these flags;
    /// `create` makes the mailbox if it does not exist.
    Store {
        mailbox: String,
        flags: Vec<String>,
        create: bool,
    },
    Redirect {
        address: String,
    },
    /// Refuse the message with this reason; `extended` for ereject (refuse in the SMTP
    /// transaction where possible).
    Reject {
        reason: String,
        extended: bool,
    },
    Vacation(Reply),
}

/// How the tracking key of a vacation reply starts (the others are `duplicate` ids), so that
/// whoever sends the reply can tell its key from the rest.
pub const VACATION_KEY_PREFIX: &str = "vacation\u{0}";

/// A tracking key to record once the actions have been carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub key: String,
    pub seconds: u64,
}

/// What a run decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The actions to carry out, the implicit keep among them as a store into INBOX.
    pub actions: Vec<Action>,
    /// Whether the implicit keep is one of the stores.
    pub implicit_keep: bool,
    /// The runtime error that ended the run, in which case `actions` is the fallback keep.
    pub error: Option<String>,
    pub marks: Vec<Mark>,
    /// The message as `editheader` left it, if it changed it; stores and redirects use it.
    pub message: Option<Vec<u8>>,
}

impl Outcome {
    /// The canonical lines of the differential corpus: one per action, sorted.
    pub fn describe(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .actions
            .iter()
            .map(|a| match a {
                Action::Store { mailbox, flags, .. } => {
                    let mut flags: Vec<String> = flags.iter().map(|f| f.to_lowercase()).collect();
                    flags.sort();
                    flags.dedup();
                    if flags.is_empty() {
                        format!("store {mailbox}")
                    } else {
                        format!("store {mailbox} flags {}", flags.join(" "))
                    }
                }
                Action::Redirect { address } => format!("redirect {address}"),
                Action::Reject { reason, .. } => {
                    format!(
                        "reject {}",
                        reason.trim_end_matches(['\r', '\n']).replace("\r\n", "\n").replace('\n', "\\n")
                    )
                }
                Action::Vacation(r) => format!("vacation to {} seconds {} subject {}", r.to, r.period, r.subject),
            })
            .collect();
        if self.error.is_some() {
            lines.push("error".into());
        }
        if lines.is_empty() {
            lines.push("(none)".into());
        }
        lines.sort();
        lines.dedup();
        lines
    }
}

/// Why a run stopped early.
#[derive(Debug)]
struct Failure(String);

type Result<T> = std::result::Result<T, Failure>;

fn fail<T>(message: impl Into<String>) -> Result<T> {
    Err(Failure(message.into()))
}

enum Flow {
    Continue,
    Stop,
    Return,
}

/// One script's variables: its own and the names it declared `global`.
#[derive(Default)]
struct Scope {
    local: HashMap<String, String>,
    globals: HashSet<String>,
    /// Whether the running script required `variables` (match variables are set only then).
    variables: bool,
}

struct Run<'a, 'e> {
    input: &'a Input<'a>,
    env: &'e mut dyn Environment,
    limits: &'a RunLimits,
    parsed: Parsed,
    size: usize,
    scope: Scope,
    globals: HashMap<String, String>,
    matched: Vec<String>,
    /// imap4flags' internal variable (RFC 5232 section 3).
    flags: Vec<String>,
    actions: Vec<Action>,
    implicit_keep: bool,
    steps: u64,
    marks: Vec<Mark>,
    regexes: HashMap<(String, bool, bool), Option<Regex>>,
    /// The patterns the main script's compiler compiled already.
    compiled: &'a HashMap<crate::compile::RegexKey, Regex>,
    includes: Vec<String>,
    included_once: HashSet<String>,
    vacation_seen: bool,
    /// The `duplicate` ids tested in this run and what the environment said of each.
    duplicates: Vec<(String, bool)>,
    /// Decoded bodies by transform, with the number of header edits they were decoded after.
    bodies: Vec<(message::Transform, usize, Vec<String>)>,
    /// How many times editheader changed the header.
    edits: usize,
}

impl Program {
    /// Runs the program. Never fails: a runtime error yields the fallback keep with the error
    /// in [`Outcome::error`].
    pub fn run(&self, input: &Input<'_>, env: &mut dyn Environment, limits: &RunLimits) -> Outcome {
        let parsed = Parsed::new(input.message);
        let mut run = Run {
            input,
            env,
            limits,
            size: input.message.len(),
            parsed,
            scope: Scope { variables: self.requires("variables"), ..Scope::default() },
            globals: HashMap::new(),
            matched: Vec::new(),
            flags: Vec::new(),
            actions: Vec::new(),
            implicit_keep: true,
            steps: 0,
            marks: Vec::new(),
            regexes: HashMap::new(),
            compiled: &self.regexes,
            includes: Vec::new(),
            included_once: HashSet::new(),
            vacation_seen: false,
            duplicates: Vec::new(),
            bodies: Vec::new(),
            edits: 0,
        };
        match run.block(&self.commands).and_then(|_| run.finish()) {
            Ok(()) => {
                let message = run.parsed.edited.then(|| run.parsed.to_bytes());
                Outcome {
                    actions: run.actions,
                    implicit_keep: run.implicit_keep,
                    error: None,
                    marks: run.marks,
                    message,
                }
            }
            Err(Failure(error)) => Outcome {
                actions: vec![Action::Store { mailbox: "INBOX".into(), flags: Vec::new(), create: false }],
                implicit_keep: true,
                error: Some(error),
                marks: Vec::new(),
                message: None,
            },
        }
    }
}

fn normalize_mailbox(name: String) -> String {
    if name.eq_ignore_ascii_case("INBOX") { "INBOX".into() } else { name }
}

/// Splits flag lists into flags (RFC 5232 section 3: space-separated), dropping repeats
/// without regard to case.
fn add_flags(into: &mut Vec<String>, text: &str) {
    for flag in text.split(' ').filter(|f| !f.is_empty()) {
        if !into.iter().any(|f| f.eq_ignore_ascii_case(flag)) {
            into.push(flag.to_string());
        }
    }
}

impl Run<'_, '_> {
    fn step(&mut self, n: u64) -> Result<()> {
        self.steps += n;
        if self.steps > self.limits.max_steps {
            return fail(format!("the script took more than {} steps", self.limits.max_steps));
        }
        Ok(())
    }

    fn variable(&self, name: &str) -> Option<String> {
        if self.scope.globals.contains(name) {
            self.globals.get(name).cloned()
        } else {
            self.scope.local.get(name).cloned()
        }
    }

    fn set_variable(&mut self, name: &str, mut value: String) {
        if value.len() > self.limits.max_variable_size {
            let mut end = self.limits.max_variable_size;
            while !value.is_char_boundary(end) {
                end -= 1;
            }
            value.truncate(end);
        }
        if self.scope.globals.contains(name) {
            self.globals.insert(name.to_string(), value);
        } else {
            self.scope.local.insert(name.to_string(), value);
        }
    }

    fn expand(&self, s: &Str) -> String {
        s.expand(|name| self.variable(name), |n| self.matched.get(n).cloned())
    }

    fn expand_all(&self, list: &[Str]) -> Vec<String> {
        list.iter().map(|s| self.expand(s)).collect()
    }

    fn block(&mut self, commands: &[Cmd]) -> Result<Flow> {
        for command in commands {
            self.step(1)?;
            match self.command(command)? {
                Flow::Continue => {}
                flow => return Ok(flow),
            }
        }
        Ok(Flow::Continue)
    }

    fn push(&mut self, action: Action) -> Result<()> {
        // Repeated actions collapse (RFC 5228 section 2.10.3): one store per mailbox, its
        // flags merged, and one redirect per address.
        match &action {
            Action::Store { mailbox, flags, create } => {
                for a in &mut self.actions {
                    if let Action::Store { mailbox: m, flags: f, create: c } = a
                        && m == mailbox
                    {
                        for flag in flags {
                            add_flags(f, flag);
                        }
                        *c |= *create;
                        return Ok(());
                    }
                }
            }
            Action::Redirect { address } => {
                if self
                    .actions
                    .iter()
                    .any(|a| matches!(a, Action::Redirect { address: x } if x.eq_ignore_ascii_case(address)))
                {
                    return Ok(());
                }
                let redirects = self.actions.iter().filter(|a| matches!(a, Action::Redirect { .. })).count();
                if redirects >= self.limits.max_redirects {
                    return fail(format!("more than {} redirects", self.limits.max_redirects));
                }
            }
            _ => {}
        }
        if self.actions.len() >= self.limits.max_actions {
            return fail(format!("more than {} actions", self.limits.max_actions));
        }
        self.actions.push(action);
        Ok(())
    }

    fn flags_of(&self, given: &Option<Vec<Str>>) -> Vec<String> {
        match given {
            Some(list) => {
                let mut flags = Vec::new();
                for f in self.expand_all(list) {
                    add_flags(&mut flags, &f);
                }
                flags
            }
            None => self.flags.clone(),
        }
    }

    fn command(&mut self, command: &Cmd) -> Result<Flow> {
        match command {
            Cmd::If { branches, otherwise } => {
                for (test, block) in branches {
                    if self.test(test)? {
                        return self.block(block);
                    }
                }
                if let Some(block) = otherwise {
                    return self.block(block);
                }
            }
            Cmd::Stop => return Ok(Flow::Stop),
            Cmd::Return => return Ok(Flow::Return),
            Cmd::Keep { flags } => {
                let flags = self.flags_of(flags);
                self.push(Action::Store { mailbox: "INBOX".into(), flags, create: false })?;
                self.implicit_keep = false;
            }
            Cmd::Discard => self.implicit_keep = false,
            Cmd::Redirect { address, copy } => {
                let text = self.expand(address);
                let Some(address) = strings::redirect_address(&text) else {
                    return fail(format!("redirect to an invalid address \"{text}\""));
                };
                self.push(Action::Redirect { address })?;
                if !copy {
                    self.implicit_keep = false;
                }
            }
            Cmd::FileInto { mailbox, flags, copy, create } => {
                let mailbox = normalize_mailbox(self.expand(mailbox));
                if mailbox.is_empty() {
                    return fail("fileinto an empty mailbox name");
                }
                let flags = self.flags_of(flags);
                self.push(Action::Store { mailbox, flags, create: *create })?;
                if !copy {
                    self.implicit_keep = false;
                }
            }
            Cmd::Reject { reason, extended } => {
                if self.actions.iter().any(|a| matches!(a, Action::Reject { .. })) {
                    return fail("more than one reject");
                }
                let reason = self.expand(reason);
                self.push(Action::Reject { reason, extended: *extended })?;
                self.implicit_keep = false;
            }
            Cmd::Flags { op, variable, flags } => {
                let mut list = Vec::new();
                for f in self.expand_all(flags) {
                    add_flags(&mut list, &f);
                }
                let mut current = match variable {
                    Some(v) => {
                        let mut c = Vec::new();
                        add_flags(&mut c, &self.variable(v).unwrap_or_default());
                        c
                    }
                    None => self.flags.clone(),
                };
                match op {
                    FlagOp::Set => current = list,
                    FlagOp::Add => {
                        for f in list {
                            add_flags(&mut current, &f);
                        }
                    }
                    FlagOp::Remove => current.retain(|f| !list.iter().any(|r| r.eq_ignore_ascii_case(f))),
                }
                match variable {
                    Some(v) => self.set_variable(v, current.join(" ")),
                    None => self.flags = current,
                }
            }
            Cmd::Set { name, value, modifiers } => {
                let value = strings::apply_modifiers(self.expand(value), modifiers);
                self.set_variable(name, value);
            }
            Cmd::Vacation(v) => self.vacation(v)?,
            Cmd::AddHeader { last, name, value } => {
                let name = self.expand(name);
                if !strings::is_field_name(&name) {
                    return fail(format!("addheader with an invalid field name \"{name}\""));
                }
                {
                    let value = self.expand(value);
                    let field = Field { name, raw: encode_value(&value).into_bytes() };
                    if *last {
                        self.parsed.fields.push(field);
                    } else {
                        self.parsed.fields.insert(0, field);
                    }
                    self.parsed.edited = true;
                    self.edits += 1;
                }
            }
            Cmd::DeleteHeader { index, matcher, name, patterns } => {
                let name = self.expand(name);
                if !protected(&name) {
                    self.delete_header(&name, *index, matcher, patterns.as_deref())?;
                }
            }
            Cmd::Include { name, global, once, optional } => return self.include(name, *global, *once, *optional),
            Cmd::Global { names } => {
                for n in names {
                    self.scope.globals.insert(n.clone());
                }
            }
        }
        Ok(Flow::Continue)
    }

    fn include(&mut self, name: &Str, global: bool, once: bool, optional: bool) -> Result<Flow> {
        let name = self.expand(name);
        let key = format!("{}:{name}", if global { "global" } else { "personal" });
        if once && self.included_once.contains(&key) {
            return Ok(Flow::Continue);
        }
        if self.includes.contains(&key) {
            return fail(format!("include of \"{name}\" loops"));
        }
        if self.includes.len() >= self.limits.max_include_depth {
            return fail(format!("includes nest deeper than {}", self.limits.max_include_depth));
        }
        let Some(text) = self.env.script(&name, global) else {
            return if optional {
                Ok(Flow::Continue)
            } else {
                fail(format!("included script \"{name}\" does not exist"))
            };
        };
        let program = crate::compile(&text).map_err(|e| Failure(format!("included script \"{name}\": {e}")))?;
        self.included_once.insert(key.clone());
        self.includes.push(key);
        let outer =
            std::mem::replace(&mut self.scope, Scope { variables: program.requires("variables"), ..Scope::default() });
        let flow = self.block(&program.commands);
        self.scope = outer;
        self.includes.pop();
        Ok(match flow? {
            Flow::Stop => Flow::Stop,
            Flow::Continue | Flow::Return => Flow::Continue,
        })
    }

    fn delete_header(
        &mut self,
        name: &str,
        index: Option<Index>,
        matcher: &Matcher,
        patterns: Option<&[Str]>,
    ) -> Result<()> {
        let positions: Vec<usize> = self
            .parsed
            .fields
            .iter()
            .enumerate()
            .filter(|(_, f)| f.name.eq_ignore_ascii_case(name))
            .map(|(i, _)| i)
            .collect();
        let chosen: Vec<usize> = match index {
            Some(Index { n, last }) => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                let at = if last { positions.len().checked_sub(n) } else { n.checked_sub(1) };
                at.and_then(|at| positions.get(at).copied()).into_iter().collect()
            }
            None => positions,
        };
        let mut remove = Vec::new();
        for at in chosen {
            let hit = match patterns {
                None => true,
                Some(keys) => {
                    let value = message::decode_text(&self.parsed.fields[at].raw);
                    self.matches(matcher, &[value], keys)?
                }
            };
            if hit {
                remove.push(at);
            }
        }
        for at in remove.into_iter().rev() {
            self.parsed.fields.remove(at);
            self.parsed.edited = true;
            self.edits += 1;
        }
        Ok(())
    }

    fn vacation(&mut self, v: &VacationCmd) -> Result<()> {
        if self.vacation_seen {
            return fail("more than one vacation action");
        }
        self.vacation_seen = true;
        let sender = self.input.envelope_from.trim().to_string();
        let mut own: Vec<String> = self.expand_all(&v.addresses);
        own.push(self.input.envelope_to.to_string());
        if let Some(from) = &v.from {
            let from = self.expand(from);
            own.extend(message::addresses(format!(" {from}").as_bytes()));
        }
        if !self.should_reply(&sender, &own) {
            return Ok(());
        }
        let subject = match &v.subject {
            Some(s) => self.expand(s),
            None => {
                let original = self.parsed.raw_values("subject").next().map(message::decode_text).unwrap_or_default();
                if original.is_empty() { "Automated reply".into() } else { format!("Auto: {original}") }
            }
        };
        let reason = self.expand(&v.reason);
        let from = v.from.as_ref().map(|f| self.expand(f));
        let handle = match &v.handle {
            Some(h) => self.expand(h),
            None => format!("{subject}\u{0}{}\u{0}{}\u{0}{reason}", from.clone().unwrap_or_default(), v.mime),
        };
        let key = format!("{VACATION_KEY_PREFIX}{handle}\u{0}{}", sender.to_ascii_lowercase());
        if self.env.seen(&key) {
            return Ok(());
        }
        let period = v.period.unwrap_or(self.limits.vacation_default_period).clamp(
            self.limits.vacation_min_period,
            self.limits.vacation_max_period.max(self.limits.vacation_min_period),
        );
        let in_reply_to =
            self.parsed.raw_values("message-id").next().map(|r| String::from_utf8_lossy(r).trim().to_string());
        self.push(Action::Vacation(Reply { to: sender, from, subject, reason, mime: v.mime, period, in_reply_to }))?;
        self.marks.push(Mark { key, seconds: period });
        Ok(())
    }

    /// RFC 5230 sections 4.5 and 4.6 and RFC 3834: no replies to the null sender, to list
    /// and daemon addresses, to automatic or bulk mail, to oneself, or to mail that was not
    /// addressed to the recipient in its To, Cc or Bcc.
    fn should_reply(&self, sender: &str, own: &[String]) -> bool {
        if sender.is_empty() || sender == "<>" {
            return false;
        }
        let local = message::local_part(sender).to_ascii_lowercase();
        if ["mailer-daemon", "listserv", "majordomo"].contains(&local.as_str())
            || local.starts_with("owner-")
            || local.ends_with("-request")
        {
            return false;
        }
        if own.iter().any(|o| o.eq_ignore_ascii_case(sender)) {
            return false;
        }
        let p = &self.parsed;
        if p.raw_values("auto-submitted").any(|v| !message::decode_text(v).to_ascii_lowercase().starts_with("no")) {
            return false;
        }
        if p.raw_values("precedence")
            .any(|v| matches!(message::decode_text(v).to_ascii_lowercase().as_str(), "bulk" | "list" | "junk"))
        {
            return false;
        }
        if ["list-id", "list-help", "list-subscribe", "list-unsubscribe", "list-post", "list-owner", "list-archive"]
            .iter()
            .any(|h| p.has(h))
        {
            return false;
        }
        ["to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc"].iter().any(|h| {
            p.raw_values(h)
                .any(|raw| message::addresses(raw).iter().any(|a| own.iter().any(|o| o.eq_ignore_ascii_case(a))))
        })
    }

    fn finish(&mut self) -> Result<()> {
        let reject = self.actions.iter().any(|a| matches!(a, Action::Reject { .. }));
        if reject && let Some(other) = self.actions.iter().find(|a| !matches!(a, Action::Reject { .. })) {
            let what = match other {
                Action::Store { .. } => "keep or fileinto",
                Action::Redirect { .. } => "redirect",
                Action::Vacation(_) => "vacation",
                Action::Reject { .. } => "reject",
            };
            return fail(format!("reject cannot be combined with {what} (RFC 5429 section 2.1)"));
        }
        if self.implicit_keep {
            let flags = self.flags.clone();
            self.push(Action::Store { mailbox: "INBOX".into(), flags, create: false })?;
        }
        Ok(())
    }

    fn regex(&mut self, pattern: &str, glob: bool, comparator: Comparator) -> Option<Regex> {
        let key = (pattern.to_string(), glob, comparator == Comparator::AsciiCasemap);
        if let Some(re) = self.compiled.get(&key) {
            return Some(re.clone());
        }
        self.regexes
            .entry(key)
            .or_insert_with(|| {
                if glob {
                    matching::glob_regex(pattern, comparator).ok()
                } else {
                    matching::compile_regex(pattern, comparator).ok()
                }
            })
            .clone()
    }

    /// Whether any value matches any key; a match under `:matches` or `:regex` sets the match
    /// variables.
    fn matches(&mut self, matcher: &Matcher, values: &[String], keys: &[Str]) -> Result<bool> {
        let keys = self.expand_all(keys);
        if let MatchType::Count(rel) = matcher.kind {
            self.step(keys.len() as u64)?;
            return Ok(keys.iter().any(|k| matching::match_count(rel, matcher.comparator, values.len(), k)));
        }
        for value in values {
            for key in &keys {
                self.step(1 + (value.len() as u64) / 1024)?;
                let comparator = matcher.comparator;
                let mut cache = |p: &str, glob: bool| self.regex(p, glob, comparator);
                match matching::match_value(matcher.kind, comparator, value, key, &mut cache) {
                    Matched::No => {}
                    Matched::Yes => return Ok(true),
                    Matched::WithGroups(groups) => {
                        if self.scope.variables {
                            self.matched = groups;
                        }
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }

    /// The raw values of the named header fields, each name's fields narrowed by `:index`.
    fn header_raws(&self, names: &[String], index: Option<Index>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for name in names {
            let all: Vec<&[u8]> = self.parsed.raw_values(name).collect();
            match index {
                None => out.extend(all.into_iter().map(<[u8]>::to_vec)),
                Some(Index { n, last }) => {
                    let n = usize::try_from(n).unwrap_or(usize::MAX);
                    let at = if last { all.len().checked_sub(n) } else { n.checked_sub(1) };
                    if let Some(raw) = at.and_then(|at| all.get(at)) {
                        out.push(raw.to_vec());
                    }
                }
            }
        }
        out
    }

    fn address_parts(addresses: impl IntoIterator<Item = String>, part: AddressPart) -> Vec<String> {
        addresses
            .into_iter()
            .filter_map(|a| match part {
                AddressPart::All => Some(a),
                AddressPart::LocalPart => Some(message::local_part(&a).to_string()),
                AddressPart::Domain => Some(message::domain(&a).to_string()),
                AddressPart::User => Some(message::user(&a).to_string()),
                AddressPart::Detail => message::detail(&a).map(str::to_string),
            })
            .collect()
    }

    fn zone_offset(&self, zone: &Zone, original: i32) -> Option<i32> {
        match zone {
            Zone::Local => Some(0),
            Zone::Original => Some(original),
            Zone::Fixed(z) => dates::parse_zone(&self.expand(z)),
        }
    }

    fn test(&mut self, test: &Test) -> Result<bool> {
        self.step(1)?;
        Ok(match test {
            Test::True => true,
            Test::False => false,
            Test::Not(t) => !self.test(t)?,
            Test::AllOf(tests) => {
                for t in tests {
                    if !self.test(t)? {
                        return Ok(false);
                    }
                }
                true
            }
            Test::AnyOf(tests) => {
                for t in tests {
                    if self.test(t)? {
                        return Ok(true);
                    }
                }
                false
            }
            Test::Address { matcher, part, headers, keys, index } => {
                let names = self.expand_all(headers);
                let raws = self.header_raws(&names, *index);
                let addresses = raws.iter().flat_map(|r| message::addresses(r));
                let values = Self::address_parts(addresses.collect::<Vec<_>>(), *part);
                self.matches(matcher, &values, keys)?
            }
            Test::Envelope { matcher, part, fields, keys } => {
                let mut addresses = Vec::new();
                for f in self.expand_all(fields) {
                    let value = match f.to_ascii_lowercase().as_str() {
                        "from" => Some(self.input.envelope_from),
                        "to" => Some(self.input.envelope_to),
                        "orcpt" => self.input.original_to,
                        _ => None,
                    };
                    if let Some(v) = value {
                        let v = v.trim().trim_start_matches('<').trim_end_matches('>').to_string();
                        addresses.push(v);
                    }
                }
                let values = Self::address_parts(addresses, *part);
                self.matches(matcher, &values, keys)?
            }
            Test::Header { matcher, headers, keys, index } => {
                let names = self.expand_all(headers);
                let values: Vec<String> =
                    self.header_raws(&names, *index).iter().map(|r| message::decode_text(r)).collect();
                self.matches(matcher, &values, keys)?
            }
            Test::Exists { headers } => self.expand_all(headers).iter().all(|h| self.parsed.has(h)),
            Test::Size { over, limit } => {
                let size = if self.parsed.edited { self.parsed.to_bytes().len() } else { self.size } as u64;
                if *over { size > *limit } else { size < *limit }
            }
            Test::HasFlag { matcher, variables, keys } => {
                let mut flags = Vec::new();
                match variables {
                    Some(vars) => {
                        for v in vars {
                            add_flags(&mut flags, &self.variable(v).unwrap_or_default());
                        }
                    }
                    None => flags = self.flags.clone(),
                }
                self.matches(matcher, &flags, keys)?
            }
            Test::String { matcher, sources, keys } => {
                let mut values = self.expand_all(sources);
                if matches!(matcher.kind, MatchType::Count(_)) {
                    // RFC 5229 section 5: empty strings are not counted.
                    values.retain(|v| !v.is_empty());
                }
                self.matches(matcher, &values, keys)?
            }
            Test::Body { matcher, transform, keys } => {
                // Decoding the body is the costliest thing a script asks for, so it is done
                // once per transform and run (again only if editheader changed the header,
                // which may change the MIME structure).
                let edits = self.edits;
                let values = match self.bodies.iter().find(|(t, at, _)| t == transform && *at == edits) {
                    Some((_, _, v)) => v.clone(),
                    None => {
                        let v = message::body_texts(&self.parsed, transform);
                        self.bodies.push((transform.clone(), edits, v.clone()));
                        v
                    }
                };
                let bytes: usize = values.iter().map(String::len).sum();
                self.step((bytes / 1024) as u64)?;
                self.matches(matcher, &values, keys)?
            }
            Test::Date { matcher, zone, header, part, keys, index } => {
                let name = self.expand(header);
                let part = self.expand(part);
                let mut values = Vec::new();
                for raw in self.header_raws(std::slice::from_ref(&name), *index) {
                    // A Received field's date follows its last semicolon (RFC 5260 section 4).
                    let raw = if name.eq_ignore_ascii_case("received") {
                        raw.iter().rposition(|&b| b == b';').map_or(raw.clone(), |at| raw[at + 1..].to_vec())
                    } else {
                        raw
                    };
                    if let Some((t, original)) = message::date(&raw)
                        && let Some(offset) = self.zone_offset(zone, original)
                    {
                        values.extend(dates::part(&part, t, offset));
                    }
                }
                self.matches(matcher, &values, keys)?
            }
            Test::CurrentDate { matcher, zone, part, keys } => {
                let part = self.expand(part);
                let values: Vec<String> = self
                    .zone_offset(zone, 0)
                    .and_then(|offset| dates::part(&part, self.input.now, offset))
                    .into_iter()
                    .collect();
                self.matches(matcher, &values, keys)?
            }
            Test::Duplicate { handle, id, seconds } => {
                let id = match id {
                    DuplicateId::Unique(u) => Some(self.expand(u)),
                    DuplicateId::Header(h) => {
                        let name = self.expand(h);
                        self.parsed.raw_values(&name).next().map(message::decode_text)
                    }
                };
                let Some(id) = id.filter(|i| !i.is_empty()) else { return Ok(false) };
                let handle = handle.as_ref().map(|h| self.expand(h)).unwrap_or_default();
                let key = format!("duplicate\u{0}{handle}\u{0}{id}");
                // The same id tested again in this run answers as the first time: the message
                // being delivered is not a duplicate of itself.
                if let Some(&(_, seen)) = self.duplicates.iter().find(|(k, _)| *k == key) {
                    return Ok(seen);
                }
                let seen = self.env.seen(&key);
                self.duplicates.push((key.clone(), seen));
                if !seen {
                    let seconds = seconds.unwrap_or(self.limits.duplicate_default_period);
                    self.marks.push(Mark { key, seconds });
                }
                seen
            }
            Test::Spam { matcher, percent, value } => {
                let v = match self.input.spam_percent {
                    None => "0".to_string(),
                    Some(p) if *percent => p.min(100).to_string(),
                    // 1 is certainly not spam and 10 certainly spam (RFC 5235 section 3.2), the
                    // range between in nine equal steps, as Pigeonhole divides it.
                    Some(p) => (1 + u32::from(p.min(100)) * 9 / 100).to_string(),
                };
                self.matches(matcher, &[v], std::slice::from_ref(value))?
            }
            Test::Virus { matcher, value } => {
                let v = self.input.virus.map_or("0".to_string(), |v| v.to_string());
                self.matches(matcher, &[v], std::slice::from_ref(value))?
            }
            Test::MailboxExists { names } => {
                let names = self.expand_all(names);
                names.iter().all(|n| self.env.mailbox_exists(n))
            }
        })
    }
}

/// Headers `deleteheader` leaves alone (RFC 5293 section 6: Received is the trace that loop
/// detection reads, and Auto-Submitted guards against auto-reply loops). Adding them is allowed.
fn protected(name: &str) -> bool {
    name.eq_ignore_ascii_case("received") || name.eq_ignore_ascii_case("auto-submitted")
}

/// A header value as written: ASCII as is, anything else as an RFC 2047 encoded word.
fn encode_value(value: &str) -> String {
    if value.is_ascii() {
        format!(" {value}")
    } else {
        use base64::Engine as _;
        format!(" =?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(value))
    }
}
