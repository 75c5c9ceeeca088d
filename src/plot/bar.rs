//! Grouped bar charts.

use super::*;

pub(super) fn draw_bar_chart<DB: DrawingBackend>(
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
