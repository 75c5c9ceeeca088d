//! Training: deterministic and snapshotted, resumed bit-identical after a kill, divergence
//! recorded rather than a crash, and `valid_fraction`.

use crate::support::*;
use std::path::Path;
use std::process::Command;

#[test]
fn training_is_deterministic_and_snapshotted() {
    let (a, b) = (project(), project());
    for t in [&a, &b] {
        std::fs::write(t.path().join("tiny.yaml"), tiny_lm(6, "")).unwrap();
        ok(t.path(), &["run", "-q", "tiny.yaml"]);
    }
    let files = |t: &tempfile::TempDir| {
        tree(&t.path().join("outputs"))
            .into_iter()
            .filter(|(n, _)| !n.ends_with("speed.csv"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        files(&a),
        files(&b),
        "same seed, same bytes (weights and metrics)"
    );
    let metrics = std::fs::read_to_string(a.path().join("outputs/tiny/train/metrics.csv")).unwrap();
    let mut rows = String::new();
    for line in metrics.lines().skip(1) {
        let c: Vec<f64> = line.split(',').map(|v| v.parse().unwrap()).collect();
        rows.push_str(&format!(
            "epoch {} loss {} ppl {} grad {}\n",
            c[0],
            round3(c[1]),
            round3(c[2]),
            round3(c[3])
        ));
    }
    insta::assert_snapshot!("tiny_training_metrics", rows);
    let last: f64 = metrics
        .lines()
        .last()
        .unwrap()
        .split(',')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    let first: f64 = metrics
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        last < first,
        "training lowers the perplexity: {first} → {last}"
    );
    // The weights carry PyTorch's names.
    let w = std::fs::read(a.path().join("outputs/tiny/train/model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(w[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8_lossy(&w[8..8 + header_len]);
    for name in [
        "rnn.weight_ih_l0",
        "rnn.weight_hh_l0",
        "rnn.bias_ih_l0",
        "rnn.bias_hh_l0",
        "linear.weight",
        "linear.bias",
    ] {
        assert!(header.contains(name), "{name} missing in {header}");
    }
}

#[test]
fn divergence_is_recorded_not_a_crash() {
    let t = project();
    std::fs::write(
        t.path().join("tiny.yaml"),
        tiny_lm(30, ", clip_grad_norm: none")
            .replace("lr: 1,", "lr: 10,")
            .replace(
                "arch: rnn, hidden: 48",
                "arch: rnn_scratch, hidden: 64, activation: relu",
            ),
    )
    .unwrap();
    let out = ok(t.path(), &["run", "tiny.yaml"]);
    let s: serde_json::Value = serde_json::from_slice(
        &std::fs::read(t.path().join("outputs/tiny/train/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(s["diverged"], true, "{out}\n{s}");
    let e = s["diverged_epoch"].as_u64().unwrap();
    assert!((1..30).contains(&e), "{s}");
    assert_eq!(s["epochs_run"].as_u64().unwrap(), e);
}

#[test]
fn a_killed_training_resumes_bit_identical() {
    let epochs = 80;
    let reference = trained_tiny(epochs);
    let t = tiny_project(epochs);
    let p = t.path();
    let mut child = Command::new(BIN)
        .args(["run", "-q", "tiny.yaml"])
        .current_dir(p)
        .spawn()
        .unwrap();
    // Wait for a checkpoint a few epochs in, then SIGKILL.
    let ckpts = p.join("outputs/.seqpipe/checkpoints");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let done = std::fs::read_dir(&ckpts)
            .into_iter()
            .flatten()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("ckpt/progress.json")).ok())
            .any(|bytes| {
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                v["epochs_done"].as_u64().unwrap_or(0) >= 3
            });
        if done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // A changed param never resumes that checkpoint.
    let other = ok(
        p,
        &[
            "run",
            "tiny.yaml",
            "--set",
            "train.lr=0.5",
            "--set",
            "train.epochs=2",
        ],
    );
    assert!(!other.contains("resuming"), "{other}");
    let out = ok(p, &["run", "tiny.yaml"]);
    assert!(
        out.contains("resuming from the checkpoint after epoch"),
        "{out}"
    );
    same_training(
        reference.path(),
        p,
        &["metrics.csv", "model.safetensors", "samples.txt", "log.txt"],
        "after resuming",
    );
    assert!(
        !ckpts.join("x").exists() && std::fs::read_dir(&ckpts).unwrap().count() == 0,
        "checkpoints are dropped once the stage is committed"
    );
}

/// `tiny_lm` with the last 20% of its 3,000 tokens held out, and evaluations of both parts.
fn tiny_lm_valid(valid_fraction: &str, eval_split: &str) -> String {
    tiny_lm(3, "")
        .replace(
            "batch_size: 8, num_steps: 10 }",
            &format!("batch_size: 8, num_steps: 10, valid_fraction: {valid_fraction} }}"),
        )
        + &format!(
            "  eval_train:\n    kind: evaluate\n    inputs: {{ model: train, data: batches }}\n  eval_valid:\n    kind: evaluate\n    inputs: {{ model: train, data: batches }}\n    params: {{ split: {eval_split} }}\n"
        )
}

fn summary(dir: &Path, stage: &str) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(dir.join("outputs/tiny").join(stage).join("summary.json")).unwrap(),
    )
    .unwrap()
}

#[test]
fn valid_fraction_holds_out_the_end_and_train_reports_valid_perplexity() {
    let t = project();
    let p = t.path();
    std::fs::write(p.join("tiny.yaml"), tiny_lm_valid("0.2", "valid")).unwrap();
    ok(p, &["run", "-q", "tiny.yaml"]);
    let b = summary(p, "batches");
    assert_eq!(
        (b["train_tokens"].as_u64(), b["valid_tokens"].as_u64()),
        (Some(2400), Some(600))
    );
    // Batches come from the training part only: (2400 - off - 1) / 8 / 10 full batches.
    assert!(b["batches_per_epoch"].as_u64().unwrap() <= 29);
    let metrics = std::fs::read_to_string(p.join("outputs/tiny/train/metrics.csv")).unwrap();
    let header: Vec<&str> = metrics.lines().next().unwrap().split(',').collect();
    assert_eq!(
        header,
        [
            "epoch",
            "loss",
            "perplexity",
            "grad_norm",
            "grad_norm_max",
            "valid_perplexity"
        ]
    );
    let valid: Vec<f64> = metrics
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(5).unwrap().parse().unwrap())
        .collect();
    assert_eq!(valid.len(), 3);
    assert!(valid.iter().all(|v| v.is_finite() && *v > 1.0), "{valid:?}");
    let tr = summary(p, "train");
    let final_valid = tr["final_valid_perplexity"].as_f64().unwrap();
    assert_eq!(final_valid, valid[2]);
    // `evaluate` scores either part; the validation part gives the same number as `train`.
    let ev = summary(p, "eval_valid");
    assert_eq!(ev["perplexity"].as_f64().unwrap(), final_valid);
    assert_eq!(ev["split"], "valid");
    // 600 tokens → rows of 8 × 10 steps: (600 - 1) / 8 = 74 columns, 7 batches of 80 tokens.
    assert_eq!(ev["tokens"].as_u64(), Some(560));
    let et = summary(p, "eval_train");
    assert!(et.get("split").is_none());
    // 2399 / 8 = 299 columns → 29 batches of 80 tokens.
    assert_eq!(et["tokens"].as_u64(), Some(2320));

    // Without a validation part nothing changes: no column, no summary key.
    std::fs::write(p.join("tiny.yaml"), tiny_lm(3, "")).unwrap();
    ok(p, &["run", "-q", "tiny.yaml"]);
    let metrics = std::fs::read_to_string(p.join("outputs/tiny/train/metrics.csv")).unwrap();
    assert_eq!(
        metrics.lines().next().unwrap(),
        "epoch,loss,perplexity,grad_norm,grad_norm_max"
    );
    assert!(summary(p, "train").get("final_valid_perplexity").is_none());
    assert!(summary(p, "batches").get("valid_tokens").is_none());
}

#[test]
fn valid_fraction_errors_name_the_param() {
    let t = project();
    let p = t.path();
    let fails = |yaml: String, code: i32| -> String {
        std::fs::write(p.join("tiny.yaml"), yaml).unwrap();
        let o = seqpipe(p, &["run", "-q", "tiny.yaml"]);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(code), "{err}");
        err
    };
    for bad in ["1", "1.5", "-0.1"] {
        let err = fails(tiny_lm_valid(bad, "valid"), 2);
        assert!(err.contains("valid_fraction must be in [0, 1)"), "{err}");
    }
    // 0.001 of 3,000 tokens is 3 tokens: not one sequence of num_steps + 1 = 11.
    let err = fails(tiny_lm_valid("0.001", "valid"), 1);
    assert!(err.contains("`valid_fraction` 0.001 holds out 3"), "{err}");
    assert!(err.contains("num_steps + 1 = 11"), "{err}");
    // Too little left to train on.
    let err = fails(tiny_lm_valid("0.99", "valid"), 1);
    assert!(
        err.contains("`valid_fraction` 0.99 leaves 30 of 3000 tokens"),
        "{err}"
    );
    // `split: valid` on data that holds nothing out.
    let err = fails(tiny_lm_valid("0", "valid"), 1);
    assert!(
        err.contains("`split: valid` needs a validation part"),
        "{err}"
    );
    let err = fails(tiny_lm_valid("0.2", "test"), 2);
    assert!(
        err.contains("invalid value `test` for param `split`"),
        "{err}"
    );
}
