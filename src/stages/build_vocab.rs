//! `build_vocab`: the book's `Vocab` — `<unk>` is 0, then reserved tokens, then tokens by
//! frequency (descending; ties in first-occurrence order) down to `min_freq`.

use super::{Roles, Stage};
pub use crate::artifacts::vocab::Vocab;
use crate::artifacts::{Art, Tokens, VocabArtifact};
use crate::context::StageCtx;
use anyhow::Result;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildVocab {
    /// Tokens seen fewer times than this map to `<unk>`.
    #[serde(default)]
    pub min_freq: usize,
    /// Extra tokens placed right after `<unk>`, e.g. `["<pad>", "<bos>", "<eos>"]`.
    #[serde(default)]
    pub reserved: Vec<String>,
}

impl Stage for BuildVocab {
    const KIND: &'static str = "build_vocab";
    const VERSION: u32 = 2;
    const ABOUT: &'static str =
        "Vocabulary (CSV: token, index, count) and the corpus as indices (book 8.2 `Vocab`)";
    const ROLES: Roles = Roles::Fixed(&["tokens"]);
    const INPUT_TYPES: &'static [(&'static str, &'static [Art])] = &[("tokens", &[Art::Tokens])];
    const OUTPUT: Option<Art> = Some(Art::Vocab);

    fn run(&self, ctx: &mut StageCtx) -> Result<()> {
        let tokens = Tokens::read(ctx.input("tokens")?)?;
        let types = &tokens.meta.types;
        // Every token counts (the book's `Vocab` sees the whole corpus, `max_tokens` or not).
        let counts = count_ids(&tokens.ids, types.len());
        let vocab = Vocab::from_counts(
            types.iter().map(String::as_str).zip(counts.iter().copied()),
            self.min_freq,
            &self.reserved,
        );
        let to_vocab: Vec<u32> = types.iter().map(|t| vocab.get(t)).collect();
        let kept = tokens.meta.kept;
        let corpus = tokens.ids.map_prefix(kept, &to_vocab);
        VocabArtifact::write(ctx, &vocab, &corpus)?;
        ctx.summary("corpus_len", corpus.len());
        ctx.summary("vocab_size", vocab.len());
        Ok(())
    }
}

/// How often each of the ids `0..types` occurs.
fn count_ids(ids: &crate::artifacts::Ids, types: usize) -> Vec<usize> {
    let mut counts = vec![0usize; types];
    match ids.as_u8() {
        Some(b) => {
            // Four tables, so that runs of one token do not wait on one counter.
            let mut c = [[0usize; 256]; 4];
            let mut chunks = b.chunks_exact(4);
            for q in &mut chunks {
                c[0][q[0] as usize] += 1;
                c[1][q[1] as usize] += 1;
                c[2][q[2] as usize] += 1;
                c[3][q[3] as usize] += 1;
            }
            for &x in chunks.remainder() {
                c[0][x as usize] += 1;
            }
            for (t, n) in counts.iter_mut().enumerate() {
                *n = c.iter().map(|c| c[t]).sum();
            }
        }
        None => ids.for_each(|i| counts[i as usize] += 1),
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequency_order_with_stable_ties() {
        let toks = ["b", "a", "c", "a", "b", "d"];
        let v = Vocab::build(toks.iter().copied(), 0, &[]);
        assert_eq!(v.tokens, ["<unk>", "b", "a", "c", "d"]);
        assert_eq!(v.counts, [0, 2, 2, 1, 1]);
        let v = Vocab::build(toks.iter().copied(), 2, &["<pad>".to_string()]);
        assert_eq!(v.tokens, ["<unk>", "<pad>", "b", "a"]);
        assert_eq!(v.get("zzz"), 0);
    }
}
