//! `report`: the page a user reads after a run, `outputs/<pipeline>/report.md`: what was run, a
//! results table (the params that differ, headline numbers, generated text) and the
//! plots of its `plot` inputs.

use super::{Roles, Stage};
use crate::artifacts::Art;
use crate::context::StageCtx;
use crate::results::{table, RowSource};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The report's heading.
    pub title: String,
    /// A paragraph under the title: what the experiment asks.
    #[serde(default)]
    pub text: Option<String>,
    /// Summary keys to show; all numeric ones when empty.
    #[serde(default)]
    pub columns: Vec<String>,
}

impl Stage for Report {
    const KIND: &'static str = "report";
    const VERSION: u32 = 3;
    const ABOUT: &'static str = "A Markdown report (outputs/<pipeline>/report.md): results table across its inputs, plots embedded";
    const ROLES: Roles = Roles::AnyNonEmpty;
    const OUTPUT: Option<Art> = Some(Art::Report);

    fn run(&self, ctx: &mut StageCtx) -> Result<()> {
        let mut md = format!("# {}\n\n", self.title);
        if let Some(t) = &self.text {
            md.push_str(t.trim());
            md.push_str("\n\n");
        }
        md.push_str("Each row is a stage; its files are in the folder of the same name beside this page, and the resolved pipeline of every run (seed, params, keys, timings) is in `runs/`.\n\n");
        // Rows of different kinds do not share params: one table per kind, in input order.
        let mut groups: Vec<(String, Vec<RowSource>)> = Vec::new();
        let mut plots = Vec::new();
        let mut tables = 0;
        for (_, info) in ctx.input_infos() {
            if info.dir.join("table.md").exists() {
                // A stage that made its own table (summary_table, encode): show it as it is.
                let t = std::fs::read_to_string(info.dir.join("table.md"))
                    .with_context(|| format!("reading the table of `{}`", info.stage))?;
                md.push_str(&format!(
                    "## {}\n\n{}\n",
                    info.stage,
                    t.trim_start_matches('#').trim_start()
                ));
                tables += 1;
            } else if info.kind == "plot" {
                let mut files: Vec<String> = std::fs::read_dir(&info.dir)?
                    .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                    .filter(|n| n.ends_with(".svg"))
                    .collect();
                files.sort();
                for f in files {
                    plots.push((info.stage.clone(), f));
                }
            } else {
                let row = RowSource {
                    name: info.stage.clone(),
                    params: info.params.clone(),
                    dir: Some(info.dir.clone()),
                };
                match groups.iter_mut().find(|(k, _)| *k == info.kind) {
                    Some((_, g)) => g.push(row),
                    None => groups.push((info.kind.clone(), vec![row])),
                }
            }
        }
        if !groups.is_empty() {
            md.push_str("## Results\n\n");
            for (k, group) in &groups {
                let t = table(group, &self.columns, false);
                if groups.len() > 1 {
                    md.push_str(&format!("### `{k}` stages\n\n"));
                }
                md.push_str(&t.markdown());
                md.push('\n');
                t.write_csv(&ctx.out_path(&format!("results_{k}.csv")))?;
            }
        }
        if !plots.is_empty() {
            md.push_str("## Plots\n\n");
            for (stage, f) in &plots {
                // Paths are relative to outputs/<pipeline>/, where report.md is published.
                md.push_str(&format!("![{stage}]({stage}/{f})\n\n"));
            }
        }
        ctx.summary("rows", groups.iter().map(|(_, g)| g.len()).sum::<usize>());
        ctx.summary("plots", plots.len());
        ctx.summary("tables", tables);
        ctx.write_text("report.md", &md)
    }
}
