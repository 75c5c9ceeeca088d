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

mod axes;
mod backend;
mod bar;
mod frame;
mod histogram;
mod line;
#[cfg(test)]
mod tests;

use axes::*;
use backend::*;
use bar::*;
use frame::*;
use histogram::*;
use line::*;

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
