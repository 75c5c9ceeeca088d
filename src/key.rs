//! Cache keys. A stage's key is the blake3 hash of a [`KeyRecord`]: everything that determines
//! its output and nothing else (not the stage's name, not the file's layout or key order).

use crate::diagnostic::PipelineError;
use crate::pipeline::Pipeline;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

/// Bump when the record's layout or meaning changes: every key changes with it.
pub const KEY_SCHEMA: u32 = 1;

/// A stage's key: 64 lowercase hex digits (a blake3 digest), checked wherever one is read (a
/// record, a job description, a view's `.key`, a store folder's name), so that a key is always
/// safe to use as a file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Key(String);

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Key {
    /// A key from its text: exactly 64 lowercase hex digits, or `None`.
    pub fn parse(s: &str) -> Option<Key> {
        (s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Key(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn short(&self) -> &str {
        &self.0[..12]
    }

    /// The store's shard folder for this key: its first two hex digits.
    pub fn prefix(&self) -> &str {
        &self.0[..2]
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Key::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{}` is not a key (64 lowercase hex digits)",
                s.chars().take(80).collect::<String>()
            ))
        })
    }
}

/// What an input contributes to a key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputRef {
    /// Another stage's output, by its key.
    Stage { key: Key },
}

/// Everything that determines a stage's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub schema: u32,
    pub kind: String,
    pub version: u32,
    /// The typed params with defaults filled in, serialized canonically.
    pub params: serde_json::Value,
    /// Present for kinds whose output depends on randomness.
    pub seed: Option<u64>,
    /// Present for kinds that compute on a device.
    pub device: Option<String>,
    /// Input role → upstream key.
    pub inputs: BTreeMap<String, InputRef>,
    /// Project-relative path → blake3 of the file's content.
    pub files: BTreeMap<String, String>,
}

impl KeyRecord {
    pub fn key(&self) -> Key {
        let bytes = serde_json::to_vec(self).expect("key record serializes");
        Key(blake3::hash(&bytes).to_hex().to_string())
    }
}

/// blake3 digests of input files by content (never by mtime), each file read once per process.
#[derive(Default)]
pub struct FileDigests {
    cache: HashMap<PathBuf, String>,
}

impl FileDigests {
    pub fn digest(&mut self, path: &Path) -> std::io::Result<String> {
        if let Some(d) = self.cache.get(path) {
            return Ok(d.clone());
        }
        let d = crate::fsutil::digest_file(path)?;
        self.cache.insert(path.to_path_buf(), d.clone());
        Ok(d)
    }
}

/// Key records for every stage of a pipeline (indexed like `pipeline.stages`). A missing input
/// file is a pipeline error pointing at the param that names it.
pub fn compute(
    p: &Pipeline,
    root: &Path,
    device: crate::device::Device,
    files: &mut FileDigests,
) -> Result<Vec<KeyRecord>, PipelineError> {
    let mut records: Vec<Option<KeyRecord>> = vec![None; p.stages.len()];
    let mut diags = Vec::new();
    for &i in &p.order {
        let s = &p.stages[i];
        let mut digests = BTreeMap::new();
        for f in s.params.files() {
            match files.digest(&root.join(&f)) {
                Ok(d) => {
                    digests.insert(f, d);
                }
                Err(e) => {
                    let path = format!("stages.{}.params.path", s.name);
                    diags.push(
                        p.diag(&path, format!("cannot read input file `{f}`: {e}"))
                            .with_help("paths are relative to the project folder (where seqpipe runs); check the file exists"),
                    );
                }
            }
        }
        let inputs = s
            .inputs
            .iter()
            .filter_map(|(role, up)| {
                records[*up]
                    .as_ref()
                    .map(|r| (role.clone(), InputRef::Stage { key: r.key() }))
            })
            .collect();
        records[i] = Some(KeyRecord {
            schema: KEY_SCHEMA,
            kind: s.kind.name.to_string(),
            version: s.kind.version,
            params: s.params.canonical_params(),
            seed: s.kind.stochastic.then_some(p.seed),
            device: s.kind.uses_device.then(|| device.to_string()),
            inputs,
            files: digests,
        });
    }
    if !diags.is_empty() {
        return Err(PipelineError { diagnostics: diags });
    }
    Ok(records
        .into_iter()
        .map(|r| r.expect("every stage is in the order"))
        .collect())
}

/// Human-readable differences between an old and a new record: why a stage is stale.
pub fn explain_change(old: &KeyRecord, new: &KeyRecord) -> Vec<String> {
    let mut why = Vec::new();
    if old.schema != new.schema {
        why.push(format!("key schema {} → {}", old.schema, new.schema));
    }
    if old.kind != new.kind {
        why.push(format!("kind {} → {}", old.kind, new.kind));
    } else if old.version != new.version {
        why.push(format!(
            "implementation version {} → {}",
            old.version, new.version
        ));
    }
    diff_json("params", &old.params, &new.params, &mut why);
    if old.seed != new.seed {
        why.push(format!(
            "seed {} → {}",
            show_opt(old.seed),
            show_opt(new.seed)
        ));
    }
    if old.device != new.device {
        why.push(format!(
            "device {} → {}",
            show_opt(old.device.clone()),
            show_opt(new.device.clone())
        ));
    }
    for (f, d) in &new.files {
        match old.files.get(f) {
            Some(od) if od == d => {}
            Some(_) => why.push(format!("input {f} changed")),
            None => why.push(format!("input {f} is new")),
        }
    }
    for role in old.inputs.keys().filter(|r| !new.inputs.contains_key(*r)) {
        why.push(format!("input `{role}` removed"));
    }
    for role in new.inputs.keys().filter(|r| !old.inputs.contains_key(*r)) {
        why.push(format!("input `{role}` added"));
    }
    why
}

fn show_opt<T: fmt::Display>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "none".into())
}

fn diff_json(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value::Object;
    match (a, b) {
        (Object(x), Object(y)) => {
            for (k, vb) in y {
                match x.get(k) {
                    Some(va) => diff_json(&format!("{path}.{k}"), va, vb, out),
                    None => out.push(format!("{path}.{k} added ({vb})")),
                }
            }
            for k in x.keys().filter(|k| !y.contains_key(*k)) {
                out.push(format!("{path}.{k} removed"));
            }
        }
        _ if a != b => out.push(format!("{path} {a} → {b}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "name: t\nseed: 1\nstages:\n  corpus:\n    kind: load_corpus\n    params: { path: c.txt }\n  tokens:\n    kind: tokenize\n    inputs: { corpus: corpus }\n    params: { unit: word }\n  vocab:\n    kind: build_vocab\n    inputs: { tokens: tokens }\n    params: { min_freq: 0 }\n  batches:\n    kind: sample_batches\n    inputs: { corpus: vocab }\n    params: { strategy: random, batch_size: 2, num_steps: 3 }\n";

    fn keys(text: &str, corpus: &str) -> BTreeMap<String, Key> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.txt"), corpus).unwrap();
        let raw = crate::config::parse(Path::new("t.yaml"), text).unwrap();
        let p = crate::pipeline::analyze(raw).unwrap();
        let recs = compute(
            &p,
            dir.path(),
            crate::device::Device::Cpu,
            &mut FileDigests::default(),
        )
        .unwrap();
        p.stages
            .iter()
            .zip(recs)
            .map(|(s, r)| (s.name.clone(), r.key()))
            .collect()
    }

    /// (description, pipeline text, corpus, stages whose key must change; all others must not).
    #[test]
    fn keys_change_exactly_when_the_output_would() {
        let base = keys(BASE, "a b c\n");
        let all = ["corpus", "tokens", "vocab", "batches"];
        let cases: Vec<(&str, String, &str, Vec<&str>)> = vec![
            ("reordered keys and reformatting", BASE.replace("params: { strategy: random, batch_size: 2, num_steps: 3 }", "params:\n      num_steps: 3\n      batch_size: 2   # comment\n      strategy: random"), "a b c\n", vec![]),
            ("default written out", BASE.replace("{ path: c.txt }", "{ path: c.txt, preprocess: d2l }"), "a b c\n", vec![]),
            ("unrelated stage renamed", BASE.replace("  batches:", "  sampled:"), "a b c\n", vec![]),
            ("upstream stage renamed", BASE.replace("  tokens:\n", "  toks:\n").replace("{ tokens: tokens }", "{ tokens: toks }"), "a b c\n", vec![]),
            ("effective param changed", BASE.replace("min_freq: 0", "min_freq: 2"), "a b c\n", vec!["vocab", "batches"]),
            ("one byte of the input file", BASE.to_string(), "a b d\n", vec!["corpus", "tokens", "vocab", "batches"]),
            ("the seed", BASE.replace("seed: 1", "seed: 2"), "a b c\n", vec!["batches"]),
            ("unit changed", BASE.replace("unit: word", "unit: char"), "a b c\n", vec!["tokens", "vocab", "batches"]),
        ];
        for (what, text, corpus, changed) in cases {
            let k = keys(&text, corpus);
            for s in all {
                let name = if what.contains("renamed") && s == "batches" && text.contains("sampled")
                {
                    "sampled"
                } else if s == "tokens" && text.contains("toks:") {
                    "toks"
                } else {
                    s
                };
                let differs = k[name] != base[s];
                assert_eq!(
                    differs,
                    changed.contains(&s),
                    "{what}: key of `{s}` {}",
                    if differs { "changed" } else { "did not change" }
                );
            }
        }
    }

    #[test]
    fn a_key_is_64_hex_digits_and_nothing_else() {
        let k = "ab".repeat(32);
        assert_eq!(Key::parse(&k).unwrap().prefix(), "ab");
        for bad in [
            "",
            "../../etc",
            &k[..63],
            &format!("{k}0"),
            &k.to_uppercase(),
            &format!("é{}", &k[2..]),
        ] {
            assert!(Key::parse(bad).is_none(), "{bad:?}");
            assert!(
                serde_json::from_str::<Key>(&format!("{bad:?}")).is_err(),
                "{bad:?}"
            );
        }
        let back: Key = serde_json::from_str(&format!("\"{k}\"")).unwrap();
        assert_eq!(back.as_str(), k);
    }

    #[test]
    fn float_spellings_are_the_same_param() {
        let a = crate::config::parse_scalar("1e-3").unwrap();
        let b = crate::config::parse_scalar("0.001").unwrap();
        assert_eq!(a.as_f64(), b.as_f64());
    }

    #[test]
    fn implementation_version_is_in_the_key() {
        let r = KeyRecord {
            schema: KEY_SCHEMA,
            kind: "k".into(),
            version: 1,
            params: serde_json::json!({}),
            seed: None,
            device: None,
            inputs: BTreeMap::new(),
            files: BTreeMap::new(),
        };
        let mut r2 = r.clone();
        r2.version = 2;
        assert_ne!(r.key(), r2.key());
        assert_eq!(
            explain_change(&r, &r2),
            vec!["implementation version 1 → 2"]
        );
    }
}
