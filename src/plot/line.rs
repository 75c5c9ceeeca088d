//! Line and point charts (log axes, Zipf fits, broken segments where data are missing).

use super::*;

pub(super) fn draw_line_chart<DB: DrawingBackend>(
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
