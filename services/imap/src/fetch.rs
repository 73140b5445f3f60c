//! FETCH: building response items from stored metadata and message bytes.
//!
//! The mailbox service parses every message once, at delivery, into a [`MessageMeta`]: the
//! envelope, the MIME structure and the byte offsets of every part. This module turns that into
//! imap-types' [`MessageDataItem`]s without parsing the message again: ENVELOPE, BODY and
//! BODYSTRUCTURE come from the metadata alone, and `BODY[section]` is a range read of the raw
//! message using the stored offsets (RFC 9051 section 6.4.5). Only HEADER.FIELDS looks inside the
//! bytes, to pick header fields, and only BINARY (RFC 3516) decodes a part.
//!
//! The session drives it in three steps: [`expand`] the request's macro, ask [`needs`] what to load
//! from the mailbox service (metadata with or without structure, and the raw message or not), and
//! [`build`] the items of each message, which [`data`] wraps into a `FETCH` response. Whether
//! the request marks messages `\Seen` is [`sets_seen`]'s answer; storing the flag, and sending the
//! changed FLAGS, is the session's business.

use std::borrow::Cow;
use std::num::{NonZeroU32, NonZeroU64};

use imap_codec::imap_types;
use imap_types::body::{
    BasicFields, Body, BodyStructure, Disposition, Language, Location, MultiPartExtensionData, SinglePartExtensionData,
    SpecificFields,
};
use imap_types::core::{AString, IString, Literal, LiteralMode, NString, NString8, Quoted, Vec1};
use imap_types::datetime::DateTime;
use imap_types::extensions::binary::Literal8;
use imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Section};
use imap_types::flag::{Flag, FlagFetch};
use imap_types::response::Data;
use imap_types::{IntoStatic, ToStatic};
use tern_proto::v1::{Address, BodyPart, Envelope, MessageMeta, Param};

/// Strings up to this length that need no escaping beyond `\"` and `\\` are sent quoted; longer
/// ones, and any with CR, LF or 8-bit octets, as literals.
const QUOTED_MAX: usize = 1024;

/// The mailbox name of an address that has none, as Dovecot writes it. The mailbox service
/// stores the same at delivery (`tern_mail::parse`, which only this crate's tests link); this
/// fills envelopes stored before it did.
const MISSING_MAILBOX: &str = "MISSING_MAILBOX";

/// The host name of an address that has none, as Dovecot writes it, so that a NIL host keeps
/// meaning "start of a group". Stored by the mailbox service as [`MISSING_MAILBOX`] is.
const MISSING_DOMAIN: &str = "MISSING_DOMAIN";

/// One message as FETCH sees it.
#[derive(Debug, Clone, Copy)]
pub struct MessageView<'a> {
    /// The message sequence number the response is sent under; [`build`] does not use it.
    pub seq: NonZeroU32,
    /// The stored metadata; its envelope and body may be absent when `needs()` did not ask for
    /// the structure.
    pub meta: &'a MessageMeta,
    /// The raw message, present when `needs()` said a body is needed.
    pub raw: Option<&'a [u8]>,
}

/// What the items of a request need loaded beyond flags, UID, MODSEQ, size and internal date.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// The envelope and the body structure of [`MessageMeta`].
    pub structure: bool,
    /// The raw message. Every item that needs it also needs the structure, whose offsets locate
    /// the sections, so `body` implies `structure`.
    pub body: bool,
}

/// The longest PREVIEW Tern makes, in characters (RFC 8970 allows up to 256).
const PREVIEW_CHARS: usize = 200;

/// PREVIEW (RFC 8970): the start of the message's first text part as plain text (HTML
/// reduced to text), with runs of whitespace made one space; empty when it has no text.
pub fn preview(raw: &[u8]) -> Option<String> {
    let msg = mail_parser::MessageParser::default().parse(raw)?;
    let text = msg.body_text(0).unwrap_or_default();
    let mut out = String::new();
    for (n, word) in text.split_whitespace().enumerate() {
        if n > 0 {
            out.push(' ');
        }
        out.push_str(word);
        if out.chars().count() >= PREVIEW_CHARS {
            break;
        }
    }
    Some(out.chars().take(PREVIEW_CHARS).collect())
}

/// Why an item could not be built. The session answers the command with `NO`; the two
/// transfer-encoding errors are RFC 3516's `NO [UNKNOWN-CTE]` (see [`FetchError::is_unknown_cte`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// A body item was asked for but the view carries no message bytes: the caller did not load
    /// what [`needs`] asked for.
    #[error("the message bytes are needed but were not loaded")]
    MissingBody,
    /// BINARY of a part whose Content-Transfer-Encoding this server does not know.
    #[error("unknown content-transfer-encoding {0:?}")]
    UnknownCte(String),
    /// BINARY of a part whose content is not valid in its declared transfer encoding.
    #[error("part {part} is not valid {encoding}")]
    Undecodable { part: String, encoding: String },
    /// The stored UID is zero, which no message can have.
    #[error("the message has no UID")]
    NoUid,
}

impl FetchError {
    /// Whether the session should answer `NO [UNKNOWN-CTE]` (RFC 3516 section 4.3) rather than a
    /// plain `NO`.
    pub fn is_unknown_cte(&self) -> bool {
        matches!(self, FetchError::UnknownCte(_) | FetchError::Undecodable { .. })
    }
}

/// Expands the FAST, ALL and FULL macros (RFC 9051 section 6.4.5) and makes the item names
/// independent of the command buffer.
pub fn expand(items: &MacroOrMessageDataItemNames<'_>) -> Vec<MessageDataItemName<'static>> {
    match items {
        // imap-types expands them exactly as RFC 9051 defines: FAST is (FLAGS INTERNALDATE
        // RFC822.SIZE), ALL adds ENVELOPE and FULL adds ENVELOPE and BODY.
        MacroOrMessageDataItemNames::Macro(m) => m.expand().into_iter().map(IntoStatic::into_static).collect(),
        MacroOrMessageDataItemNames::MessageDataItemNames(names) => names.iter().map(ToStatic::to_static).collect(),
    }
}

/// What must be loaded to answer `items`.
pub fn needs(items: &[MessageDataItemName<'_>]) -> Needs {
    use MessageDataItemName as N;
    let mut needs = Needs::default();
    for item in items {
        match item {
            N::Envelope | N::Body | N::BodyStructure => needs.structure = true,
            N::BodyExt { .. }
            | N::Binary { .. }
            | N::BinarySize { .. }
            | N::Rfc822
            | N::Rfc822Header
            | N::Rfc822Text => {
                needs.structure = true;
                needs.body = true;
            }
            N::Flags | N::InternalDate | N::Rfc822Size | N::Uid | N::ModSeq => {}
        }
    }
    needs
}

/// Whether answering `items` marks the message `\Seen` (RFC 9051 section 6.4.5): BODY[...] and
/// BINARY[...] without `.PEEK`, RFC822 and RFC822.TEXT.
pub fn sets_seen(items: &[MessageDataItemName<'_>]) -> bool {
    use MessageDataItemName as N;
    items.iter().any(|item| {
        matches!(item, N::BodyExt { peek: false, .. } | N::Binary { peek: false, .. } | N::Rfc822 | N::Rfc822Text)
    })
}

/// Builds the response items of one message, in the order asked for.
///
/// `uid_always` adds UID when it was not asked for (UID FETCH, RFC 9051 section 6.4.9), and
/// `modseq` adds MODSEQ (CONDSTORE enabled, or a CHANGEDSINCE modifier; RFC 7162 section 3.1.4);
/// both go first. An item asked for twice (also BODY[x] next to BODY.PEEK[x], which answer
/// alike) is answered once.
pub fn build(
    items: &[MessageDataItemName<'_>],
    view: &MessageView<'_>,
    uid_always: bool,
    modseq: bool,
) -> Result<Vec<MessageDataItem<'static>>, FetchError> {
    use MessageDataItemName as N;
    let meta = view.meta;
    let mut out = Vec::with_capacity(items.len() + 2);
    if uid_always && !items.iter().any(|i| matches!(i, N::Uid)) {
        out.push(MessageDataItem::Uid(uid(meta)?));
    }
    if modseq && !items.iter().any(|i| matches!(i, N::ModSeq)) {
        out.push(MessageDataItem::ModSeq(mod_seq(meta)));
    }
    // Without stored structure (a session that did not ask for it), the sections still work off
    // a structure found from the bytes: one text part after the first empty line.
    let root: Cow<'_, BodyPart> = match (&meta.body, view.raw) {
        (Some(body), _) => Cow::Borrowed(body),
        (None, Some(raw)) => Cow::Owned(fallback_root(raw)),
        (None, None) => Cow::Owned(BodyPart::default()),
    };
    let mut answered: Vec<MessageDataItemName<'_>> = Vec::with_capacity(items.len());
    for item in items {
        let key = response_key(item);
        if answered.contains(&key) {
            continue;
        }
        answered.push(key);
        out.push(item_for(item, view, &root)?);
    }
    Ok(out)
}

/// Wraps the items of one message into the untagged `FETCH` response data, or `None` when there
/// are no items (a FETCH response must carry at least one). Send it as
/// `Response::Data(data)` with imap-codec's `ResponseCodec`.
pub fn data(seq: NonZeroU32, items: Vec<MessageDataItem<'static>>) -> Option<Data<'static>> {
    Vec1::try_from(items).ok().map(|items| Data::Fetch { seq, items })
}

/// The IMAP envelope (RFC 9051 section 7.5.2) of stored envelope fields: empty strings and empty
/// address lists are NIL, and RFC 3501 group markers are kept.
pub fn envelope(e: &Envelope) -> imap_types::envelope::Envelope<'static> {
    imap_types::envelope::Envelope {
        date: nstring(&e.date),
        subject: nstring(&e.subject),
        from: addresses(&e.from),
        sender: addresses(&e.sender),
        reply_to: addresses(&e.reply_to),
        to: addresses(&e.to),
        cc: addresses(&e.cc),
        bcc: addresses(&e.bcc),
        in_reply_to: nstring(&e.in_reply_to),
        message_id: nstring(&e.message_id),
    }
}

/// BODY (`extended == false`) or BODYSTRUCTURE (`extended == true`, with the MD5, disposition,
/// language and location of every part and the parameters of multiparts) of a part.
///
/// Media types, subtypes, parameter names, transfer encodings and disposition types are sent in
/// upper case, as in RFC 9051's examples; parameter values as stored. Two shapes the grammar
/// cannot express are repaired: a multipart without parts gets one empty text/plain part, and a
/// message/rfc822 whose content did not parse gets an all-NIL envelope and an empty text/plain
/// body (so that clients, which read an envelope after "MESSAGE" "RFC822", stay in step).
pub fn body_structure(p: &BodyPart, extended: bool) -> BodyStructure<'static> {
    if is_multipart(p) {
        let bodies: Vec<_> = p.parts.iter().map(|c| body_structure(c, extended)).collect();
        let bodies = match Vec1::try_from(bodies) {
            Ok(bodies) => bodies,
            Err(_) => Vec1::from(body_structure(&empty_text_part(), extended)),
        };
        return BodyStructure::Multi {
            bodies,
            subtype: upper(or(&p.media_subtype, "mixed")),
            extension_data: extended
                .then(|| MultiPartExtensionData { parameter_list: params(&p.params), tail: Some(disposition(p)) }),
        };
    }
    let basic = BasicFields {
        parameter_list: params(&p.params),
        id: nstring(&p.content_id),
        description: nstring(&p.description),
        content_transfer_encoding: upper(or(&p.encoding, "7bit")),
        size: clamp_u32(p.size),
    };
    let media_type = p.media_type.to_ascii_lowercase();
    let media_subtype = p.media_subtype.to_ascii_lowercase();
    let specific = match (media_type.as_str(), media_subtype.as_str()) {
        ("text" | "", _) => {
            SpecificFields::Text { subtype: upper(or(&media_subtype, "plain")), number_of_lines: clamp_u32(p.lines) }
        }
        // imap-types writes every encapsulated message as "MESSAGE" "RFC822"; message/global
        // (RFC 6532) is the same shape with a UTF-8 header, so it is sent that way too rather
        // than as a basic type, which RFC 9051 clients would read as an encapsulated message
        // without its envelope.
        ("message", "rfc822" | "global") => SpecificFields::Message {
            envelope: Box::new(p.message_envelope.as_ref().map_or_else(|| envelope(&Envelope::default()), envelope)),
            body_structure: Box::new(
                p.message_body
                    .as_deref()
                    .map_or_else(|| body_structure(&empty_text_part(), extended), |b| body_structure(b, extended)),
            ),
            number_of_lines: clamp_u32(p.lines),
        },
        (_, _) => {
            SpecificFields::Basic { r#type: upper(&media_type), subtype: upper(or(&media_subtype, "octet-stream")) }
        }
    };
    BodyStructure::Single {
        body: Body { basic, specific },
        extension_data: extended.then(|| SinglePartExtensionData { md5: nstring(&p.md5), tail: Some(disposition(p)) }),
    }
}

/// The octets of a `BODY[section]` (RFC 9051 section 6.4.5), before any partial range is applied.
///
/// `None` is the whole message. A part number that does not exist, and HEADER or TEXT of a part
/// that is not an encapsulated message, give the empty string (without a blank line, there being
/// no message), the long-standing answer of IMAP servers and of RFC 3501's author to such
/// requests. Offsets beyond the bytes are clamped, so inconsistent metadata gives short data,
/// never a panic. The result is currently always `Ok`; the `Result` leaves room for sections
/// that need decoding.
pub fn section_bytes(raw: &[u8], root: &BodyPart, section: Option<&Section<'_>>) -> Result<Vec<u8>, FetchError> {
    let Some(section) = section else {
        return Ok(raw.to_vec());
    };
    let bytes = match section {
        Section::Part(part) => resolve(root, part.0.as_ref()).map_or(&[][..], |p| body_of(raw, p)),
        Section::Mime(part) => resolve(root, part.0.as_ref()).map_or(&[][..], |p| header_of(raw, p)),
        Section::Header(part) => message_of(root, part.as_ref()).map_or(&[][..], |m| header_of(raw, m.body)),
        Section::Text(part) => message_of(root, part.as_ref()).map_or(&[][..], |m| text_of(raw, m)),
        Section::HeaderFields(part, names) => {
            return Ok(message_of(root, part.as_ref())
                .map(|m| header_fields(header_of(raw, m.body), names.as_ref(), false))
                .unwrap_or_default());
        }
        Section::HeaderFieldsNot(part, names) => {
            return Ok(message_of(root, part.as_ref())
                .map(|m| header_fields(header_of(raw, m.body), names.as_ref(), true))
                .unwrap_or_default());
        }
    };
    Ok(bytes.to_vec())
}

/// The decoded content of `BINARY[section]` (RFC 3516): the whole message for an empty section,
/// and otherwise the part's body with its Content-Transfer-Encoding undone. Multiparts and
/// encapsulated messages, which MIME only allows in identity encodings, come back as they are.
pub fn binary_bytes(raw: &[u8], root: &BodyPart, section: &[NonZeroU32]) -> Result<Vec<u8>, FetchError> {
    if section.is_empty() {
        return Ok(raw.to_vec());
    }
    let Some(part) = resolve(root, section) else {
        return Ok(Vec::new());
    };
    let content = body_of(raw, part);
    if is_multipart(part) || is_message(part) {
        return Ok(content.to_vec());
    }
    decode_transfer_encoding(content, &part.encoding).map_err(|e| match e {
        FetchError::Undecodable { encoding, .. } => FetchError::Undecodable { part: part_name(section), encoding },
        other => other,
    })
}

/// Undoes a Content-Transfer-Encoding (RFC 2045 section 6). Base64 with octets outside its
/// alphabet is an error; quoted-printable is decoded leniently, keeping a `=` that starts no valid
/// escape as RFC 2045 section 6.7 recommends, so it never fails.
///
/// Only the first token of `encoding` counts, so that a comment after it (RFC 2045 section 6.1
/// allows one), which messages stored before the mailbox service dropped it still carry, does not
/// make a known encoding unknown.
pub fn decode_transfer_encoding(content: &[u8], encoding: &str) -> Result<Vec<u8>, FetchError> {
    let token = encoding.trim().split(|c: char| c.is_ascii_whitespace() || c == '(' || c == ';').next();
    match token.unwrap_or_default().to_ascii_lowercase().as_str() {
        "" | "7bit" | "8bit" | "binary" => Ok(content.to_vec()),
        "base64" => mail_parser::decoders::base64::base64_decode(content)
            .ok_or_else(|| FetchError::Undecodable { part: String::new(), encoding: "base64".into() }),
        "quoted-printable" => Ok(decode_quoted_printable(content)),
        other => Err(FetchError::UnknownCte(other.to_string())),
    }
}

/// The item name under which a request item is answered, to answer each only once.
fn response_key<'a>(item: &MessageDataItemName<'a>) -> MessageDataItemName<'a> {
    match item {
        MessageDataItemName::BodyExt { section, partial, .. } => {
            MessageDataItemName::BodyExt { section: section.clone(), partial: *partial, peek: false }
        }
        MessageDataItemName::Binary { section, partial, .. } => {
            MessageDataItemName::Binary { section: section.clone(), partial: *partial, peek: false }
        }
        other => other.clone(),
    }
}

fn item_for(
    item: &MessageDataItemName<'_>,
    view: &MessageView<'_>,
    root: &BodyPart,
) -> Result<MessageDataItem<'static>, FetchError> {
    use MessageDataItemName as N;
    let meta = view.meta;
    let raw = || view.raw.ok_or(FetchError::MissingBody);
    Ok(match item {
        N::Body => MessageDataItem::Body(body_structure(root, false)),
        N::BodyStructure => MessageDataItem::BodyStructure(body_structure(root, true)),
        N::Envelope => {
            MessageDataItem::Envelope(meta.envelope.as_ref().map_or_else(|| envelope(&Envelope::default()), envelope))
        }
        N::BodyExt { section, partial, .. } => {
            let bytes = section_bytes(raw()?, root, section.as_ref())?;
            // BODY.PEEK is answered as BODY, with the origin of a partial request echoed.
            MessageDataItem::BodyExt {
                section: section.as_ref().map(ToStatic::to_static),
                origin: partial.map(|(origin, _)| origin),
                data: content(apply_partial(bytes, *partial)),
            }
        }
        N::Flags => MessageDataItem::Flags(flags(&meta.flags)),
        N::InternalDate => MessageDataItem::InternalDate(internal_date(meta.internal_date)),
        N::Rfc822 => MessageDataItem::Rfc822(content(raw()?.to_vec())),
        N::Rfc822Header => {
            MessageDataItem::Rfc822Header(content(section_bytes(raw()?, root, Some(&Section::Header(None)))?))
        }
        N::Rfc822Text => MessageDataItem::Rfc822Text(content(section_bytes(raw()?, root, Some(&Section::Text(None)))?)),
        N::Rfc822Size => MessageDataItem::Rfc822Size(clamp_u32(meta.size)),
        N::Uid => MessageDataItem::Uid(uid(meta)?),
        N::Binary { section, partial, .. } => {
            let bytes = binary_bytes(raw()?, root, section)?;
            // RFC 9051's grammar has no origin in a BINARY response, so a partial one is
            // answered under the plain section.
            MessageDataItem::Binary { section: section.clone(), value: content8(apply_partial(bytes, *partial)) }
        }
        N::BinarySize { section } => MessageDataItem::BinarySize {
            section: section.clone(),
            size: clamp_u32(binary_bytes(raw()?, root, section)?.len() as u64),
        },
        N::ModSeq => MessageDataItem::ModSeq(mod_seq(meta)),
    })
}

fn uid(meta: &MessageMeta) -> Result<NonZeroU32, FetchError> {
    NonZeroU32::new(meta.uid).ok_or(FetchError::NoUid)
}

/// MODSEQ of a message. Mod-sequences start at 1 (RFC 7162 section 3.1.4); a stored zero, which
/// the mailbox service does not write, is sent as 1 rather than leaving the client without one.
fn mod_seq(meta: &MessageMeta) -> NonZeroU64 {
    NonZeroU64::new(meta.modseq).unwrap_or(NonZeroU64::MIN)
}

/// FLAGS: system flags and keywords as stored, and `\Recent` when the session reports the
/// message as recent (it is per session, never stored). A stored flag that is no valid atom is
/// dropped rather than breaking the response. The session's unsolicited FETCHes use it too.
pub(crate) fn flags(names: &[String]) -> Vec<FlagFetch<'static>> {
    names
        .iter()
        .filter_map(|f| {
            if f.eq_ignore_ascii_case("\\Recent") {
                return Some(FlagFetch::Recent);
            }
            Flag::try_from(f.as_str()).ok().map(|f| FlagFetch::Flag(f.into_static()))
        })
        .collect()
}

/// INTERNALDATE of Unix seconds, in UTC. A time IMAP cannot express (outside the years 0 to
/// 9999) is sent as the epoch.
fn internal_date(secs: i64) -> DateTime {
    let epoch = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH.fixed_offset();
    let time = chrono::DateTime::from_timestamp(secs, 0).map_or(epoch, |t| t.fixed_offset());
    DateTime::try_from(time).unwrap_or_else(|_| DateTime::unvalidated(epoch))
}

fn clamp_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn or<'s>(value: &'s str, default: &'s str) -> &'s str {
    if value.is_empty() { default } else { value }
}

/// An IMAP string of arbitrary octets: quoted when short and plain (the encoder escapes `"` and
/// `\`), otherwise a literal, which carries CR, LF and 8-bit octets (UTF-8 or not). NUL, which no
/// IMAP string may carry, is dropped; message content has it replaced before it gets here.
fn istring(mut data: Vec<u8>) -> IString<'static> {
    data.retain(|b| *b != 0);
    if data.len() <= QUOTED_MAX
        && let Ok(quoted) = Quoted::try_from(data.as_slice())
    {
        return IString::Quoted(quoted.into_static());
    }
    match Literal::try_from(data) {
        Ok(literal) => IString::Literal(literal),
        Err(_) => IString::Quoted(Quoted::unvalidated("")),
    }
}

/// NIL for the empty string, which is how the metadata stores an absent value.
fn nstring(s: &str) -> NString<'static> {
    if s.is_empty() { NString(None) } else { NString(Some(istring(s.as_bytes().to_vec()))) }
}

fn upper(s: &str) -> IString<'static> {
    istring(s.to_ascii_uppercase().into_bytes())
}

/// Message content for BODY[...] and RFC822 items. NUL cannot travel in an IMAP literal
/// (RFC 9051 section 4.3), so it is sent as 0x80, which keeps the length RFC822.SIZE and
/// BODYSTRUCTURE announce; BINARY is how a client gets the exact octets.
fn content(mut data: Vec<u8>) -> NString<'static> {
    for b in &mut data {
        if *b == 0 {
            *b = 0x80;
        }
    }
    NString(Some(istring(data)))
}

/// BINARY content: a `literal8` (RFC 3516) only when it holds NUL, otherwise an ordinary string.
fn content8(data: Vec<u8>) -> NString8<'static> {
    if data.contains(&0) {
        NString8::Literal8(Literal8 { data: Cow::Owned(data), mode: LiteralMode::Sync })
    } else {
        NString8::NString(NString(Some(istring(data))))
    }
}

/// Cuts `<origin.length>` out of a section; an origin beyond the end gives the empty string
/// (RFC 9051 section 6.4.5).
fn apply_partial(mut data: Vec<u8>, partial: Option<(u32, NonZeroU32)>) -> Vec<u8> {
    let Some((origin, length)) = partial else {
        return data;
    };
    let start = usize::try_from(origin).unwrap_or(usize::MAX).min(data.len());
    let end = start.saturating_add(usize::try_from(length.get()).unwrap_or(usize::MAX)).min(data.len());
    data.truncate(end);
    data.drain(..start);
    data
}

fn params(list: &[Param]) -> Vec<(IString<'static>, IString<'static>)> {
    list.iter().map(|p| (upper(&p.name), istring(p.value.as_bytes().to_vec()))).collect()
}

/// The disposition, language and location tail of a part's extension data; absent values are
/// NIL.
fn disposition(p: &BodyPart) -> Disposition<'static> {
    Disposition {
        disposition: (!p.disposition.is_empty()).then(|| (upper(&p.disposition), params(&p.disposition_params))),
        tail: Some(Language {
            language: p.language.iter().map(|l| istring(l.as_bytes().to_vec())).collect(),
            tail: Some(Location { location: nstring(&p.location), extensions: Vec::new() }),
        }),
    }
}

fn empty_text_part() -> BodyPart {
    BodyPart {
        media_type: "text".into(),
        media_subtype: "plain".into(),
        params: vec![Param { name: "charset".into(), value: "us-ascii".into() }],
        encoding: "7bit".into(),
        ..Default::default()
    }
}

/// An address list. Group markers (a start with the group name as mailbox and NIL name and host,
/// an end with all four NIL) are kept when they pair up, and a stray end is dropped. Any other
/// address without a mailbox or host gets [`MISSING_MAILBOX`] or [`MISSING_DOMAIN`] as Dovecot
/// writes them, so that it does not read as a group marker: the mailbox service fills them at
/// delivery, and messages stored before it did are filled here.
fn addresses(list: &[Address]) -> Vec<imap_types::envelope::Address<'static>> {
    let is_end = |a: &Address| a.name.is_empty() && a.adl.is_empty() && a.mailbox.is_empty() && a.host.is_empty();
    let mut out = Vec::with_capacity(list.len());
    let mut in_group = false;
    for (i, a) in list.iter().enumerate() {
        if is_end(a) {
            if in_group {
                out.push(imap_types::envelope::Address {
                    name: NString(None),
                    adl: NString(None),
                    mailbox: NString(None),
                    host: NString(None),
                });
                in_group = false;
            }
            continue;
        }
        let starts_group = a.host.is_empty()
            && a.name.is_empty()
            && a.adl.is_empty()
            && !a.mailbox.is_empty()
            && !in_group
            && list[i + 1..].iter().any(is_end);
        if starts_group {
            in_group = true;
            out.push(imap_types::envelope::Address {
                name: NString(None),
                adl: NString(None),
                mailbox: nstring(&a.mailbox),
                host: NString(None),
            });
            continue;
        }
        out.push(imap_types::envelope::Address {
            name: nstring(&a.name),
            adl: nstring(&a.adl),
            mailbox: nstring(or(&a.mailbox, MISSING_MAILBOX)),
            host: nstring(or(&a.host, MISSING_DOMAIN)),
        });
    }
    out
}

fn is_multipart(p: &BodyPart) -> bool {
    p.media_type.eq_ignore_ascii_case("multipart") || !p.parts.is_empty()
}

fn is_message(p: &BodyPart) -> bool {
    p.media_type.eq_ignore_ascii_case("message")
        && (p.media_subtype.eq_ignore_ascii_case("rfc822") || p.media_subtype.eq_ignore_ascii_case("global"))
}

/// Part `n` of the body of a message: the n-th part of a multipart body, or for n = 1 the body
/// itself when it is not a multipart (RFC 9051 section 6.4.5).
fn part_of_message_body(body: &BodyPart, n: NonZeroU32) -> Option<&BodyPart> {
    if is_multipart(body) { body.parts.get(usize::try_from(n.get() - 1).ok()?) } else { (n.get() == 1).then_some(body) }
}

/// The part a part number names, starting from the message's body.
fn resolve<'p>(root: &'p BodyPart, numbers: &[NonZeroU32]) -> Option<&'p BodyPart> {
    let (first, rest) = numbers.split_first()?;
    let mut part = part_of_message_body(root, *first)?;
    for n in rest {
        part = if is_multipart(part) {
            part.parts.get(usize::try_from(n.get() - 1).ok()?)?
        } else if is_message(part) {
            part_of_message_body(part.message_body.as_deref()?, *n)?
        } else {
            return None;
        };
    }
    Some(part)
}

/// A message whose HEADER or TEXT is asked for: the top-level one, or an encapsulated one.
struct MessageRef<'p> {
    /// The message's own body part, whose header is the message header.
    body: &'p BodyPart,
    top: bool,
}

fn message_of<'p>(root: &'p BodyPart, part: Option<&imap_types::fetch::Part>) -> Option<MessageRef<'p>> {
    match part {
        None => Some(MessageRef { body: root, top: true }),
        Some(part) => {
            let p = resolve(root, part.0.as_ref())?;
            if !is_message(p) {
                return None;
            }
            Some(MessageRef { body: p.message_body.as_deref()?, top: false })
        }
    }
}

fn slice(raw: &[u8], start: u64, end: u64) -> &[u8] {
    let len = raw.len();
    let start = usize::try_from(start).unwrap_or(usize::MAX).min(len);
    let end = usize::try_from(end).unwrap_or(usize::MAX).clamp(start, len);
    &raw[start..end]
}

/// A part's header, with the empty line that ends it.
fn header_of<'r>(raw: &'r [u8], p: &BodyPart) -> &'r [u8] {
    slice(raw, p.header_offset, p.body_offset)
}

fn body_of<'r>(raw: &'r [u8], p: &BodyPart) -> &'r [u8] {
    slice(raw, p.body_offset, p.end_offset)
}

/// A message's text: for the top-level message everything after the header, so that HEADER and
/// TEXT add up to the whole message.
fn text_of<'r>(raw: &'r [u8], m: MessageRef<'_>) -> &'r [u8] {
    if m.top { slice(raw, m.body.body_offset, u64::MAX) } else { body_of(raw, m.body) }
}

/// HEADER.FIELDS (or with `not`, HEADER.FIELDS.NOT) of a header block: the fields whose names
/// are (or are not) in `names`, compared case-insensitively, verbatim with their continuation
/// lines, then the empty line if the block had one (RFC 9051 section 6.4.5).
fn header_fields(block: &[u8], names: &[AString<'_>], not: bool) -> Vec<u8> {
    let (fields, blank) = split_fields(block);
    let mut out = Vec::new();
    for field in fields {
        let first_line = field.split(|b| *b == b'\n').next().unwrap_or_default();
        // A line without a colon is no header field, so neither list selects it.
        let Some(colon) = first_line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = first_line[..colon].trim_ascii_end();
        let listed = names.iter().any(|n| n.as_ref().eq_ignore_ascii_case(name));
        if listed != not {
            out.extend_from_slice(field);
            if !field.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    if blank {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Splits a header block into its fields, each with its continuation lines and line ends, and
/// says whether the block ended with an empty line.
fn split_fields(block: &[u8]) -> (Vec<&[u8]>, bool) {
    let mut fields = Vec::new();
    let mut start: Option<usize> = None;
    let mut pos = 0;
    let mut blank = false;
    while pos < block.len() {
        let end = block[pos..].iter().position(|b| *b == b'\n').map_or(block.len(), |i| pos + i + 1);
        let line = &block[pos..end];
        if line == b"\r\n" || line == b"\n" {
            blank = true;
            break;
        }
        // A line starting with white space continues the field before it; one with no field
        // before it is dropped.
        if !matches!(line.first(), Some(b' ' | b'\t')) {
            if let Some(s) = start {
                fields.push(&block[s..pos]);
            }
            start = Some(pos);
        }
        pos = end;
    }
    if let Some(s) = start {
        fields.push(&block[s..pos]);
    }
    (fields, blank)
}

/// The structure of a message whose stored structure was not loaded: one text/plain part after
/// the first empty line.
fn fallback_root(raw: &[u8]) -> BodyPart {
    let mut header_len = raw.len();
    let mut pos = 0;
    while pos < raw.len() {
        let end = raw[pos..].iter().position(|b| *b == b'\n').map_or(raw.len(), |i| pos + i + 1);
        if matches!(&raw[pos..end], b"\r\n" | b"\n") {
            header_len = end;
            break;
        }
        pos = end;
    }
    BodyPart {
        body_offset: header_len as u64,
        end_offset: raw.len() as u64,
        size: (raw.len() - header_len) as u64,
        ..empty_text_part()
    }
}

fn part_name(section: &[NonZeroU32]) -> String {
    section.iter().map(ToString::to_string).collect::<Vec<_>>().join(".")
}

/// Quoted-printable (RFC 2045 section 6.7): `=XX` escapes (either case), soft line breaks, and
/// transport padding (white space at the end of a line) removed. Line breaks come out as CRLF.
fn decode_quoted_printable(data: &[u8]) -> Vec<u8> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'A'..=b'F' => Some(b - b'A' + 10),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(data.len());
    for line in data.split_inclusive(|b| *b == b'\n') {
        let (text, line_break) = match line.strip_suffix(b"\n") {
            Some(text) => (text.strip_suffix(b"\r").unwrap_or(text), true),
            None => (line, false),
        };
        let text = trim_end_wsp(text);
        let (text, soft_break) = match text.strip_suffix(b"=") {
            Some(text) => (text, true),
            None => (text, false),
        };
        let mut i = 0;
        while i < text.len() {
            if text[i] == b'='
                && let (Some(hi), Some(lo)) =
                    (text.get(i + 1).copied().and_then(hex), text.get(i + 2).copied().and_then(hex))
            {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
            out.push(text[i]);
            i += 1;
        }
        if line_break && !soft_break {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

fn trim_end_wsp(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use imap_codec::decode::Decoder;
    use imap_codec::encode::Encoder;
    use imap_codec::imap_types::command::CommandBody;
    use imap_codec::imap_types::fetch::Part;
    use imap_codec::imap_types::response::Response;
    use imap_codec::{CommandCodec, ResponseCodec};

    use super::*;

    const SIMPLE: &[u8] = b"From: \"Alice \\\"Al\\\" Example\" <alice@example.com>\r\n\
To: bob@example.org, friends: carol@example.net, dave@example.net;\r\n\
Subject: Hello\r\n there\r\n\
Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n\
Message-ID: <1@example.com>\r\n\
\r\n\
0123456789\r\n";

    const MIXED: &[u8] = b"From: a@example.com\r\n\
Subject: mixed\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"XX\"\r\n\
\r\n\
preamble\r\n\
--XX\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Gr=C3=BC=C3=9Fe, caf=\r\n\
=C3=A9 =3D ok  \r\n\
--XX\r\n\
Content-Type: application/octet-stream; name=\"a.bin\"\r\n\
Content-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"a.bin\"\r\n\
Content-ID: <att1@example.com>\r\n\
Content-Description: some bytes\r\n\
Content-Language: en, de\r\n\
Content-Location: http://example.com/a.bin\r\n\
\r\n\
AAECA/8=\r\n\
--XX--\r\n";

    /// The structure of RFC 9051 section 6.4.5's example, with a body that names each part.
    const NESTED: &[u8] = b"From: outer@example.com\r\n\
Subject: outer\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/plain\r\n\
\r\n\
part 1\r\n\
--b1\r\n\
Content-Type: application/octet-stream\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
cGFydCAy\r\n\
--b1\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
From: inner3@example.com\r\n\
Subject: part 3\r\n\
Content-Type: multipart/mixed; boundary=\"b2\"\r\n\
\r\n\
--b2\r\n\
Content-Type: text/plain\r\n\
\r\n\
part 3.1\r\n\
--b2\r\n\
Content-Type: application/octet-stream\r\n\
\r\n\
part 3.2\r\n\
--b2--\r\n\
\r\n\
--b1\r\n\
Content-Type: multipart/mixed; boundary=\"b3\"\r\n\
\r\n\
--b3\r\n\
Content-Type: image/gif\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
R0lGODlh\r\n\
--b3\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
Subject: part 4.2\r\n\
Content-Type: multipart/mixed; boundary=\"b4\"\r\n\
\r\n\
--b4\r\n\
Content-Type: text/plain\r\n\
\r\n\
part 4.2.1\r\n\
--b4\r\n\
Content-Type: multipart/alternative; boundary=\"b5\"\r\n\
\r\n\
--b5\r\n\
Content-Type: text/plain\r\n\
\r\n\
part 4.2.2.1\r\n\
--b5\r\n\
Content-Type: text/richtext\r\n\
\r\n\
part 4.2.2.2\r\n\
--b5--\r\n\
--b4--\r\n\
--b3--\r\n\
--b1--\r\n";

    const FOLDED: &[u8] = b"Received: from a by b;\r\n\
\tThu, 26 Nov 2026 10:00:00 +0000\r\n\
Subject: folded\r\n\
\x20\x20subject\r\n\
X-Empty:\r\n\
SUBJECT: second\r\n\
To: x@example.com\r\n\
\r\n\
body\r\n";

    const NON_ASCII: &[u8] = "Subject: Grüße aus Köln\r\n\
From: Jörg <joerg@example.de>\r\n\
In-Reply-To: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n\
\r\n\
Hallo\r\n"
        .as_bytes();

    /// Transfer-encoded parts at every depth: in a multipart inside a multipart (1.1, 1.2), in a
    /// multipart inside an encapsulated message (2.1 to 2.3, the last in an encoding this server
    /// does not know), and as the whole body of an encapsulated message (3.1); with the address
    /// forms whose IMAP envelope is easy to get wrong. The transcript `fetch_nested.txt` appends
    /// the same message.
    const DEEP: &[u8] = b"From: outer@example.com\r\n\
To: undisclosed-recipients:;\r\n\
Cc: A Group: a@example.com, b@example.com;, c@example.com\r\n\
Bcc: root\r\n\
Subject: deep\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"o\"\r\n\
\r\n\
--o\r\n\
Content-Type: multipart/alternative; boundary=\"a\"\r\n\
\r\n\
--a\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
caf=C3=A9 =3D=\r\n\
\x20ok\r\n\
--a\r\n\
Content-Type: text/html\r\n\
Content-Transfer-Encoding: BASE64 (a comment)\r\n\
\r\n\
PGI+aGk8\r\n\
L2I+\r\n\
--a--\r\n\
--o\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
From: Inner <inner@example.com>\r\n\
To: root, Some Name\r\n\
Subject: inner\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"i\"\r\n\
\r\n\
--i\r\n\
Content-Type: text/plain\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
a=3Db\r\n\
--i\r\n\
Content-Type: application/octet-stream\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
AAECAw==\r\n\
--i\r\n\
Content-Type: application/octet-stream\r\n\
Content-Transfer-Encoding: x-uuencode\r\n\
\r\n\
begin 644 x\r\n\
--i--\r\n\
--o\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
Subject: single\r\n\
Content-Type: text/plain\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
aGVsbG8=\r\n\
--o--\r\n";

    fn meta_of(raw: &[u8]) -> MessageMeta {
        let parsed = tern_mail::parse::parse(raw);
        MessageMeta {
            uid: 7,
            flags: vec!["\\Seen".into(), "$Forwarded".into()],
            modseq: 42,
            size: raw.len() as u64,
            internal_date: 1_700_000_000,
            envelope: Some(parsed.envelope),
            body: Some(parsed.body),
            ..Default::default()
        }
    }

    /// The item names of `FETCH 1 <spec>`, parsed by imap-codec as the session will.
    fn names(spec: &str) -> Vec<MessageDataItemName<'static>> {
        let line = format!("A1 FETCH 1 {spec}\r\n");
        let (rest, command) = CommandCodec::default().decode(line.as_bytes()).expect("valid FETCH");
        assert!(rest.is_empty());
        match command.body {
            CommandBody::Fetch { macro_or_item_names, .. } => expand(&macro_or_item_names),
            other => panic!("not a FETCH: {other:?}"),
        }
    }

    /// Encodes the FETCH response, and checks that imap-codec reads it back to the same bytes.
    fn encode(items: Vec<MessageDataItem<'static>>) -> Vec<u8> {
        let response = Response::Data(data(NonZeroU32::MIN, items).expect("items"));
        let bytes = ResponseCodec::default().encode(&response).dump();
        let (rest, decoded) = ResponseCodec::default().decode(&bytes).expect("the response parses");
        assert!(rest.is_empty(), "trailing bytes after {:?}", String::from_utf8_lossy(&bytes));
        assert_eq!(ResponseCodec::default().encode(&decoded).dump(), bytes);
        bytes
    }

    fn fetch_with(raw: &[u8], spec: &str, uid_always: bool, modseq: bool) -> Vec<u8> {
        let meta = meta_of(raw);
        let view = MessageView { seq: NonZeroU32::MIN, meta: &meta, raw: Some(raw) };
        encode(build(&names(spec), &view, uid_always, modseq).expect("build"))
    }

    fn fetch(raw: &[u8], spec: &str) -> String {
        String::from_utf8(fetch_with(raw, spec, false, false)).expect("UTF-8 response")
    }

    fn section(raw: &[u8], spec: &str) -> Vec<u8> {
        let meta = meta_of(raw);
        let view = MessageView { seq: NonZeroU32::MIN, meta: &meta, raw: Some(raw) };
        let items = build(&names(spec), &view, false, false).expect("build");
        match items.as_slice() {
            [MessageDataItem::BodyExt { data, .. }] => data.clone().into_option().unwrap_or_default().into_owned(),
            [MessageDataItem::Binary { value: NString8::NString(data), .. }] => {
                data.clone().into_option().unwrap_or_default().into_owned()
            }
            [MessageDataItem::Binary { value: NString8::Literal8(l), .. }] => l.data.to_vec(),
            other => panic!("unexpected items {other:?}"),
        }
    }

    #[test]
    fn bodystructure_of_a_simple_text_message() {
        assert_eq!(
            fetch(SIMPLE, "BODYSTRUCTURE"),
            "* 1 FETCH (BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 12 1 NIL NIL NIL NIL))\r\n"
        );
        assert_eq!(
            fetch(SIMPLE, "BODY"),
            "* 1 FETCH (BODY (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 12 1))\r\n"
        );
    }

    #[test]
    fn envelope_quotes_escapes_and_keeps_groups() {
        let alice = "((\"Alice \\\"Al\\\" Example\" NIL \"alice\" \"example.com\"))";
        assert_eq!(
            fetch(SIMPLE, "ENVELOPE"),
            format!(
                "* 1 FETCH (ENVELOPE (\"Thu, 26 Nov 2026 10:00:00 +0000\" \"Hello there\" {alice} {alice} {alice} \
                 ((NIL NIL \"bob\" \"example.org\")(NIL NIL \"friends\" NIL)(NIL NIL \"carol\" \"example.net\")\
                 (NIL NIL \"dave\" \"example.net\")(NIL NIL NIL NIL)) NIL NIL NIL \"<1@example.com>\"))\r\n"
            )
        );
    }

    #[test]
    fn non_ascii_header_values_are_literals() {
        assert_eq!(
            fetch(NON_ASCII, "ENVELOPE"),
            "* 1 FETCH (ENVELOPE (NIL {17}\r\nGrüße aus Köln (({5}\r\nJörg NIL \"joerg\" \"example.de\")) \
             (({5}\r\nJörg NIL \"joerg\" \"example.de\")) (({5}\r\nJörg NIL \"joerg\" \"example.de\")) \
             NIL NIL NIL \"=?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\" NIL))\r\n"
        );
    }

    #[test]
    fn hostile_envelope_strings_encode_validly() {
        let e = Envelope {
            date: "a\r\nb".into(),
            subject: "quote \" backslash \\ nul \0 end".into(),
            from: vec![
                // A stray group end, an address without a host and one without a mailbox.
                Address::default(),
                Address { mailbox: "bob".into(), ..Default::default() },
                Address { name: "Only Name".into(), ..Default::default() },
            ],
            // A group start that is never closed.
            to: vec![Address { mailbox: "group".into(), ..Default::default() }],
            message_id: "x".repeat(5000),
            ..Default::default()
        };
        let bytes = encode(vec![MessageDataItem::Envelope(envelope(&e))]);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with(
            "* 1 FETCH (ENVELOPE ({4}\r\na\r\nb \"quote \\\" backslash \\\\ nul  end\" \
             ((NIL NIL \"bob\" \"MISSING_DOMAIN\")(\"Only Name\" NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")) \
             NIL NIL ((NIL NIL \"group\" \"MISSING_DOMAIN\")) NIL NIL NIL {5000}\r\nxxx"
        ));
        assert!(text.ends_with("xxx))\r\n"));
    }

    #[test]
    fn fast_all_full_and_the_simple_items() {
        assert_eq!(
            fetch(SIMPLE, "FAST"),
            format!(
                "* 1 FETCH (FLAGS (\\Seen $Forwarded) INTERNALDATE \"14-Nov-2023 22:13:20 +0000\" RFC822.SIZE {})\r\n",
                SIMPLE.len()
            )
        );
        assert_eq!(
            names("ALL"),
            [
                MessageDataItemName::Flags,
                MessageDataItemName::InternalDate,
                MessageDataItemName::Rfc822Size,
                MessageDataItemName::Envelope
            ]
        );
        assert_eq!(names("FULL").last(), Some(&MessageDataItemName::Body));
        assert_eq!(fetch(SIMPLE, "(UID MODSEQ)"), "* 1 FETCH (UID 7 MODSEQ (42))\r\n");
    }

    #[test]
    fn uid_and_modseq_are_added_once() {
        let text = |spec, uid, modseq| String::from_utf8(fetch_with(SIMPLE, spec, uid, modseq)).unwrap();
        assert_eq!(text("FLAGS", true, true), "* 1 FETCH (UID 7 MODSEQ (42) FLAGS (\\Seen $Forwarded))\r\n");
        assert_eq!(text("(FLAGS UID)", true, false), "* 1 FETCH (FLAGS (\\Seen $Forwarded) UID 7)\r\n");
        assert_eq!(text("(MODSEQ FLAGS)", false, true), "* 1 FETCH (MODSEQ (42) FLAGS (\\Seen $Forwarded))\r\n");
        // The same data asked for twice, with and without PEEK, is answered once.
        assert_eq!(
            text("(BODY[TEXT] BODY.PEEK[TEXT] FLAGS FLAGS)", false, false),
            "* 1 FETCH (BODY[TEXT] {12}\r\n0123456789\r\n FLAGS (\\Seen $Forwarded))\r\n"
        );
    }

    #[test]
    fn rfc822_items() {
        let header_len = SIMPLE.len() - 12;
        assert_eq!(
            fetch(SIMPLE, "(RFC822.HEADER RFC822.TEXT RFC822.SIZE)"),
            format!(
                "* 1 FETCH (RFC822.HEADER {{{header_len}}}\r\n{} RFC822.TEXT {{12}}\r\n0123456789\r\n RFC822.SIZE {})\r\n",
                std::str::from_utf8(&SIMPLE[..header_len]).unwrap(),
                SIMPLE.len()
            )
        );
        assert_eq!(
            fetch(SIMPLE, "RFC822"),
            format!("* 1 FETCH (RFC822 {{{}}}\r\n{})\r\n", SIMPLE.len(), std::str::from_utf8(SIMPLE).unwrap())
        );
    }

    #[test]
    fn body_sections_echo_the_request() {
        assert_eq!(fetch(SIMPLE, "BODY.PEEK[TEXT]"), "* 1 FETCH (BODY[TEXT] {12}\r\n0123456789\r\n)\r\n");
        assert_eq!(fetch(SIMPLE, "BODY[]<0.4>"), "* 1 FETCH (BODY[]<0> \"From\")\r\n");
        assert_eq!(fetch(SIMPLE, "BODY[TEXT]<2.3>"), "* 1 FETCH (BODY[TEXT]<2> \"234\")\r\n");
        assert_eq!(fetch(SIMPLE, "BODY[1]<100000.10>"), "* 1 FETCH (BODY[1]<100000> \"\")\r\n");
        assert_eq!(fetch(SIMPLE, "BODY.PEEK[]<4294967295.4294967295>"), "* 1 FETCH (BODY[]<4294967295> \"\")\r\n");
        assert_eq!(
            fetch(FOLDED, "BODY.PEEK[HEADER.FIELDS (SUBJECT To)]"),
            "* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT To)] {66}\r\n\
             Subject: folded\r\n  subject\r\nSUBJECT: second\r\nTo: x@example.com\r\n\r\n)\r\n"
        );
        assert_eq!(
            fetch(NESTED, "BODY[4.2.HEADER.FIELDS.NOT (Content-Type)]"),
            "* 1 FETCH (BODY[4.2.HEADER.FIELDS.NOT (Content-Type)] {21}\r\nSubject: part 4.2\r\n\r\n)\r\n"
        );
        assert_eq!(
            fetch(NESTED, "BODY[3.1.MIME]"),
            "* 1 FETCH (BODY[3.1.MIME] {28}\r\nContent-Type: text/plain\r\n\r\n)\r\n"
        );
    }

    #[test]
    fn sections_of_a_single_part_message() {
        let header_len = SIMPLE.len() - 12;
        assert_eq!(section(SIMPLE, "BODY[]"), SIMPLE);
        assert_eq!(section(SIMPLE, "BODY[HEADER]"), &SIMPLE[..header_len]);
        assert!(section(SIMPLE, "BODY[HEADER]").ends_with(b"<1@example.com>\r\n\r\n"));
        assert_eq!(section(SIMPLE, "BODY[TEXT]"), b"0123456789\r\n");
        // Part 1 of a message that is not a multipart is its body, and its MIME header is the
        // message header.
        assert_eq!(section(SIMPLE, "BODY[1]"), b"0123456789\r\n");
        assert_eq!(section(SIMPLE, "BODY[1.MIME]"), &SIMPLE[..header_len]);
        for missing in ["BODY[2]", "BODY[1.1]", "BODY[1.HEADER]", "BODY[1.TEXT]", "BODY[2.MIME]"] {
            assert_eq!(section(SIMPLE, missing), b"", "{missing}");
        }
    }

    #[test]
    fn sections_of_the_rfc_9051_example_structure() {
        let cases: &[(&str, &[u8])] = &[
            ("BODY[HEADER]", b"From: outer@example.com\r\nSubject: outer\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"),
            ("BODY[1]", b"part 1"),
            ("BODY[1.MIME]", b"Content-Type: text/plain\r\n\r\n"),
            ("BODY[2]", b"cGFydCAy"),
            ("BODY[3.MIME]", b"Content-Type: message/rfc822\r\n\r\n"),
            ("BODY[3.HEADER]", b"From: inner3@example.com\r\nSubject: part 3\r\nContent-Type: multipart/mixed; boundary=\"b2\"\r\n\r\n"),
            (
                "BODY[3.TEXT]",
                b"--b2\r\nContent-Type: text/plain\r\n\r\npart 3.1\r\n--b2\r\nContent-Type: application/octet-stream\r\n\r\npart 3.2\r\n--b2--\r\n",
            ),
            ("BODY[3.HEADER.FIELDS (subject)]", b"Subject: part 3\r\n\r\n"),
            ("BODY[3.1]", b"part 3.1"),
            ("BODY[3.2]", b"part 3.2"),
            ("BODY[4.1]", b"R0lGODlh"),
            ("BODY[4.1.MIME]", b"Content-Type: image/gif\r\nContent-Transfer-Encoding: base64\r\n\r\n"),
            ("BODY[4.2.HEADER]", b"Subject: part 4.2\r\nContent-Type: multipart/mixed; boundary=\"b4\"\r\n\r\n"),
            ("BODY[4.2.1]", b"part 4.2.1"),
            ("BODY[4.2.2.1]", b"part 4.2.2.1"),
            ("BODY[4.2.2.2]", b"part 4.2.2.2"),
            ("BODY[4.2.2.2.MIME]", b"Content-Type: text/richtext\r\n\r\n"),
            (
                "BODY[4.2.2]",
                b"--b5\r\nContent-Type: text/plain\r\n\r\npart 4.2.2.1\r\n--b5\r\nContent-Type: text/richtext\r\n\r\npart 4.2.2.2\r\n--b5--",
            ),
            ("BINARY[2]", b"part 2"),
            ("BINARY[4.1]", b"GIF89a"),
            ("BINARY[4.2.1]", b"part 4.2.1"),
            ("BINARY[2]<1.3>", b"art"),
            ("BINARY[2]<10.3>", b""),
            // Parts that do not exist, and HEADER or TEXT of parts that are no message.
            ("BODY[5]", b""),
            ("BODY[1.1]", b""),
            ("BODY[3.3]", b""),
            ("BODY[4.3]", b""),
            ("BODY[4.2.2.3]", b""),
            ("BODY[4.2.2.1.1]", b""),
            ("BODY[2.HEADER]", b""),
            ("BODY[4.TEXT]", b""),
            ("BODY[1.HEADER.FIELDS (Subject)]", b""),
            ("BODY[9.MIME]", b""),
            ("BINARY[9]", b""),
            ("BODY[4294967295.1]", b""),
        ];
        for (spec, expected) in cases {
            assert_eq!(String::from_utf8_lossy(&section(NESTED, spec)), String::from_utf8_lossy(expected), "{spec}");
        }
        let text = section(NESTED, "BODY[TEXT]");
        let header = section(NESTED, "BODY[HEADER]");
        assert_eq!([header, text].concat(), NESTED);
        let part3 = section(NESTED, "BODY[3]");
        assert_eq!([section(NESTED, "BODY[3.HEADER]"), section(NESTED, "BODY[3.TEXT]")].concat(), part3);
        let part42 = section(NESTED, "BODY[4.2]");
        assert!(part42.starts_with(b"Subject: part 4.2\r\n") && part42.ends_with(b"--b4--"));
        assert_eq!(section(NESTED, "BINARY[3]"), part3);
    }

    #[test]
    fn header_fields_keep_folding_and_end_with_the_blank_line() {
        let cases: &[(&str, &[u8])] = &[
            (
                "BODY[HEADER.FIELDS (subject x-empty)]",
                b"Subject: folded\r\n  subject\r\nX-Empty:\r\nSUBJECT: second\r\n\r\n",
            ),
            ("BODY[HEADER.FIELDS.NOT (SUBJECT received)]", b"X-Empty:\r\nTo: x@example.com\r\n\r\n"),
            ("BODY[HEADER.FIELDS (received)]", b"Received: from a by b;\r\n\tThu, 26 Nov 2026 10:00:00 +0000\r\n\r\n"),
            ("BODY[HEADER.FIELDS (X-NOPE)]", b"\r\n"),
            ("BODY[HEADER.FIELDS (\"Subject\")]<2.5>", b"bject"),
        ];
        for (spec, expected) in cases {
            assert_eq!(String::from_utf8_lossy(&section(FOLDED, spec)), String::from_utf8_lossy(expected), "{spec}");
        }
        // A message without a body and without an empty line gets no empty line.
        assert_eq!(section(b"Subject: x\r\nTo: y@z", "BODY[HEADER.FIELDS (TO)]"), b"To: y@z\r\n");
        assert_eq!(section(b"Subject: x\r\n", "BODY[HEADER]"), b"Subject: x\r\n");
    }

    #[test]
    fn multipart_bodystructure_with_extension_data() {
        assert_eq!(
            fetch(MIXED, "BODYSTRUCTURE"),
            "* 1 FETCH (BODYSTRUCTURE ((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"QUOTED-PRINTABLE\" 38 1 \
             NIL NIL NIL NIL)(\"APPLICATION\" \"OCTET-STREAM\" (\"NAME\" \"a.bin\") \"<att1@example.com>\" \
             \"some bytes\" \"BASE64\" 8 NIL (\"ATTACHMENT\" (\"FILENAME\" \"a.bin\")) (\"en\" \"de\") \
             \"http://example.com/a.bin\") \"MIXED\" (\"BOUNDARY\" \"XX\") NIL NIL NIL))\r\n"
        );
        assert_eq!(
            fetch(MIXED, "BODY"),
            "* 1 FETCH (BODY ((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"QUOTED-PRINTABLE\" 38 1)\
             (\"APPLICATION\" \"OCTET-STREAM\" (\"NAME\" \"a.bin\") \"<att1@example.com>\" \"some bytes\" \
             \"BASE64\" 8) \"MIXED\"))\r\n"
        );
    }

    #[test]
    fn nested_bodystructure() {
        // Parts with a Content-Type but no charset have no parameters, and a part's last line
        // has no line end of its own: the CRLF before a boundary belongs to the boundary.
        let text = |s: &str| format!("(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" {} 0)", s.len());
        let part3 = format!(
            "(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 201 (NIL \"part 3\" ((NIL NIL \"inner3\" \"example.com\")) \
             ((NIL NIL \"inner3\" \"example.com\")) ((NIL NIL \"inner3\" \"example.com\")) NIL NIL NIL NIL NIL) \
             ({}(\"APPLICATION\" \"OCTET-STREAM\" NIL NIL NIL \"7BIT\" 8) \"MIXED\") 13)",
            text("part 3.1")
        );
        let part42 = format!(
            "(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 286 (NIL \"part 4.2\" NIL NIL NIL NIL NIL NIL NIL NIL) \
             ({}({}(\"TEXT\" \"RICHTEXT\" NIL NIL NIL \"7BIT\" 12 0) \"ALTERNATIVE\") \"MIXED\") 19)",
            text("part 4.2.1"),
            text("part 4.2.2.1")
        );
        assert_eq!(
            fetch(NESTED, "BODY"),
            format!(
                "* 1 FETCH (BODY ({}(\"APPLICATION\" \"OCTET-STREAM\" NIL NIL NIL \"BASE64\" 8){part3}\
                 ((\"IMAGE\" \"GIF\" NIL NIL NIL \"BASE64\" 8){part42} \"MIXED\") \"MIXED\"))\r\n",
                text("part 1")
            )
        );
    }

    #[test]
    fn binary_decodes_and_uses_literal8_for_nul() {
        assert_eq!(section(MIXED, "BINARY.PEEK[1]"), "Grüße, café = ok".as_bytes());
        assert_eq!(section(MIXED, "BINARY[2]"), [0, 1, 2, 3, 0xff]);
        let bytes = fetch_with(MIXED, "(BINARY.PEEK[2] BINARY.SIZE[2] BINARY.SIZE[1])", false, false);
        let mut expected =
            b"* 1 FETCH (BINARY[2] ~{5}\r\n\x00\x01\x02\x03\xff BINARY.SIZE[2] 5 BINARY.SIZE[1] ".to_vec();
        expected.extend_from_slice(format!("{})\r\n", "Grüße, café = ok".len()).as_bytes());
        assert_eq!(String::from_utf8_lossy(&bytes), String::from_utf8_lossy(&expected));
        // BODY of the same part keeps the length but not the NUL.
        assert_eq!(section(MIXED, "BODY[2]"), b"AAECA/8=");
        let raw = [&b"Subject: nul\r\n\r\na\0b"[..]].concat();
        assert_eq!(section(&raw, "BODY[TEXT]"), b"a\x80b");
        assert_eq!(section(&raw, "BINARY[1]"), b"a\0b");
    }

    #[test]
    fn undecodable_parts_are_unknown_cte() {
        let uu = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n";
        let bad = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!\r\n";
        for (raw, spec) in [(&uu[..], "BINARY[1]"), (&bad[..], "BINARY.SIZE[1]")] {
            let meta = meta_of(raw);
            let view = MessageView { seq: NonZeroU32::MIN, meta: &meta, raw: Some(raw) };
            let err = build(&names(spec), &view, false, false).unwrap_err();
            assert!(err.is_unknown_cte(), "{err}");
        }
        let meta = meta_of(uu);
        let view = MessageView { seq: NonZeroU32::MIN, meta: &meta, raw: Some(uu) };
        assert!(
            matches!(build(&names("BINARY[1]"), &view, false, false), Err(FetchError::UnknownCte(cte)) if cte == "x-uuencode")
        );
        // BODY of the same part is fine.
        assert!(build(&names("BODY[1]"), &view, false, false).is_ok());
    }

    #[test]
    fn quoted_printable_decoding() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"a=3Db", b"a=b"),
            (b"soft=\r\nbreak", b"softbreak"),
            (b"soft=  \r\nbreak", b"softbreak"),
            (b"trailing   \r\nspace\t\r\n", b"trailing\r\nspace\r\n"),
            (b"bare\nlf", b"bare\r\nlf"),
            (b"lower=c3=a9", "lower\u{e9}".as_bytes()),
            (b"bad=ZZ and = alone and end=", b"bad=ZZ and = alone and end"),
            (b"=4", b"=4"),
            (b"", b""),
        ];
        for (input, expected) in cases {
            assert_eq!(decode_quoted_printable(input), *expected, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn binary_decodes_nested_parts() {
        let cases: &[(&str, &[u8])] = &[
            ("BINARY.PEEK[1.1]", "café = ok".as_bytes()),
            ("BINARY[1.2]", b"<b>hi</b>"),
            ("BINARY[2.1]", b"a=b"),
            ("BINARY[2.2]", &[0, 1, 2, 3]),
            ("BINARY[3.1]", b"hello"),
            ("BINARY.PEEK[3.1]<1.3>", b"ell"),
            // The encapsulated message and the multiparts come back as they are.
            (
                "BINARY[3]",
                b"Subject: single\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8=",
            ),
            ("BINARY[2.4]", b""),
        ];
        for (spec, expected) in cases {
            assert_eq!(String::from_utf8_lossy(&section(DEEP, spec)), String::from_utf8_lossy(expected), "{spec}");
        }
        let multipart = section(DEEP, "BINARY[1]");
        assert!(multipart.starts_with(b"--a\r\n") && multipart.ends_with(b"--a--"));
        assert_eq!(multipart, section(DEEP, "BODY[1]"));
        assert_eq!(
            fetch(DEEP, "(BINARY.SIZE[1.1] BINARY.SIZE[1.2] BINARY.SIZE[2.1] BINARY.SIZE[2.2] BINARY.SIZE[3.1])"),
            format!(
                "* 1 FETCH (BINARY.SIZE[1.1] {} BINARY.SIZE[1.2] 9 BINARY.SIZE[2.1] 3 BINARY.SIZE[2.2] 4 \
                 BINARY.SIZE[3.1] 5)\r\n",
                "café = ok".len()
            )
        );
        // NUL goes in a literal8; BODY of the same part is the encoded text.
        assert_eq!(
            String::from_utf8_lossy(&fetch_with(DEEP, "(BINARY.PEEK[2.2] BODY.PEEK[2.2])", false, false)),
            "* 1 FETCH (BINARY[2.2] ~{4}\r\n\0\x01\x02\x03 BODY[2.2] \"AAECAw==\")\r\n"
        );
        // The stored encoding is the token without its comment.
        assert!(fetch(DEEP, "BODY").contains("(\"TEXT\" \"HTML\" NIL NIL NIL \"BASE64\" 14 1)"));
        // An encoding this server does not know is NO [UNKNOWN-CTE], for BINARY and BINARY.SIZE,
        // however deep the part; BODY of it is fine.
        let meta = meta_of(DEEP);
        let view = MessageView { seq: NonZeroU32::MIN, meta: &meta, raw: Some(DEEP) };
        for spec in ["BINARY[2.3]", "BINARY.PEEK[2.3]<0.2>", "BINARY.SIZE[2.3]", "(FLAGS BINARY.PEEK[2.3])"] {
            let err = build(&names(spec), &view, false, false).unwrap_err();
            assert_eq!(err, FetchError::UnknownCte("x-uuencode".into()), "{spec}");
            assert!(err.is_unknown_cte());
        }
        assert_eq!(section(DEEP, "BODY[2.3]"), b"begin 644 x");
    }

    #[test]
    fn decoding_ignores_a_comment_after_the_encoding() {
        assert_eq!(decode_transfer_encoding(b"aGk=", "BASE64 (old stored form)"), Ok(b"hi".to_vec()));
        assert_eq!(decode_transfer_encoding(b"a=3Db", " quoted-printable;"), Ok(b"a=b".to_vec()));
        assert_eq!(decode_transfer_encoding(b"x", "(only a comment)"), Ok(b"x".to_vec()));
        assert_eq!(decode_transfer_encoding(b"x", "x-gzip64 (no)"), Err(FetchError::UnknownCte("x-gzip64".into())));
    }

    #[test]
    fn sections_of_encapsulated_messages() {
        let header2: &[u8] = b"From: Inner <inner@example.com>\r\nTo: root, Some Name\r\nSubject: inner\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"i\"\r\n\r\n";
        let cases: &[(&str, &[u8])] = &[
            ("BODY[2.MIME]", b"Content-Type: message/rfc822\r\n\r\n"),
            ("BODY[2.HEADER]", header2),
            ("BODY[2.HEADER.FIELDS (Subject To)]", b"To: root, Some Name\r\nSubject: inner\r\n\r\n"),
            ("BODY[2.HEADER.FIELDS.NOT (From To MIME-Version Content-Type)]", b"Subject: inner\r\n\r\n"),
            ("BODY[2.1.MIME]", b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"),
            (
                "BODY[3.HEADER]",
                b"Subject: single\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n",
            ),
            ("BODY[3.TEXT]", b"aGVsbG8="),
            ("BODY[3.1]", b"aGVsbG8="),
            (
                "BODY[3.1.MIME]",
                b"Subject: single\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n",
            ),
            ("BODY[2.TEXT]<0.5>", b"--i\r\n"),
            // HEADER and TEXT of parts that are no message are empty.
            ("BODY[1.TEXT]", b""),
            ("BODY[1.1.HEADER]", b""),
            ("BODY[2.1.TEXT]", b""),
        ];
        for (spec, expected) in cases {
            assert_eq!(String::from_utf8_lossy(&section(DEEP, spec)), String::from_utf8_lossy(expected), "{spec}");
        }
        // The encapsulated message ends where its part does: the line end before the next
        // boundary belongs to the boundary.
        let text2 = section(DEEP, "BODY[2.TEXT]");
        assert!(text2.starts_with(b"--i\r\nContent-Type: text/plain\r\n") && text2.ends_with(b"--i--"));
        // HEADER and TEXT of an encapsulated message add up to the part.
        assert_eq!([section(DEEP, "BODY[2.HEADER]"), text2].concat(), section(DEEP, "BODY[2]"));
        assert_eq!([section(DEEP, "BODY[3.HEADER]"), section(DEEP, "BODY[3.TEXT]")].concat(), section(DEEP, "BODY[3]"));
        assert_eq!(fetch(DEEP, "BODY.PEEK[3.TEXT]"), "* 1 FETCH (BODY[3.TEXT] \"aGVsbG8=\")\r\n");
    }

    #[test]
    fn envelope_groups_and_missing_hosts_as_dovecot_writes_them() {
        let outer = "(NIL NIL \"outer\" \"example.com\")";
        assert_eq!(
            fetch(DEEP, "ENVELOPE"),
            format!(
                "* 1 FETCH (ENVELOPE (NIL \"deep\" ({outer}) ({outer}) ({outer}) \
                 ((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) \
                 ((NIL NIL \"A Group\" NIL)(NIL NIL \"a\" \"example.com\")(NIL NIL \"b\" \"example.com\")\
                 (NIL NIL NIL NIL)(NIL NIL \"c\" \"example.com\")) \
                 ((NIL NIL \"root\" \"MISSING_DOMAIN\")) NIL NIL))\r\n"
            )
        );
        // The envelope of the encapsulated message in BODYSTRUCTURE, with a phrase that is no
        // address.
        assert!(fetch(DEEP, "BODY").contains(
            "(\"Inner\" NIL \"inner\" \"example.com\")) \
             ((NIL NIL \"root\" \"MISSING_DOMAIN\")(\"Some Name\" NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")) NIL"
        ));
        // Members without a host inside a group, and a lone word before one.
        let raw = b"To: root, team: alice, bob@example.com;\r\n\r\n";
        assert_eq!(
            fetch(raw, "ENVELOPE"),
            "* 1 FETCH (ENVELOPE (NIL NIL NIL NIL NIL ((NIL NIL \"root\" \"MISSING_DOMAIN\")\
             (NIL NIL \"team\" NIL)(NIL NIL \"alice\" \"MISSING_DOMAIN\")(NIL NIL \"bob\" \"example.com\")\
             (NIL NIL NIL NIL)) NIL NIL NIL NIL))\r\n"
        );
    }

    #[test]
    fn missing_names_are_those_the_mailbox_service_stores() {
        assert_eq!(MISSING_MAILBOX, tern_mail::parse::MISSING_MAILBOX);
        assert_eq!(MISSING_DOMAIN, tern_mail::parse::MISSING_DOMAIN);
    }

    #[test]
    fn envelopes_stored_without_filled_hosts() {
        // Messages delivered before the mailbox service filled missing hosts stored a lone word
        // as a name, and a hostless mailbox with an empty host. A hostless address with no group
        // end after it, or with a name, cannot be a group start.
        let stored = Envelope {
            to: vec![
                Address { name: "root".into(), ..Default::default() },
                Address { name: "Some Name".into(), mailbox: "x".into(), ..Default::default() },
                Address { mailbox: "team".into(), ..Default::default() },
                Address { mailbox: "alice".into(), ..Default::default() },
                Address::default(),
                Address { mailbox: "".into(), host: "example.com".into(), ..Default::default() },
            ],
            ..Default::default()
        };
        let text = String::from_utf8(encode(vec![MessageDataItem::Envelope(envelope(&stored))])).unwrap();
        assert_eq!(
            text,
            "* 1 FETCH (ENVELOPE (NIL NIL NIL NIL NIL ((\"root\" NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")\
             (\"Some Name\" NIL \"x\" \"MISSING_DOMAIN\")(NIL NIL \"team\" NIL)(NIL NIL \"alice\" \"MISSING_DOMAIN\")\
             (NIL NIL NIL NIL)(NIL NIL \"MISSING_MAILBOX\" \"example.com\")) NIL NIL NIL NIL))\r\n"
        );
    }

    #[test]
    fn needs_and_seen() {
        assert_eq!(needs(&names("FAST")), Needs::default());
        assert_eq!(needs(&names("ALL")), Needs { structure: true, body: false });
        assert_eq!(needs(&names("(UID BODYSTRUCTURE)")), Needs { structure: true, body: false });
        for spec in ["BODY.PEEK[HEADER]", "RFC822.HEADER", "BINARY.SIZE[1]", "RFC822", "BODY[]"] {
            assert_eq!(needs(&names(spec)), Needs { structure: true, body: true }, "{spec}");
        }
        for spec in ["BODY[]", "BODY[1.MIME]", "RFC822", "RFC822.TEXT", "BINARY[1]", "(FLAGS BODY[TEXT])"] {
            assert!(sets_seen(&names(spec)), "{spec}");
        }
        for spec in ["BODY.PEEK[]", "RFC822.HEADER", "BINARY.PEEK[1]", "BINARY.SIZE[1]", "FULL", "BODYSTRUCTURE"] {
            assert!(!sets_seen(&names(spec)), "{spec}");
        }
    }

    #[test]
    fn missing_bytes_and_missing_structure() {
        let meta = meta_of(SIMPLE);
        let view = MessageView { seq: NonZeroU32::MIN, meta: &meta, raw: None };
        assert_eq!(build(&names("BODY.PEEK[]"), &view, false, false), Err(FetchError::MissingBody));
        assert!(build(&names("(FLAGS BODYSTRUCTURE ENVELOPE)"), &view, true, true).is_ok());
        // Without stored structure the header and text are still found.
        let bare = MessageMeta { uid: 1, ..Default::default() };
        let view = MessageView { seq: NonZeroU32::MIN, meta: &bare, raw: Some(SIMPLE) };
        let items = build(&names("(BODY[TEXT] ENVELOPE BODY)"), &view, false, false).unwrap();
        assert_eq!(
            items[0],
            MessageDataItem::BodyExt {
                section: Some(Section::Text(None)),
                origin: None,
                data: NString::try_from(&b"0123456789\r\n"[..]).unwrap()
            }
        );
        encode(items);
        let no_uid = MessageMeta::default();
        let view = MessageView { seq: NonZeroU32::MIN, meta: &no_uid, raw: None };
        assert_eq!(build(&names("UID"), &view, false, false), Err(FetchError::NoUid));
    }

    #[test]
    fn hostile_offsets_and_sections_never_panic() {
        let huge = NonZeroU32::MAX;
        let part = |nums: Vec<NonZeroU32>| Part(Vec1::try_from(nums).unwrap());
        let broken = BodyPart {
            media_type: "multipart".into(),
            header_offset: u64::MAX,
            body_offset: 5,
            end_offset: 2,
            parts: vec![
                BodyPart { header_offset: 10_000, body_offset: 3, end_offset: u64::MAX, ..Default::default() },
                BodyPart {
                    media_type: "message".into(),
                    media_subtype: "rfc822".into(),
                    message_body: None,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let one = NonZeroU32::MIN;
        let two = NonZeroU32::new(2).unwrap();
        for raw in [&b""[..], SIMPLE, NESTED] {
            for root in [broken.clone(), BodyPart::default(), meta_of(raw).body.unwrap()] {
                let sections = [
                    None,
                    Some(Section::Part(part(vec![huge]))),
                    Some(Section::Part(part(vec![one]))),
                    Some(Section::Part(part(vec![one, huge, one]))),
                    Some(Section::Mime(part(vec![one]))),
                    Some(Section::Mime(part(vec![two, one]))),
                    Some(Section::Header(Some(part(vec![two])))),
                    Some(Section::Text(Some(part(vec![two])))),
                    Some(Section::Header(None)),
                    Some(Section::Text(None)),
                ];
                for s in &sections {
                    let _ = section_bytes(raw, &root, s.as_ref()).unwrap();
                }
                let _ = binary_bytes(raw, &root, &[one]).unwrap();
                let _ = binary_bytes(raw, &root, &[huge, huge]).unwrap();
                let _ = body_structure(&root, true);
            }
        }
        // The broken structure still encodes as valid IMAP.
        encode(vec![MessageDataItem::BodyStructure(body_structure(&broken, true))]);
        // A multipart that lost its parts, and garbage, still have a structure.
        assert_eq!(
            fetch(b"Content-Type: multipart/mixed; boundary=XX\r\n\r\nno parts\r\n", "BODY"),
            "* 1 FETCH (BODY ((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 0 0) \"MIXED\"))\r\n"
        );
        for garbage in [&b""[..], b"\x00\xff\xfe", b"\r\n\r\n\r\n", b"Content-Type: message/rfc822\r\n\r\n"] {
            fetch_with(
                garbage,
                "(FLAGS ENVELOPE BODYSTRUCTURE BODY[] BODY[1] BODY[1.MIME] BINARY[1] RFC822)",
                true,
                true,
            );
        }
    }

    #[test]
    fn internal_date_limits() {
        assert_eq!(
            String::from_utf8(encode(vec![MessageDataItem::InternalDate(internal_date(0))])).unwrap(),
            "* 1 FETCH (INTERNALDATE \"01-Jan-1970 00:00:00 +0000\")\r\n"
        );
        assert_eq!(internal_date(i64::MAX), internal_date(0));
        assert_eq!(internal_date(-100_000_000_000), internal_date(0));
    }

    #[test]
    fn previews_are_the_first_text_in_one_line() {
        let plain = b"Subject: x\r\n\r\nHello   there,\r\n\r\n  second\tline.\r\n";
        assert_eq!(preview(plain).as_deref(), Some("Hello there, second line."));
        let html = b"Subject: x\r\nContent-Type: text/html\r\n\r\n<p>Hi <b>you</b></p><p>next</p>\r\n";
        assert_eq!(preview(html).as_deref(), Some("Hi you next"));
        let long = format!("Subject: x\r\n\r\n{}\r\n", "wörd ".repeat(100));
        let p = preview(long.as_bytes()).unwrap();
        assert_eq!(p.chars().count(), PREVIEW_CHARS);
        assert!(p.starts_with("wörd wörd"));
        let attachment_only = b"Subject: x\r\nContent-Type: application/pdf\r\n\r\n%PDF\r\n";
        assert_eq!(preview(attachment_only).as_deref(), Some(""));
    }
}
