//! A results table across stages: the params that differ between them, their headline numbers
//! (from `summary.json`), training speed (from `speed.csv`) and generated text. The `report`
//! stage and `seqpipe compare` both show it.

use crate::context::read_summary;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub struct RowSource {
    pub name: String,
    pub params: Value,
    pub dir: Option<PathBuf>,
}

pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// Flatten params into `key.sub=value` pairs (the results tables of report.md and report.html).
pub(crate) fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                flatten(
                    &if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    },
                    x,
                    out,
                );
            }
        }
        Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        // As in variant names: `lr=1`, not `lr=1.0`.
        Value::Number(n) => {
            let s = match n.as_f64() {
                Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => {
                    format!("{}", f as i64)
                }
                _ => n.to_string(),
            };
            out.insert(prefix.to_string(), s);
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

pub fn fmt_value(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => {
                if f != 0.0 && (f.abs() >= 1e6 || f.abs() < 1e-3) {
                    format!("{f:.3e}")
                } else {
                    format!("{}", (f * 1e4).round() / 1e4)
                }
            }
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Null => "–".into(),
        other => other.to_string(),
    }
}

/// Median tokens/s of a training artifact, if it has a `speed.csv`.
pub fn median_speed(dir: &Path) -> Option<f64> {
    let mut r = csv::Reader::from_path(dir.join("speed.csv")).ok()?;
    let mut v: Vec<f64> = r
        .records()
        .filter_map(|x| x.ok()?.get(2)?.parse().ok())
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

/// The last generated text of an artifact (`samples.txt` or `generated.txt`).
pub fn last_text(dir: &Path) -> Option<String> {
    for f in ["generated.txt", "samples.txt"] {
        if let Ok(t) = std::fs::read_to_string(dir.join(f)) {
            if let Some(l) = t.lines().rev().find(|l| !l.trim().is_empty()) {
                return Some(l.to_string());
            }
        }
    }
    None
}

/// The flattened params whose value is not the same in every row, sorted.
pub(crate) fn differing_keys(flat: &[BTreeMap<String, String>]) -> Vec<String> {
    let mut differing: Vec<String> = flat.iter().flat_map(|m| m.keys().cloned()).collect();
    differing.sort();
    differing.dedup();
    differing.retain(|k| {
        let first = flat[0].get(k);
        flat.iter().any(|m| m.get(k) != first)
    });
    differing
}

/// The summary keys a table shows: `columns` as given, or every numeric and boolean key the
/// summaries have, in first-seen order.
pub(crate) fn summary_columns(
    columns: &[String],
    summaries: &[Option<serde_json::Map<String, Value>>],
) -> Vec<String> {
    let mut cols: Vec<String> = columns.to_vec();
    if cols.is_empty() {
        for s in summaries.iter().flatten() {
            for (k, v) in s {
                if (v.is_number() || v.is_boolean()) && !cols.contains(k) {
                    cols.push(k.clone());
                }
            }
        }
    }
    cols
}

/// Build the table. `columns` picks summary keys (all numeric and boolean ones when empty).
/// `speed` adds each row's median tokens/s from its `speed.csv`: for the terminal only, never
/// for a cached artifact, which must be byte-identical across runs.
pub fn table(rows: &[RowSource], columns: &[String], speed: bool) -> Table {
    let flat: Vec<BTreeMap<String, String>> = rows
        .iter()
        .map(|r| {
            let mut m = BTreeMap::new();
            flatten("", &r.params, &mut m);
            m
        })
        .collect();
    let differing = differing_keys(&flat);
    let summaries: Vec<Option<serde_json::Map<String, Value>>> = rows
        .iter()
        .map(|r| r.dir.as_ref().and_then(|d| read_summary(d).ok()))
        .collect();
    let cols = summary_columns(columns, &summaries);
    let speeds: Vec<Option<f64>> = rows
        .iter()
        .map(|r| r.dir.as_deref().filter(|_| speed).and_then(median_speed))
        .collect();
    let texts: Vec<Option<String>> = rows
        .iter()
        .map(|r| r.dir.as_deref().and_then(last_text))
        .collect();
    let mut header = vec!["stage".to_string()];
    if rows.len() > 1 && !differing.is_empty() {
        header.push("differs".into());
    }
    header.extend(cols.iter().cloned());
    let has_speed = speeds.iter().any(Option::is_some);
    if has_speed {
        header.push("tokens/s".into());
    }
    let has_text = texts.iter().any(Option::is_some);
    if has_text {
        header.push("text".into());
    }
    let mut out = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let mut row = vec![r.name.clone()];
        if rows.len() > 1 && !differing.is_empty() {
            row.push(
                differing
                    .iter()
                    .filter_map(|k| flat[i].get(k).map(|v| format!("{k}={v}")))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
        for c in &cols {
            row.push(match &summaries[i] {
                Some(s) => s.get(c).map(fmt_value).unwrap_or_else(|| "–".into()),
                None => "not run".into(),
            });
        }
        if has_speed {
            row.push(
                speeds[i]
                    .map(|s| format!("{s:.0}"))
                    .unwrap_or_else(|| "–".into()),
            );
        }
        if has_text {
            row.push(texts[i].clone().unwrap_or_default());
        }
        out.push(row);
    }
    Table { header, rows: out }
}

impl Table {
    pub fn markdown(&self) -> String {
        let esc = |s: &str| s.replace('|', "\\|");
        let mut md = format!(
            "| {} |\n|{}\n",
            self.header.join(" | "),
            "---|".repeat(self.header.len())
        );
        for r in &self.rows {
            md.push_str(&format!(
                "| {} |\n",
                r.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | ")
            ));
        }
        md
    }

    pub fn write_csv(&self, path: &Path) -> anyhow::Result<()> {
        let mut w = csv::Writer::from_path(path)?;
        w.write_record(&self.header)?;
        for r in &self.rows {
            w.write_record(r)?;
        }
        w.flush()?;
        Ok(())
    }

    /// Plain aligned text for the terminal.
    pub fn text(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count().min(60));
            }
        }
        let line = |cells: &[String]| {
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let c: String = c.chars().take(60).collect();
                    format!("{c:<w$}", w = widths[i])
                })
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        let mut s = line(&self.header) + "\n";
        for r in &self.rows {
            s += &(line(r) + "\n");
        }
        s
    }
}
