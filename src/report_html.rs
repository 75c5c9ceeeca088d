//! `outputs/<pipeline>/report.html`: the results page people open, written beside `report.md`
//! by every run that has a `report` stage. One self-contained file that works offline: the
//! vendored chart library (uPlot, MIT, `assets/uplot/`), its styles and the data are inline.
//! While the run goes on the page is rewritten with the trainings' epochs so far (their live
//! files, [`crate::live`]) and reloads itself ([`LivePage`]); the page the run ends with does not.
//!
//! - a chart per `plot` input: hover shows each series' value, a click on a legend entry hides
//!   or shows a series, dragging zooms (double-click zooms out), log axes where the plot asks
//!   for them, a colour (and past ten series a dash) of its own for every series, and a
//!   training's validation perplexity beside its training perplexity when it has one;
//! - a results table per kind of input, sortable by a click on a header: the params that differ,
//!   the report's summary columns, final, minimum and best-epoch perplexity, whether a training
//!   diverged, and the generated text without its `epoch N (perplexity …):` prefix;
//! - the run's identity (id, times, host, version, commit, device, threads, executor) and the
//!   measured speed, which are outside every key: the page is never part of a cached entry.

use crate::context::InputInfo;
use crate::plot::Style;
use crate::results::fmt_value;
use crate::stages::plot_stage::{ChartKind, Feed, Plot, ScaleParam, Source};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const UPLOT_JS: &str = include_str!("../assets/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../assets/uplot/uPlot.min.css");

/// Who ran what, where: shown at the top of the page.
#[derive(Debug, Clone, Default)]
pub struct RunIdentity {
    pub run_id: String,
    pub started_unix_ms: u128,
    /// `None` while the run goes on.
    pub ended_unix_ms: Option<u128>,
    pub host: String,
    pub version: String,
    /// The project's commit, when it is a git checkout.
    pub git_commit: Option<String>,
    pub device: String,
    pub threads: usize,
    /// The launcher (shown as the users' word for it, "executor").
    pub launcher: String,
}

impl RunIdentity {
    /// The identity of a run that ends now, with the host name and the project's commit
    /// found here.
    pub fn new(
        root: &Path,
        run_id: &str,
        started_unix_ms: u128,
        device: &str,
        threads: usize,
        launcher: &str,
    ) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        RunIdentity {
            run_id: run_id.to_string(),
            started_unix_ms,
            ended_unix_ms: Some(now),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: git_commit(root),
            device: device.to_string(),
            threads,
            launcher: launcher.to_string(),
        }
    }
}

/// `git rev-parse HEAD` in `root`, when `root` is a git checkout and git answers.
fn git_commit(root: &Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && s.len() >= 7 && s.chars().all(|c| c.is_ascii_hexdigit())).then_some(s)
}

/// Where the page takes a stage's results from.
#[derive(Debug, Clone, PartialEq)]
pub enum InputState {
    /// Its view under `outputs/<pipeline>/`: done (or not part of this run).
    View,
    /// Running: its epoch rows so far (the columns of `metrics.csv`), read from its live file
    /// ([`crate::live`]); empty while it has none.
    Live(Vec<u8>),
    /// Nothing to show in this run: `waiting`, `failed`, `skipped`.
    Absent(&'static str),
}

impl InputState {
    fn feed(&self) -> Feed<'_> {
        match self {
            InputState::View => Feed::Files,
            InputState::Live(rows) if !rows.is_empty() => Feed::Rows(rows),
            _ => Feed::Nothing,
        }
    }

    /// What a results table says of a stage with no summary.
    fn word(&self) -> &'static str {
        match self {
            InputState::View => "not run",
            InputState::Live(_) => "running",
            InputState::Absent(w) => w,
        }
    }
}

/// One input of the report, as published under `outputs/<pipeline>/`.
#[derive(Debug, Clone)]
pub struct PageInput {
    pub info: InputInfo,
    pub state: InputState,
    /// A plot's own inputs (its series are read from them again).
    pub plot_inputs: Vec<(InputInfo, InputState)>,
}

pub struct Page<'a> {
    pub pipeline: &'a str,
    /// The report stage's params (title, text, columns).
    pub report: &'a Value,
    pub inputs: Vec<PageInput>,
    pub run: RunIdentity,
    /// (stage, median tokens/s).
    pub speeds: Vec<(String, f64)>,
    /// While the run goes on the page reloads itself.
    pub live: bool,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A paragraph of the pipeline file's prose: escaped, `code` kept as code.
fn prose(s: &str) -> String {
    esc(s.trim())
        .split("\n\n")
        .map(|para| {
            let mut out = String::new();
            for (i, part) in para.split('`').enumerate() {
                if i % 2 == 1 {
                    out.push_str(&format!("<code>{part}</code>"));
                } else {
                    out.push_str(part);
                }
            }
            format!("<p>{}</p>\n", out.replace('\n', " "))
        })
        .collect()
}

/// UTC `YYYY-MM-DD HH:MM:SS` of a Unix time in milliseconds.
pub fn utc(ms: u128) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Days to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The generated text without the `epoch N (perplexity …): ` the samples file puts before it.
pub fn strip_epoch_prefix(line: &str) -> &str {
    if let Some(rest) = line.strip_prefix("epoch ") {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 && rest[digits..].starts_with(" (") {
            if let Some(end) = rest.find("): ") {
                return &rest[end + 3..];
            }
        }
    }
    line
}

/// Perplexity numbers of a training, from its `metrics.csv`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Curve {
    pub final_ppl: Option<f64>,
    pub min_ppl: Option<(f64, f64)>,
    pub final_valid: Option<f64>,
    pub min_valid: Option<(f64, f64)>,
}

type MetricRows = Vec<(f64, Option<f64>, Option<f64>)>;

/// (epoch, perplexity, valid perplexity) rows of a stage's `metrics.csv`, or of its epoch rows
/// so far while it runs.
fn metric_rows(dir: &Path, state: &InputState) -> Option<MetricRows> {
    match state.feed() {
        Feed::Files => metric_rows_of(csv::Reader::from_path(dir.join("metrics.csv")).ok()?),
        Feed::Rows(rows) => metric_rows_of(csv::Reader::from_reader(rows)),
        Feed::Nothing => None,
    }
}

fn metric_rows_of<R: std::io::Read>(mut r: csv::Reader<R>) -> Option<MetricRows> {
    let h = r.headers().ok()?.clone();
    let col = |c: &str| h.iter().position(|n| n == c);
    let (e, p, v) = (col("epoch")?, col("perplexity")?, col("valid_perplexity"));
    let num = |rec: &csv::StringRecord, i: usize| rec.get(i)?.trim().parse::<f64>().ok();
    Some(
        r.records()
            .filter_map(|rec| rec.ok())
            .filter_map(|rec| Some((num(&rec, e)?, num(&rec, p), v.and_then(|v| num(&rec, v)))))
            .collect(),
    )
}

pub fn curve(dir: &Path, state: &InputState) -> Option<Curve> {
    let rows = metric_rows(dir, state)?;
    if rows.iter().all(|r| r.1.is_none()) {
        return None;
    }
    let min = |f: &dyn Fn(&(f64, Option<f64>, Option<f64>)) -> Option<f64>| {
        rows.iter()
            .filter_map(|r| Some((r.0, f(r)?)))
            .filter(|(_, v)| v.is_finite())
            .fold(None, |best: Option<(f64, f64)>, (e, v)| match best {
                Some((_, b)) if b <= v => best,
                _ => Some((e, v)),
            })
    };
    Some(Curve {
        final_ppl: rows.last().and_then(|r| r.1),
        min_ppl: min(&|r| r.1),
        final_valid: rows.last().and_then(|r| r.2),
        min_valid: min(&|r| r.2),
    })
}

/// A table cell: shown text and the value a click on its header sorts by.
fn cell(text: &str, sort: Option<f64>) -> String {
    match sort {
        Some(v) if v.is_finite() => format!("<td data-v=\"{v}\">{}</td>", esc(text)),
        _ => format!("<td>{}</td>", esc(text)),
    }
}

fn num(v: Option<f64>) -> (String, Option<f64>) {
    match v {
        Some(f) => (fmt_value(&json!(f)), Some(f)),
        None => ("–".into(), None),
    }
}

/// One sortable table of the inputs of one kind.
fn results_table(kind: &str, inputs: &[&PageInput], columns: &[String]) -> String {
    let rows: Vec<&InputInfo> = inputs.iter().map(|i| &i.info).collect();
    let done = |i: usize| inputs[i].state == InputState::View;
    let flat: Vec<BTreeMap<String, String>> = rows
        .iter()
        .map(|r| {
            let mut m = BTreeMap::new();
            crate::results::flatten("", &r.params, &mut m);
            // The sweep axes of the variant name (an upstream stage's, e.g. `activation`).
            for (k, v) in crate::stages::plot_stage::axes(&r.stage) {
                m.entry(k).or_insert(v);
            }
            m
        })
        .collect();
    let differing = crate::results::differing_keys(&flat);
    let summaries: Vec<Option<serde_json::Map<String, Value>>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            done(i)
                .then(|| crate::context::read_summary(&r.dir).ok())
                .flatten()
        })
        .collect();
    let cols = crate::results::summary_columns(columns, &summaries);
    let curves: Vec<Option<Curve>> = inputs
        .iter()
        .map(|r| curve(&r.info.dir, &r.state))
        .collect();
    let has_curve = curves.iter().any(Option::is_some);
    let has_valid = curves.iter().flatten().any(|c| c.final_valid.is_some());
    let has_diverged = !cols.iter().any(|c| c == "diverged")
        && summaries
            .iter()
            .flatten()
            .any(|s| s.contains_key("diverged"));
    let texts: Vec<Option<String>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| done(i).then(|| crate::results::last_text(&r.dir)).flatten())
        .collect();
    let has_text = texts.iter().any(Option::is_some);

    let mut head = vec!["stage".to_string()];
    head.extend(differing.iter().cloned());
    head.extend(cols.iter().cloned());
    // The report's own `final_perplexity` column says it already.
    let has_final = !cols.iter().any(|c| c == "final_perplexity");
    if has_curve {
        if has_final {
            head.push("final perplexity".into());
        }
        head.extend(["min perplexity", "best epoch"].map(String::from));
    }
    let has_final_valid = !cols.iter().any(|c| c == "final_valid_perplexity");
    if has_valid {
        if has_final_valid {
            head.push("final valid perplexity".into());
        }
        head.extend(["min valid perplexity", "best valid epoch"].map(String::from));
    }
    if has_diverged {
        head.push("diverged".into());
    }
    if has_text {
        head.push("text".into());
    }
    let mut html = format!(
        "<table class=\"results sortable\" data-kind=\"{}\">\n<thead><tr>{}</tr></thead>\n<tbody>\n",
        esc(kind),
        head.iter()
            .map(|h| format!("<th title=\"click to sort\">{}</th>", esc(h)))
            .collect::<String>()
    );
    for (i, r) in rows.iter().enumerate() {
        html.push_str(&format!("<tr><td class=\"stage\">{}</td>", esc(&r.stage)));
        for k in &differing {
            let v = flat[i].get(k).cloned().unwrap_or_else(|| "–".into());
            let n = v.parse::<f64>().ok();
            html.push_str(&cell(&v, n));
        }
        for c in &cols {
            let (t, n) = match &summaries[i] {
                Some(s) => match s.get(c) {
                    Some(v) => (fmt_value(v), v.as_f64()),
                    None => ("–".into(), None),
                },
                None => (inputs[i].state.word().into(), None),
            };
            html.push_str(&cell(&t, n));
        }
        let c = curves[i].clone().unwrap_or_default();
        let mut push_num = |v: Option<f64>| {
            let (t, n) = num(v);
            html.push_str(&cell(&t, n));
        };
        if has_curve {
            if has_final {
                push_num(c.final_ppl);
            }
            push_num(c.min_ppl.map(|m| m.1));
            push_num(c.min_ppl.map(|m| m.0));
        }
        if has_valid {
            if has_final_valid {
                push_num(c.final_valid);
            }
            push_num(c.min_valid.map(|m| m.1));
            push_num(c.min_valid.map(|m| m.0));
        }
        if has_diverged {
            let d = summaries[i]
                .as_ref()
                .and_then(|s| s.get("diverged"))
                .map(fmt_value)
                .unwrap_or_else(|| "–".into());
            html.push_str(&cell(&d, None));
        }
        if has_text {
            let t = texts[i].as_deref().map(strip_epoch_prefix).unwrap_or("");
            html.push_str(&format!("<td class=\"text\">{}</td>", esc(t)));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody></table>\n");
    html
}

/// A Markdown table (`table.md` of a summary_table or encode stage) as HTML.
fn markdown_table(md: &str) -> String {
    let mut html = String::new();
    let mut in_table = false;
    let mut header_done = false;
    for line in md.lines() {
        let l = line.trim();
        if l.starts_with('|') {
            if !in_table {
                html.push_str("<table class=\"results sortable\">\n");
                in_table = true;
                header_done = false;
            }
            let cells: Vec<String> = l
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().replace("\\|", "|"))
                .collect();
            if cells.iter().all(|c| c.chars().all(|ch| "-: ".contains(ch))) {
                continue;
            }
            let tag = if header_done { "td" } else { "th" };
            let row: String = cells
                .iter()
                .map(|c| match (tag, c.parse::<f64>()) {
                    ("td", Ok(v)) => cell(c, Some(v)),
                    _ => format!("<{tag}>{}</{tag}>", esc(c)),
                })
                .collect();
            if header_done {
                html.push_str(&format!("<tr>{row}</tr>\n"));
            } else {
                html.push_str(&format!("<thead><tr>{row}</tr></thead>\n"));
                header_done = true;
            }
        } else {
            if in_table {
                html.push_str("</table>\n");
                in_table = false;
            }
            let t = l.trim_start_matches('#').trim();
            if !t.is_empty() {
                html.push_str(&prose(t));
            }
        }
    }
    if in_table {
        html.push_str("</table>\n");
    }
    html
}

/// The chart of one plot stage as data for the page's script.
fn chart_json(stage: &str, params: &Value, fed: &[(InputInfo, InputState)]) -> Result<Value> {
    let plot: Plot = serde_json::from_value(params.clone())
        .with_context(|| format!("reading the params of plot `{stage}`"))?;
    let inputs: Vec<InputInfo> = fed.iter().map(|(i, _)| i.clone()).collect();
    let series = plot.series_fed(&inputs, &|i| fed[i].1.feed())?;
    let ys = match &plot.y {
        crate::stages::plot_stage::OneOrMany::One(y) => vec![y.clone()],
        crate::stages::plot_stage::OneOrMany::Many(v) => v.clone(),
    };
    let mut out: Vec<Value> = Vec::new();
    let mut colour = 0usize;
    let kind = match plot.chart {
        ChartKind::Line => "line",
        ChartKind::Points => "points",
        ChartKind::Bar | ChartKind::Histogram => "bars",
    };
    let pts = |p: &[(f64, f64)]| -> Vec<[Value; 2]> {
        p.iter()
            .map(|&(x, y)| [json!(x), if y.is_finite() { json!(y) } else { Value::Null }])
            .collect()
    };
    if plot.chart == ChartKind::Histogram {
        for (name, bins) in crate::stages::plot_stage::histogram(&series, plot.bins) {
            let p: Vec<(f64, f64)> = bins.iter().map(|b| (b.0, b.2)).collect();
            out.push(json!({"name": name, "colour": colour, "dash": false, "points": pts(&p)}));
            colour += 1;
        }
    } else {
        // A training's held-out perplexity beside its training perplexity, in its colour, dashed.
        let valid_pairs = plot.source == Source::File
            && plot.file.as_deref() == Some("metrics.csv")
            && plot.files.is_empty()
            && ys == ["perplexity"];
        for s in &series {
            let dashed = s.style == Style::Dashed;
            out.push(json!({
                "name": s.name, "colour": colour, "dash": dashed,
                "style": match s.style { Style::Points => "points", Style::LineAndPoints => "line+points", _ => "line" },
                "points": pts(&s.points),
            }));
            colour += 1;
        }
        if valid_pairs {
            for (i, (info, state)) in fed.iter().enumerate() {
                let Some(rows) = metric_rows(&info.dir, state) else {
                    continue;
                };
                let v: Vec<(f64, f64)> = rows.iter().filter_map(|r| Some((r.0, r.2?))).collect();
                if v.is_empty() {
                    continue;
                }
                let base = if inputs.len() > 1 {
                    info.stage.clone()
                } else {
                    "perplexity".into()
                };
                out.push(json!({
                    "name": format!("{base} (valid)"), "colour": i, "dash": true,
                    "style": "line", "points": pts(&v),
                }));
            }
        }
    }
    let x_label = plot.x_label.clone().unwrap_or_else(|| match plot.chart {
        ChartKind::Histogram => ys.join(", "),
        _ => plot.x.clone(),
    });
    let y_label = plot.y_label.clone().unwrap_or_else(|| match plot.chart {
        ChartKind::Histogram => format!("count of {}", plot.x),
        _ => ys.join(", "),
    });
    Ok(json!({
        "stage": stage,
        "title": plot.title,
        "kind": kind,
        "x_label": x_label,
        "y_label": y_label,
        "x_log": plot.x_scale == ScaleParam::Log && plot.chart != ChartKind::Histogram && plot.chart != ChartKind::Bar,
        "y_log": plot.y_scale == ScaleParam::Log && plot.chart != ChartKind::Histogram,
        "series": out,
    }))
}

/// JSON safe inside a `<script>` element.
fn script_json(v: &Value) -> String {
    serde_json::to_string(v)
        .unwrap_or_else(|_| "null".into())
        .replace("</", "<\\/")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// The whole page.
pub fn render(page: &Page) -> Result<String> {
    let title = page
        .report
        .get("title")
        .and_then(Value::as_str)
        .unwrap_or(page.pipeline)
        .to_string();
    let columns: Vec<String> = page
        .report
        .get("columns")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut body = format!("<h1>{}</h1>\n", esc(&title));
    let r = &page.run;
    let mut ident = vec![
        ("pipeline", page.pipeline.to_string()),
        ("run", r.run_id.clone()),
        ("started", utc(r.started_unix_ms)),
        (
            "ended",
            match r.ended_unix_ms {
                Some(t) => utc(t),
                None => RUNNING.into(),
            },
        ),
        ("host", r.host.clone()),
        ("seqpipe", r.version.clone()),
    ];
    if let Some(c) = &r.git_commit {
        ident.push(("commit", c.clone()));
    }
    ident.push(("device", r.device.clone()));
    ident.push(("threads", r.threads.to_string()));
    ident.push(("executor", r.launcher.clone()));
    body.push_str("<dl class=\"run\">");
    for (k, v) in &ident {
        body.push_str(&format!("<div><dt>{k}</dt><dd>{}</dd></div>", esc(v)));
    }
    body.push_str("</dl>\n");
    if page.live {
        body.push_str(LIVE_NOTE);
    }
    if let Some(t) = page.report.get("text").and_then(Value::as_str) {
        body.push_str(&prose(t));
    }

    let mut charts: Vec<Value> = Vec::new();
    let mut groups: Vec<(String, Vec<&PageInput>)> = Vec::new();
    let mut tables = String::new();
    for input in &page.inputs {
        let info = &input.info;
        if input.state == InputState::View && info.dir.join("table.md").exists() {
            let t = std::fs::read_to_string(info.dir.join("table.md"))
                .with_context(|| format!("reading the table of `{}`", info.stage))?;
            tables.push_str(&format!(
                "<h3>{}</h3>\n{}",
                esc(&info.stage),
                markdown_table(&t)
            ));
        } else if info.kind == "plot" {
            match chart_json(&info.stage, &info.params, &input.plot_inputs) {
                Ok(c) => charts.push(c),
                // While a run goes on a plot's inputs may not be there yet.
                Err(e) => charts.push(
                    json!({"stage": info.stage, "title": info.stage, "error": format!("{e:#}")}),
                ),
            }
        } else {
            match groups.iter_mut().find(|(k, _)| *k == info.kind) {
                Some((_, g)) => g.push(input),
                None => groups.push((info.kind.clone(), vec![input])),
            }
        }
    }
    if !groups.is_empty() || !tables.is_empty() {
        body.push_str(
            "<h2>Results</h2>\n<p class=\"hint\">Click a column's header to sort by it.</p>\n",
        );
        for (kind, rows) in &groups {
            if groups.len() > 1 {
                body.push_str(&format!("<h3><code>{}</code> stages</h3>\n", esc(kind)));
            }
            body.push_str(&results_table(kind, rows, &columns));
        }
        body.push_str(&tables);
    }
    if !charts.is_empty() {
        body.push_str("<h2>Plots</h2>\n<p class=\"hint\">Hover for values; click a legend entry to hide or show its series; drag to zoom, double-click to zoom out.</p>\n");
        for c in &charts {
            let stage = c["stage"].as_str().unwrap_or_default();
            body.push_str(&format!(
                "<section class=\"plot\"><h3>{}</h3><div class=\"chart\" data-plot=\"{}\"></div></section>\n",
                esc(c["title"].as_str().unwrap_or(stage)),
                esc(stage)
            ));
        }
    }
    if !page.speeds.is_empty() {
        body.push_str("<h2>Speed</h2>\n<p>Wall-clock training speed of this machine, the median over epochs of each stage's <code>speed.csv</code>. Timings differ from run to run, so they are kept out of every cached result.</p>\n<table class=\"results sortable\"><thead><tr><th>stage</th><th>tokens/s</th></tr></thead>\n");
        for (s, v) in &page.speeds {
            body.push_str(&format!(
                "<tr><td>{}</td>{}</tr>\n",
                esc(s),
                cell(&format!("{v:.0}"), Some(*v))
            ));
        }
        body.push_str("</table>\n");
    }
    let refresh = if page.live { REFRESH } else { "" };
    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n{refresh}<title>{t}</title>\n<!-- uPlot {ver}, MIT licence: assets/uplot/LICENSE of seqpipe -->\n<style>\n{UPLOT_CSS}\n{PAGE_CSS}</style>\n<script>\n{UPLOT_JS}\n</script>\n</head>\n<body>\n{body}<script id=\"charts\" type=\"application/json\">{data}</script>\n<script>\n{PAGE_JS}</script>\n</body>\n</html>\n",
        t = esc(&title),
        ver = "1.6.32",
        data = script_json(&Value::Array(charts)),
    ))
}

/// Gather the page of report stage `stage` of `p` from the views under `outputs/<pipeline>/`
/// and, while the run goes on, the live rows of its running trainings: `state` says where each
/// stage's results are (by its index in `p`).
pub fn page_of<'a>(
    outputs: &Path,
    p: &'a crate::pipeline::Pipeline,
    stage: usize,
    report: &'a Value,
    run: RunIdentity,
    live: bool,
    state: &dyn Fn(usize) -> InputState,
) -> Page<'a> {
    let view = |u: usize| -> InputInfo {
        let st = &p.stages[u];
        InputInfo {
            stage: st.name.clone(),
            kind: st.kind.name.to_string(),
            params: st.params.canonical_params(),
            dir: outputs.join(&p.name).join(&st.name),
        }
    };
    let inputs = p.stages[stage]
        .inputs
        .iter()
        .map(|(_, u)| PageInput {
            info: view(*u),
            state: state(*u),
            plot_inputs: if p.stages[*u].kind.name == "plot" {
                p.stages[*u]
                    .inputs
                    .iter()
                    .map(|(_, w)| (view(*w), state(*w)))
                    .collect()
            } else {
                vec![]
            },
        })
        .collect();
    let speeds = p.stages[stage]
        .inputs
        .iter()
        .filter(|(_, u)| state(*u) == InputState::View)
        .filter_map(|(_, u)| {
            let name = &p.stages[*u].name;
            let dir: PathBuf = outputs.join(&p.name).join(name);
            crate::results::median_speed(&dir).map(|s| (name.clone(), s))
        })
        .collect();
    Page {
        pipeline: &p.name,
        report,
        inputs,
        run,
        speeds,
        live,
    }
}

/// The page of report stage `stage` of `p` (see [`page_of`]).
pub fn page_html(
    outputs: &Path,
    p: &crate::pipeline::Pipeline,
    stage: usize,
    run: RunIdentity,
    live: bool,
    state: &dyn Fn(usize) -> InputState,
) -> Result<String> {
    let report = p.stages[stage].params.canonical_params();
    render(&page_of(outputs, p, stage, &report, run, live, state))
}

/// `outputs/<pipeline>/report.html`.
pub fn page_path(outputs: &Path, pipeline: &str) -> PathBuf {
    outputs.join(pipeline).join("report.html")
}

/// What makes a page live: the reload, the note, the end time not known yet. The final page has
/// none of them; a live page that a run left when it stopped short has them replaced.
const REFRESH: &str = "<meta http-equiv=\"refresh\" content=\"3\">\n";
const LIVE_NOTE: &str = "<p class=\"live\">The run goes on: this page shows the epochs finished so far and reloads itself every few seconds.</p>\n";
const RUNNING: &str = "running…";
const STOPPED_NOTE: &str = "<p class=\"live\">The run stopped before its end (interrupted, or an error): this page shows what was done by then.</p>\n";
const STOPPED: &str = "stopped";

/// How often a live page is rewritten at most: every 2 s, or `SEQPIPE_LIVE_EVERY_MS`
/// (100 to 60,000; the tests make it short).
pub fn live_every() -> std::time::Duration {
    let ms = std::env::var("SEQPIPE_LIVE_EVERY_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(2000, |v| v.clamp(100, 60_000));
    std::time::Duration::from_millis(ms)
}

/// The most a page seqpipe wrote may have when it reads it back to end it.
const MAX_PAGE: u64 = 256 << 20;

/// The live pages of this process: a page is written only while it is here, under the lock,
/// so that an interrupt ends each one once, after any write in progress.
fn live_pages() -> &'static std::sync::Mutex<Vec<PathBuf>> {
    static P: std::sync::OnceLock<std::sync::Mutex<Vec<PathBuf>>> = std::sync::OnceLock::new();
    P.get_or_init(Default::default)
}

fn lock_live_pages() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    live_pages().lock().unwrap_or_else(|e| e.into_inner())
}

fn write_page(path: &Path, html: &str) -> Result<()> {
    crate::fsutil::write_synced(path, html.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// A live page as it reads once its run stopped short: no reload, a note that says so.
pub fn stopped(html: &str) -> String {
    html.replacen(REFRESH, "", 1)
        .replacen(LIVE_NOTE, STOPPED_NOTE, 1)
        .replacen(
            &format!("<dd>{RUNNING}</dd>"),
            &format!("<dd>{STOPPED}</dd>"),
            1,
        )
}

/// End a live page this process wrote: it stops reloading.
fn end_live(path: &Path) {
    if let Ok(bytes) = crate::fsutil::read_bounded(path, MAX_PAGE) {
        if let Ok(html) = String::from_utf8(bytes) {
            if html.contains(REFRESH) {
                let _ = write_page(path, &stopped(&html));
            }
        }
    }
}

/// End every live page of this process (on Ctrl-C, before it exits): each stops reloading.
pub fn end_live_pages_on_exit() {
    let mut pages = lock_live_pages();
    for p in pages.drain(..) {
        end_live(&p);
    }
}

/// The results page of a run that goes on: rewritten at most every [`live_every`] while it
/// reloads itself, then written once more, final. Dropped before [`LivePage::finish`] (an
/// error ended the run), the page written last stops reloading.
pub struct LivePage {
    path: PathBuf,
    last: Option<std::time::Instant>,
    last_html: String,
    open: bool,
    every: std::time::Duration,
}

impl LivePage {
    pub fn new(path: PathBuf) -> Self {
        lock_live_pages().push(path.clone());
        LivePage {
            path,
            last: None,
            last_html: String::new(),
            open: true,
            every: live_every(),
        }
    }

    /// Whether a rewrite is due ([`live_every`] has passed since the last one).
    pub fn due(&self) -> bool {
        self.last.is_none_or(|t| t.elapsed() >= self.every)
    }

    /// Write `html`, a live page, when it differs from the one written last.
    pub fn show(&mut self, html: String) -> Result<()> {
        self.last = Some(std::time::Instant::now());
        if html == self.last_html {
            return Ok(());
        }
        let pages = lock_live_pages();
        if pages.contains(&self.path) {
            write_page(&self.path, &html)?;
        }
        drop(pages);
        self.last_html = html;
        Ok(())
    }

    /// Write the final page.
    pub fn finish(mut self, html: &str) -> Result<()> {
        self.open = false;
        let mut pages = lock_live_pages();
        if let Some(i) = pages.iter().position(|p| *p == self.path) {
            pages.remove(i);
        }
        write_page(&self.path, html)
    }
}

impl Drop for LivePage {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let mut pages = lock_live_pages();
        if let Some(i) = pages.iter().position(|p| *p == self.path) {
            pages.remove(i);
            end_live(&self.path);
        }
    }
}

const PAGE_CSS: &str = r##"
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: .3em; }
code { background: #f3f3f3; padding: 0 .2em; border-radius: 3px; }
dl.run { display: flex; flex-wrap: wrap; gap: .2em 1.4em; font-size: .85em; color: #555; margin: 0 0 1em; }
dl.run div { display: flex; gap: .35em; }
dl.run dt { font-weight: 600; }
dl.run dd { margin: 0; font-family: ui-monospace, monospace; }
p.live { background: #fff6d6; padding: .4em .7em; border-radius: 4px; }
p.hint { color: #777; font-size: .85em; }
table.results { border-collapse: collapse; font-size: .88em; margin: .5em 0 1.5em; display: block; overflow-x: auto; max-width: 100%; }
table.results th, table.results td { border-bottom: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
table.results th { cursor: pointer; user-select: none; background: #f7f7f7; position: sticky; top: 0; }
table.results th.asc::after { content: " ▲"; } table.results th.desc::after { content: " ▼"; }
table.results td[data-v] { text-align: right; font-variant-numeric: tabular-nums; }
table.results td.text { font-family: ui-monospace, monospace; white-space: pre-wrap; max-width: 32em; }
table.results tbody tr:hover { background: #f4f8ff; }
section.plot { margin: 1em 0 2em; }
section.plot h3 { margin-bottom: .2em; }
.chart .u-legend { text-align: left; font-size: .85em; }
.chart .u-legend .u-series { cursor: pointer; }
.chart-error { color: #a00; }
"##;

const PAGE_JS: &str = r##"
(function () {
  "use strict";
  // Ten distinct colours (Tableau 10); past ten series the colours repeat with a dash.
  var COLOURS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
  var DASHES = [null, [10, 4], [2, 3], [12, 3, 3, 3]];
  function fmt(v) {
    if (v == null || !isFinite(v)) return "–";
    var a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(3);
    return String(Math.round(v * 1e4) / 1e4);
  }
  function build(c, el) {
    if (c.error) { el.innerHTML = ""; var p = document.createElement("p"); p.className = "chart-error"; p.textContent = c.error; el.appendChild(p); return; }
    var xs = [], seen = new Map();
    c.series.forEach(function (s) { s.points.forEach(function (p) {
      var x = p[0]; if (x == null || (c.x_log && !(x > 0))) return;
      if (!seen.has(x)) { seen.set(x, true); xs.push(x); } }); });
    xs.sort(function (a, b) { return a - b; });
    var at = new Map(xs.map(function (x, i) { return [x, i]; }));
    var data = [xs];
    c.series.forEach(function (s) {
      var ys = new Array(xs.length).fill(null);
      s.points.forEach(function (p) {
        var y = p[1]; if (y == null || !isFinite(y) || (c.y_log && !(y > 0))) return;
        var i = at.get(p[0]); if (i != null) ys[i] = y; });
      data.push(ys);
    });
    var bars = c.kind === "bars" && uPlot.paths && uPlot.paths.bars;
    var series = [{ label: c.x_label, value: function (u, v) { return fmt(v); } }];
    c.series.forEach(function (s, i) {
      var colour = COLOURS[s.colour % COLOURS.length];
      var dash = s.dash ? [6, 4] : DASHES[Math.floor(s.colour / COLOURS.length) % DASHES.length];
      var o = { label: s.name, stroke: colour, width: 1.6, spanGaps: true, value: function (u, v) { return fmt(v); } };
      if (dash) o.dash = dash;
      if (bars) { o.paths = uPlot.paths.bars({ size: [0.8, 60] }); o.fill = colour + "66"; o.points = { show: false }; }
      else if (c.kind === "points" || s.style === "points") { o.paths = function () { return null; }; o.points = { show: true, size: 6, fill: colour }; }
      else if (s.style === "line+points") { o.points = { show: true, size: 5, fill: colour }; }
      else { o.points = { show: false }; }
      series.push(o);
    });
    var width = Math.max(320, el.clientWidth || 900);
    var opts = {
      width: width, height: Math.round(Math.min(520, Math.max(300, width * 0.55))),
      scales: { x: { time: false, distr: c.x_log ? 3 : 1 }, y: { distr: c.y_log ? 3 : 1 } },
      axes: [{ label: c.x_label }, { label: c.y_label }],
      series: series,
      cursor: { drag: { x: true, y: true, uni: 40 } },
      legend: { live: true }
    };
    var u = new uPlot(opts, data, el);
    window.addEventListener("resize", function () {
      var w = Math.max(320, el.clientWidth || 900);
      u.setSize({ width: w, height: Math.round(Math.min(520, Math.max(300, w * 0.55))) });
    });
  }
  var charts = JSON.parse(document.getElementById("charts").textContent);
  charts.forEach(function (c) {
    var el = document.querySelector('.chart[data-plot="' + CSS.escape(c.stage) + '"]');
    if (el) build(c, el);
  });
  // Sortable tables: a click on a header sorts by that column, a second click reverses.
  document.querySelectorAll("table.sortable").forEach(function (t) {
    var heads = t.querySelectorAll("thead th");
    heads.forEach(function (th, col) {
      th.addEventListener("click", function () {
        var asc = !th.classList.contains("asc");
        heads.forEach(function (h) { h.classList.remove("asc", "desc"); });
        th.classList.add(asc ? "asc" : "desc");
        var body = t.tBodies[0] || t;
        var rows = Array.prototype.slice.call(body.querySelectorAll("tr")).filter(function (r) { return r.parentNode === body && r.querySelector("td"); });
        rows.sort(function (a, b) {
          var x = a.children[col], y = b.children[col];
          var xv = x && x.dataset.v, yv = y && y.dataset.v;
          var r;
          if (xv != null && yv != null) r = parseFloat(xv) - parseFloat(yv);
          else if (xv != null) r = -1; else if (yv != null) r = 1;
          else r = (x ? x.textContent : "").localeCompare(y ? y.textContent : "", undefined, { numeric: true });
          return asc ? r : -r;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_prefix_goes_and_other_text_stays() {
        assert_eq!(
            strip_epoch_prefix("epoch 500 (perplexity 1.15): time traveller said"),
            "time traveller said"
        );
        assert_eq!(strip_epoch_prefix("epoch 3 (perplexity 1.500e20): x"), "x");
        assert_eq!(strip_epoch_prefix("epoch of time"), "epoch of time");
        assert_eq!(strip_epoch_prefix("plain"), "plain");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn json_cannot_close_its_script() {
        let s = script_json(&json!({"a": "</script><b>"}));
        assert!(!s.contains("</"));
    }

    #[test]
    fn a_live_page_dropped_before_its_end_stops_reloading() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("report.html");
        let live = format!("<head>\n{REFRESH}</head><dl><dd>{RUNNING}</dd></dl>{LIVE_NOTE}");
        let mut page = LivePage::new(path.clone());
        assert!(page.due());
        page.show(live.clone()).unwrap();
        assert!(!page.due(), "the next rewrite waits");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), live);
        drop(page);
        let html = std::fs::read_to_string(&path).unwrap();
        assert!(!html.contains("http-equiv=\"refresh\""), "{html}");
        assert!(html.contains(STOPPED_NOTE) && html.contains("<dd>stopped</dd>"));
        // A finished page is written as it is and left alone.
        let page = LivePage::new(path.clone());
        page.finish("<p>final</p>").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "<p>final</p>");
        assert!(lock_live_pages().iter().all(|p| *p != path));
    }

    #[test]
    fn live_rows_give_the_curve_so_far() {
        let t = tempfile::tempdir().unwrap();
        let rows = b"epoch,loss,perplexity,grad_norm,grad_norm_max,valid_perplexity\n1,2,7.5,1,1,\n2,1.9,6.5,1,1,\n".to_vec();
        let c = curve(t.path(), &InputState::Live(rows)).unwrap();
        assert_eq!(c.final_ppl, Some(6.5));
        assert_eq!(c.min_ppl, Some((2.0, 6.5)));
        assert_eq!(c.final_valid, None);
        assert_eq!(curve(t.path(), &InputState::Live(Vec::new())), None);
        assert_eq!(curve(t.path(), &InputState::Absent("waiting")), None);
        assert_eq!(InputState::Live(Vec::new()).word(), "running");
    }

    #[test]
    fn markdown_tables_become_html() {
        let h = markdown_table("# t\n\n| a | b |\n|---|---|\n| x | 1.5 |\n");
        assert!(h.contains("<th>a</th>") && h.contains("<td data-v=\"1.5\">1.5</td>"));
    }
}
