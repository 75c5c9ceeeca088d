//! Chart rendering. This is the only module that uses `plotters`: the rest of the crate
//! describes a chart with the plain types below and calls [`render`].
//!
//! * The output path's extension picks the backend: `.svg` or `.png` (case-insensitive).
//! * Text is measured (SVG and PNG) and rasterised (PNG) with DejaVu Sans embedded from
//!   `assets/DejaVuSans.ttf` (license: `assets/DejaVuSans-LICENSE.txt`), registered through
//!   plotters' `ab_glyph` feature, so no system font or fontconfig is needed.
//! * Data are never trusted: NaN/inf points and, on log axes, points <= 0 are skipped (a line
//!   is broken into separate segments where they were), series without a plottable point are
//!   listed in the legend as "(no data)", constant or single-point data get a non-degenerate
//!   axis range, and failures come back as errors, never panics.
//! * The output is a pure function of the input (no timestamps, no randomness).

use std::fmt::Display;
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, ScaleFont};
use anyhow::{anyhow, bail, Result};
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{self as pb, BackendColor, BackendCoord, DrawingErrorKind};

/// Axis scale. `Log` is base 10 and ignores values <= 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scale {
    #[default]
    Linear,
    Log,
}

/// How a [`Series`] of a [`LineChart`] is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Style {
    #[default]
    Line,
    Dashed,
    Points,
    LineAndPoints,
}

/// One named series of (x, y) points, drawn in the order given.
///
/// Colours come from a fixed 10-colour palette in series order, with one convention: a
/// `Dashed` series named `"<name of an earlier series> ..."` (e.g. `"unigram fit"` after
/// `"unigram"`) reuses that series' colour, so a fitted line matches its data.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub style: Style,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_scale: Scale,
    pub y_scale: Scale,
    pub series: Vec<Series>,
}

/// Grouped bars: for each group one bar per entry of `bars` (series name, one value per
/// group, matched by index; missing or non-finite values draw no bar). Linear bars start at 0,
/// log bars at the bottom of the axis.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BarChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub y_scale: Scale,
    pub groups: Vec<String>,
    pub bars: Vec<(String, Vec<f64>)>,
}

/// Histogram bins: (bin start, bin end, count).
pub type Bins = Vec<(f64, f64, f64)>;

/// Pre-binned histograms, overlaid (translucent fills, solid outlines): (series name, bins).
/// Bins with non-finite values or end <= start are skipped.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<(String, Bins)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Chart {
    Line(LineChart),
    Bar(BarChart),
    Histogram(Histogram),
}

/// Render `chart` to `path` (`.svg` or `.png`), `width` x `height` pixels (each 200..=16384).
/// The parent directory must exist; an existing file is overwritten.
pub fn render(chart: &Chart, path: &Path, width: u32, height: u32) -> Result<()> {
    if !(200..=16384).contains(&width) || !(150..=16384).contains(&height) {
        bail!("plot size {width}x{height} out of range (200..=16384 x 150..=16384)");
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    register_font()?;
    let run = || match ext.as_deref() {
        Some("svg") => draw(
            SVGBackend::new(path, (width, height)).into_drawing_area(),
            chart,
        ),
        Some("png") => draw(
            PngBackend::new(path, (width, height))?.into_drawing_area(),
            chart,
        ),
        _ => bail!("unsupported plot file extension (want .svg or .png)"),
    };
    // plotters is third-party drawing code; a panic in it must not take the pipeline down.
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
        .unwrap_or_else(|_| Err(anyhow!("plotting library panicked")));
    out.map_err(|e| e.context(format!("rendering plot {}", path.display())))
}

const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn register_font() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        ["sans-serif", "serif", "monospace"]
            .iter()
            .all(|name| plotters::style::register_font(name, FontStyle::Normal, FONT_BYTES).is_ok())
    });
    if ok {
        Ok(())
    } else {
        bail!("embedded font assets/DejaVuSans.ttf could not be loaded")
    }
}

/// Fixed palette (matplotlib "tab10").
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Colour of each series, see [`Series`].
fn line_colors(series: &[Series]) -> Vec<RGBColor> {
    let mut next = 0;
    let mut out: Vec<RGBColor> = Vec::with_capacity(series.len());
    for (i, s) in series.iter().enumerate() {
        let parent = (s.style == Style::Dashed)
            .then(|| {
                (0..i).find(|&j| {
                    let p = &series[j].name;
                    !p.is_empty()
                        && series[j].style != Style::Dashed
                        && s.name
                            .strip_prefix(p.as_str())
                            .is_some_and(|r| r.starts_with(' '))
                })
            })
            .flatten();
        out.push(match parent {
            Some(j) => out[j],
            None => {
                next += 1;
                PALETTE[(next - 1) % PALETTE.len()]
            }
        });
    }
    out
}

/// `BitMapBackend` with its own text rasteriser: plotters' `ab_glyph` drawing drops each
/// glyph's side bearing and rounds baselines per glyph, which makes small text uneven.
/// Layout metrics (advance widths, kerning, size / 1.24 line height) match plotters' own.
struct PngBackend<'a> {
    inner: BitMapBackend<'a>,
    font: FontRef<'static>,
}

impl<'a> PngBackend<'a> {
    fn new(path: &'a Path, size: (u32, u32)) -> Result<Self> {
        let font =
            FontRef::try_from_slice(FONT_BYTES).map_err(|e| anyhow!("embedded font: {e}"))?;
        Ok(Self {
            inner: BitMapBackend::new(path, size),
            font,
        })
    }
}

type BackendResult<'a> =
    std::result::Result<(), DrawingErrorKind<<BitMapBackend<'a> as DrawingBackend>::ErrorType>>;

impl<'a> DrawingBackend for PngBackend<'a> {
    type ErrorType = <BitMapBackend<'a> as DrawingBackend>::ErrorType;
    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }
    fn ensure_prepared(&mut self) -> BackendResult<'a> {
        self.inner.ensure_prepared()
    }
    fn present(&mut self) -> BackendResult<'a> {
        self.inner.present()
    }
    fn draw_pixel(&mut self, p: BackendCoord, c: BackendColor) -> BackendResult<'a> {
        self.inner.draw_pixel(p, c)
    }
    fn draw_line<S: pb::BackendStyle>(
        &mut self,
        a: BackendCoord,
        b: BackendCoord,
        s: &S,
    ) -> BackendResult<'a> {
        self.inner.draw_line(a, b, s)
    }
    fn draw_rect<S: pb::BackendStyle>(
        &mut self,
        a: BackendCoord,
        b: BackendCoord,
        s: &S,
        fill: bool,
    ) -> BackendResult<'a> {
        self.inner.draw_rect(a, b, s, fill)
    }
    fn draw_path<S: pb::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        s: &S,
    ) -> BackendResult<'a> {
        self.inner.draw_path(path, s)
    }
    fn draw_circle<S: pb::BackendStyle>(
        &mut self,
        c: BackendCoord,
        r: u32,
        s: &S,
        fill: bool,
    ) -> BackendResult<'a> {
        self.inner.draw_circle(c, r, s, fill)
    }
    fn fill_polygon<S: pb::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        s: &S,
    ) -> BackendResult<'a> {
        self.inner.fill_polygon(path, s)
    }
    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        (w, h): (u32, u32),
        src: &[u8],
    ) -> BackendResult<'a> {
        self.inner.blit_bitmap(pos, (w, h), src)
    }
    fn draw_text<S: pb::BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> BackendResult<'a> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let font = self.font.as_scaled(style.size() as f32);
        let (mut caret, mut prev, mut glyphs) = (0.0f32, None, vec![]);
        for ch in text.chars() {
            let id = font.glyph_id(ch);
            if let Some(p) = prev {
                caret += font.kern(p, id);
            }
            glyphs.push(id.with_scale_and_position(font.scale(), ab_glyph::point(caret, 0.0)));
            caret += font.h_advance(id);
            prev = Some(id);
        }
        let height = (style.size() / 1.24) as f32;
        let dx = match style.anchor().h_pos {
            HPos::Left => 0.0,
            HPos::Center => -caret / 2.0,
            HPos::Right => -caret,
        };
        let baseline = match style.anchor().v_pos {
            VPos::Top => height,
            VPos::Center => height / 2.0,
            VPos::Bottom => 0.0,
        };
        let (dx, dy) = (dx.round() as i32, baseline.round() as i32);
        let trans = style.transform();
        let mut result = Ok(());
        for g in glyphs {
            let Some(outline) = font.outline_glyph(g) else {
                continue;
            };
            let b = outline.px_bounds();
            let (x0, y0) = (b.min.x as i32 + dx, b.min.y as i32 + dy);
            outline.draw(|x, y, cov| {
                if result.is_ok() && cov > 0.0 {
                    let (tx, ty) = trans.transform(x0 + x as i32, y0 + y as i32);
                    let c = BackendColor {
                        alpha: color.alpha * cov.min(1.0) as f64,
                        rgb: color.rgb,
                    };
                    result = self.inner.draw_pixel((pos.0 + tx, pos.1 + ty), c);
                }
            });
        }
        result
    }
}

trait OrErr<T> {
    fn or_err(self, what: &str) -> Result<T>;
}
impl<T, E: Display> OrErr<T> for std::result::Result<T, E> {
    fn or_err(self, what: &str) -> Result<T> {
        self.map_err(|e| anyhow!("{what}: {e}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Axes: one coordinate type for linear, log and categorical axes, with precomputed ticks.

#[derive(Clone)]
struct Axis {
    range: Range<f64>,
    log: bool,
    /// Labelled ticks (bold grid lines).
    ticks: Vec<(f64, String)>,
    /// Unlabelled light grid lines.
    minor: Vec<f64>,
}

impl Axis {
    fn norm(&self, v: f64) -> f64 {
        let f = |x: f64| if self.log { x.log10() } else { x };
        (f(v) - f(self.range.start)) / (f(self.range.end) - f(self.range.start))
    }
}

impl Ranged for Axis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;
    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let px = limit.0 as f64 + self.norm(*v) * (limit.1 - limit.0) as f64;
        if px.is_nan() {
            limit.0
        } else {
            px.round().clamp(-1e6, 1e6) as i32
        }
    }
    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        let mut v: Vec<f64> = self.ticks.iter().map(|t| t.0).collect();
        if hint.weight().allow_light_points() {
            v.extend(&self.minor);
        }
        v
    }
    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

impl ValueFormatter<f64> for Axis {
    fn format_ext(&self, v: &f64) -> String {
        match self.ticks.iter().find(|t| t.0 == *v) {
            Some(t) => t.1.clone(),
            None => fmt_num(*v),
        }
    }
}

fn usable(v: f64, log: bool) -> bool {
    v.is_finite() && (!log || v > 0.0)
}

fn min_max(vals: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    vals.into_iter().fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// Numeric axis over the (already filtered) data range `mm`, padded by `pad` of the span on
/// each side; `zero` makes a linear axis include 0 (bars, counts) without padding below it.
fn numeric_axis(
    mm: Option<(f64, f64)>,
    log: bool,
    pad: f64,
    zero: bool,
    max_ticks: usize,
) -> Result<Axis> {
    let (mut lo, mut hi) = mm.unwrap_or(if log { (1.0, 10.0) } else { (0.0, 1.0) });
    if log {
        let (mut a, mut b) = (lo.log10(), hi.log10());
        if b - a < 1e-9 {
            a -= 0.5;
            b += 0.5;
        } else {
            let p = (b - a) * pad;
            a -= p;
            b += p;
        }
        lo = 10f64.powf(a.max(-300.0));
        hi = 10f64.powf(b.min(300.0));
    } else {
        if zero {
            lo = lo.min(0.0);
            hi = hi.max(0.0);
        }
        if hi - lo <= 1e-9 * lo.abs().max(hi.abs()) {
            let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            if !(zero && lo == 0.0) {
                lo -= d;
            }
            hi += d;
        } else {
            let p = (hi - lo) * pad;
            if !(zero && lo == 0.0) {
                lo -= p;
            }
            if !(zero && hi == 0.0) {
                hi += p;
            }
        }
        if !(hi - lo).is_finite() || hi - lo <= 0.0 {
            bail!("data range {lo:e}..{hi:e} is too large for a linear axis (use a log scale)");
        }
    }
    let (ticks, minor) = if log {
        log_ticks(lo, hi, max_ticks)
    } else {
        (linear_ticks(lo, hi, max_ticks), vec![])
    };
    Ok(Axis {
        range: lo..hi,
        log,
        ticks,
        minor,
    })
}

/// Categorical axis: category `i` occupies [i, i+1); labels are thinned to every `every`th.
fn category_axis(names: &[String], every: usize) -> Axis {
    let ticks = names
        .iter()
        .enumerate()
        .filter(|(i, _)| i % every.max(1) == 0)
        .map(|(i, n)| (i as f64 + 0.5, n.clone()))
        .collect();
    Axis {
        range: 0.0..names.len().max(1) as f64,
        log: false,
        ticks,
        minor: vec![],
    }
}

/// Round away floating-point noise (k * 0.1 and the like).
fn clean(v: f64) -> f64 {
    let c: f64 = format!("{v:.10e}").parse().unwrap_or(v);
    if c == 0.0 {
        0.0
    } else {
        c
    }
}

/// Compact general number format: plain for 1e-3 <= |v| < 1e5, else `1.5e6`.
fn fmt_num(v: f64) -> String {
    let v = clean(v);
    if v == 0.0 || (1e-3..1e5).contains(&v.abs()) {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

fn superscript(e: i32) -> String {
    e.to_string()
        .chars()
        .map(|c| match c {
            '-' => '⁻',
            d => ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹']
                [d.to_digit(10).unwrap_or(0) as usize],
        })
        .collect()
}

fn pow10(e: i32) -> f64 {
    format!("1e{e}").parse().unwrap_or(f64::NAN)
}

/// Ticks at 1-2-5 multiples of a power of ten, at most about `max_ticks` of them.
fn linear_ticks(lo: f64, hi: f64, max_ticks: usize) -> Vec<(f64, String)> {
    let raw = (hi - lo) / max_ticks.max(1) as f64;
    let mag = pow10(raw.log10().floor() as i32);
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * mag);
    let decimals = (-(step.log10() + 1e-9).floor()).max(0.0) as usize;
    let big = lo.abs().max(hi.abs());
    let sci = !(1e-3..1e6).contains(&big);
    let (k0, k1) = ((lo / step - 1e-9).ceil(), (hi / step + 1e-9).floor());
    let mut out = vec![];
    let mut k = k0;
    while k <= k1 && out.len() < 100 {
        let v = clean(k * step);
        out.push((
            v,
            if sci {
                fmt_num(v)
            } else {
                format!("{v:.decimals$}")
            },
        ));
        k += 1.0;
    }
    out
}

/// Log ticks: powers of ten when the range covers at least two (labelled `10ⁿ` when they go
/// beyond 1e-3..1e4), else 1-2-5 or 1..9 multiples, else linear ticks for very narrow ranges.
fn log_ticks(lo: f64, hi: f64, max_ticks: usize) -> (Vec<(f64, String)>, Vec<f64>) {
    let (a, b) = (lo.log10(), hi.log10());
    let (e0, e1) = ((a - 1e-9).ceil() as i32, (b + 1e-9).floor() as i32);
    let inside = |v: &f64| *v >= lo * (1.0 - 1e-12) && *v <= hi * (1.0 + 1e-12);
    if e1 > e0 {
        let n = (e1 - e0 + 1) as usize;
        let stride = n.div_ceil(max_ticks.max(2)) as i32;
        let pow_labels = e0 < -3 || e1 > 4;
        let label = |e: i32| {
            if pow_labels {
                format!("10{}", superscript(e))
            } else {
                fmt_num(pow10(e))
            }
        };
        let ticks = (e0..=e1)
            .filter(|e| e.rem_euclid(stride) == 0)
            .map(|e| (pow10(e), label(e)))
            .collect();
        let minor = if stride == 1 && n <= 15 {
            (e0 - 1..=e1)
                .flat_map(|e| (2..=9).map(move |m| m as f64 * pow10(e)))
                .filter(inside)
                .collect()
        } else {
            (e0..=e1)
                .filter(|e| e.rem_euclid(stride) != 0)
                .map(pow10)
                .collect()
        };
        return (ticks, minor);
    }
    for mults in [
        &[1.0, 2.0, 5.0][..],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0][..],
    ] {
        let vals: Vec<f64> = (e0 - 1..=e1)
            .flat_map(|e| mults.iter().map(move |m| clean(m * pow10(e))))
            .filter(inside)
            .collect();
        if vals.len() >= 2 {
            return (vals.into_iter().map(|v| (v, fmt_num(v))).collect(), vec![]);
        }
    }
    (linear_ticks(lo, hi, max_ticks.min(5)), vec![])
}

// ---------------------------------------------------------------------------------------------
// Layout and drawing.

/// Everything that differs between chart kinds once the data are prepared.
struct Frame<'c> {
    title: &'c str,
    x_label: &'c str,
    y_label: &'c str,
    x: Axis,
    y: Axis,
    x_grid: bool,
    legend: Vec<String>,
    /// Samples of where ink goes, in axis-normalised coordinates, for legend placement.
    ink: Vec<(f64, f64)>,
}

type Ctx<'a, DB> = ChartContext<'a, DB, Cartesian2d<Axis, Axis>>;

struct Fonts {
    base: f64,
}
impl Fonts {
    fn style(&self, scale: f64) -> TextStyle<'static> {
        TextStyle::from((FONT, self.base * scale).into_font()).color(&BLACK)
    }
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, chart: &Chart) -> Result<()> {
    root.fill(&WHITE).or_err("filling background")?;
    let (w, h) = root.dim_in_pixel();
    let fonts = Fonts {
        base: (w.min(h) as f64 / 40.0).clamp(10.0, 22.0),
    };
    let x_ticks = (w as usize / 100).clamp(3, 10);
    let y_ticks = (h as usize / 60).clamp(3, 10);
    match chart {
        Chart::Line(c) => draw_line_chart(&root, &fonts, c, x_ticks, y_ticks)?,
        Chart::Bar(c) => draw_bar_chart(&root, &fonts, c, y_ticks)?,
        Chart::Histogram(c) => draw_histogram(&root, &fonts, c, x_ticks, y_ticks)?,
    }
    root.present().or_err("writing the file")
}

fn text_size<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    text: &str,
    style: &TextStyle,
) -> Result<(u32, u32)> {
    root.estimate_text_size(text, style)
        .or_err("measuring text")
}

/// Build the chart frame (title, margins sized to the labels, axes, grid) and, after `body`
/// drew the data, the legend (when there is more than one series) or a "no data" note.
fn framed<'r, DB: DrawingBackend>(
    root: &'r DrawingArea<DB, Shift>,
    fonts: &Fonts,
    frame: Frame,
    body: impl FnOnce(&mut Ctx<'r, DB>) -> Result<bool>,
) -> Result<()> {
    let (w, _) = root.dim_in_pixel();
    let tick_style = fonts.style(1.0).color(&RGBColor(40, 40, 40));
    let desc_style = fonts.style(1.1);
    let pad = fonts.base.round() as u32;

    let mut y_label_w = 0;
    for (_, t) in &frame.y.ticks {
        y_label_w = y_label_w.max(text_size(root, t, &tick_style)?.0);
    }
    let last_x_w = match frame.x.ticks.last() {
        Some((_, t)) => text_size(root, t, &tick_style)?.0,
        None => 0,
    };
    let line_h = text_size(root, "0Ag", &tick_style)?.1;
    let desc_h = text_size(root, "0Ag", &desc_style)?.1;
    let with_desc = |s: &str| if s.is_empty() { 0 } else { desc_h + pad / 2 };
    let y_area = y_label_w + 10 + pad / 2 + with_desc(frame.y_label);
    let x_area = line_h + 10 + pad / 2 + with_desc(frame.x_label);

    let mut builder = ChartBuilder::on(root);
    builder
        .margin(pad)
        .margin_right(pad.max(last_x_w / 2 + 4))
        .x_label_area_size(x_area)
        .y_label_area_size(y_area);
    if !frame.title.is_empty() {
        let mut size = fonts.base * 1.35;
        let tw = text_size(root, frame.title, &fonts.style(1.35))?.0 as f64;
        let avail = w.saturating_sub(2 * pad) as f64;
        if tw > avail {
            size = (size * avail / tw).max(8.0);
        }
        builder.caption(frame.title, (FONT, size).into_font().color(&BLACK));
    }
    let mut ctx = builder
        .build_cartesian_2d(frame.x, frame.y)
        .or_err("laying out the chart")?;

    let mut mesh = ctx.configure_mesh();
    mesh.label_style(tick_style.clone())
        .axis_desc_style(desc_style)
        .bold_line_style(RGBColor(215, 215, 215))
        .light_line_style(RGBColor(240, 240, 240))
        .axis_style(RGBColor(80, 80, 80))
        .x_desc(frame.x_label)
        .y_desc(frame.y_label);
    if !frame.x_grid {
        mesh.disable_x_mesh();
    }
    mesh.draw().or_err("drawing axes")?;

    if !body(&mut ctx)? {
        let (w, h) = root.dim_in_pixel();
        let style = fonts
            .style(1.2)
            .color(&RGBColor(120, 120, 120))
            .pos(Pos::new(HPos::Center, VPos::Center));
        root.draw(&Text::new(
            "no plottable data",
            (w as i32 / 2, h as i32 / 2),
            style,
        ))
        .or_err("drawing text")?;
    }

    if frame.legend.len() > 1 {
        let legend_style = fonts.style(0.95);
        let (pw, ph) = ctx.plotting_area().dim_in_pixel();
        let mut lw = 0;
        for name in &frame.legend {
            lw = lw.max(text_size(root, name, &legend_style)?.0);
        }
        let lh = frame.legend.len() as u32 * (line_h + 6) + 20;
        let box_w = (lw + 60) as f64 / pw.max(1) as f64;
        let box_h = lh as f64 / ph.max(1) as f64;
        ctx.configure_series_labels()
            .position(legend_corner(&frame.ink, box_w, box_h))
            .margin(10)
            .legend_area_size(30)
            .label_font(legend_style)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(170, 170, 170))
            .draw()
            .or_err("drawing the legend")?;
    }
    Ok(())
}

/// The plot corner whose legend-sized box covers the fewest ink samples (ties: the first of
/// upper right, upper left, lower right, lower left).
fn legend_corner(ink: &[(f64, f64)], bw: f64, bh: f64) -> SeriesLabelPosition {
    let corners = [
        (SeriesLabelPosition::UpperRight, true, true),
        (SeriesLabelPosition::UpperLeft, false, true),
        (SeriesLabelPosition::LowerRight, true, false),
        (SeriesLabelPosition::LowerLeft, false, false),
    ];
    let hits = |right: bool, upper: bool| {
        ink.iter()
            .filter(|(x, y)| {
                (if right { *x >= 1.0 - bw } else { *x <= bw })
                    && (if upper { *y >= 1.0 - bh } else { *y <= bh })
            })
            .count()
    };
    let mut best = (usize::MAX, SeriesLabelPosition::UpperRight);
    for (pos, right, upper) in corners {
        let n = hits(right, upper);
        if n < best.0 {
            best = (n, pos);
        }
    }
    best.1
}

/// Samples along the straight line from `p` to `q` (normalised coordinates).
fn sample_segment(ink: &mut Vec<(f64, f64)>, p: (f64, f64), q: (f64, f64)) {
    let n = (((q.0 - p.0).hypot(q.1 - p.1) * 50.0).ceil() as usize).clamp(1, 20);
    ink.extend((0..=n).map(|i| {
        let t = i as f64 / n as f64;
        (p.0 + (q.0 - p.0) * t, p.1 + (q.1 - p.1) * t)
    }));
}

/// Split a series into runs of consecutive usable points.
fn segments(points: &[(f64, f64)], xlog: bool, ylog: bool) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = vec![];
    let mut cur = vec![];
    for &(x, y) in points {
        if usable(x, xlog) && usable(y, ylog) {
            cur.push((x, y));
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn no_data(name: &str) -> String {
    format!("{name} (no data)")
}

fn draw_line_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    fonts: &Fonts,
    c: &LineChart,
    xt: usize,
    yt: usize,
) -> Result<()> {
    let (xlog, ylog) = (c.x_scale == Scale::Log, c.y_scale == Scale::Log);
    let segs: Vec<_> = c
        .series
        .iter()
        .map(|s| segments(&s.points, xlog, ylog))
        .collect();
    let all = || segs.iter().flatten().flatten();
    let x = numeric_axis(min_max(all().map(|p| p.0)), xlog, 0.0, false, xt)?;
    let y = numeric_axis(min_max(all().map(|p| p.1)), ylog, 0.05, false, yt)?;
    let mut ink = vec![];
    for run in segs.iter().flatten() {
        let norm: Vec<_> = run.iter().map(|p| (x.norm(p.0), y.norm(p.1))).collect();
        ink.push(norm[0]);
        for w in norm.windows(2) {
            sample_segment(&mut ink, w[0], w[1]);
        }
    }
    let show_legend = c.series.len() > 1;
    let legend = c
        .series
        .iter()
        .zip(&segs)
        .map(|(s, g)| {
            if g.is_empty() {
                no_data(&s.name)
            } else {
                s.name.clone()
            }
        })
        .collect();
    let colors = line_colors(&c.series);
    let lw = (fonts.base / 7.0).round().max(2.0) as u32;
    let r = lw + 1;
    let frame = Frame {
        title: &c.title,
        x_label: &c.x_label,
        y_label: &c.y_label,
        x,
        y,
        x_grid: true,
        legend,
        ink,
    };
    framed(root, fonts, frame, |ctx| {
        for ((s, runs), &color) in c.series.iter().zip(&segs).zip(&colors) {
            let line = color.stroke_width(lw);
            let dot = color.filled();
            let lines = runs.iter().filter(|r| r.len() > 1);
            // A lone point between gaps would be invisible as a line: mark it.
            let lone = runs.iter().filter(|r| r.len() == 1).flatten();
            let anno = match s.style {
                _ if runs.is_empty() => {
                    ctx.draw_series(std::iter::empty::<Circle<(f64, f64), u32>>())
                }
                Style::Line => {
                    ctx.draw_series(lone.map(|p| Circle::new(*p, r, dot)))
                        .or_err("drawing points")?;
                    ctx.draw_series(lines.map(|r| PathElement::new(r.clone(), line)))
                }
                Style::Dashed => {
                    ctx.draw_series(lone.map(|p| Circle::new(*p, r, dot)))
                        .or_err("drawing points")?;
                    ctx.draw_series(
                        lines.map(|r| DashedPathElement::new(r.clone(), 8 * lw, 5 * lw, line)),
                    )
                }
                Style::Points => {
                    ctx.draw_series(runs.iter().flatten().map(|p| Circle::new(*p, r, dot)))
                }
                Style::LineAndPoints => {
                    ctx.draw_series(lines.map(|r| PathElement::new(r.clone(), line)))
                        .or_err("drawing lines")?;
                    ctx.draw_series(runs.iter().flatten().map(|p| Circle::new(*p, r, dot)))
                }
            }
            .or_err("drawing a series")?;
            if !show_legend {
                continue;
            }
            if runs.is_empty() {
                anno.label(no_data(&s.name));
                continue;
            }
            let anno = anno.label(s.name.clone());
            match s.style {
                Style::Line => {
                    anno.legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], line))
                }
                Style::Dashed => anno.legend(move |(x, y)| {
                    DashedPathElement::new(vec![(x, y), (x + 24, y)], 8, 4, line)
                }),
                Style::Points => anno.legend(move |(x, y)| Circle::new((x + 12, y), r, dot)),
                Style::LineAndPoints => anno.legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (24, 0)], line)
                        + Circle::new((12, 0), r, dot)
                }),
            };
        }
        Ok(segs.iter().any(|g| !g.is_empty()))
    })
}

fn draw_bar_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    fonts: &Fonts,
    c: &BarChart,
    yt: usize,
) -> Result<()> {
    let ylog = c.y_scale == Scale::Log;
    let n_groups = c
        .bars
        .iter()
        .map(|b| b.1.len())
        .max()
        .unwrap_or(0)
        .max(c.groups.len());
    let names: Vec<String> = (0..n_groups)
        .map(|i| match c.groups.get(i) {
            Some(g) if g.chars().count() > 24 => g.chars().take(23).chain(['…']).collect(),
            Some(g) => g.clone(),
            None => i.to_string(),
        })
        .collect();
    // Thin out the category labels so they don't overlap.
    let style = fonts.style(1.0);
    let mut label_w = 1;
    for n in &names {
        label_w = label_w.max(text_size(root, n, &style)?.0 + 8);
    }
    let slot = root.dim_in_pixel().0 as f64 * 0.8 / n_groups.max(1) as f64;
    let x = category_axis(&names, (label_w as f64 / slot).ceil() as usize);
    let vals = || {
        c.bars
            .iter()
            .flat_map(|b| b.1.iter().copied())
            .filter(|v| usable(*v, ylog))
    };
    let y = numeric_axis(min_max(vals()), ylog, 0.05, !ylog, yt)?;
    let base = if ylog { y.range.start } else { 0.0 };
    let k = c.bars.len().max(1) as f64;
    let bar_x = |g: usize, j: usize| {
        (
            g as f64 + 0.1 + 0.8 * j as f64 / k,
            g as f64 + 0.1 + 0.8 * (j + 1) as f64 / k,
        )
    };
    let mut ink = vec![];
    for (j, (_, values)) in c.bars.iter().enumerate() {
        for (g, v) in values.iter().enumerate().filter(|(_, v)| usable(**v, ylog)) {
            let (x0, x1) = bar_x(g, j);
            for xx in [x0, (x0 + x1) / 2.0, x1] {
                sample_segment(
                    &mut ink,
                    (x.norm(xx), y.norm(base)),
                    (x.norm(xx), y.norm(*v)),
                );
            }
        }
    }
    let legend = c
        .bars
        .iter()
        .map(|(name, v)| {
            if v.iter().any(|v| usable(*v, ylog)) {
                name.clone()
            } else {
                no_data(name)
            }
        })
        .collect();
    let frame = Frame {
        title: &c.title,
        x_label: &c.x_label,
        y_label: &c.y_label,
        x,
        y,
        x_grid: false,
        legend,
        ink,
    };
    let show_legend = c.bars.len() > 1;
    framed(root, fonts, frame, |ctx| {
        let mut any = false;
        for (j, (name, values)) in c.bars.iter().enumerate() {
            let fill = PALETTE[j % PALETTE.len()].filled();
            let rects: Vec<_> = values
                .iter()
                .enumerate()
                .filter(|(_, v)| usable(**v, ylog))
                .map(|(g, v)| {
                    let (x0, x1) = bar_x(g, j);
                    Rectangle::new([(x0, base), (x1, *v)], fill)
                })
                .collect();
            any |= !rects.is_empty();
            let empty = rects.is_empty();
            let anno = ctx.draw_series(rects).or_err("drawing bars")?;
            if show_legend && empty {
                anno.label(no_data(name));
            } else if show_legend {
                anno.label(name.clone())
                    .legend(move |(x, y)| Rectangle::new([(x + 4, y - 6), (x + 22, y + 6)], fill));
            }
        }
        Ok(any)
    })
}

fn draw_histogram<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    fonts: &Fonts,
    c: &Histogram,
    xt: usize,
    yt: usize,
) -> Result<()> {
    let mut bins: Vec<Bins> = c
        .series
        .iter()
        .map(|(_, b)| {
            b.iter()
                .copied()
                .filter(|&(s, e, n)| s.is_finite() && e.is_finite() && n.is_finite() && e > s)
                .collect()
        })
        .collect();
    for b in &mut bins {
        b.sort_by(|p, q| p.0.total_cmp(&q.0));
    }
    let all = || bins.iter().flatten();
    let x = numeric_axis(
        min_max(all().flat_map(|b| [b.0, b.1])),
        false,
        0.0,
        false,
        xt,
    )?;
    let y = numeric_axis(min_max(all().map(|b| b.2)), false, 0.05, true, yt)?;
    let alpha = if c.series.len() > 1 { 0.35 } else { 0.6 };
    // One outline per series: a step path along the bin tops, down to 0 at gaps and ends.
    let outlines: Vec<Vec<(f64, f64)>> = bins
        .iter()
        .map(|b| {
            let mut path = vec![];
            for (i, &(s, e, n)) in b.iter().enumerate() {
                if i == 0 || s != b[i - 1].1 {
                    if i > 0 {
                        path.push((b[i - 1].1, 0.0));
                    }
                    path.push((s, 0.0));
                }
                path.extend([(s, n), (e, n)]);
            }
            if let Some(last) = b.last() {
                path.push((last.1, 0.0));
            }
            path
        })
        .collect();
    let mut ink = vec![];
    for path in &outlines {
        for w in path.windows(2) {
            sample_segment(
                &mut ink,
                (x.norm(w[0].0), y.norm(w[0].1)),
                (x.norm(w[1].0), y.norm(w[1].1)),
            );
        }
    }
    let legend = c
        .series
        .iter()
        .zip(&bins)
        .map(|((n, _), b)| if b.is_empty() { no_data(n) } else { n.clone() })
        .collect();
    let frame = Frame {
        title: &c.title,
        x_label: &c.x_label,
        y_label: &c.y_label,
        x,
        y,
        x_grid: true,
        legend,
        ink,
    };
    let show_legend = c.series.len() > 1;
    framed(root, fonts, frame, |ctx| {
        // All fills first, then the outlines, so no outline hides under another series' fill.
        for (j, b) in bins.iter().enumerate() {
            let fill = PALETTE[j % PALETTE.len()].mix(alpha).filled();
            ctx.draw_series(
                b.iter()
                    .map(|&(s, e, n)| Rectangle::new([(s, 0.0), (e, n)], fill)),
            )
            .or_err("drawing bins")?;
        }
        for (j, ((name, _), path)) in c.series.iter().zip(&outlines).enumerate() {
            let color = PALETTE[j % PALETTE.len()];
            let fill = color.mix(alpha).filled();
            let outline =
                (!path.is_empty()).then(|| PathElement::new(path.clone(), color.stroke_width(2)));
            let anno = ctx.draw_series(outline).or_err("drawing bin outline")?;
            if show_legend && path.is_empty() {
                anno.label(no_data(name));
            } else if show_legend {
                anno.label(name.clone()).legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + Rectangle::new([(4, -6), (22, 6)], fill)
                        + Rectangle::new([(4, -6), (22, 6)], color)
                });
            }
        }
        Ok(bins.iter().any(|b| !b.is_empty()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, points: Vec<(f64, f64)>, style: Style) -> Series {
        Series {
            name: name.into(),
            points,
            style,
        }
    }

    fn line_chart(series: Vec<Series>, x_scale: Scale, y_scale: Scale) -> Chart {
        Chart::Line(LineChart {
            title: "Loss curve".into(),
            x_label: "epoch".into(),
            y_label: "perplexity".into(),
            x_scale,
            y_scale,
            series,
        })
    }

    fn hex(c: RGBColor) -> String {
        format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
    }

    /// Render to SVG and PNG in a temp dir; check the PNG header and return the SVG text.
    fn render_both(chart: &Chart, w: u32, h: u32) -> String {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("plot.png");
        render(chart, &png, w, h).unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert!(bytes.len() > 24);
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&bytes[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), w);
        assert_eq!(u32::from_be_bytes(bytes[20..24].try_into().unwrap()), h);
        let svg = dir.path().join("plot.SVG");
        render(chart, &svg, w, h).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
        assert!(
            text.contains(&format!("width=\"{w}\"")) && text.contains(&format!("height=\"{h}\""))
        );
        text
    }

    fn count(svg: &str, element: &str, attr: &str) -> usize {
        svg.lines()
            .filter(|l| l.trim_start().starts_with(element) && l.contains(attr))
            .count()
    }

    fn contains_text(svg: &str, text: &str) -> bool {
        svg.contains(&format!(">{text}</text>")) || svg.contains(&format!(">\n{text}\n</text>"))
    }

    #[test]
    fn line_chart_svg_and_png() {
        let chart = line_chart(
            vec![
                series(
                    "train",
                    (1..=20).map(|e| (e as f64, 30.0 / e as f64)).collect(),
                    Style::Line,
                ),
                series(
                    "valid",
                    (1..=20).map(|e| (e as f64, 40.0 / e as f64)).collect(),
                    Style::LineAndPoints,
                ),
                series(
                    "test",
                    (1..=20).map(|e| (e as f64, 50.0 / e as f64)).collect(),
                    Style::Points,
                ),
            ],
            Scale::Linear,
            Scale::Log,
        );
        let svg = render_both(&chart, 640, 480);
        for t in [
            "Loss curve",
            "epoch",
            "perplexity",
            "train",
            "valid",
            "test",
        ] {
            assert!(contains_text(&svg, t), "missing text {t:?}");
        }
        // Per series colour: one data polyline and one legend sample (none for the points series).
        for (i, want) in [2, 2, 0].into_iter().enumerate() {
            assert_eq!(
                count(
                    &svg,
                    "<polyline",
                    &format!("stroke=\"{}\"", hex(PALETTE[i]))
                ),
                want,
                "series {i}"
            );
        }
        assert_eq!(
            count(&svg, "<circle", &format!("fill=\"{}\"", hex(PALETTE[2]))),
            21
        ); // 20 + legend
    }

    #[test]
    fn zipf_fit_lines_share_colour_and_are_dashed() {
        let pts = |a: f64| {
            (1..=1000)
                .map(|r| (r as f64, 1e4 / (r as f64).powf(a)))
                .collect::<Vec<_>>()
        };
        let chart = line_chart(
            vec![
                series("unigram", pts(1.0), Style::Line),
                series(
                    "unigram fit",
                    vec![(1.0, 1e4), (1000.0, 10.0)],
                    Style::Dashed,
                ),
                series("bigram", pts(0.7), Style::Line),
                series(
                    "bigram fit",
                    vec![(1.0, 1e4), (1000.0, 1e4 / 1000f64.powf(0.7))],
                    Style::Dashed,
                ),
            ],
            Scale::Log,
            Scale::Log,
        );
        let Chart::Line(c) = &chart else {
            unreachable!()
        };
        assert_eq!(
            line_colors(&c.series),
            vec![PALETTE[0], PALETTE[0], PALETTE[1], PALETTE[1]]
        );
        let svg = render_both(&chart, 800, 600);
        for t in [
            "unigram",
            "unigram fit",
            "bigram",
            "bigram fit",
            "1",
            "10",
            "100",
            "1000",
        ] {
            assert!(contains_text(&svg, t), "missing text {t:?}");
        }
        // A dashed line is many short polylines.
        assert!(
            count(
                &svg,
                "<polyline",
                &format!("stroke=\"{}\"", hex(PALETTE[0]))
            ) > 10
        );
    }

    #[test]
    fn bar_chart_svg_and_png() {
        let chart = Chart::Bar(BarChart {
            title: "Test perplexity".into(),
            x_label: "model".into(),
            y_label: "ppl".into(),
            y_scale: Scale::Linear,
            groups: vec!["rnn".into(), "gru".into(), "lstm".into()],
            bars: vec![
                ("timemachine".into(), vec![8.0, 5.0, 5.5]),
                ("wikitext".into(), vec![12.0, f64::NAN, 9.0]),
            ],
        });
        let svg = render_both(&chart, 800, 600);
        for t in [
            "Test perplexity",
            "model",
            "ppl",
            "rnn",
            "gru",
            "lstm",
            "timemachine",
            "wikitext",
        ] {
            assert!(contains_text(&svg, t), "missing text {t:?}");
        }
        // Bars plus one legend swatch; the NaN bar is skipped.
        assert_eq!(
            count(&svg, "<rect", &format!("fill=\"{}\"", hex(PALETTE[0]))),
            4
        );
        assert_eq!(
            count(&svg, "<rect", &format!("fill=\"{}\"", hex(PALETTE[1]))),
            3
        );
        let log = Chart::Bar(BarChart {
            y_scale: Scale::Log,
            bars: vec![("x".into(), vec![0.0, -1.0, 1e6])],
            ..Default::default()
        });
        render_both(&log, 400, 300);
    }

    #[test]
    fn histogram_svg_and_png() {
        let bins = |mu: f64| {
            (0..10)
                .map(|i| (i as f64, i as f64 + 1.0, 100.0 - (i as f64 - mu).powi(2)))
                .collect::<Vec<_>>()
        };
        let chart = Chart::Histogram(Histogram {
            title: "Lengths".into(),
            x_label: "tokens".into(),
            y_label: "count".into(),
            series: vec![("src".into(), bins(3.0)), ("tgt".into(), bins(6.0))],
        });
        let svg = render_both(&chart, 800, 600);
        for t in ["Lengths", "tokens", "count", "src", "tgt"] {
            assert!(contains_text(&svg, t), "missing text {t:?}");
        }
        for (i, c) in PALETTE[..2].iter().enumerate() {
            assert_eq!(
                count(&svg, "<polyline", &format!("stroke=\"{}\"", hex(*c))),
                1,
                "outline {i}"
            );
        }
    }

    #[test]
    fn hostile_data_does_not_panic() {
        let nan = f64::NAN;
        let inf = f64::INFINITY;
        let diverged: Vec<(f64, f64)> = (1..=10)
            .map(|e| {
                (
                    e as f64,
                    if e < 6 {
                        10f64.powi(e * 6)
                    } else if e == 6 {
                        inf
                    } else {
                        nan
                    },
                )
            })
            .collect();
        let cases = vec![
            vec![
                series("diverged", diverged.clone(), Style::Line),
                series("empty", vec![], Style::Dashed),
            ],
            vec![series(
                "nan only",
                vec![(nan, nan), (inf, 1.0), (1.0, -inf)],
                Style::Line,
            )],
            vec![series("one point", vec![(5.0, 5.0)], Style::Line)],
            vec![series(
                "constant",
                (0..10).map(|i| (i as f64, 0.0)).collect(),
                Style::LineAndPoints,
            )],
            vec![series(
                "gap",
                vec![(1.0, 1.0), (2.0, nan), (3.0, 3.0), (4.0, 4.0)],
                Style::Dashed,
            )],
            vec![series(
                "nonpositive",
                vec![
                    (0.0, 0.0),
                    (-1.0, 5.0),
                    (2.0, -3.0),
                    (3.0, 1e-300),
                    (4.0, 1e300),
                ],
                Style::Points,
            )],
            vec![],
            (0..25)
                .map(|i| {
                    series(
                        &format!("s{i}"),
                        vec![(i as f64, 1.0), (i as f64 + 1.0, 2.0)],
                        Style::Line,
                    )
                })
                .collect(),
        ];
        for (i, s) in cases.into_iter().enumerate() {
            for (xs, ys) in [
                (Scale::Linear, Scale::Linear),
                (Scale::Linear, Scale::Log),
                (Scale::Log, Scale::Log),
            ] {
                let chart = line_chart(s.clone(), xs, ys);
                for ext in ["svg", "png"] {
                    let dir = tempfile::tempdir().unwrap();
                    let path = dir.path().join(format!("p.{ext}"));
                    let r = render(&chart, &path, 300, 200);
                    // Linear axes over 1e30 are fine; only an overflowing span may be refused.
                    assert!(r.is_ok(), "case {i} {xs:?}/{ys:?} {ext}: {r:?}");
                    assert!(std::fs::metadata(&path).unwrap().len() > 0);
                }
            }
        }
        let hist = Chart::Histogram(Histogram {
            series: vec![
                (
                    "bad".into(),
                    vec![(1.0, 1.0, 5.0), (nan, 2.0, 1.0), (3.0, 2.0, 1.0)],
                ),
                ("none".into(), vec![]),
                ("one".into(), vec![(0.0, 1.0, 0.0)]),
            ],
            ..Default::default()
        });
        let bars = Chart::Bar(BarChart {
            groups: vec!["a".into(); 200],
            bars: vec![("z".into(), vec![0.0; 3]), ("e".into(), vec![])],
            ..Default::default()
        });
        let empty_bars = Chart::Bar(BarChart::default());
        for c in [
            hist,
            bars,
            empty_bars,
            line_chart(
                vec![series(
                    "huge",
                    vec![(0.0, -f64::MAX), (1.0, f64::MAX)],
                    Style::Line,
                )],
                Scale::Linear,
                Scale::Log,
            ),
        ] {
            render_both(&c, 320, 240);
        }
        // An overflowing linear span is an error, not a panic.
        let huge = line_chart(
            vec![series(
                "huge",
                vec![(0.0, -f64::MAX), (1.0, f64::MAX)],
                Style::Line,
            )],
            Scale::Linear,
            Scale::Linear,
        );
        let dir = tempfile::tempdir().unwrap();
        assert!(render(&huge, &dir.path().join("h.svg"), 300, 200).is_err());
    }

    #[test]
    fn bad_requests_are_errors() {
        let chart = line_chart(vec![], Scale::Linear, Scale::Linear);
        let dir = tempfile::tempdir().unwrap();
        assert!(render(&chart, &dir.path().join("p.jpg"), 300, 200).is_err());
        assert!(render(&chart, &dir.path().join("p"), 300, 200).is_err());
        assert!(render(&chart, &dir.path().join("p.png"), 10, 10).is_err());
        assert!(render(&chart, &dir.path().join("missing/p.png"), 300, 200).is_err());
        assert!(render(&chart, &dir.path().join("missing/p.svg"), 300, 200).is_err());
    }

    #[test]
    fn output_is_deterministic() {
        let chart = line_chart(
            vec![
                series("a", vec![(1.0, 2.0), (2.0, 3.0)], Style::Line),
                series("b", vec![(1.0, 3.0)], Style::Points),
            ],
            Scale::Linear,
            Scale::Linear,
        );
        let dir = tempfile::tempdir().unwrap();
        for ext in ["svg", "png"] {
            let (p, q) = (
                dir.path().join(format!("1.{ext}")),
                dir.path().join(format!("2.{ext}")),
            );
            render(&chart, &p, 400, 300).unwrap();
            render(&chart, &q, 400, 300).unwrap();
            assert_eq!(std::fs::read(p).unwrap(), std::fs::read(q).unwrap());
        }
    }

    #[test]
    fn tick_formatting() {
        let labels = |t: Vec<(f64, String)>| t.into_iter().map(|t| t.1).collect::<Vec<_>>();
        assert_eq!(
            labels(linear_ticks(0.0, 1.0, 5)),
            ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
        );
        assert_eq!(
            labels(linear_ticks(-0.3, 0.3, 6)),
            ["-0.3", "-0.2", "-0.1", "0.0", "0.1", "0.2", "0.3"]
        );
        assert_eq!(
            labels(linear_ticks(0.0, 3e6, 3)),
            ["0", "1e6", "2e6", "3e6"]
        );
        assert_eq!(
            labels(log_ticks(1.0, 1000.0, 10).0),
            ["1", "10", "100", "1000"]
        );
        let (big, minor) = log_ticks(1.0, 1e30, 8);
        assert_eq!(big.first().unwrap().1, "10⁰");
        assert!(
            big.len() <= 8 && big.iter().all(|t| t.1.starts_with("10")),
            "{big:?}"
        );
        assert!(!minor.is_empty());
        assert_eq!(
            labels(log_ticks(1e-5, 1e-3, 10).0),
            ["10⁻⁵", "10⁻⁴", "10⁻³"]
        );
        assert_eq!(labels(log_ticks(3.0, 30.0, 10).0), ["5", "10", "20"]);
        assert!(log_ticks(95.0, 105.0, 10).0.len() >= 2);
    }
}
