//! The text stages' binary formats give the book's corpora and vocabularies: the same as the
//! line-by-line string semantics (`read_time_machine`, `tokenize`, `Vocab`), with the book's
//! facts, `max_tokens` included.

use seqpipe::artifacts::{CorpusIds, Tokens, VocabArtifact};
use seqpipe::stages::load_corpus::preprocess_d2l;
use seqpipe::stages::tokenize::{tokenize_line, Unit};
use seqpipe::stages::Vocab;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_seqpipe");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The book's semantics on strings: cleaned lines, tokens per line, a vocabulary over every
/// token, the corpus truncated to `max_tokens`.
fn by_the_book(
    text: &str,
    unit: Unit,
    max_tokens: Option<usize>,
    min_freq: usize,
) -> (Vocab, Vec<u32>, Vec<String>) {
    let lines: Vec<String> = text.lines().map(preprocess_d2l).collect();
    let tokens: Vec<String> = lines.iter().flat_map(|l| tokenize_line(l, unit)).collect();
    let vocab = Vocab::build(tokens.iter().map(String::as_str), min_freq, &[]);
    let kept: Vec<String> = tokens
        .into_iter()
        .take(max_tokens.unwrap_or(usize::MAX))
        .collect();
    let corpus = kept.iter().map(|t| vocab.get(t)).collect();
    (vocab, corpus, kept)
}

fn stage_dir(p: &Path, stage: &str) -> PathBuf {
    p.join("outputs/facts").join(stage)
}

#[test]
fn vocabularies_corpus_ids_and_max_tokens_are_the_books() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    std::fs::create_dir_all(p.join("data")).unwrap();
    std::fs::copy(
        repo().join("data/timemachine.txt"),
        p.join("data/timemachine.txt"),
    )
    .unwrap();
    let cases: [(&str, Unit, Option<usize>, usize); 5] = [
        ("char", Unit::Char, None, 0),
        ("word", Unit::Word, None, 0),
        ("word_min10", Unit::Word, None, 10),
        ("char_max", Unit::Char, Some(10_000), 0),
        ("word_max", Unit::Word, Some(1_000), 3),
    ];
    let mut yaml = String::from("name: facts\nstages:\n  corpus:\n    kind: load_corpus\n    params: { path: data/timemachine.txt }\n");
    for (name, unit, max, min_freq) in &cases {
        let unit = if *unit == Unit::Char { "char" } else { "word" };
        let max = max
            .map(|m| format!(", max_tokens: {m}"))
            .unwrap_or_default();
        yaml.push_str(&format!("  tok_{name}:\n    kind: tokenize\n    inputs: {{ corpus: corpus }}\n    params: {{ unit: {unit}{max} }}\n  vocab_{name}:\n    kind: build_vocab\n    inputs: {{ tokens: tok_{name} }}\n    params: {{ min_freq: {min_freq} }}\n"));
    }
    std::fs::write(p.join("facts.yaml"), yaml).unwrap();
    let o = Command::new(BIN)
        .args(["run", "-q", "facts.yaml"])
        .current_dir(p)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let text = std::fs::read_to_string(p.join("data/timemachine.txt")).unwrap();
    for (name, unit, max, min_freq) in cases {
        let (vocab, corpus, kept) = by_the_book(&text, unit, max, min_freq);
        let v = stage_dir(p, &format!("vocab_{name}"));
        let got_vocab = VocabArtifact::read_vocab(&v).unwrap();
        assert_eq!(got_vocab, vocab, "{name}: vocabulary");
        assert_eq!(CorpusIds::read(&v).unwrap(), corpus, "{name}: corpus ids");
        let tokens = Tokens::read(&stage_dir(p, &format!("tok_{name}"))).unwrap();
        assert_eq!(tokens.corpus_strs(), kept, "{name}: tokens");
        assert_eq!(tokens.meta.kept, kept.len());
    }

    // The book's numbers (d2l 8.2): 170,580 chars over 28 tokens, 32,775 words over 4,580.
    let size = |name: &str| {
        let v = stage_dir(p, &format!("vocab_{name}"));
        (
            CorpusIds::read(&v).unwrap().len(),
            VocabArtifact::read_vocab(&v).unwrap().len(),
        )
    };
    assert_eq!(size("char"), (170_580, 28));
    assert_eq!(size("word"), (32_775, 4_580));
    assert_eq!(size("word_min10"), (32_775, 400));
    assert_eq!(size("char_max"), (10_000, 28));
    let words = VocabArtifact::read_vocab(&stage_dir(p, "vocab_word")).unwrap();
    assert_eq!(
        &words.tokens[..10],
        ["<unk>", "the", "i", "and", "of", "a", "to", "was", "in", "that"]
    );
    let chars = VocabArtifact::read_vocab(&stage_dir(p, "vocab_char")).unwrap();
    assert_eq!(
        &chars.tokens[..10],
        ["<unk>", " ", "e", "t", "a", "i", "n", "o", "s", "h"]
    );
    // Lines 0 and 10 of the book's token list as indices.
    let line0 = "the time machine by h g wells";
    assert_eq!(words.encode(line0), [1, 19, 50, 40, 2183, 2184, 400]);
    let min10 = VocabArtifact::read_vocab(&stage_dir(p, "vocab_word_min10")).unwrap();
    assert_eq!(min10.encode(line0), [1, 19, 50, 40, 0, 0, 0]);
    // The corpus starts with line 0.
    let ids = CorpusIds::read(&stage_dir(p, "vocab_word")).unwrap();
    assert_eq!(ids[..7], [1, 19, 50, 40, 2183, 2184, 400]);
    // Char tokens take one byte each in the store (28 types), plus a 16-byte header.
    let bytes = std::fs::metadata(stage_dir(p, "tok_char").join(Tokens::IDS))
        .unwrap()
        .len();
    assert_eq!(bytes, 16 + 170_580);
}
