//! The differential corpus's `.case` files (`README.md` next to this file describes the format):
//! reading them into [`CaseFile`]s and printing them back, so that the recorder can rewrite the
//! `--- pigeonhole` sections in place. Printing is the inverse of parsing for a file in the
//! canonical layout, which is why the recorder only rewrites a file whose recorded lines changed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The directory of the corpus: `cases/`, `messages/` and the README.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pigeonhole")
}

/// One `.case` file: the comment lines before its first case, then its cases in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFile {
    pub path: PathBuf,
    pub preamble: Vec<String>,
    pub cases: Vec<Case>,
}

/// One case: a script run on one message for one envelope, and what it should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub name: String,
    /// The `#` lines between `=== name` and the fields, saying what the case checks.
    pub comments: Vec<String>,
    pub message: String,
    pub from: String,
    pub to: String,
    /// The script's text, every line ending in `\n`.
    pub script: String,
    /// Scripts that `include` may load, written next to the run's configuration.
    pub includes: Vec<Include>,
    /// The canonical lines Pigeonhole gave, as recorded.
    pub pigeonhole: Vec<String>,
    /// What Tern is to give instead, where it disagrees with Pigeonhole on purpose.
    pub tern: Option<Tern>,
}

/// Where an included script lives, as `include :personal` and `include :global` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Personal,
    Global,
}

/// A script that the case's script may include.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    pub location: Location,
    pub name: String,
    pub text: String,
}

/// Tern's deliberate disagreement: why (citing the RFC), and Tern's lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tern {
    pub reason: String,
    pub lines: Vec<String>,
}

impl Case {
    /// What Tern must answer: the `--- tern` lines where the case has them, else Pigeonhole's.
    pub fn expected(&self) -> &[String] {
        self.tern.as_ref().map_or(&self.pigeonhole, |tern| &tern.lines)
    }
}

/// Every `.case` file under `cases/`, in name order so that failures are listed stably.
pub fn load_all() -> Vec<CaseFile> {
    let dir = root().join("cases");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "case"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            parse(&path, &text).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect()
}

/// Which section the parser is in.
enum Section {
    Header,
    Script,
    Include(usize),
    Pigeonhole,
    Tern,
}

/// Parses one `.case` file; the error names the file and the line.
pub fn parse(path: &Path, text: &str) -> Result<CaseFile, String> {
    let mut file = CaseFile { path: path.to_path_buf(), preamble: Vec::new(), cases: Vec::new() };
    let mut section = Section::Header;
    let mut lines: Vec<String> = Vec::new();
    let at = |number: usize, what: &str| format!("{}:{}: {what}", path.display(), number + 1);
    // Section bodies are gathered in `lines` and stored when the next section or case begins,
    // and once more at the end of the file.
    fn flush(case: Option<&mut Case>, section: &Section, lines: &mut Vec<String>) {
        while lines.last().is_some_and(|line| line.is_empty()) {
            lines.pop();
        }
        let body = std::mem::take(lines);
        let Some(case) = case else { return };
        let text = || body.iter().map(|line| format!("{line}\n")).collect::<String>();
        match section {
            Section::Header => {}
            Section::Script => case.script = text(),
            Section::Include(i) => case.includes[*i].text = text(),
            Section::Pigeonhole => case.pigeonhole = body,
            Section::Tern => {
                let tern = case.tern.get_or_insert(Tern { reason: String::new(), lines: Vec::new() });
                let mut body = body.into_iter();
                tern.reason = body.next().unwrap_or_default();
                tern.lines = body.collect();
            }
        }
    }
    for (number, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(name) = line.strip_prefix("=== ") {
            flush(file.cases.last_mut(), &section, &mut lines);
            let name = name.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(at(number, "a case's name is one word"));
            }
            if file.cases.iter().any(|case| case.name == name) {
                return Err(at(number, &format!("case {name} is defined twice")));
            }
            file.cases.push(Case {
                name: name.to_string(),
                comments: Vec::new(),
                message: String::new(),
                from: String::new(),
                to: String::new(),
                script: String::new(),
                includes: Vec::new(),
                pigeonhole: Vec::new(),
                tern: None,
            });
            section = Section::Header;
            continue;
        }
        if let Some(heading) = line.strip_prefix("--- ") {
            let Some(case) = file.cases.last_mut() else {
                return Err(at(number, "a section before the first `=== name`"));
            };
            flush(Some(case), &section, &mut lines);
            let words: Vec<&str> = heading.split_whitespace().collect();
            section = match words.as_slice() {
                ["script"] => Section::Script,
                ["pigeonhole"] => Section::Pigeonhole,
                ["tern"] => {
                    case.tern = Some(Tern { reason: String::new(), lines: Vec::new() });
                    Section::Tern
                }
                ["include", location, name] => {
                    let location = match *location {
                        "personal" => Location::Personal,
                        "global" => Location::Global,
                        _ => return Err(at(number, "an include is `personal` or `global`")),
                    };
                    case.includes.push(Include { location, name: name.to_string(), text: String::new() });
                    Section::Include(case.includes.len() - 1)
                }
                _ => return Err(at(number, &format!("unknown section `{heading}`"))),
            };
            continue;
        }
        match (&section, file.cases.last_mut()) {
            (Section::Header, None) => file.preamble.push(line.to_string()),
            (Section::Header, Some(case)) => {
                if line.starts_with('#') {
                    case.comments.push(line.to_string());
                } else if let Some((key, value)) = line.split_once(':') {
                    let value = value.trim().to_string();
                    match key.trim() {
                        "message" => case.message = value,
                        "from" => case.from = value,
                        "to" => case.to = value,
                        other => return Err(at(number, &format!("unknown field `{other}`"))),
                    }
                } else if !line.trim().is_empty() {
                    return Err(at(number, "expected `# comment`, `field: value` or `--- section`"));
                }
            }
            _ => lines.push(line.to_string()),
        }
    }
    flush(file.cases.last_mut(), &section, &mut lines);
    while file.preamble.last().is_some_and(|line| line.is_empty()) {
        file.preamble.pop();
    }
    for case in &file.cases {
        let missing = |what: &str| format!("{}: case {}: {what}", path.display(), case.name);
        for (field, value) in [("message", &case.message), ("from", &case.from), ("to", &case.to)] {
            if value.is_empty() {
                return Err(missing(&format!("no `{field}:`")));
            }
        }
        if case.script.is_empty() {
            return Err(missing("no `--- script`"));
        }
        if let Some(tern) = &case.tern {
            if !tern.reason.starts_with("reason: ") {
                return Err(missing("a `--- tern` section begins with `reason: ` and the RFC section that decides"));
            }
            check_canonical(&tern.lines).map_err(|e| missing(&format!("--- tern: {e}")))?;
        }
        if !case.pigeonhole.is_empty() {
            check_canonical(&case.pigeonhole).map_err(|e| missing(&format!("--- pigeonhole: {e}")))?;
        }
    }
    Ok(file)
}

/// Checks lines against the canonical format: each line one of the forms the README lists,
/// sorted, without duplicates, and `compile error` and `(none)` only alone.
pub fn check_canonical(lines: &[String]) -> Result<(), String> {
    if lines.is_empty() {
        return Err("no lines (a run that does nothing is `(none)`)".to_string());
    }
    for line in lines {
        let known = ["store ", "redirect ", "reject ", "vacation to "].iter().any(|prefix| line.starts_with(prefix))
            || ["error", "compile error", "(none)"].contains(&line.as_str());
        if !known {
            return Err(format!("`{line}` is not a canonical line"));
        }
    }
    if lines.windows(2).any(|pair| pair[0] >= pair[1]) {
        return Err("the lines are not sorted and deduplicated".to_string());
    }
    if lines.len() > 1 && lines.iter().any(|line| line == "compile error" || line == "(none)") {
        return Err("`compile error` and `(none)` stand alone".to_string());
    }
    Ok(())
}

/// Prints a case file in the canonical layout that [`parse`] reads.
pub fn print(file: &CaseFile) -> String {
    let mut out = String::new();
    for line in &file.preamble {
        let _ = writeln!(out, "{line}");
    }
    for case in &file.cases {
        if !out.is_empty() {
            out.push('\n');
        }
        let _ = writeln!(out, "=== {}", case.name);
        for comment in &case.comments {
            let _ = writeln!(out, "{comment}");
        }
        let _ = writeln!(out, "message: {}\nfrom: {}\nto: {}", case.message, case.from, case.to);
        let _ = write!(out, "--- script\n{}", case.script);
        for include in &case.includes {
            let location = match include.location {
                Location::Personal => "personal",
                Location::Global => "global",
            };
            let _ = write!(out, "--- include {location} {}\n{}", include.name, include.text);
        }
        out.push_str("--- pigeonhole\n");
        for line in &case.pigeonhole {
            let _ = writeln!(out, "{line}");
        }
        if let Some(tern) = &case.tern {
            let _ = writeln!(out, "--- tern\n{}", tern.reason);
            for line in &tern.lines {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    out
}
