//! tantivy BM25 keyword index.
//!
//! Schema: `key` (u64, indexed + fast + stored), `text` and `context` (not
//! stored, `en_stem` tokenizer: split on non-alphanumerics, lowercase,
//! English stemming; term frequencies and field norms for BM25). `context` is
//! what the engine puts beside a memory's text (a message's neighbouring
//! turns, see `engram_core::context`); a query term scores in both fields, the
//! context's BM25 weighted by [`engram_core::context::KEYWORD_CONTEXT_WEIGHT`]
//! (BM25F-style, each field with its own length normalisation).
//!
//! Every `apply` commits, with the last change's seq as the commit payload,
//! so the persisted position is durable at every batch and is read back from
//! the index metas on open.

use async_trait::async_trait;
use engram_core::context::KEYWORD_CONTEXT_WEIGHT;
use engram_core::{Change, ChangeOp, DerivedIndex, Key, KeywordIndex, Scope};
use parking_lot::Mutex;
use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, BoostQuery, EnableScoring, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, INDEXED, STORED,
};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{
    doc, Index, IndexReader, IndexWriter, ReloadPolicy, Score, TantivyDocument, TantivyError, Term,
};

use crate::{offload, run_blocking, IndexError};

const NAME: &str = "tantivy";
const KEY_FIELD: &str = "key";
const TEXT_FIELD: &str = "text";
const CONTEXT_FIELD: &str = "context";
const TOKENIZER: &str = "en_stem";
/// Total indexing memory budget of the writer (split between its threads;
/// tantivy wants at least 15 MB per thread).
const WRITER_HEAP_BYTES: usize = 50_000_000;

/// BM25 keyword index over memory texts.
///
/// Cheap to clone: clones share the same index.
#[derive(Clone)]
pub struct TantivyIndex {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    key: Field,
    text: Field,
    context: Field,
    /// The representation recipe the index is built with (commit payload).
    recipe: String,
    analyzer: TextAnalyzer,
    reader: IndexReader,
    writer: Mutex<IndexWriter<TantivyDocument>>,
    persisted_seq: AtomicU64,
    len: AtomicUsize,
}

enum OpenError {
    /// Another writer holds the index, or the directory cannot be opened: a real
    /// error, never a reason to wipe the index.
    Fatal(IndexError),
    /// Anything else: the index is unusable and, being derived, is rebuilt.
    Unusable(IndexError),
}

impl TantivyIndex {
    /// Open the index in `dir`, creating it if missing. An index that cannot
    /// be opened (corrupt, other schema, built with another `recipe`: see
    /// [`engram_core::context::Recipe::id`]) is wiped and recreated empty
    /// with persisted seq 0.
    pub fn open(dir: &Path, recipe: &str) -> Result<Self, IndexError> {
        fs::create_dir_all(dir).map_err(|source| IndexError::Io {
            index: NAME,
            path: dir.to_path_buf(),
            op: "creating the index directory",
            source,
        })?;
        match Inner::open(dir, recipe) {
            Ok(inner) => Ok(TantivyIndex {
                inner: Arc::new(inner),
            }),
            Err(OpenError::Fatal(e)) => Err(e),
            Err(OpenError::Unusable(e)) => {
                tracing::warn!(
                    index = NAME,
                    path = %dir.display(),
                    error = %e,
                    "discarding the keyword index; recreating it empty (the engine replays the change feed)"
                );
                let io = |op: &'static str| {
                    move |source| IndexError::Io {
                        index: NAME,
                        path: dir.to_path_buf(),
                        op,
                        source,
                    }
                };
                fs::remove_dir_all(dir).map_err(io("wiping the index directory"))?;
                fs::create_dir_all(dir).map_err(io("creating the index directory"))?;
                match Inner::open(dir, recipe) {
                    Ok(inner) => Ok(TantivyIndex {
                        inner: Arc::new(inner),
                    }),
                    Err(OpenError::Fatal(e) | OpenError::Unusable(e)) => Err(e),
                }
            }
        }
    }

    /// Blocking form of [`KeywordIndex::search`].
    pub fn search_blocking(
        &self,
        query: &str,
        k: usize,
        scope: &Scope<'_>,
    ) -> Result<Vec<(Key, f32)>, IndexError> {
        self.inner.search(query, k, scope)
    }
}

fn schema() -> (Schema, Field, Field, Field) {
    let mut builder = Schema::builder();
    let key = builder.add_u64_field(KEY_FIELD, INDEXED | FAST | STORED);
    // Frequencies (BM25) without positions: no phrase queries are ever run.
    let indexing = TextFieldIndexing::default()
        .set_tokenizer(TOKENIZER)
        .set_index_option(IndexRecordOption::WithFreqs)
        .set_fieldnorms(true);
    let text = builder.add_text_field(
        TEXT_FIELD,
        TextOptions::default().set_indexing_options(indexing.clone()),
    );
    let context = builder.add_text_field(
        CONTEXT_FIELD,
        TextOptions::default().set_indexing_options(indexing),
    );
    (builder.build(), key, text, context)
}

impl Inner {
    fn open(dir: &Path, recipe: &str) -> Result<Inner, OpenError> {
        let err = |op: &'static str| {
            move |source: TantivyError| IndexError::Tantivy {
                index: NAME,
                path: dir.to_path_buf(),
                op,
                source,
            }
        };
        let unusable = |op: &'static str| move |e: TantivyError| OpenError::Unusable(err(op)(e));
        let (schema, key, text, context) = schema();
        let directory = MmapDirectory::open(dir).map_err(|e| {
            OpenError::Fatal(IndexError::Tantivy {
                index: NAME,
                path: dir.to_path_buf(),
                op: "opening the directory",
                source: e.into(),
            })
        })?;
        let index =
            Index::open_or_create(directory, schema).map_err(unusable("opening the index"))?;
        let metas = index
            .load_metas()
            .map_err(unusable("reading the index metas"))?;
        // The payload is "<seq> recipe=<n>": an index built with another
        // recipe of the indexed text is rebuilt from the feed.
        let persisted_seq = match metas.payload.as_deref() {
            None => 0,
            Some(p) => parse_payload(p, recipe).map_err(|message| {
                OpenError::Unusable(IndexError::Invalid {
                    index: NAME,
                    path: dir.to_path_buf(),
                    message,
                })
            })?,
        };
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 3);
        let writer = index
            .writer_with_num_threads(threads, WRITER_HEAP_BYTES)
            .map_err(|e| match e {
                TantivyError::LockFailure(..) => {
                    OpenError::Fatal(err("acquiring the writer lock")(e))
                }
                e => OpenError::Unusable(err("creating the writer")(e)),
            })?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(unusable("opening the reader"))?;
        let searcher = reader.searcher();
        for segment in searcher.segment_readers() {
            segment
                .fast_fields()
                .u64(KEY_FIELD)
                .map_err(unusable("opening the key column"))?;
        }
        let len = searcher.num_docs() as usize;
        let analyzer = index
            .tokenizer_for_field(text)
            .map_err(unusable("loading the tokenizer"))?;
        Ok(Inner {
            dir: dir.to_path_buf(),
            key,
            text,
            context,
            recipe: recipe.to_string(),
            analyzer,
            reader,
            writer: Mutex::new(writer),
            persisted_seq: AtomicU64::new(persisted_seq),
            len: AtomicUsize::new(len),
        })
    }

    fn err(&self, op: &'static str) -> impl FnOnce(TantivyError) -> IndexError + '_ {
        move |source| IndexError::Tantivy {
            index: NAME,
            path: self.dir.clone(),
            op,
            source,
        }
    }

    /// Commit everything pending, recording `seq` as the persisted position,
    /// and make it visible to searches.
    fn commit(
        &self,
        writer: &mut IndexWriter<TantivyDocument>,
        seq: u64,
    ) -> Result<(), IndexError> {
        let result = (|| {
            let mut prepared = writer.prepare_commit()?;
            prepared.set_payload(&payload(seq, &self.recipe));
            prepared.commit()?;
            Ok(())
        })();
        if let Err(e) = result {
            // Drop the half-done batch; the engine retries it.
            let _ = writer.rollback();
            return Err(self.err("committing")(e));
        }
        self.reader
            .reload()
            .map_err(self.err("reloading the reader"))?;
        self.persisted_seq.store(seq, Ordering::Release);
        self.len.store(
            self.reader.searcher().num_docs() as usize,
            Ordering::Release,
        );
        Ok(())
    }

    fn apply(&self, changes: &[Change]) -> Result<(), IndexError> {
        let Some(last) = changes.last() else {
            return Ok(());
        };
        let mut writer = self.writer.lock();
        for c in changes {
            // A delete only affects documents added before it, so an upsert's
            // own (later) add survives.
            writer.delete_term(Term::from_field_u64(self.key, c.key));
            if let ChangeOp::Upsert(d) = &c.op {
                let added = writer.add_document(doc!(
                    self.key => c.key,
                    self.text => d.text.as_str(),
                    self.context => d.context.as_str(),
                ));
                if let Err(e) = added {
                    let _ = writer.rollback();
                    return Err(self.err("adding a document")(e));
                }
            }
        }
        self.commit(&mut writer, last.seq)
    }

    fn persist(&self, seq: u64) -> Result<(), IndexError> {
        let mut writer = self.writer.lock();
        self.commit(&mut writer, seq)
    }

    fn clear(&self) -> Result<(), IndexError> {
        let mut writer = self.writer.lock();
        writer
            .delete_all_documents()
            .map_err(self.err("deleting all documents"))?;
        self.commit(&mut writer, 0)
    }

    fn search(
        &self,
        query: &str,
        k: usize,
        scope: &Scope<'_>,
    ) -> Result<Vec<(Key, f32)>, IndexError> {
        if k == 0 {
            return Ok(Vec::new());
        }
        // Tokenise with the field's own analyzer (no query syntax: any user
        // text is a bag of terms), one SHOULD clause per distinct term and
        // field, the context's weighted down.
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(query);
        let mut seen = HashSet::new();
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        while let Some(token) = stream.next() {
            if seen.insert(token.text.clone()) {
                let term = Term::from_field_text(self.text, &token.text);
                clauses.push((
                    Occur::Should,
                    Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)),
                ));
                let term = Term::from_field_text(self.context, &token.text);
                clauses.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(
                        Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)),
                        KEYWORD_CONTEXT_WEIGHT,
                    )),
                ));
            }
        }
        let query: Box<dyn Query> = match clauses.len() {
            0 => return Ok(Vec::new()),
            1 => clauses.pop().expect("one clause").1,
            _ => Box::new(BooleanQuery::new(clauses)),
        };

        let searcher = self.reader.searcher();
        let weight = query
            .weight(EnableScoring::enabled_from_searcher(&searcher))
            .map_err(self.err("preparing the query"))?;
        // A top-k collector that applies the scope to every candidate inside
        // the scoring loop, so k allowed hits come back whenever they exist.
        // (tantivy's `FilterCollector` needs a `'static` predicate, which a
        // borrowed `Scope` cannot be.) The threshold is the k-th best allowed
        // score so far, which lets block-max WAND skip blocks that cannot beat it.
        let mut heap: BinaryHeap<Hit> = BinaryHeap::with_capacity(k.min(1024) + 1);
        let mut threshold = Score::MIN;
        for segment in searcher.segment_readers() {
            let keys = segment
                .fast_fields()
                .u64(KEY_FIELD)
                .map_err(self.err("opening the key column"))?;
            let alive = segment.alive_bitset();
            let start = threshold;
            weight
                .for_each_pruning(start, segment, &mut |doc, score| {
                    if alive.is_some_and(|a| a.is_deleted(doc)) {
                        return threshold;
                    }
                    let Some(key) = keys.first(doc) else {
                        return threshold;
                    };
                    if !scope.allows(key) {
                        return threshold;
                    }
                    heap.push(Hit { score, key });
                    if heap.len() > k {
                        heap.pop();
                    }
                    if heap.len() == k {
                        threshold = heap.peek().expect("k hits").score;
                    }
                    threshold
                })
                .map_err(self.err("searching"))?;
        }
        let mut hits: Vec<(Key, f32)> = heap.into_iter().map(|h| (h.key, h.score)).collect();
        hits.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(hits)
    }
}

/// The commit payload: the persisted seq and the recipe of the indexed text.
fn payload(seq: u64, recipe: &str) -> String {
    format!("{seq} recipe={recipe}")
}

fn parse_payload(p: &str, recipe: &str) -> Result<u64, String> {
    let (seq, built) = p.trim().split_once(" recipe=").unwrap_or((p.trim(), "0"));
    let seq = seq
        .parse::<u64>()
        .map_err(|e| format!("commit payload {p:?} is not a seq: {e}"))?;
    if built != recipe {
        return Err(format!(
            "built with keyword recipe {built:?}, this node indexes with recipe {recipe:?}"
        ));
    }
    Ok(seq)
}

/// A hit in the top-k heap, ordered so that the heap's top is the worst hit
/// (lowest score, then highest key).
struct Hit {
    score: Score,
    key: Key,
}

impl Ord for Hit {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.key.cmp(&other.key))
    }
}

impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Hit {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}

impl Eq for Hit {}

#[async_trait]
impl DerivedIndex for TantivyIndex {
    fn name(&self) -> &'static str {
        NAME
    }

    fn persisted_seq(&self) -> u64 {
        self.inner.persisted_seq.load(Ordering::Acquire)
    }

    async fn apply(&self, changes: &[Change]) -> engram_core::Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let inner = Arc::clone(&self.inner);
        let changes = changes.to_vec();
        Ok(offload(NAME, &self.inner.dir, move || inner.apply(&changes)).await?)
    }

    async fn persist(&self, seq: u64) -> engram_core::Result<()> {
        let inner = Arc::clone(&self.inner);
        Ok(offload(NAME, &self.inner.dir, move || inner.persist(seq)).await?)
    }

    async fn clear(&self) -> engram_core::Result<()> {
        let inner = Arc::clone(&self.inner);
        Ok(offload(NAME, &self.inner.dir, move || inner.clear()).await?)
    }

    fn len(&self) -> usize {
        self.inner.len.load(Ordering::Acquire)
    }
}

#[async_trait]
impl KeywordIndex for TantivyIndex {
    async fn search(
        &self,
        query: &str,
        k: usize,
        scope: &Scope<'_>,
    ) -> engram_core::Result<Vec<(Key, f32)>> {
        // The scope is borrowed, so this cannot move to the blocking pool.
        Ok(run_blocking(|| self.inner.search(query, k, scope))?)
    }
}
