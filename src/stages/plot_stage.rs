//! `plot`: charts (SVG and PNG) from its inputs' files or summaries. One series per input (and
//! per file and y column when there are several); sweep variants become series or points.
//!
//! - `source: file` (default): `x` and `y` are columns of `file` (or each of `files`) in every
//!   input, e.g. perplexity against epoch from `metrics.csv`.
//! - `source: summary`: one point per input — `x` is a sweep axis of the input's name
//!   (`vocab[min_freq=5]`) or one of its params, `y` a key of its `summary.json`; `series_by`
//!   splits the points into series by another axis.

use super::{ParamIssue, Roles, Stage};
use crate::context::{InputInfo, StageCtx};
use crate::plot::{self, BarChart, Chart, LineChart, Scale, Series, Style};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChartKind {
    Line,
    Points,
    Bar,
    /// The distribution of each series' y values, in `bins` equal-width bins.
    Histogram,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    File,
    Summary,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScaleParam {
    Linear,
    Log,
}

impl From<ScaleParam> for Scale {
    fn from(s: ScaleParam) -> Self {
        match s {
            ScaleParam::Linear => Scale::Linear,
            ScaleParam::Log => Scale::Log,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plot {
    /// Chart title.
    pub title: String,
    /// `line`, `points`, `bar`, or `histogram` (of the y values).
    #[serde(default = "line")]
    pub chart: ChartKind,
    /// `file`: columns of a CSV in each input (`file`/`files`); `summary`: keys of each input's summary.json.
    #[serde(default = "file_source")]
    pub source: Source,
    /// The file to read in each input (`source: file`).
    #[serde(default)]
    pub file: Option<String>,
    /// Several files per input, each its own series (e.g. `ngrams_1.csv`, `ngrams_2.csv`).
    #[serde(default)]
    pub files: Vec<String>,
    /// The x column (or summary key).
    pub x: String,
    /// One or more y columns (or summary keys).
    pub y: OneOrMany,
    /// Split one file's rows into series by this column.
    #[serde(default)]
    pub series_by: Option<String>,
    /// `linear` or `log`.
    #[serde(default = "linear")]
    pub x_scale: ScaleParam,
    /// `linear` or `log`.
    #[serde(default = "linear")]
    pub y_scale: ScaleParam,
    /// Axis label (default: the column name).
    #[serde(default)]
    pub x_label: Option<String>,
    /// Axis label (default: the column name).
    #[serde(default)]
    pub y_label: Option<String>,
    /// Dashed Zipf fits from each input's `zipf.csv` (for n-gram rank/count plots).
    #[serde(default)]
    pub zipf_fit: bool,
    /// Image width in pixels.
    #[serde(default = "width")]
    pub width: u32,
    /// Image height in pixels.
    #[serde(default = "height")]
    pub height: u32,
    /// File name (without extension) of the chart.
    #[serde(default = "name")]
    pub name: String,
    /// Bins of a histogram.
    #[serde(default = "bins")]
    pub bins: usize,
}

fn bins() -> usize {
    20
}

/// Equal-width bins over the finite values of all series (one shared range, so the
/// distributions compare): (name, [(start, end, count)]).
pub fn histogram(series: &[Series], bins: usize) -> Vec<(String, plot::Bins)> {
    let vals = |s: &Series| {
        s.points
            .iter()
            .map(|p| p.1)
            .filter(|v| v.is_finite())
            .collect::<Vec<f64>>()
    };
    let all: Vec<f64> = series.iter().flat_map(vals).collect();
    let (lo, hi) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let (lo, hi) = if all.is_empty() {
        (0.0, 1.0)
    } else if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, hi + 0.5)
    };
    let w = (hi - lo) / bins as f64;
    series
        .iter()
        .map(|s| {
            let mut counts = vec![0.0; bins];
            for v in vals(s) {
                counts[(((v - lo) / w) as usize).min(bins - 1)] += 1.0;
            }
            (
                s.name.clone(),
                counts
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| (lo + i as f64 * w, lo + (i + 1) as f64 * w, c))
                    .collect(),
            )
        })
        .collect()
}

#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a name, or a list of names, e.g. `y: loss` or `y: [loss, perplexity]`")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(s.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = a.next_element::<String>()? {
                    v.push(s);
                }
                Ok(OneOrMany::Many(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl OneOrMany {
    fn list(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

fn line() -> ChartKind {
    ChartKind::Line
}
fn file_source() -> Source {
    Source::File
}
fn linear() -> ScaleParam {
    ScaleParam::Linear
}
fn width() -> u32 {
    800
}
fn height() -> u32 {
    500
}
fn name() -> String {
    "chart".into()
}

/// The sweep axes in a stage name: `train[lr=1,hidden=256]` → {lr: 1, hidden: 256}.
pub fn axes(name: &str) -> BTreeMap<String, String> {
    let Some(start) = name.find('[') else {
        return BTreeMap::new();
    };
    name[start + 1..]
        .trim_end_matches(']')
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn lookup(info: &InputInfo, key: &str) -> Option<String> {
    if let Some(v) = axes(&info.stage).get(key) {
        return Some(v.clone());
    }
    let mut v = &info.params;
    for part in key.split('.') {
        v = v.get(part)?;
    }
    Some(match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// Columns `x` and `y` of a CSV file as numbers (rows where either is not a number are skipped).
/// `label` names the file for the user: the input stage and the file name.
fn read_xy(path: &Path, label: &str, x: &str, y: &str) -> Result<Vec<(f64, f64)>> {
    let r = csv::Reader::from_path(path).with_context(|| format!("reading {label}"))?;
    xy_of(r, label, x, y)
}

/// Columns `x` and `y` of a CSV as numbers, as [`read_xy`] reads them.
fn xy_of<R: std::io::Read>(
    mut r: csv::Reader<R>,
    label: &str,
    x: &str,
    y: &str,
) -> Result<Vec<(f64, f64)>> {
    let h = r.headers()?.clone();
    let col = |c: &str, param: &str| {
        h.iter().position(|n| n == c).with_context(|| {
            let names: Vec<&str> = h.iter().collect();
            format!(
                "param `{param}`: {label} has no column `{c}`; {}",
                crate::diagnostic::suggest(c, &names, "columns")
            )
        })
    };
    let (xi, yi) = (col(x, "x")?, col(y, "y")?);
    let mut pts = Vec::new();
    for rec in r.records() {
        let rec = rec?;
        let parse = |i: usize| rec.get(i).and_then(|s| s.trim().parse::<f64>().ok());
        if let (Some(a), Some(b)) = (parse(xi), parse(yi)) {
            pts.push((a, b));
        }
    }
    Ok(pts)
}

/// What a chart reads of one input. A plot stage reads its inputs' files; the results page of
/// a run that goes on reads a running training's epoch rows so far, and nothing of a stage
/// that has not run yet.
#[derive(Debug, Clone, Copy)]
pub enum Feed<'a> {
    /// The input's files.
    Files,
    /// `metrics.csv` so far (a training's live rows); its other files have no points yet.
    Rows(&'a [u8]),
    /// No points yet.
    Nothing,
}

impl Plot {
    /// The plotted series, read from `infos` (the plot's inputs, in order): what the SVG/PNG
    /// charts draw and what `report.html` draws again, interactively.
    pub fn series(&self, infos: &[InputInfo]) -> Result<Vec<Series>> {
        self.series_fed(infos, &|_| Feed::Files)
    }

    /// [`Plot::series`] with what `feed` says of each input (by its index in `infos`).
    pub fn series_fed<'a>(
        &self,
        infos: &[InputInfo],
        feed: &dyn Fn(usize) -> Feed<'a>,
    ) -> Result<Vec<Series>> {
        let ys = self.y.list();
        let mut series: Vec<Series> = Vec::new();
        let style = if self.chart == ChartKind::Points {
            Style::Points
        } else {
            Style::Line
        };
        match self.source {
            Source::File => {
                let files: Vec<String> = if self.files.is_empty() {
                    self.file.iter().cloned().collect()
                } else {
                    self.files.clone()
                };
                for (i, info) in infos.iter().enumerate() {
                    let fed = feed(i);
                    for f in &files {
                        for y in &ys {
                            let mut name = Vec::new();
                            if infos.len() > 1 {
                                name.push(info.stage.clone());
                            }
                            if files.len() > 1 {
                                name.push(f.trim_end_matches(".csv").to_string());
                            }
                            if ys.len() > 1 || name.is_empty() {
                                name.push(y.clone());
                            }
                            series.push(Series {
                                name: name.join(" "),
                                points: match fed {
                                    Feed::Files => read_xy(
                                        &info.dir.join(f),
                                        &format!("`{}`'s {f}", info.stage),
                                        &self.x,
                                        y,
                                    )?,
                                    // Rows lacking a column have no points so far.
                                    Feed::Rows(rows) if f == "metrics.csv" => xy_of(
                                        csv::Reader::from_reader(rows),
                                        &format!("`{}`'s epochs so far", info.stage),
                                        &self.x,
                                        y,
                                    )
                                    .unwrap_or_default(),
                                    Feed::Rows(_) | Feed::Nothing => Vec::new(),
                                },
                                style,
                            });
                        }
                        if self.zipf_fit && matches!(fed, Feed::Files) {
                            let zipf = info.dir.join("zipf.csv");
                            let mut r = csv::Reader::from_path(&zipf)
                                .with_context(|| format!("`zipf_fit` needs {}", zipf.display()))?;
                            let stem = f.trim_end_matches(".csv");
                            let n: String = stem.chars().filter(|c| c.is_ascii_digit()).collect();
                            for rec in r.deserialize::<super::ngram_stats::ZipfRow>() {
                                let z = rec?;
                                if z.n.to_string() == n && z.fit_over == "all" {
                                    let last =
                                        series.last().map(|s| s.name.clone()).unwrap_or_default();
                                    let max_rank = z.distinct as f64;
                                    let pts = [1.0, max_rank.sqrt(), max_rank]
                                        .iter()
                                        .map(|&r| (r, (z.intercept - z.exponent * r.ln()).exp()))
                                        .collect();
                                    series.push(Series {
                                        name: format!("{last} fit (exponent {:.2})", z.exponent),
                                        points: pts,
                                        style: Style::Dashed,
                                    });
                                }
                            }
                        }
                    }
                }
            }
            Source::Summary => {
                let mut groups: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
                for (i, info) in infos.iter().enumerate() {
                    if !matches!(feed(i), Feed::Files) {
                        continue;
                    }
                    let s = crate::context::read_summary(&info.dir)?;
                    let xv = lookup(info, &self.x).with_context(|| {
                        format!("input `{}` has no axis or param `{}`", info.stage, self.x)
                    })?;
                    let Ok(x) = xv.parse::<f64>() else {
                        bail!("`{}` of `{}` is `{xv}`, not a number", self.x, info.stage)
                    };
                    for y in &ys {
                        let yv = s.get(y).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
                        let mut key = self
                            .series_by
                            .as_ref()
                            .and_then(|a| lookup(info, a))
                            .unwrap_or_default();
                        if ys.len() > 1 {
                            key = format!("{key} {y}").trim().to_string();
                        }
                        groups.entry(key).or_default().push((x, yv));
                    }
                }
                for (name, mut pts) in groups {
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    series.push(Series {
                        name: if name.is_empty() { ys.join(", ") } else { name },
                        points: pts,
                        style: Style::LineAndPoints,
                    });
                }
            }
        }
        Ok(series)
    }
}

impl Stage for Plot {
    const KIND: &'static str = "plot";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "A chart (SVG and PNG) of its inputs' files (columns x, y) or summaries";
    const ROLES: Roles = Roles::AnyNonEmpty;
    const OUTPUT: Option<crate::artifacts::Art> = Some(crate::artifacts::Art::Chart);

    fn validate(&self, issues: &mut Vec<ParamIssue>) {
        super::require_positive(issues, "bins", self.bins);
        if self.source == Source::File && self.file.is_none() && self.files.is_empty() {
            issues.push(ParamIssue::new(
                "file",
                "a file plot needs `file` (or `files`)",
                "e.g. `file: metrics.csv`",
            ));
        }
        // Only files of the inputs (which are part of the key) may be read: a plain name.
        let named = self
            .file
            .iter()
            .map(|f| ("file", f))
            .chain(self.files.iter().map(|f| ("files", f)));
        for (key, f) in named {
            let plain = !f.is_empty()
                && !f.contains(['/', '\\'])
                && f != "."
                && f != ".."
                && !f.starts_with('~');
            if !plain {
                issues.push(ParamIssue::new(
                    key,
                    format!("`{f}` is not a file of an input: a plot reads only files its input stages wrote"),
                    "name a file in each input's folder, e.g. `file: metrics.csv` (see `outputs/<pipeline>/<stage>/`)",
                ));
            }
        }
        if self.y.list().is_empty() {
            issues.push(ParamIssue::new(
                "y",
                "`y` names no column",
                "e.g. `y: perplexity`",
            ));
        }
        if !(200..=4000).contains(&self.width) || !(150..=4000).contains(&self.height) {
            issues.push(ParamIssue::new(
                "width",
                format!(
                    "size {}x{} is outside 200..4000 x 150..4000",
                    self.width, self.height
                ),
                "e.g. `width: 800, height: 500`",
            ));
        }
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            issues.push(ParamIssue::new(
                "name",
                format!("invalid file name `{}`", self.name),
                "letters, digits, `_` and `-`",
            ));
        }
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<()> {
        let ys = self.y.list();
        let infos: Vec<InputInfo> = ctx.input_infos().map(|(_, i)| i.clone()).collect();
        let series = self.series(&infos)?;
        let x_label = self.x_label.clone().unwrap_or_else(|| self.x.clone());
        let y_label = self.y_label.clone().unwrap_or_else(|| ys.join(", "));
        let chart = match self.chart {
            ChartKind::Line | ChartKind::Points => Chart::Line(LineChart {
                title: self.title.clone(),
                x_label,
                y_label,
                x_scale: self.x_scale.into(),
                y_scale: self.y_scale.into(),
                series: series.clone(),
            }),
            ChartKind::Histogram => Chart::Histogram(plot::Histogram {
                title: self.title.clone(),
                x_label: self.x_label.clone().unwrap_or_else(|| ys.join(", ")),
                y_label: self
                    .y_label
                    .clone()
                    .unwrap_or_else(|| format!("count of {}", self.x)),
                series: histogram(&series, self.bins),
            }),
            ChartKind::Bar => {
                let mut xs: Vec<f64> = series
                    .iter()
                    .flat_map(|s| s.points.iter().map(|p| p.0))
                    .collect();
                xs.sort_by(|a, b| a.total_cmp(b));
                xs.dedup();
                let groups = xs.iter().map(|x| format!("{x}")).collect();
                let bars = series
                    .iter()
                    .map(|s| {
                        (
                            s.name.clone(),
                            xs.iter()
                                .map(|x| {
                                    s.points
                                        .iter()
                                        .find(|p| p.0 == *x)
                                        .map(|p| p.1)
                                        .unwrap_or(f64::NAN)
                                })
                                .collect(),
                        )
                    })
                    .collect();
                Chart::Bar(BarChart {
                    title: self.title.clone(),
                    x_label,
                    y_label,
                    y_scale: self.y_scale.into(),
                    groups,
                    bars,
                })
            }
        };
        plot::render(
            &chart,
            &ctx.out_path(&format!("{}.svg", self.name)),
            self.width,
            self.height,
        )?;
        plot::render(
            &chart,
            &ctx.out_path(&format!("{}.png", self.name)),
            self.width,
            self.height,
        )?;
        // The plotted numbers, for readers who want them.
        let mut w = csv::Writer::from_path(ctx.out_path(&format!("{}.csv", self.name)))?;
        w.write_record(["series", "x", "y"])?;
        for s in &series {
            for (x, y) in &s.points {
                w.write_record([s.name.clone(), x.to_string(), y.to_string()])?;
            }
        }
        w.flush()?;
        ctx.summary("series", series.len());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_every_finite_value_once() {
        let s = |name: &str, ys: &[f64]| Series {
            name: name.into(),
            points: ys.iter().map(|&y| (0.0, y)).collect(),
            style: Style::Line,
        };
        let h = histogram(
            &[s("a", &[0.0, 1.0, 2.0, 3.0, f64::NAN]), s("b", &[3.0, 3.0])],
            3,
        );
        assert_eq!(h[0].1.iter().map(|b| b.2).sum::<f64>(), 4.0);
        assert_eq!(h[1].1[2].2, 2.0, "the maximum falls in the last bin");
        assert_eq!((h[0].1[0].0, h[0].1[2].1), (0.0, 3.0));
    }

    #[test]
    fn axes_from_variant_names() {
        let a = axes("vocab[unit=char,min_freq=5]");
        assert_eq!(a.get("unit").map(String::as_str), Some("char"));
        assert_eq!(a.get("min_freq").map(String::as_str), Some("5"));
        assert!(axes("plain").is_empty());
    }
}
