//! Every shipped pipeline runs in its quick variant with plots and report (numbers snapshotted),
//! and text stages write the same bytes with and without the vector paths.

use crate::support::*;
use std::path::Path;
use std::process::Command;

/// Numbers of a summary, rounded to 3 significant digits (strings, such as generated text,
/// depend on every bit of the weights and are left out).
fn rounded_summary(dir: &Path) -> String {
    let s: serde_json::Value = match std::fs::read(dir.join("summary.json")) {
        Ok(b) => serde_json::from_slice(&b).unwrap(),
        Err(_) => return String::new(),
    };
    let mut out = Vec::new();
    for (k, v) in s.as_object().unwrap() {
        match v {
            serde_json::Value::Number(n) if n.is_f64() => {
                out.push(format!("{k}={}", round3(n.as_f64().unwrap())))
            }
            serde_json::Value::Number(n) => out.push(format!("{k}={n}")),
            serde_json::Value::Bool(b) => out.push(format!("{k}={b}")),
            serde_json::Value::Null => out.push(format!("{k}=null")),
            _ => {}
        }
    }
    out.join(" ")
}

fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    (
        u32::from_be_bytes(bytes[16..20].try_into().unwrap()),
        u32::from_be_bytes(bytes[20..24].try_into().unwrap()),
    )
}

/// Every shipped pipeline, in its quick variant: it runs, its numbers match the snapshot, its
/// plots are real images of the stated size, and its report has its table.
#[test]
fn every_pipeline_runs_quick_with_plots_and_report() {
    let t = project();
    let p = t.path();
    let mut files: Vec<String> = std::fs::read_dir(p.join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|f| f.ends_with(".yaml"))
        .collect();
    files.sort();
    for f in files {
        let name = f.trim_end_matches(".yaml").to_string();
        let path = format!("pipelines/{f}");
        // The quick variant for pipelines that train; a wildcard that matches no stage is an
        // error (it would otherwise run the unchanged pipeline).
        let trains = std::fs::read_to_string(p.join(&path))
            .unwrap()
            .contains("epochs:");
        let mut args = vec!["run", "-q", path.as_str()];
        if trains {
            args.extend(["--set", "*.epochs=2"]);
        } else {
            let o = seqpipe(p, &["run", "-q", &path, "--set", "*.epochs=2", "--dry-run"]);
            assert_eq!(
                o.status.code(),
                Some(2),
                "{name}: a wildcard that matches nothing"
            );
        }
        ok(p, &args);
        let record = last_record(p, &name);
        let mut numbers = String::new();
        let mut plots = 0;
        for s in record["stages"].as_array().unwrap() {
            let stage = s["name"].as_str().unwrap();
            let view = p.join("outputs").join(&name).join(stage);
            numbers.push_str(&format!("{stage}: {}\n", rounded_summary(&view)));
            if s["kind"] == "plot" {
                let params = &record["resolved"][stage]["params"];
                let (w, h) = png_size(
                    &std::fs::read(view.join(format!("{}.png", params["name"].as_str().unwrap())))
                        .unwrap(),
                );
                assert_eq!(
                    (w as u64, h as u64),
                    (
                        params["width"].as_u64().unwrap(),
                        params["height"].as_u64().unwrap()
                    ),
                    "{name}/{stage}"
                );
                let svg = std::fs::read_to_string(
                    view.join(format!("{}.svg", params["name"].as_str().unwrap())),
                )
                .unwrap();
                let title_word = params["title"]
                    .as_str()
                    .unwrap()
                    .split_whitespace()
                    .find(|x| x.chars().all(char::is_alphanumeric))
                    .unwrap();
                assert!(
                    svg.starts_with("<svg")
                        && svg.contains(&format!("width=\"{w}\""))
                        && svg.contains(title_word),
                    "{name}/{stage}: svg"
                );
                plots += 1;
            }
        }
        insta::assert_snapshot!(format!("quick_{name}"), numbers);
        let report = std::fs::read_to_string(p.join("outputs").join(&name).join("report.md"))
            .unwrap_or_else(|_| panic!("{name} has no report.md"));
        assert!(report.contains("|---|"), "{name}: the report has no table");
        assert_eq!(
            report.matches("![").count(),
            plots,
            "{name}: every plot is in the report"
        );
    }
}

#[test]
fn text_stages_write_the_same_bytes_with_and_without_the_vector_paths() {
    // Both corpora, char and word tokens: the 64-bytes-at-a-time passes (where the CPU has
    // them) and the byte-at-a-time ones (SEQPIPE_NO_AVX512) must agree byte for byte.
    let yaml = |unit: &str, path: &str| {
        format!(
            "name: t_{unit}\nstages:\n  corpus:\n    kind: load_corpus\n    params: {{ path: {path} }}\n  tokens:\n    kind: tokenize\n    inputs: {{ corpus: corpus }}\n    params: {{ unit: {unit} }}\n  vocab:\n    kind: build_vocab\n    inputs: {{ tokens: tokens }}\n"
        )
    };
    let (a, b) = (project(), project());
    for path in ["data/timemachine.txt", "data/war_of_the_worlds.txt"] {
        for unit in ["char", "word"] {
            for t in [&a, &b] {
                std::fs::write(t.path().join("t.yaml"), yaml(unit, path)).unwrap();
            }
            ok(a.path(), &["run", "-q", "--force", "corpus", "t.yaml"]);
            let o = Command::new(BIN)
                .args(["run", "-q", "--force", "corpus", "t.yaml"])
                .current_dir(b.path())
                .env("SEQPIPE_NO_AVX512", "1")
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            for f in [
                "corpus/lines.txt",
                "tokens/tokens.bin",
                "tokens/tokens.json",
                "vocab/vocab.csv",
                "vocab/corpus.bin",
            ] {
                let p = format!("outputs/t_{unit}/{f}");
                let (x, y) = (
                    std::fs::read(a.path().join(&p)).unwrap(),
                    std::fs::read(b.path().join(&p)).unwrap(),
                );
                assert!(x == y, "{path} {unit}: {f} differs");
            }
        }
    }
}
