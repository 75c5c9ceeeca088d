//! Axes: one coordinate type for linear, log and categorical axes, with precomputed ticks.

use super::*;

#[derive(Clone)]
pub(super) struct Axis {
    pub(super) range: Range<f64>,
    pub(super) log: bool,
    /// Labelled ticks (bold grid lines).
    pub(super) ticks: Vec<(f64, String)>,
    /// Unlabelled light grid lines.
    pub(super) minor: Vec<f64>,
}

impl Axis {
    pub(super) fn norm(&self, v: f64) -> f64 {
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

pub(super) fn usable(v: f64, log: bool) -> bool {
    v.is_finite() && (!log || v > 0.0)
}

pub(super) fn min_max(vals: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    vals.into_iter().fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// Numeric axis over the (already filtered) data range `mm`, padded by `pad` of the span on
/// each side; `zero` makes a linear axis include 0 (bars, counts) without padding below it.
pub(super) fn numeric_axis(
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
pub(super) fn category_axis(names: &[String], every: usize) -> Axis {
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
pub(super) fn clean(v: f64) -> f64 {
    let c: f64 = format!("{v:.10e}").parse().unwrap_or(v);
    if c == 0.0 {
        0.0
    } else {
        c
    }
}

/// Compact general number format: plain for 1e-3 <= |v| < 1e5, else `1.5e6`.
pub(super) fn fmt_num(v: f64) -> String {
    let v = clean(v);
    if v == 0.0 || (1e-3..1e5).contains(&v.abs()) {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

pub(super) fn superscript(e: i32) -> String {
    e.to_string()
        .chars()
        .map(|c| match c {
            '-' => '⁻',
            d => ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹']
                [d.to_digit(10).unwrap_or(0) as usize],
        })
        .collect()
}

pub(super) fn pow10(e: i32) -> f64 {
    format!("1e{e}").parse().unwrap_or(f64::NAN)
}

/// Ticks at 1-2-5 multiples of a power of ten, at most about `max_ticks` of them.
pub(super) fn linear_ticks(lo: f64, hi: f64, max_ticks: usize) -> Vec<(f64, String)> {
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
pub(super) fn log_ticks(lo: f64, hi: f64, max_ticks: usize) -> (Vec<(f64, String)>, Vec<f64>) {
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
