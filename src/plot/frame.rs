//! Layout shared by every chart kind: title, margins sized to the labels, axes, grid, legend.

use super::*;

/// Everything that differs between chart kinds once the data are prepared.
pub(super) struct Frame<'c> {
    pub(super) title: &'c str,
    pub(super) x_label: &'c str,
    pub(super) y_label: &'c str,
    pub(super) x: Axis,
    pub(super) y: Axis,
    pub(super) x_grid: bool,
    pub(super) legend: Vec<String>,
    /// Samples of where ink goes, in axis-normalised coordinates, for legend placement.
    pub(super) ink: Vec<(f64, f64)>,
}

pub(super) type Ctx<'a, DB> = ChartContext<'a, DB, Cartesian2d<Axis, Axis>>;

pub(super) struct Fonts {
    pub(super) base: f64,
}
impl Fonts {
    pub(super) fn style(&self, scale: f64) -> TextStyle<'static> {
        TextStyle::from((FONT, self.base * scale).into_font()).color(&BLACK)
    }
}

pub(super) fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, chart: &Chart) -> Result<()> {
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

pub(super) fn text_size<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    text: &str,
    style: &TextStyle,
) -> Result<(u32, u32)> {
    root.estimate_text_size(text, style)
        .or_err("measuring text")
}

/// Build the chart frame (title, margins sized to the labels, axes, grid) and, after `body`
/// drew the data, the legend (when there is more than one series) or a "no data" note.
pub(super) fn framed<'r, DB: DrawingBackend>(
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
pub(super) fn legend_corner(ink: &[(f64, f64)], bw: f64, bh: f64) -> SeriesLabelPosition {
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
pub(super) fn sample_segment(ink: &mut Vec<(f64, f64)>, p: (f64, f64), q: (f64, f64)) {
    let n = (((q.0 - p.0).hypot(q.1 - p.1) * 50.0).ceil() as usize).clamp(1, 20);
    ink.extend((0..=n).map(|i| {
        let t = i as f64 / n as f64;
        (p.0 + (q.0 - p.0) * t, p.1 + (q.1 - p.1) * t)
    }));
}

/// Split a series into runs of consecutive usable points.
pub(super) fn segments(points: &[(f64, f64)], xlog: bool, ylog: bool) -> Vec<Vec<(f64, f64)>> {
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

pub(super) fn no_data(name: &str) -> String {
    format!("{name} (no data)")
}
