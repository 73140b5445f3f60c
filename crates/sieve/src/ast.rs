//! The syntax tree of a Sieve script (the grammar of RFC 5228 section 8.2), generic: a command
//! is a name, its arguments, its tests and an optional block, whatever the name.
//!
//! The tree does not know which commands, tests, tags or extensions exist, nor whether the
//! arguments suit the command: `require`, argument checking and the extensions are the semantic
//! step that compiles this tree. Names keep the case they were written in; Sieve compares them
//! without regard to ASCII case. `Display` prints a tree back as a Sieve script that parses to
//! the same tree (without the comments and the original layout).

use std::fmt;

use crate::lexer::Position;

/// A whole script: its top-level commands in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Script {
    pub commands: Vec<Command>,
}

/// `identifier arguments [test / test-list] (";" / block)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub name: String,
    pub args: Vec<Argument>,
    /// The test (one, `test_list` false) or the parenthesised test-list (`test_list` true)
    /// after the arguments; empty if there is none.
    pub tests: Vec<Test>,
    pub test_list: bool,
    /// The block, or `None` if the command ends with `;`.
    pub block: Option<Vec<Command>>,
    /// Where the command's name is.
    pub pos: Position,
}

/// `identifier arguments [test / test-list]`: `header :is "a" "b"`, `not exists "x"`,
/// `anyof (true, false)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Test {
    pub name: String,
    pub args: Vec<Argument>,
    /// As in [`Command::tests`].
    pub tests: Vec<Test>,
    pub test_list: bool,
    pub pos: Position,
}

/// One argument and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Argument {
    pub value: Value,
    pub pos: Position,
}

/// What an argument is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A quoted or multi-line string.
    String(String),
    /// `[ string *("," string) ]`, never empty.
    StringList(Vec<String>),
    /// A number, its quantifier applied.
    Number(u64),
    /// A tag, without its leading `:`.
    Tag(String),
}

impl Script {
    /// The number of commands, those in blocks included.
    pub fn command_count(&self) -> usize {
        fn count(commands: &[Command]) -> usize {
            commands.iter().map(|c| 1 + c.block.as_deref().map_or(0, count)).sum()
        }
        count(&self.commands)
    }

    /// How deeply blocks nest: 0 for a script without blocks.
    pub fn block_depth(&self) -> usize {
        fn depth(commands: &[Command]) -> usize {
            commands.iter().filter_map(|c| c.block.as_deref()).map(|b| 1 + depth(b)).max().unwrap_or(0)
        }
        depth(&self.commands)
    }

    /// How deeply tests nest: 1 for `if true`, 2 for `if not true`.
    pub fn test_depth(&self) -> usize {
        fn in_tests(tests: &[Test]) -> usize {
            tests.iter().map(|t| 1 + in_tests(&t.tests)).max().unwrap_or(0)
        }
        fn in_commands(commands: &[Command]) -> usize {
            commands
                .iter()
                .map(|c| in_tests(&c.tests).max(c.block.as_deref().map_or(0, in_commands)))
                .max()
                .unwrap_or(0)
        }
        in_commands(&self.commands)
    }

    /// Whether two scripts have the same tree, positions aside.
    pub fn same_tree(&self, other: &Script) -> bool {
        fn args(a: &[Argument], b: &[Argument]) -> bool {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.value == b.value)
        }
        fn tests(a: &[Test], b: &[Test]) -> bool {
            a.len() == b.len()
                && a.iter().zip(b).all(|(a, b)| {
                    a.name == b.name
                        && a.test_list == b.test_list
                        && args(&a.args, &b.args)
                        && tests(&a.tests, &b.tests)
                })
        }
        fn commands(a: &[Command], b: &[Command]) -> bool {
            a.len() == b.len()
                && a.iter().zip(b).all(|(a, b)| {
                    a.name == b.name
                        && a.test_list == b.test_list
                        && args(&a.args, &b.args)
                        && tests(&a.tests, &b.tests)
                        && match (&a.block, &b.block) {
                            (None, None) => true,
                            (Some(a), Some(b)) => commands(a, b),
                            _ => false,
                        }
                })
        }
        commands(&self.commands, &other.commands)
    }
}

/// Writes `s` as a quoted string (line ends stay as they are; quoted strings may hold them).
fn quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        if c == '"' || c == '\\' {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    f.write_str("\"")
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) => quoted(f, s),
            Value::StringList(list) => {
                f.write_str("[")?;
                for (i, s) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    quoted(f, s)?;
                }
                f.write_str("]")
            }
            Value::Number(n) => write!(f, "{n}"),
            Value::Tag(t) => write!(f, ":{t}"),
        }
    }
}

fn write_call(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    args: &[Argument],
    tests: &[Test],
    test_list: bool,
) -> fmt::Result {
    f.write_str(name)?;
    for arg in args {
        write!(f, " {}", arg.value)?;
    }
    if test_list {
        f.write_str(" (")?;
        for (i, test) in tests.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{test}")?;
        }
        f.write_str(")")?;
    } else {
        for test in tests {
            write!(f, " {test}")?;
        }
    }
    Ok(())
}

impl fmt::Display for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_call(f, &self.name, &self.args, &self.tests, self.test_list)
    }
}

fn write_commands(f: &mut fmt::Formatter<'_>, commands: &[Command], indent: usize) -> fmt::Result {
    for command in commands {
        write!(f, "{:indent$}", "", indent = indent * 4)?;
        write_call(f, &command.name, &command.args, &command.tests, command.test_list)?;
        match &command.block {
            None => f.write_str(";\n")?,
            Some(block) => {
                f.write_str(" {\n")?;
                write_commands(f, block, indent + 1)?;
                writeln!(f, "{:indent$}}}", "", indent = indent * 4)?;
            }
        }
    }
    Ok(())
}

impl fmt::Display for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_commands(f, &self.commands, 0)
    }
}
