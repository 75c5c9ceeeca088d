//! Artifact types: what a stage produces and what its inputs must be. Each type owns its file
//! names, its format, and its reading and writing; stages go through these types and never open
//! another stage's files by name. The analyzer checks the wiring of a pipeline against the types
//! each kind declares (`Stage::INPUT_TYPES`, `Stage::OUTPUT`) before anything runs.
//!
//! Bulk data is binary ([`ids`]: little-endian ids of 1, 2 or 4 bytes behind a 16-byte header,
//! memory-mappable); what people read stays text (the vocabulary CSV, a preview of the tokens).

pub mod data;
pub mod ids;
pub mod sampler;
pub mod series;
pub mod text;
pub mod vocab;

pub use data::{Batches, FeaturesArtifact, SeriesArtifact};
pub use ids::{IdBuf, IdWidth, Ids};
pub use text::{CorpusIds, Lines, TokenUnit, Tokens, TokensMeta, VocabArtifact};

/// The type of a stage's output, as the analyzer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Art {
    /// Preprocessed lines of a corpus (`load_corpus`).
    Lines,
    /// Tokens of a corpus (`tokenize`).
    Tokens,
    /// A vocabulary with the corpus as its ids (`build_vocab`).
    Vocab,
    /// A corpus of ids without a vocabulary (`toy_sequence`).
    CorpusIds,
    /// A sampler over a corpus of ids (`sample_batches`).
    Batches,
    /// An untrained model (`build_model`).
    Model,
    /// A trained model with its metrics (`train`).
    TrainedModel,
    /// Scores of a model (`evaluate`).
    Metrics,
    /// A time series (`synthetic_series`).
    Series,
    /// Windows of a series for regression (`window_features`).
    Features,
    /// n-gram frequency tables and Zipf fits (`ngram_stats`).
    Ngrams,
    /// A table of rows (`summary_table`, `encode`, `rnn_shapes`, …).
    Table,
    /// A chart (`plot`).
    Chart,
    /// Generated text (`generate`, `ngram_generate`).
    Text,
    /// A report page (`report`).
    Report,
}

impl Art {
    /// The name used in messages: "needs batches; `chars` produces tokens".
    pub fn name(self) -> &'static str {
        match self {
            Art::Lines => "corpus lines",
            Art::Tokens => "tokens",
            Art::Vocab => "a vocabulary with corpus ids",
            Art::CorpusIds => "corpus ids",
            Art::Batches => "batches",
            Art::Model => "a model",
            Art::TrainedModel => "a trained model",
            Art::Metrics => "metrics",
            Art::Series => "a series",
            Art::Features => "features",
            Art::Ngrams => "n-gram tables",
            Art::Table => "a table",
            Art::Chart => "a chart",
            Art::Text => "text",
            Art::Report => "a report",
        }
    }
}

impl Art {
    /// Every column a CSV file of this artifact can have (some only sometimes), where that is
    /// fixed: the analyzer checks a `plot`'s `x` and `y` against it before anything runs.
    /// `train`'s tests check these against the files it writes.
    pub fn csv_columns(self, file: &str) -> Option<&'static [&'static str]> {
        match (self, file) {
            (Art::TrainedModel, "metrics.csv") => Some(&[
                "epoch",
                "loss",
                "perplexity",
                "grad_norm",
                "grad_norm_max",
                "valid_perplexity",
            ]),
            (Art::TrainedModel, "speed.csv") => Some(&["epoch", "seconds", "tokens_per_s"]),
            _ => None,
        }
    }
}

/// "batches", "a model or a trained model", "x, y or z".
pub fn describe(types: &[Art]) -> String {
    let names: Vec<&str> = types.iter().map(|t| t.name()).collect();
    match names.as_slice() {
        [] => "anything".into(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// A file's bytes, memory-mapped (read into memory where mapping fails, e.g. an empty file).
pub fn read_mapped(path: &std::path::Path) -> std::io::Result<Mapped> {
    let f = std::fs::File::open(path)?;
    // SAFETY: inputs are read-only store files, verified against their record; a file changed
    // while a stage runs fails the stage before its result is committed (the job compares the
    // inputs' fingerprints after the stage). Project files are read into memory instead
    // (`StageCtx::read_project_file`).
    match unsafe { memmap2::Mmap::map(&f) } {
        Ok(m) => Ok(Mapped::Map(m)),
        Err(_) => Ok(Mapped::Bytes(std::fs::read(path)?)),
    }
}

pub enum Mapped {
    Map(memmap2::Mmap),
    Bytes(Vec<u8>),
}

impl std::ops::Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Mapped::Map(m) => m,
            Mapped::Bytes(b) => b,
        }
    }
}

/// Bytes of a small fast hash (FxHash) for the token tables: std's SipHash is the slow part of
/// counting tens of millions of tokens.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut h = self.0;
        let mut b = bytes;
        while b.len() >= 8 {
            let w = u64::from_le_bytes(b[..8].try_into().unwrap());
            h = (h.rotate_left(5) ^ w).wrapping_mul(K);
            b = &b[8..];
        }
        if b.len() >= 4 {
            let w = u32::from_le_bytes(b[..4].try_into().unwrap()) as u64;
            h = (h.rotate_left(5) ^ w).wrapping_mul(K);
            b = &b[4..];
        }
        for &x in b {
            h = (h.rotate_left(5) ^ x as u64).wrapping_mul(K);
        }
        self.0 = h;
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ i as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.0 = (self.0.rotate_left(5) ^ i as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub type FxBuild = std::hash::BuildHasherDefault<FxHasher>;
pub type FxHashMap<K, V> = std::collections::HashMap<K, V, FxBuild>;
