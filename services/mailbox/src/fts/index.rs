//! One account's index: a tantivy index in a directory, whose documents are the account's
//! messages, one per folder and UID, and whose commits carry the [`Marks`] that say which
//! messages it covers.
//!
//! A document has the message's folder and UID (fast fields, to turn matches into UIDs), a
//! `key` term (`folder:uid`, to delete it at expunge), and the terms of its header text and of
//! its body text ([`super::analyzer::terms`], given to tantivy pre-tokenized, without
//! frequencies or positions: the questions asked are only "which documents have a term"). A
//! message whose text is larger than the index takes is a document with `skipped` set and no
//! terms, which searches read instead.

use std::{collections::BTreeMap, path::Path, sync::Arc};

use serde::{Deserialize, Serialize};
use tantivy::{
    DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TERMINATED, TantivyDocument, Term,
    directory::MmapDirectory,
    schema::{FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions},
    tokenizer::{PreTokenizedString, Token},
};

use super::analyzer::{Condition, terms};

/// What the index covers in one folder.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FolderMark {
    /// Every message with a smaller UID has been indexed (or skipped, or was gone by then).
    pub next_uid: u32,
    /// Expunges up to this MODSEQ have removed their documents.
    pub modseq: u64,
}

/// What a commit covers: per folder id.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Marks {
    pub folders: BTreeMap<u64, FolderMark>,
}

impl Marks {
    /// Whether the message's document is in the index, as of this commit.
    pub fn covers(&self, folder: u64, uid: u32) -> bool {
        self.folders.get(&folder).is_some_and(|m| uid < m.next_uid)
    }

    pub fn next_uid(&self, folder: u64) -> u32 {
        self.folders.get(&folder).map_or(1, |m| m.next_uid.max(1))
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Fields {
    key: Field,
    folder: Field,
    uid: Field,
    skipped: Field,
    pub header: Field,
    pub body: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    // Documents and terms only: no frequencies, positions or norms, which only ranking uses.
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default().set_index_option(IndexRecordOption::Basic).set_fieldnorms(false),
    );
    let fields = Fields {
        key: b.add_text_field("key", STRING),
        folder: b.add_u64_field("folder", FAST | INDEXED),
        uid: b.add_u64_field("uid", FAST),
        skipped: b.add_u64_field("skipped", INDEXED),
        header: b.add_text_field("header", text.clone()),
        body: b.add_text_field("body", text),
    };
    (b.build(), fields)
}

fn key(folder: u64, uid: u32) -> String {
    format!("{folder}:{uid}")
}

/// A document ready to add.
#[derive(Debug)]
pub struct NewDoc {
    pub folder: u64,
    pub uid: u32,
    /// The lowercased header and body text; `None` for a message the index skips.
    pub text: Option<(String, String)>,
}

fn pre_tokenized(text: &str) -> PreTokenizedString {
    let tokens = terms(text)
        .into_iter()
        .enumerate()
        .map(|(i, t)| Token { offset_from: 0, offset_to: 0, position: i, position_length: 1, text: t })
        .collect();
    PreTokenizedString { text: String::new(), tokens }
}

impl NewDoc {
    fn document(&self, f: &Fields) -> TantivyDocument {
        let mut doc = TantivyDocument::new();
        doc.add_text(f.key, key(self.folder, self.uid));
        doc.add_u64(f.folder, self.folder);
        doc.add_u64(f.uid, u64::from(self.uid));
        match &self.text {
            Some((header, body)) => {
                doc.add_pre_tokenized_text(f.header, pre_tokenized(header));
                doc.add_pre_tokenized_text(f.body, pre_tokenized(body));
            }
            None => doc.add_u64(f.skipped, 1),
        }
        doc
    }
}

/// A point-in-time view: a searcher and the marks of the commit it reads.
#[derive(Clone)]
pub struct Snapshot {
    pub searcher: Searcher,
    pub marks: Arc<Marks>,
    pub fields: Fields,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("docs", &self.searcher.num_docs()).field("marks", &self.marks).finish()
    }
}

/// The tantivy index of one account in a directory.
pub struct AccountIndex {
    pub index: Index,
    pub fields: Fields,
    reader: IndexReader,
    dir: std::path::PathBuf,
}

impl std::fmt::Debug for AccountIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountIndex").finish_non_exhaustive()
    }
}

pub type IndexResult<T> = std::result::Result<T, tantivy::TantivyError>;

impl AccountIndex {
    /// Opens the index in `dir`, creating an empty one when there is none.
    pub fn open(dir: &Path) -> IndexResult<Self> {
        std::fs::create_dir_all(dir)?;
        let (schema, fields) = schema();
        let directory = MmapDirectory::open(dir)?;
        let index = Index::open_or_create(directory, schema)?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(Self { index, fields, reader, dir: dir.to_path_buf() })
    }

    /// The directory the index is in.
    pub fn dir(&self) -> std::path::PathBuf {
        self.dir.clone()
    }

    /// The files of the segments of the newest commit, by name.
    pub fn files(&self) -> IndexResult<Vec<String>> {
        let mut out: Vec<String> = self
            .index
            .searchable_segment_metas()?
            .iter()
            .flat_map(|m| {
                use tantivy::index::SegmentComponent as C;
                let mut components = vec![C::Postings, C::Positions, C::FastFields, C::FieldNorms, C::Terms, C::Store];
                if m.has_deletes() {
                    components.push(C::Delete);
                }
                components.into_iter().map(|c| m.relative_path(c)).collect::<Vec<_>>()
            })
            .filter_map(|p| p.to_str().map(str::to_string))
            .filter(|name| self.dir.join(name).exists())
            .collect();
        out.sort();
        Ok(out)
    }

    /// A writer with one indexing thread and the smallest memory budget tantivy takes.
    pub fn writer(&self, memory: usize) -> IndexResult<IndexWriter> {
        self.index.writer_with_num_threads(1, memory.max(super::MIN_WRITER_MEMORY))
    }

    /// The marks of the newest commit on disk.
    pub fn committed_marks(&self) -> IndexResult<Marks> {
        let metas = self.index.load_metas()?;
        Ok(metas.payload.as_deref().and_then(|p| serde_json::from_str(p).ok()).unwrap_or_default())
    }

    /// Reloads the reader and pairs its searcher with `marks`, which must be the marks of the
    /// commit it now reads.
    pub fn snapshot(&self, marks: Marks) -> IndexResult<Snapshot> {
        self.reader.reload()?;
        Ok(Snapshot { searcher: self.reader.searcher(), marks: Arc::new(marks), fields: self.fields })
    }

    pub fn add(writer: &IndexWriter, fields: &Fields, doc: &NewDoc) -> IndexResult<()> {
        writer.add_document(doc.document(fields))?;
        Ok(())
    }

    pub fn delete(writer: &IndexWriter, fields: &Fields, folder: u64, uid: u32) {
        writer.delete_term(Term::from_field_text(fields.key, &key(folder, uid)));
    }

    pub fn delete_folder(writer: &IndexWriter, fields: &Fields, folder: u64) {
        writer.delete_term(Term::from_field_u64(fields.folder, folder));
    }

    /// Commits what the writer holds, recording `marks`.
    pub fn commit(writer: &mut IndexWriter, marks: &Marks) -> IndexResult<()> {
        let payload = serde_json::to_string(marks).map_err(|e| tantivy::TantivyError::InternalError(e.to_string()))?;
        let mut prepared = writer.prepare_commit()?;
        prepared.set_payload(&payload);
        prepared.commit()?;
        Ok(())
    }
}

/// How many matching terms are looked up one by one in the dictionary; past this, the
/// dictionary is walked once.
const DIRECT_LOOKUPS: usize = 512;

/// Bytes of [`FlatTerms`] kept for all indexes of the process.
const FLAT_CACHE_BYTES: usize = 128 * 1024 * 1024;

/// One segment's terms of one field laid end to end, each followed by a NUL (which no term
/// contains), so that the terms containing a string are found by one `memmem` pass over a few
/// megabytes rather than a walk of the dictionary's FST term by term. Segments never change, so
/// this is built once per segment and kept (up to [`FLAT_CACHE_BYTES`] for the process, the
/// oldest dropped first).
#[derive(Debug)]
struct FlatTerms {
    bytes: Vec<u8>,
    /// Where each term starts, by ordinal.
    starts: Vec<u32>,
}

impl FlatTerms {
    fn size(&self) -> usize {
        self.bytes.len() + self.starts.len() * 4
    }

    fn term(&self, ord: usize) -> &[u8] {
        let start = self.starts[ord] as usize;
        let end = self.starts.get(ord + 1).map_or(self.bytes.len(), |e| *e as usize) - 1;
        &self.bytes[start..end]
    }

    /// The ordinals of the terms that contain `needle`, ascending.
    fn containing(&self, needle: &[u8]) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for at in memchr::memmem::find_iter(&self.bytes, needle) {
            let ord = self.starts.partition_point(|s| *s as usize <= at) - 1;
            if out.last() != Some(&ord) {
                out.push(ord);
            }
        }
        out
    }
}

type FlatKey = (tantivy::index::SegmentId, Field);

#[derive(Default)]
struct FlatCache {
    entries: std::collections::HashMap<FlatKey, Arc<FlatTerms>>,
    order: std::collections::VecDeque<FlatKey>,
    bytes: usize,
}

fn flat_cache() -> &'static std::sync::Mutex<FlatCache> {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<FlatCache>> = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn flat_terms(
    segment: &tantivy::SegmentReader,
    field: Field,
    inverted: &tantivy::InvertedIndexReader,
) -> IndexResult<Arc<FlatTerms>> {
    let key = (segment.segment_id(), field);
    if let Some(hit) = flat_cache().lock().unwrap_or_else(|e| e.into_inner()).entries.get(&key) {
        return Ok(Arc::clone(hit));
    }
    let mut flat = FlatTerms { bytes: Vec::new(), starts: Vec::with_capacity(inverted.terms().num_terms()) };
    let mut stream = inverted.terms().stream()?;
    while stream.advance() {
        flat.starts.push(flat.bytes.len() as u32);
        flat.bytes.extend_from_slice(stream.key());
        flat.bytes.push(0);
    }
    let flat = Arc::new(flat);
    let mut cache = flat_cache().lock().unwrap_or_else(|e| e.into_inner());
    cache.bytes += flat.size();
    cache.entries.insert(key, Arc::clone(&flat));
    cache.order.push_back(key);
    while cache.bytes > FLAT_CACHE_BYTES && cache.order.len() > 1 {
        let Some(old) = cache.order.pop_front() else { break };
        if let Some(gone) = cache.entries.remove(&old) {
            cache.bytes -= gone.size();
        }
    }
    Ok(flat)
}

/// A set of documents of one segment.
struct DocBits(Vec<u64>);

impl DocBits {
    fn new(max_doc: u32) -> Self {
        Self(vec![0; (max_doc as usize).div_ceil(64)])
    }
    fn full(max_doc: u32) -> Self {
        let mut bits = Self(vec![u64::MAX; (max_doc as usize).div_ceil(64)]);
        let extra = bits.0.len() * 64 - max_doc as usize;
        if extra > 0
            && let Some(last) = bits.0.last_mut()
        {
            *last >>= extra;
        }
        bits
    }
    fn insert(&mut self, doc: u32) {
        self.0[(doc / 64) as usize] |= 1 << (doc % 64);
    }
    fn and(&mut self, other: &DocBits) {
        self.0.iter_mut().zip(&other.0).for_each(|(a, b)| *a &= b);
    }
    fn or(&mut self, other: &DocBits) {
        self.0.iter_mut().zip(&other.0).for_each(|(a, b)| *a |= b);
    }
    fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0
            .iter()
            .enumerate()
            .flat_map(|(w, &bits)| (0..64).filter(move |b| bits & (1 << b) != 0).map(move |b| (w * 64 + b) as u32))
    }
}

impl Snapshot {
    /// The UIDs of `folder` whose documents satisfy every condition in at least one of
    /// `fields` (the OR of the fields' ANDs), sorted.
    pub fn matching(&self, folder: u64, fields: &[Field], conditions: &[Condition]) -> IndexResult<Vec<u32>> {
        let mut out = Vec::new();
        for segment in self.searcher.segment_readers() {
            let max_doc = segment.max_doc();
            let mut any = DocBits::new(max_doc);
            for field in fields {
                let inverted = segment.inverted_index(*field)?;
                let mut all = DocBits::full(max_doc);
                for condition in conditions {
                    let mut bits = DocBits::new(max_doc);
                    let mut add = |info: &tantivy::postings::TermInfo| -> IndexResult<()> {
                        let mut postings = inverted.read_postings_from_terminfo(info, IndexRecordOption::Basic)?;
                        let mut doc = postings.doc();
                        while doc != TERMINATED {
                            bits.insert(doc);
                            doc = postings.advance();
                        }
                        Ok(())
                    };
                    match condition {
                        Condition::Term(t) => {
                            if let Some(info) = inverted.get_term_info(&Term::from_field_text(*field, t))? {
                                add(&info)?;
                            }
                        }
                        Condition::Prefix(p) => {
                            let mut stream = inverted.terms().range().ge(p.as_bytes()).into_stream()?;
                            while stream.advance() {
                                if !stream.key().starts_with(p.as_bytes()) {
                                    break;
                                }
                                add(stream.value())?;
                            }
                        }
                        Condition::Contains(s) => {
                            // The terms containing `s`, by ordinal, found in the segment's
                            // terms laid end to end; then their postings.
                            let flat = flat_terms(segment, *field, &inverted)?;
                            let ords = flat.containing(s.as_bytes());
                            if ords.len() <= DIRECT_LOOKUPS {
                                for ord in ords {
                                    if let Some(info) = inverted.terms().get(flat.term(ord))? {
                                        add(&info)?;
                                    }
                                }
                            } else {
                                // Many terms (a short string): one walk of the dictionary,
                                // which hands out each term's postings address on the way.
                                let mut wanted = ords.into_iter().peekable();
                                let mut stream = inverted.terms().stream()?;
                                while wanted.peek().is_some() && stream.advance() {
                                    let ord = stream.term_ord() as usize;
                                    while wanted.next_if(|w| *w < ord).is_some() {}
                                    if wanted.next_if_eq(&ord).is_some() {
                                        add(stream.value())?;
                                    }
                                }
                            }
                        }
                    }
                    all.and(&bits);
                }
                any.or(&all);
            }
            self.collect(segment, &any, folder, &mut out)?;
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// The UIDs of `folder` whose documents are skipped ones, sorted.
    pub fn skipped(&self, folder: u64) -> IndexResult<Vec<u32>> {
        let mut out = Vec::new();
        let term = Term::from_field_u64(self.fields.skipped, 1);
        for segment in self.searcher.segment_readers() {
            let mut bits = DocBits::new(segment.max_doc());
            if let Some(mut postings) =
                segment.inverted_index(self.fields.skipped)?.read_postings(&term, IndexRecordOption::Basic)?
            {
                let mut doc = postings.doc();
                while doc != TERMINATED {
                    bits.insert(doc);
                    doc = postings.advance();
                }
            }
            self.collect(segment, &bits, folder, &mut out)?;
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Adds the UIDs of the live documents of `bits` that belong to `folder`.
    fn collect(
        &self,
        segment: &tantivy::SegmentReader,
        bits: &DocBits,
        folder: u64,
        out: &mut Vec<u32>,
    ) -> IndexResult<()> {
        let folders = segment.fast_fields().u64("folder")?;
        let uids = segment.fast_fields().u64("uid")?;
        let alive = segment.alive_bitset();
        for doc in bits.iter() {
            if alive.is_some_and(|a| a.is_deleted(doc)) {
                continue;
            }
            if folders.first(doc) == Some(folder)
                && let Some(uid) = uids.first(doc)
            {
                out.push(uid as u32);
            }
        }
        Ok(())
    }

    /// Live documents, and those of them skipped.
    pub fn counts(&self) -> IndexResult<(u64, u64)> {
        let docs = self.searcher.num_docs();
        let term = Term::from_field_u64(self.fields.skipped, 1);
        let skipped = self.searcher.doc_freq(&term)?;
        Ok((docs, skipped))
    }
}
