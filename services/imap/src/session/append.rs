//! APPEND (RFC 9051 section 6.3.12), with MULTIAPPEND (RFC 3502) and CATENATE (RFC 4469).
//!
//! Every form ends here as an [`AppendCommand`]: the codec's single APPEND is turned into one,
//! and [`crate::append`] decodes the others. A message made by CATENATE is put together first,
//! each URL read from the mailbox service like a FETCH of `BODY.PEEK[section]<partial>`; then
//! one message goes out as `Append` and several as `AppendAll`, which the mailbox service
//! commits all or none. Nothing is appended until every message is complete, so a bad URL in
//! the third message leaves the mailbox as it was.

use imap_codec::{
    CommandCodec,
    decode::Decoder,
    imap_types::{
        command::CommandBody,
        fetch::{MacroOrMessageDataItemNames, MessageDataItemName, Section},
        flag::Flag,
    },
};
use tern_proto::v1::{
    AppendHeader, AppendRequest, FetchBodyRequest, FetchMessagesRequest, FolderRef, StatusRequest, append_request,
};

use super::{Flow, Session, response::Code};
use crate::append::{AppendCommand, AppendMessage, CatPart, ImapUrl, parse_url};

/// Bodies go to the mailbox service in chunks of this size.
const CHUNK: usize = 256 * 1024;

/// Why a message could not be put together: the tagged NO's code and text.
struct Refusal {
    code: Code,
    text: String,
}

impl Refusal {
    fn bad_url(url: &str, why: impl Into<String>) -> Self {
        Self { code: Code::BadUrl(url.to_string()), text: why.into() }
    }
}

impl Session {
    /// Answers an APPEND of one or more messages.
    pub(crate) async fn append(&mut self, command: AppendCommand) -> Flow {
        let tag = &command.tag;
        let Some(name) = self.raw_mailbox_name(&command.mailbox) else {
            return self.bad(tag, "Invalid mailbox name");
        };
        let account_id = self.account.as_ref().map(|a| a.id).unwrap_or_default();
        let mut requests = Vec::new();
        let count = command.messages.len();
        for message in &command.messages {
            let content = match self.assemble(message).await {
                Ok(content) => content,
                Err(refusal) => {
                    self.no_code(tag, refusal.code, refusal.text);
                    return Flow::Continue;
                }
            };
            let header = AppendHeader {
                account_id,
                folder: Some(FolderRef::name(name.clone())),
                flags: message.flags.iter().map(Flag::to_string).collect(),
                internal_date: message.date.unwrap_or(0),
                size_hint: content.len() as u64,
                ..Default::default()
            };
            requests.push(AppendRequest { part: Some(append_request::Part::Header(header)) });
            requests.extend(
                content.chunks(CHUNK).map(|c| AppendRequest { part: Some(append_request::Part::Chunk(c.to_vec())) }),
            );
        }
        let appended = if count == 1 {
            self.client.append(futures::stream::iter(requests)).await.map(|r| vec![r.into_inner()])
        } else {
            self.client.append_all(futures::stream::iter(requests)).await.map(|r| r.into_inner().appended)
        };
        match appended {
            Ok(appended) if !appended.is_empty() => {
                let last = appended.last().expect("not empty");
                let (folder_id, modseq, uid, validity) = (last.folder_id, last.modseq, last.uid, last.uidvalidity);
                self.catch_up(folder_id, modseq, uid).await;
                self.sync_updates(true).await;
                let uids = appended.iter().map(|a| a.uid).collect();
                self.ok_code(tag, Code::AppendUid { validity, uids }, "APPEND completed");
            }
            Ok(_) => self.no(tag, "APPEND appended nothing"),
            Err(s) => self.failed_into(tag, &s),
        }
        Flow::Continue
    }

    /// The bytes of one message: its literal, or its CATENATE parts joined.
    async fn assemble(&mut self, message: &AppendMessage) -> Result<Vec<u8>, Refusal> {
        let limit = self.cfg.limits.max_literal as usize;
        let mut content = Vec::new();
        for part in &message.parts {
            match part {
                CatPart::Text(text) => content.extend_from_slice(text),
                CatPart::Url(url) => content.extend(self.resolve_url(url).await?),
            }
            if content.len() > limit {
                return Err(Refusal {
                    code: Code::TooBig,
                    text: format!("The message would exceed the limit of {limit} octets"),
                });
            }
        }
        if message.catenate && content.is_empty() {
            return Err(Refusal { code: Code::Atom("CANNOT"), text: "CATENATE made an empty message".into() });
        }
        Ok(content)
    }

    /// What a CATENATE URL names, read as `BODY.PEEK[section]<partial>` would be: this user's
    /// own messages, or what another user authorized with URLAUTH. Any host is taken as this server, since a front-end behind a
    /// Kubernetes Service is reached under many names.
    async fn resolve_url(&mut self, url: &str) -> Result<Vec<u8>, Refusal> {
        // A URL another user authorized (URLAUTH) is read as URLFETCH reads it.
        if url.to_ascii_uppercase().contains(";URLAUTH=") {
            return self.fetch_authorized(url).await.map_err(|why| Refusal::bad_url(url, why));
        }
        let parsed = parse_url(url).map_err(|e| Refusal::bad_url(url, e.to_string()))?;
        let address = self.account.as_ref().map(|a| a.address.clone()).unwrap_or_default();
        if let Some(user) = &parsed.user
            && !user.eq_ignore_ascii_case(&address)
            && !address.split('@').next().is_some_and(|local| local.eq_ignore_ascii_case(user))
        {
            return Err(Refusal::bad_url(url, "the URL names another user's mailbox"));
        }
        let name = match &parsed.mailbox {
            Some(name) => name.clone(),
            None => match &self.selected {
                Some(s) => s.name.clone(),
                None => return Err(Refusal::bad_url(url, "a URL without a mailbox needs a selected mailbox")),
            },
        };
        let account_id = self.account.as_ref().map(|a| a.id).unwrap_or_default();
        self.url_content(account_id, &name, &parsed).await.map_err(|why| Refusal::bad_url(url, why))
    }

    /// The bytes an IMAP URL names in the folder `name` of `account_id`, as `BODY.PEEK[section]
    /// <partial>` would give them, or why there are none: the folder, its UIDVALIDITY (when the
    /// URL gives one), the message and the section must all be there.
    pub(crate) async fn url_content(&mut self, account_id: u64, name: &str, url: &ImapUrl) -> Result<Vec<u8>, String> {
        let section = match &url.section {
            Some(text) => Some(section(text).ok_or("the URL's section is not one")?),
            None => None,
        };
        let name = if name.eq_ignore_ascii_case("INBOX") { "INBOX".to_string() } else { name.to_string() };
        let req = StatusRequest { account_id, folder: Some(FolderRef::name(name)) };
        let (folder_id, uidvalidity) = match self.client.status(req).await.map(|r| r.into_inner().folder) {
            Ok(Some(f)) => (f.id, f.uidvalidity),
            Ok(None) => return Err("no such mailbox".into()),
            Err(s) => return Err(format!("the mailbox cannot be read: {}", s.message())),
        };
        if url.uidvalidity.is_some_and(|v| v != uidvalidity) {
            return Err("the mailbox's UIDVALIDITY has changed".into());
        }
        let req = FetchMessagesRequest {
            account_id,
            folder_id,
            uids: vec![url.uid],
            with_structure: true,
            inline_body_limit: u64::from(self.cfg.limits.max_literal),
        };
        let unavailable = |s: tonic::Status| format!("the message cannot be read: {}", s.message());
        let meta = self.client.fetch_messages(req).await.map_err(unavailable)?.into_inner().messages.pop();
        let Some(meta) = meta.filter(|m| m.uid == url.uid) else { return Err("no such message".into()) };
        let raw = if meta.has_raw {
            meta.raw.clone()
        } else {
            let req = FetchBodyRequest { account_id, folder_id, uid: url.uid, offset: 0, length: 0 };
            let mut stream = self.client.fetch_body(req).await.map_err(unavailable)?.into_inner();
            let mut out = Vec::new();
            while let Some(part) = stream.message().await.map_err(unavailable)? {
                out.extend_from_slice(&part.chunk);
            }
            out
        };
        let bytes = match (&section, &meta.body) {
            (None, _) => raw,
            (Some(section), Some(root)) => {
                crate::fetch::section_bytes(&raw, root, Some(section)).map_err(|e| e.to_string())?
            }
            (Some(_), None) => return Err("the message's structure is unknown".into()),
        };
        // URL-PARTIAL (RFC 5550): a range of what the section gives.
        Ok(match url.partial {
            None => bytes,
            Some((offset, length)) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
                let end = match length {
                    Some(l) => start.saturating_add(usize::try_from(l).unwrap_or(usize::MAX)).min(bytes.len()),
                    None => bytes.len(),
                };
                bytes[start..end].to_vec()
            }
        })
    }
}

/// A URL's section (`1.2`, `HEADER.FIELDS (SUBJECT)`, `TEXT`) in the codec's terms, read by the
/// codec itself as the section of a FETCH.
fn section(text: &str) -> Option<Section<'static>> {
    if text.bytes().any(|b| matches!(b, b']' | b'\r' | b'\n')) {
        return None;
    }
    let command = format!("s FETCH 1 BODY.PEEK[{text}]\r\n");
    let (rest, command) = CommandCodec::default().decode(command.as_bytes()).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let CommandBody::Fetch { macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(items), .. } =
        command.body
    else {
        return None;
    };
    match items.into_iter().next()? {
        MessageDataItemName::BodyExt { section: Some(section), partial: None, .. } => {
            Some(imap_codec::imap_types::IntoStatic::into_static(section))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_sections_are_read_by_the_codec() {
        assert!(matches!(section("1.2"), Some(Section::Part(_))));
        assert!(matches!(section("HEADER"), Some(Section::Header(None))));
        assert!(matches!(section("2.TEXT"), Some(Section::Text(Some(_)))));
        assert!(matches!(section("HEADER.FIELDS (Subject From)"), Some(Section::HeaderFields(None, _))));
        assert!(section("1]x").is_none());
        assert!(section("BOGUS").is_none());
    }
}
