//! `outputs/<pipeline>/report.html`, the results page: self-contained (nothing fetched), a chart
//! per plot stage, the variants in its table; and, where a headless Chromium is installed, the
//! page as a real browser renders it (without one the browser test skips and says why, except
//! under CI=true, where it fails; scripts/test.sh installs `chromium-headless-shell` as root).

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Run a shipped pipeline quick (`*.epochs=2` where it trains); the run record.
fn run_quick(p: &Path, name: &str) -> serde_json::Value {
    let path = format!("pipelines/{name}.yaml");
    let mut args = vec!["run", "-q", path.as_str()];
    if std::fs::read_to_string(p.join(&path))
        .unwrap()
        .contains("epochs:")
    {
        args.extend(["--set", "*.epochs=2"]);
    }
    ok(p, &args);
    last_record(p, name)
}

fn names_of(record: &serde_json::Value, kind: &str) -> Vec<String> {
    record["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == kind)
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Every `src=` and `href=` value of a page.
fn links(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=", "href="] {
        let mut rest = html;
        while let Some(i) = rest.find(attr) {
            let after = &rest[i + attr.len()..];
            let v: String = after
                .trim_start_matches(['"', '\''])
                .chars()
                .take_while(|c| !matches!(c, '"' | '\'' | ' ' | '>'))
                .collect();
            out.push(v);
            rest = after;
        }
    }
    out
}

#[test]
fn the_results_page_is_self_contained_with_a_chart_per_plot_and_the_variants() {
    let t = project();
    let p = t.path();
    // A sweep of trainings on a log chart; bar and histogram charts; several files per input.
    for name in ["ex8_5_2", "ex8_3_5", "ex8_1_1"] {
        let record = run_quick(p, name);
        let page = p.join("outputs").join(name).join("report.html");
        let html = std::fs::read_to_string(&page)
            .unwrap_or_else(|_| panic!("{name}: no report.html beside report.md"));
        assert!(p.join("outputs").join(name).join("report.md").exists());
        assert!(html.len() < 3_000_000, "{name}: {} bytes", html.len());
        let external: Vec<String> = links(&html)
            .into_iter()
            .filter(|l| l.starts_with("http") || l.starts_with("//"))
            .collect();
        assert!(external.is_empty(), "{name} fetches {external:?}");
        assert!(!html.contains("<link"), "{name}: a stylesheet is linked");
        assert!(
            html.contains("uPlot"),
            "{name}: the chart library is inline"
        );
        let plots = names_of(&record, "plot");
        assert_eq!(
            html.matches("class=\"chart\" data-plot=").count(),
            plots.len(),
            "{name}: one chart element per plot stage"
        );
        for plot in &plots {
            assert!(
                html.contains(&format!("data-plot=\"{}\"", html_escape(plot))),
                "{name}: no chart of {plot}"
            );
        }
        // The rows of report.md's tables are rows of the page's.
        let md = std::fs::read_to_string(p.join("outputs").join(name).join("report.md")).unwrap();
        let rows: Vec<String> = record["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .filter(|n| md.contains(&format!("\n| {} |", n.replace('|', "\\|"))))
            .collect();
        assert!(!rows.is_empty(), "{name}: report.md has rows");
        for train in rows {
            assert!(
                html.contains(&format!("<td class=\"stage\">{}</td>", html_escape(&train))),
                "{name}: {train} is not a row of the results table"
            );
        }
        for key in [
            "run", "started", "ended", "host", "seqpipe", "device", "threads", "executor",
        ] {
            assert!(
                html.contains(&format!("<dt>{key}</dt>")),
                "{name}: no `{key}` in the run's identity"
            );
        }
        if name == "ex8_5_2" {
            assert!(html.contains("<th title=\"click to sort\">min perplexity</th>"));
            assert!(html.contains("<th title=\"click to sort\">best epoch</th>"));
        }
        assert!(
            !html.contains("<meta http-equiv=\"refresh\""),
            "{name}: the page of a finished run reloads itself"
        );
        if !names_of(&record, "train").is_empty() {
            assert!(
                !html.contains("<td class=\"text\">epoch "),
                "{name}: the text keeps its `epoch N (perplexity …):` prefix"
            );
        }
    }
}

/// A headless Chromium: `SEQPIPE_CHROMIUM`, else the first of the usual names on PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SEQPIPE_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for name in [
        "chromium-headless-shell",
        "chromium",
        "chromium-browser",
        "google-chrome",
    ] {
        for dir in std::env::split_paths(&path) {
            let c = dir.join(name);
            if c.is_file() {
                return Some(c);
            }
        }
    }
    None
}

/// Run the browser on `page` with `extra` flags: (stdout, stderr).
fn browse(chrome: &Path, profile: &Path, page: &Path, extra: &[&str]) -> (String, String) {
    let o = Command::new(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1200,1500",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{} failed: {}",
        chrome.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// ex8_5_2's page in a headless Chromium: the rendered DOM has a drawn chart per plot and the
/// variant names, no script error is logged, and a screenshot is not blank.
#[test]
fn the_results_page_renders_in_a_real_browser() {
    let Some(chrome) = chromium() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but no headless Chromium: scripts/test.sh installs chromium-headless-shell");
        }
        eprintln!("skipped: no chromium-headless-shell or chromium on PATH (scripts/test.sh installs it as root; SEQPIPE_CHROMIUM names one)");
        return;
    };
    let t = project();
    let p = t.path();
    let record = run_quick(p, "ex8_5_2");
    let page = p.join("outputs/ex8_5_2/report.html");

    let (dom, log) = browse(&chrome, &p.join("profile-dom"), &page, &["--dump-dom"]);
    let plots = names_of(&record, "plot");
    assert_eq!(
        dom.matches("class=\"uplot").count(),
        plots.len(),
        "a drawn chart per plot stage:\n{log}"
    );
    assert!(dom.contains("u-legend"), "the charts have legends");
    for train in names_of(&record, "train") {
        assert!(
            dom.contains(&html_escape(&train)),
            "the rendered page names {train}"
        );
    }
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(errors.is_empty(), "script errors: {errors:#?}");

    let shot = p.join("shot.png");
    let shot_arg = format!("--screenshot={}", shot.display());
    browse(&chrome, &p.join("profile-shot"), &page, &[&shot_arg]);
    let png = std::fs::read(&shot).expect("a screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // A blank 1200x1500 page compresses to a few kB; text, a table and a chart do not.
    assert!(
        png.len() > 40_000,
        "the screenshot looks blank: {} bytes",
        png.len()
    );
    if let Some(keep) = std::env::var_os("SEQPIPE_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}

/// A tiny training of `epochs` epochs with a chart and a report: a run to watch live.
fn live_pipeline(epochs: usize) -> String {
    format!(
        "name: live\nseed: 7\nstages:\n  corpus:\n    kind: load_corpus\n    params: {{ path: data/timemachine.txt }}\n  chars:\n    kind: tokenize\n    inputs: {{ corpus: corpus }}\n    params: {{ unit: char, max_tokens: 2000 }}\n  vocab:\n    kind: build_vocab\n    inputs: {{ tokens: chars }}\n  batches:\n    kind: sample_batches\n    inputs: {{ corpus: vocab }}\n    params: {{ strategy: sequential, batch_size: 8, num_steps: 10 }}\n  model:\n    kind: build_model\n    inputs: {{ data: batches }}\n    params: {{ arch: rnn, hidden: 16 }}\n  train:\n    kind: train\n    inputs: {{ model: model, data: batches }}\n    params: {{ epochs: {epochs}, lr: 1, sample_every: 0, num_preds: 5, checkpoint_every: 0 }}\n  curves:\n    kind: plot\n    inputs: [train]\n    params: {{ title: Perplexity, file: metrics.csv, x: epoch, y: perplexity }}\n  report:\n    kind: report\n    inputs: [train, curves]\n    params: {{ title: Live, columns: [final_perplexity] }}\n"
    )
}

const RELOAD: &str = "<meta http-equiv=\"refresh\"";

/// The points of the page's charts, all series together.
fn chart_points(html: &str) -> usize {
    let start = html
        .find("<script id=\"charts\" type=\"application/json\">")
        .expect("the page has its chart data");
    let rest = &html[start..];
    let json = &rest[rest.find('>').unwrap() + 1..rest.find("</script>").unwrap()];
    let charts: serde_json::Value = serde_json::from_str(json).unwrap();
    charts
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["series"].as_array().cloned().unwrap_or_default())
        .map(|s| s["points"].as_array().map_or(0, Vec::len))
        .sum()
}

/// Start `run live.yaml` with `args`, its page rewritten every 100 ms.
fn start_live_run(p: &Path, epochs: usize, args: &[&str]) -> Guard {
    std::fs::write(p.join("live.yaml"), live_pipeline(epochs)).unwrap();
    Guard(Some(
        Command::new(BIN)
            .args(["run", "-q", "live.yaml"])
            .args(args)
            .current_dir(p)
            .env("NO_COLOR", "1")
            .env("SEQPIPE_LIVE_EVERY_MS", "100")
            .env("SEQPIPE_SLURM_POLL", "0.2")
            .output_async(),
    ))
}

/// Read the page until it reloads itself and shows some epochs of the training (as it runs);
/// `None` if the run ended first. Returns the page and its points then.
fn live_page(p: &Path, run: &mut Guard) -> Option<(String, usize)> {
    let page = p.join("outputs/live/report.html");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        assert!(std::time::Instant::now() < deadline, "no live page");
        if let Ok(html) = std::fs::read_to_string(&page) {
            let points = chart_points(&html);
            if html.contains(RELOAD) && points > 0 {
                return Some((html, points));
            }
        }
        if run.get().try_wait().unwrap().is_some() {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// While a training runs, report.html exists, reloads itself and shows the epochs so far; the
/// page the run ends with does not reload and has every epoch; no live file is left.
fn watch_a_run(executor: &str) {
    let t = project();
    let p = t.path();
    // Long enough (about a second) that the page is caught while the training runs: 400
    // epochs (0.3 s) sometimes ended before the first page with epochs on it was read.
    let epochs = 4000;
    let mut run = start_live_run(p, epochs, &["--executor", executor]);
    let (html, points) = live_page(p, &mut run)
        .unwrap_or_else(|| panic!("{executor}: the run ended before its page showed epochs"));
    assert!(
        points < epochs,
        "{executor}: the live page shows {points} of {epochs} epochs"
    );
    assert!(
        html.contains("<td>running</td>"),
        "{executor}: the results table says the training runs"
    );
    assert!(html.contains("<dd>running…</dd>"));
    let o = run.take().wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "{executor}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let html = std::fs::read_to_string(p.join("outputs/live/report.html")).unwrap();
    assert!(
        !html.contains(RELOAD),
        "{executor}: the final page reloads itself"
    );
    assert!(!html.contains("<p class=\"live\">"));
    assert_eq!(chart_points(&html), epochs, "{executor}: every epoch");
    assert!(!html.contains("<td>running</td>"));
    assert!(
        !p.join("outputs/live/.live").exists(),
        "{executor}: the live files of a finished run are gone"
    );
    // The cached entry is the one a run without a page to watch makes.
    let metrics = std::fs::read_to_string(p.join("outputs/live/train/metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), epochs + 1);
}

#[test]
fn the_page_is_live_while_a_training_runs() {
    watch_a_run("local");
}

#[test]
fn the_page_is_live_with_the_process_executor() {
    watch_a_run("process");
}

/// The driver reads the progress that Slurm jobs write in the project (a shared filesystem).
#[test]
fn the_page_is_live_with_the_slurm_executor() {
    if !slurm_available() {
        return;
    }
    watch_a_run("slurm");
}

/// A run stopped by Ctrl-C leaves a page that does not reload and says it stopped; the next
/// run does not show what the stopped one left as its progress.
#[test]
fn an_interrupted_run_leaves_a_final_page() {
    let t = project();
    let p = t.path();
    let mut run = start_live_run(p, 100_000, &[]);
    live_page(p, &mut run).expect("the long run showed no live page");
    unsafe { libc::kill(run.get().id() as i32, libc::SIGINT) };
    let o = run.take().wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130));
    let html = std::fs::read_to_string(p.join("outputs/live/report.html")).unwrap();
    assert!(!html.contains(RELOAD), "a stopped run's page reloads");
    assert!(html.contains("The run stopped before its end"));
    assert!(html.contains("<dd>stopped</dd>"));
    let left = p.join("outputs/live/.live/train.csv");
    assert!(left.exists(), "the killed training's rows are still there");
    // The next run clears what the stopped one left; its page shows its own epochs.
    std::fs::write(p.join("live.yaml"), live_pipeline(3)).unwrap();
    ok(p, &["run", "-q", "live.yaml"]);
    let html = std::fs::read_to_string(p.join("outputs/live/report.html")).unwrap();
    assert_eq!(chart_points(&html), 3);
    assert!(!left.exists());
}
