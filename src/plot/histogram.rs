//! Histograms: equal-width bins over all series.

use super::*;

pub(super) fn draw_histogram<DB: DrawingBackend>(
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
