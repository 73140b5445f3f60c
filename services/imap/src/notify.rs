//! NOTIFY (RFC 5465) without I/O: the command, which imap-codec does not parse, and which
//! mailboxes its filters name. The session (`session::notify`) sends the notifications.
//!
//! ```text
//! notify          = "NOTIFY" SP ("NONE" / "SET" [SP "STATUS"] 1*(SP event-group))
//! event-group     = "(" filter-mailboxes SP ("NONE" / "(" event *(SP event) ")") ")"
//! filter-mailboxes = "selected" / "selected-delayed" / "inboxes" / "personal" / "subscribed"
//!                 / ("subtree" / "mailboxes") SP (mailbox / "(" mailbox *(SP mailbox) ")")
//! event           = "MessageNew" [SP "(" fetch-att *(SP fetch-att) ")"] / "MessageExpunge"
//!                 / "FlagChange" / "MailboxName" / "SubscriptionChange" / atom
//! ```

use imap_codec::imap_types::core::Tag;

/// A NOTIFY command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyCommand {
    None { tag: Tag<'static> },
    Set { tag: Tag<'static>, status: bool, groups: Vec<Group> },
}

/// Which mailboxes an event group is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// The selected mailbox (`selected`, and `selected-delayed`, which Tern treats alike).
    Selected,
    /// The mailboxes that receive new mail: INBOX.
    Inboxes,
    /// Every mailbox of the user.
    Personal,
    Subscribed,
    /// These mailboxes and those below them, as the client sent the names.
    Subtree(Vec<Vec<u8>>),
    Mailboxes(Vec<Vec<u8>>),
}

/// One kind of change to be told of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    MessageNew,
    MessageExpunge,
    FlagChange,
    MailboxName,
    SubscriptionChange,
    /// An event Tern does not send (AnnotationChange, MailboxMetadataChange, ...).
    Other(String),
}

/// A filter and its events (none: `NONE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub filter: Filter,
    pub events: Vec<Event>,
}

/// Why a NOTIFY is not one, said in the BAD that answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY takes NONE or SET with event groups")]
    Form,
    #[error("an event group is a mailbox filter and its events, in parentheses")]
    Group,
    #[error("unknown mailbox filter")]
    Filter,
    #[error("MessageNew and MessageExpunge go together, and FlagChange needs both")]
    Pairing,
}

/// A token of a NOTIFY command: an atom or string (a mailbox name), or a parenthesis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Word(Vec<u8>),
    Open,
    Close,
}

/// Parses the tokens after `NOTIFY`.
pub fn parse(tag: Tag<'static>, tokens: &[Token]) -> Result<NotifyCommand, NotifyError> {
    let word = |i: usize| match tokens.get(i) {
        Some(Token::Word(w)) => Some(w.to_ascii_uppercase()),
        _ => None,
    };
    match word(0).as_deref() {
        Some(b"NONE") if tokens.len() == 1 => return Ok(NotifyCommand::None { tag }),
        Some(b"SET") => {}
        _ => return Err(NotifyError::Form),
    }
    let mut i = 1;
    let status = word(1).as_deref() == Some(b"STATUS");
    if status {
        i += 1;
    }
    let mut groups = Vec::new();
    while i < tokens.len() {
        groups.push(group(tokens, &mut i)?);
    }
    if groups.is_empty() {
        return Err(NotifyError::Form);
    }
    Ok(NotifyCommand::Set { tag, status, groups })
}

fn group(tokens: &[Token], i: &mut usize) -> Result<Group, NotifyError> {
    let next = |i: &mut usize| {
        let t = tokens.get(*i).cloned();
        *i += 1;
        t
    };
    if next(i) != Some(Token::Open) {
        return Err(NotifyError::Group);
    }
    let Some(Token::Word(name)) = next(i) else { return Err(NotifyError::Group) };
    let filter = match name.to_ascii_lowercase().as_slice() {
        b"selected" | b"selected-delayed" => Filter::Selected,
        b"inboxes" => Filter::Inboxes,
        b"personal" => Filter::Personal,
        b"subscribed" => Filter::Subscribed,
        kind @ (b"subtree" | b"mailboxes") => {
            let mut names = Vec::new();
            match next(i) {
                Some(Token::Word(w)) => names.push(w),
                Some(Token::Open) => loop {
                    match next(i) {
                        Some(Token::Word(w)) => names.push(w),
                        Some(Token::Close) if !names.is_empty() => break,
                        _ => return Err(NotifyError::Group),
                    }
                },
                _ => return Err(NotifyError::Group),
            }
            if kind == b"subtree" { Filter::Subtree(names) } else { Filter::Mailboxes(names) }
        }
        _ => return Err(NotifyError::Filter),
    };
    let mut events = Vec::new();
    match next(i) {
        Some(Token::Word(w)) if w.eq_ignore_ascii_case(b"NONE") => {}
        Some(Token::Open) => loop {
            match next(i) {
                Some(Token::Word(w)) => {
                    let event = match w.to_ascii_lowercase().as_slice() {
                        b"messagenew" => Event::MessageNew,
                        b"messageexpunge" => Event::MessageExpunge,
                        b"flagchange" => Event::FlagChange,
                        b"mailboxname" => Event::MailboxName,
                        b"subscriptionchange" => Event::SubscriptionChange,
                        _ => Event::Other(String::from_utf8_lossy(&w).into_owned()),
                    };
                    // MessageNew's fetch attributes: Tern announces new messages with EXISTS
                    // and sends no FETCH of its own, which clients then ask for.
                    if event == Event::MessageNew && tokens.get(*i) == Some(&Token::Open) {
                        let mut depth = 0;
                        while let Some(t) = next(i) {
                            match t {
                                Token::Open => depth += 1,
                                Token::Close => depth -= 1,
                                Token::Word(_) => {}
                            }
                            if depth == 0 {
                                break;
                            }
                        }
                    }
                    events.push(event);
                }
                Some(Token::Close) if !events.is_empty() => break,
                _ => return Err(NotifyError::Group),
            }
        },
        _ => return Err(NotifyError::Group),
    }
    if next(i) != Some(Token::Close) {
        return Err(NotifyError::Group);
    }
    // RFC 5465 section 5: the message events of a group come as a set.
    let has = |e: &Event| events.contains(e);
    let new_or_gone = has(&Event::MessageNew) || has(&Event::MessageExpunge);
    if new_or_gone && !(has(&Event::MessageNew) && has(&Event::MessageExpunge))
        || has(&Event::FlagChange) && !new_or_gone
    {
        return Err(NotifyError::Pairing);
    }
    Ok(Group { filter, events })
}

/// Whether the mailbox `name` (as UTF-8, INBOX in capitals) falls under `filter`, given the
/// decoded names of subtree and mailboxes filters (`names`) and whether it is subscribed.
pub fn covers(filter: &Filter, names: &[String], name: &str, subscribed: bool) -> bool {
    match filter {
        Filter::Selected => false,
        Filter::Inboxes => name == "INBOX",
        Filter::Personal => true,
        Filter::Subscribed => subscribed,
        Filter::Mailboxes(_) => names.iter().any(|n| n == name),
        Filter::Subtree(_) => {
            names.iter().any(|n| n == name || name.strip_prefix(n.as_str()).is_some_and(|r| r.starts_with('/')))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<Token> {
        let mut out = Vec::new();
        for part in text.replace('(', " ( ").replace(')', " ) ").split_whitespace() {
            out.push(match part {
                "(" => Token::Open,
                ")" => Token::Close,
                w => Token::Word(w.as_bytes().to_vec()),
            });
        }
        out
    }

    fn tag() -> Tag<'static> {
        Tag::try_from("n").unwrap()
    }

    #[test]
    fn sets_with_every_filter() {
        let text = "SET STATUS (selected (MessageNew (UID FLAGS) MessageExpunge FlagChange)) (personal (MailboxName SubscriptionChange)) (subtree (Lists Work) (MessageNew MessageExpunge)) (mailboxes Sent NONE)";
        let Ok(NotifyCommand::Set { status, groups, .. }) = parse(tag(), &tokens(text)) else { panic!() };
        assert!(status);
        assert_eq!(groups.len(), 4);
        assert_eq!(groups[0].events, [Event::MessageNew, Event::MessageExpunge, Event::FlagChange]);
        assert_eq!(groups[2].filter, Filter::Subtree(vec![b"Lists".to_vec(), b"Work".to_vec()]));
        assert!(groups[3].events.is_empty());
        assert_eq!(parse(tag(), &tokens("NONE")), Ok(NotifyCommand::None { tag: tag() }));
    }

    #[test]
    fn broken_sets() {
        for (text, want) in [
            ("SET", NotifyError::Form),
            ("NONE extra", NotifyError::Form),
            ("SET (everything (MessageNew MessageExpunge))", NotifyError::Filter),
            ("SET (personal (MessageNew))", NotifyError::Pairing),
            ("SET (personal (FlagChange))", NotifyError::Pairing),
            ("SET (personal MessageNew)", NotifyError::Group),
            ("SET (personal ())", NotifyError::Group),
        ] {
            assert_eq!(parse(tag(), &tokens(text)), Err(want), "{text}");
        }
    }

    #[test]
    fn filters_cover_mailboxes() {
        let names = vec!["Lists".to_string()];
        assert!(covers(&Filter::Subtree(vec![]), &names, "Lists/rust", false));
        assert!(!covers(&Filter::Subtree(vec![]), &names, "Listsx", false));
        assert!(covers(&Filter::Mailboxes(vec![]), &names, "Lists", false));
        assert!(covers(&Filter::Inboxes, &[], "INBOX", false));
        assert!(!covers(&Filter::Inboxes, &[], "Sent", false));
        assert!(covers(&Filter::Subscribed, &[], "Sent", true));
    }
}
