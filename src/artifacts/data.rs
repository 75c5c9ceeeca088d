//! The model-side data artifacts: batches (a sampler over corpus ids), series, features.

use super::sampler::SamplerSpec;
use super::series::{Features, Series};
use super::text::{CorpusIds, VocabArtifact};
use super::vocab::Vocab;
use crate::context::StageCtx;
use anyhow::Result;
use std::path::Path;

/// Batches (`sample_batches`): `sampler.json` (how batches are cut), `corpus.bin` (the corpus
/// ids) and, when the corpus had one, `vocab.csv`; plus the human tables `batches.csv` and
/// `coverage.csv`.
pub struct Batches;

impl Batches {
    pub const SAMPLER: &'static str = "sampler.json";

    /// The sampler, with the input's corpus and vocabulary carried along.
    pub fn write(ctx: &StageCtx, spec: &SamplerSpec, corpus_role: &str) -> Result<()> {
        ctx.write_json(Self::SAMPLER, spec)?;
        CorpusIds::copy(ctx, corpus_role)?;
        VocabArtifact::copy_vocab(ctx, corpus_role)
    }

    pub fn sampler(dir: &Path) -> Result<SamplerSpec> {
        crate::context::read_json(&dir.join(Self::SAMPLER))
    }

    pub fn corpus(dir: &Path) -> Result<Vec<u32>> {
        CorpusIds::read(dir)
    }

    /// The vocabulary, when the corpus came with one (`toy_sequence` has none).
    pub fn vocab(dir: &Path) -> Result<Option<Vocab>> {
        if VocabArtifact::has_vocab(dir) {
            Ok(Some(VocabArtifact::read_vocab(dir)?))
        } else {
            Ok(None)
        }
    }
}

/// A series (`synthetic_series`): `series.json` (and `series.csv` for people).
pub struct SeriesArtifact;

impl SeriesArtifact {
    pub const FILE: &'static str = "series.json";

    pub fn write(ctx: &StageCtx, s: &Series) -> Result<()> {
        ctx.write_json_compact(Self::FILE, s)
    }

    pub fn read(dir: &Path) -> Result<Series> {
        crate::context::read_json(&dir.join(Self::FILE))
    }
}

/// Windows of a series (`window_features`): `features.json`.
pub struct FeaturesArtifact;

impl FeaturesArtifact {
    pub const FILE: &'static str = "features.json";

    pub fn write(ctx: &StageCtx, f: &Features) -> Result<()> {
        ctx.write_json_compact(Self::FILE, f)
    }

    pub fn read(dir: &Path) -> Result<Features> {
        crate::context::read_json(&dir.join(Self::FILE))
    }
}
