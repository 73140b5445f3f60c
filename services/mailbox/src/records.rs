//! The records the backends store, generated from `proto/tern/storage/v1/records.proto`, and
//! every conversion between them and the API's messages (`tern.mailbox.v1`).
//!
//! The records have their own types, even where they carry what an API message carries (an
//! envelope, a body structure, an event), so that a change of the API cannot change what is
//! stored: existing redb databases and NATS logs must keep decoding. The types here are
//! wire-compatible with the API messages the records embedded before, and
//! `tests/records_compat.rs` decodes fixtures written then. A record becomes an API message,
//! or an API message a record, only through the conversions below, which name every field and
//! every enum value, so that the two sides may drift apart without a silent change of meaning.

use tern_proto::v1 as pb;

use crate::parse::Parsed;

mod generated {
    #![allow(clippy::all, missing_debug_implementations)]
    include!(concat!(env!("OUT_DIR"), "/tern.storage.v1.rs"));
}

pub use generated::*;

impl From<pb::Pop3DeletePolicy> for Pop3DeletePolicy {
    fn from(p: pb::Pop3DeletePolicy) -> Self {
        match p {
            pb::Pop3DeletePolicy::Expunge => Self::Expunge,
            pb::Pop3DeletePolicy::Keep => Self::Keep,
        }
    }
}

impl From<Pop3DeletePolicy> for pb::Pop3DeletePolicy {
    fn from(p: Pop3DeletePolicy) -> Self {
        match p {
            Pop3DeletePolicy::Expunge => Self::Expunge,
            Pop3DeletePolicy::Keep => Self::Keep,
        }
    }
}

impl From<pb::SpecialUse> for SpecialUse {
    fn from(s: pb::SpecialUse) -> Self {
        match s {
            pb::SpecialUse::None => Self::None,
            pb::SpecialUse::All => Self::All,
            pb::SpecialUse::Archive => Self::Archive,
            pb::SpecialUse::Drafts => Self::Drafts,
            pb::SpecialUse::Flagged => Self::Flagged,
            pb::SpecialUse::Junk => Self::Junk,
            pb::SpecialUse::Sent => Self::Sent,
            pb::SpecialUse::Trash => Self::Trash,
        }
    }
}

impl From<SpecialUse> for pb::SpecialUse {
    fn from(s: SpecialUse) -> Self {
        match s {
            SpecialUse::None => Self::None,
            SpecialUse::All => Self::All,
            SpecialUse::Archive => Self::Archive,
            SpecialUse::Drafts => Self::Drafts,
            SpecialUse::Flagged => Self::Flagged,
            SpecialUse::Junk => Self::Junk,
            SpecialUse::Sent => Self::Sent,
            SpecialUse::Trash => Self::Trash,
        }
    }
}

impl From<pb::SpamScan> for SpamScan {
    fn from(s: pb::SpamScan) -> Self {
        match s {
            pb::SpamScan::Inherit => Self::Inherit,
            pb::SpamScan::On => Self::On,
            pb::SpamScan::Off => Self::Off,
        }
    }
}

impl From<SpamScan> for pb::SpamScan {
    fn from(s: SpamScan) -> Self {
        match s {
            SpamScan::Inherit => Self::Inherit,
            SpamScan::On => Self::On,
            SpamScan::Off => Self::Off,
        }
    }
}

impl From<pb::SpamSettings> for SpamSettingsRecord {
    fn from(s: pb::SpamSettings) -> Self {
        let scan = SpamScan::from(s.scan()) as i32;
        Self { scan, junk_folder: s.junk_folder, allow_senders: s.allow_senders, block_senders: s.block_senders }
    }
}

impl From<SpamSettingsRecord> for pb::SpamSettings {
    fn from(s: SpamSettingsRecord) -> Self {
        let scan = pb::SpamScan::from(s.scan()) as i32;
        Self { scan, junk_folder: s.junk_folder, allow_senders: s.allow_senders, block_senders: s.block_senders }
    }
}

impl From<EventKind> for pb::EventKind {
    fn from(k: EventKind) -> Self {
        match k {
            EventKind::Unspecified => Self::Unspecified,
            EventKind::Append => Self::Append,
            EventKind::Flags => Self::Flags,
            EventKind::Expunge => Self::Expunge,
            EventKind::FolderCreated => Self::FolderCreated,
            EventKind::FolderDeleted => Self::FolderDeleted,
            EventKind::FolderRenamed => Self::FolderRenamed,
            EventKind::Subscribed => Self::Subscribed,
            EventKind::Unsubscribed => Self::Unsubscribed,
        }
    }
}

impl From<pb::MessageSummary> for EventMessage {
    fn from(m: pb::MessageSummary) -> Self {
        Self { uid: m.uid, flags: m.flags, modseq: m.modseq, size: m.size }
    }
}

impl From<EventMessage> for pb::MessageSummary {
    fn from(m: EventMessage) -> Self {
        Self { uid: m.uid, flags: m.flags, modseq: m.modseq, size: m.size }
    }
}

impl From<EventRecord> for pb::MailboxEvent {
    fn from(e: EventRecord) -> Self {
        Self {
            account_id: e.account_id,
            folder_id: e.folder_id,
            // A kind this version does not know reads as unspecified, as the getter has it.
            kind: pb::EventKind::from(e.kind()) as i32,
            modseq: e.modseq,
            messages: e.messages.into_iter().map(Into::into).collect(),
            folder_name: e.folder_name,
        }
    }
}

impl From<pb::Address> for AddressRecord {
    fn from(a: pb::Address) -> Self {
        Self { name: a.name, adl: a.adl, mailbox: a.mailbox, host: a.host }
    }
}

impl From<AddressRecord> for pb::Address {
    fn from(a: AddressRecord) -> Self {
        Self { name: a.name, adl: a.adl, mailbox: a.mailbox, host: a.host }
    }
}

impl From<pb::Param> for ParamRecord {
    fn from(p: pb::Param) -> Self {
        Self { name: p.name, value: p.value }
    }
}

impl From<ParamRecord> for pb::Param {
    fn from(p: ParamRecord) -> Self {
        Self { name: p.name, value: p.value }
    }
}

/// Converts every element; the element types have the same layout, so the vector's
/// allocation is reused.
fn all<A, B: From<A>>(v: Vec<A>) -> Vec<B> {
    v.into_iter().map(B::from).collect()
}

impl From<pb::Envelope> for EnvelopeRecord {
    fn from(e: pb::Envelope) -> Self {
        Self {
            date: e.date,
            subject: e.subject,
            from: all(e.from),
            sender: all(e.sender),
            reply_to: all(e.reply_to),
            to: all(e.to),
            cc: all(e.cc),
            bcc: all(e.bcc),
            in_reply_to: e.in_reply_to,
            message_id: e.message_id,
            references: e.references,
        }
    }
}

impl From<EnvelopeRecord> for pb::Envelope {
    fn from(e: EnvelopeRecord) -> Self {
        Self {
            date: e.date,
            subject: e.subject,
            from: all(e.from),
            sender: all(e.sender),
            reply_to: all(e.reply_to),
            to: all(e.to),
            cc: all(e.cc),
            bcc: all(e.bcc),
            in_reply_to: e.in_reply_to,
            message_id: e.message_id,
            references: e.references,
        }
    }
}

impl From<pb::BodyPart> for BodyPartRecord {
    fn from(b: pb::BodyPart) -> Self {
        Self {
            media_type: b.media_type,
            media_subtype: b.media_subtype,
            params: all(b.params),
            content_id: b.content_id,
            description: b.description,
            encoding: b.encoding,
            size: b.size,
            lines: b.lines,
            md5: b.md5,
            disposition: b.disposition,
            disposition_params: all(b.disposition_params),
            language: b.language,
            location: b.location,
            header_offset: b.header_offset,
            body_offset: b.body_offset,
            end_offset: b.end_offset,
            parts: all(b.parts),
            message_envelope: b.message_envelope.map(Into::into),
            message_body: b.message_body.map(|m| Box::new((*m).into())),
        }
    }
}

impl From<BodyPartRecord> for pb::BodyPart {
    fn from(b: BodyPartRecord) -> Self {
        Self {
            media_type: b.media_type,
            media_subtype: b.media_subtype,
            params: all(b.params),
            content_id: b.content_id,
            description: b.description,
            encoding: b.encoding,
            size: b.size,
            lines: b.lines,
            md5: b.md5,
            disposition: b.disposition,
            disposition_params: all(b.disposition_params),
            language: b.language,
            location: b.location,
            header_offset: b.header_offset,
            body_offset: b.body_offset,
            end_offset: b.end_offset,
            parts: all(b.parts),
            message_envelope: b.message_envelope.map(Into::into),
            message_body: b.message_body.map(|m| Box::new((*m).into())),
        }
    }
}

impl From<&Parsed> for ParsedRecord {
    /// The record of a message parsed at delivery; the message keeps its parse, which every
    /// copy of one delivery shares.
    fn from(p: &Parsed) -> Self {
        Self { envelope: Some(p.envelope.clone().into()), body: Some(p.body.clone().into()) }
    }
}

impl LogEntry {
    /// The writes this entry holds, in the order they apply: the entries of its batch, or the
    /// entry itself.
    pub fn parts(&self) -> impl Iterator<Item = &LogEntry> {
        let own = self.batch.is_empty().then_some(self);
        own.into_iter().chain(self.batch.iter())
    }

    /// What watchers are told of this entry, in order.
    pub fn into_events(self) -> Vec<EventRecord> {
        if self.batch.is_empty() { self.events } else { self.batch.into_iter().flat_map(|e| e.into_events()).collect() }
    }
}

impl ParsedRecord {
    /// The envelope and body structure as the API's FetchMessages answers them.
    pub fn into_api(self) -> (Option<pb::Envelope>, Option<pb::BodyPart>) {
        (self.envelope.map(Into::into), self.body.map(Into::into))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Every enum value keeps its number across the conversion both ways, so the API and the
    /// store agree on what a stored number means.
    #[test]
    fn enums_convert_value_for_value() {
        for n in 0..8 {
            let api = pb::SpecialUse::try_from(n).unwrap();
            let stored = SpecialUse::try_from(n).unwrap();
            assert_eq!(SpecialUse::from(api), stored);
            assert_eq!(pb::SpecialUse::from(stored), api);
        }
        for n in 0..2 {
            let api = pb::Pop3DeletePolicy::try_from(n).unwrap();
            let stored = Pop3DeletePolicy::try_from(n).unwrap();
            assert_eq!(Pop3DeletePolicy::from(api), stored);
            assert_eq!(pb::Pop3DeletePolicy::from(stored), api);
        }
        for n in 0..3 {
            let api = pb::SpamScan::try_from(n).unwrap();
            let stored = SpamScan::try_from(n).unwrap();
            assert_eq!(SpamScan::from(api), stored);
            assert_eq!(pb::SpamScan::from(stored), api);
        }
        for n in 0..9 {
            assert_eq!(pb::EventKind::from(EventKind::try_from(n).unwrap()), pb::EventKind::try_from(n).unwrap());
        }
        // One past the last value is unknown on both sides, so a value added to one enum and
        // not to the other fails here.
        assert!(SpecialUse::try_from(8).is_err() && pb::SpecialUse::try_from(8).is_err());
        assert!(Pop3DeletePolicy::try_from(2).is_err() && pb::Pop3DeletePolicy::try_from(2).is_err());
        assert!(EventKind::try_from(9).is_err() && pb::EventKind::try_from(9).is_err());
        assert!(SpamScan::try_from(3).is_err() && pb::SpamScan::try_from(3).is_err());
    }

    /// A parse of a real message, converted to a record and back, is what it was, and the
    /// record encodes to the bytes the API's messages encode to (what was stored before the
    /// records had their own types).
    #[test]
    fn parsed_messages_round_trip_byte_for_byte() {
        let raw = b"From: Alice <alice@example.org>\r\nTo: bob@example.org, Carol <carol@example.org>\r\n\
Subject: hi\r\nMessage-ID: <m1@example.org>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=b\r\n\r\n\
--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n\
--b\r\nContent-Type: message/rfc822\r\n\r\nFrom: eve@example.org\r\nSubject: inner\r\n\r\nbody\r\n\
--b--\r\n";
        let parsed = crate::parse::parse(raw);
        assert!(!parsed.envelope.to.is_empty() && parsed.body.parts.len() == 2);
        let record = ParsedRecord::from(&parsed);
        let (envelope, body) = (record.envelope.as_ref().unwrap(), record.body.as_ref().unwrap());
        assert_eq!(envelope.encode_to_vec(), parsed.envelope.encode_to_vec());
        assert_eq!(body.encode_to_vec(), parsed.body.encode_to_vec());
        assert_eq!(record.into_api(), (Some(parsed.envelope), Some(parsed.body)));
    }

    #[test]
    fn events_convert_field_for_field() {
        let api = pb::MailboxEvent {
            account_id: 1,
            folder_id: 2,
            kind: pb::EventKind::Flags as i32,
            modseq: 3,
            messages: vec![pb::MessageSummary { uid: 4, flags: vec!["\\Seen".into()], modseq: 3, size: 5 }],
            folder_name: "INBOX".into(),
        };
        let record = EventRecord {
            account_id: 1,
            folder_id: 2,
            kind: EventKind::Flags as i32,
            modseq: 3,
            messages: api.messages.iter().cloned().map(Into::into).collect(),
            folder_name: "INBOX".into(),
        };
        assert_eq!(record.encode_to_vec(), api.encode_to_vec());
        assert_eq!(pb::MailboxEvent::from(record), api);
    }
}
