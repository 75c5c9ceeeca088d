//! `seqpipe bench --breakdown` and the kernel choices: tuned on first use, kept in the cache
//! file, read by later runs, shown in the breakdown and in each run record.

use crate::support::*;

#[test]
fn bench_breakdown_shows_phases_the_peak_and_kernel_choices_kept_for_later_runs() {
    let t = project();
    let p = t.path();
    let args = [
        "bench",
        "--breakdown",
        "--cell",
        "lstm",
        "--hidden",
        "64",
        "--epochs",
        "2",
    ];
    let out = ok(p, &args);
    for want in [
        "cpu: ",
        "isa: ",
        "GFLOP/s on one core (FP32, measured",
        "breakdown lstm 64: ",
        "cell kernels",
        "packing and transposes",
        "softmax / loss",
        "norm and update",
        "kernel choices",
        "built-in: step: ",
    ] {
        assert!(out.contains(want), "no `{want}` in:\n{out}");
    }
    let products = out
        .lines()
        .find(|l| l.trim_start().starts_with("products"))
        .unwrap_or_else(|| panic!("no products line:\n{out}"));
    assert!(products.ends_with("% of peak"), "{products}");
    // The phases account for the step: on one thread they add up to most of its wall time
    // (the rest is the step's own checks), never more.
    let sum = out
        .lines()
        .find(|l| l.trim_start().starts_with("sum of the phases"))
        .unwrap_or_else(|| panic!("no sum line:\n{out}"));
    let pct: f64 = sum
        .trim_end_matches('%')
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((70.0..=100.5).contains(&pct), "{sum}");
    // The weight-gradient product of all steps (284 × 64 × 1,152, Aᵀ: dW = Dᵀ·Hs) is large enough to be
    // tuned: in the first run it is tuned, and the choice is written to the cache file.
    let tuned = "big Aᵀ 284x64x1152: ";
    let line = out
        .lines()
        .find(|l| l.contains(tuned))
        .unwrap_or_else(|| panic!("no `{tuned}` line:\n{out}"));
    assert!(line.ends_with("tuned now"), "{line}");
    let files: Vec<_> = std::fs::read_dir(p.join(".kernels"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        files.len() == 1 && files[0].starts_with("kernels-") && files[0].ends_with(".json"),
        "{files:?}"
    );
    // A later run reads it.
    let again = ok(p, &args);
    let line2 = again.lines().find(|l| l.contains(tuned)).unwrap();
    assert!(line2.ends_with("from the cache"), "{line2}");
    assert_eq!(
        line.split(',').next(),
        line2.split(',').next(),
        "same choice"
    );
    // The run record of a pipeline names the CPU, the ISA and the choices it knows.
    std::fs::write(p.join("tiny.yaml"), tiny_lm(1, "")).unwrap();
    ok(p, &["run", "-q", "tiny.yaml"]);
    let runs = p.join("outputs/tiny/runs");
    let rec = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(rec).unwrap()).unwrap();
    let k = &v["kernels"];
    assert!(!k["isa"].as_str().unwrap().is_empty(), "{k}");
    assert!(k["default"].as_str().unwrap().contains("kc="), "{k}");
    assert!(
        k["choices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["shape"] == "big Aᵀ 284x64x1152" && c["source"] == "cache"),
        "{k}"
    );
    // A damaged cache file is set aside with a note, and the built-in choice is used.
    let file = p.join(".kernels").join(&files[0]);
    std::fs::write(&file, "{ not json").unwrap();
    let out3 = ok(p, &args);
    assert!(out3.contains("ignored: does not parse"), "{out3}");
}

#[test]
fn bench_breakdown_needs_a_warm_up_epoch() {
    let t = project();
    let o = seqpipe(t.path(), &["bench", "--breakdown", "--epochs", "1"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("needs `--epochs 2` or more"), "{err}");
}
