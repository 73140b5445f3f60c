//! METADATA (RFC 5464): GETMETADATA and SETMETADATA, on a mailbox or, with the name `""`, on
//! the server (METADATA-SERVER).
//!
//! The mailbox service keeps the annotations (a folder's in its record, the server's in the
//! account's, both per user: `/shared/` entries are shared with whoever can read the mailbox,
//! which is its owner alone) and checks names and limits; this file speaks the protocol: the
//! DEPTH and MAXSIZE options, NIL for an entry that is not there, and the METADATA response
//! codes.

use imap_codec::imap_types::{
    core::{NString8, Vec1},
    extensions::metadata::{Depth, Entry, EntryValue, GetMetadataOption},
    mailbox::Mailbox,
};
use tern_proto::v1::{ErrorReason, GetMetadataRequest, MetadataChange, SetMetadataRequest};

use super::{
    Flow, Session,
    response::{Code, Response},
};

impl Session {
    /// The folder a METADATA command names: empty for the server, None when the name is none.
    fn metadata_folder(&self, mailbox: &Mailbox<'_>) -> Option<String> {
        match mailbox {
            Mailbox::Other(other) if other.as_ref().is_empty() => Some(String::new()),
            mailbox => self.mailbox_name(mailbox),
        }
    }

    pub(crate) async fn get_metadata(
        &mut self,
        tag: &imap_codec::imap_types::core::Tag<'static>,
        options: Vec<GetMetadataOption>,
        mailbox: Mailbox<'static>,
        entries: Vec1<Entry<'static>>,
    ) -> Flow {
        let Some(folder) = self.metadata_folder(&mailbox) else { return self.bad(tag, "Invalid mailbox name") };
        let (mut max_size, mut depth) = (None, Depth::Null);
        for option in options {
            match option {
                GetMetadataOption::MaxSize(n) => max_size = Some(u64::from(n)),
                GetMetadataOption::Depth(d) => depth = d,
            }
        }
        let mut names = Vec::new();
        for entry in entries.as_ref() {
            let name = String::from_utf8_lossy(entry.as_ref()).to_ascii_lowercase();
            // `/private` and `/shared` themselves name every entry below them, with DEPTH.
            let valid = ["/private", "/shared"].iter().any(|p| {
                name == *p || name.strip_prefix(p).and_then(|r| r.strip_prefix('/')).is_some_and(|r| !r.is_empty())
            });
            if !valid {
                return self.bad(tag, "Metadata entry names start with /private/ or /shared/");
            }
            names.push(name);
        }
        let account_id = self.account.as_ref().map(|a| a.id).unwrap_or_default();
        let stored = match self.client.get_metadata(GetMetadataRequest { account_id, folder: folder.clone() }).await {
            Ok(r) => r.into_inner().entries,
            Err(s) => {
                self.failed(tag, &s);
                return Flow::Continue;
            }
        };
        let mut answer: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        let mut longest = 0;
        for name in &names {
            let below = |entry: &str| {
                let Some(rest) = entry.strip_prefix(name.as_str()).and_then(|r| r.strip_prefix('/')) else {
                    return false;
                };
                match depth {
                    Depth::Null => false,
                    Depth::One => !rest.contains('/'),
                    Depth::Infinity => true,
                }
            };
            let found: Vec<_> = stored.iter().filter(|e| e.name == *name || below(&e.name)).collect();
            if found.is_empty() {
                // An entry that is not there is answered with NIL (RFC 5464 section 4.2).
                answer.push((name.clone(), None));
            }
            for entry in found {
                if max_size.is_some_and(|max| entry.value.len() as u64 > max) {
                    longest = longest.max(entry.value.len());
                } else if !answer.iter().any(|(n, _)| *n == entry.name) {
                    answer.push((entry.name.clone(), Some(entry.value.clone())));
                }
            }
        }
        if !answer.is_empty() {
            self.send(Response::Metadata { mailbox: self.wire_name(&folder), entries: answer });
        }
        if longest > 0 {
            // Values left out for MAXSIZE: the longest one's size (RFC 5464 section 4.2.1).
            self.ok_code(tag, Code::Metadata(format!("LONGENTRIES {longest}")), "GETMETADATA completed");
        } else {
            self.ok(tag, "GETMETADATA completed");
        }
        Flow::Continue
    }

    pub(crate) async fn set_metadata(
        &mut self,
        tag: &imap_codec::imap_types::core::Tag<'static>,
        mailbox: Mailbox<'static>,
        entry_values: Vec1<EntryValue<'static>>,
    ) -> Flow {
        let Some(folder) = self.metadata_folder(&mailbox) else { return self.bad(tag, "Invalid mailbox name") };
        let changes = entry_values
            .into_inner()
            .into_iter()
            .map(|EntryValue { entry, value }| {
                let name = String::from_utf8_lossy(entry.as_ref()).into_owned();
                match value {
                    NString8::NString(n) => match n.0 {
                        Some(v) => MetadataChange { name, value: v.as_ref().to_vec(), remove: false },
                        None => MetadataChange { name, value: Vec::new(), remove: true },
                    },
                    NString8::Literal8(l) => MetadataChange { name, value: l.data.to_vec(), remove: false },
                }
            })
            .collect();
        let account_id = self.account.as_ref().map(|a| a.id).unwrap_or_default();
        match self.client.set_metadata(SetMetadataRequest { account_id, folder, changes }).await {
            Ok(r) => {
                let r = r.into_inner();
                if r.max_size > 0 {
                    let code = Code::Metadata(format!("MAXSIZE {}", r.max_size));
                    self.no_code(tag, code, format!("A metadata value is longer than {} octets", r.max_size));
                } else if r.too_many {
                    self.no_code(tag, Code::Metadata("TOOMANY".into()), "Too many metadata entries");
                } else {
                    self.ok(tag, "SETMETADATA completed");
                }
            }
            // A name that is not one is the client's syntax, as RFC 5464 section 4.3 has it.
            Err(s) if ErrorReason::of(&s) == ErrorReason::InvalidArgument => {
                return self.bad(tag, s.message().to_string());
            }
            Err(s) => self.failed(tag, &s),
        }
        Flow::Continue
    }
}
