//! `summary_table`: one row per input stage with the headline numbers of its summary, as CSV
//! and Markdown.

use super::{Roles, Stage};
use crate::context::{read_summary, StageCtx};
use crate::results::fmt_value;
use anyhow::Result;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SummaryTable {
    /// Summary keys to show as columns; all keys found when empty.
    #[serde(default)]
    pub columns: Vec<String>,
    /// A heading above the table.
    #[serde(default)]
    pub title: Option<String>,
}

impl Stage for SummaryTable {
    const KIND: &'static str = "summary_table";
    const VERSION: u32 = 3;
    const ABOUT: &'static str =
        "A table (CSV and Markdown) of the summaries of its inputs, one row per input";
    const ROLES: Roles = Roles::AnyNonEmpty;
    const OUTPUT: Option<crate::artifacts::Art> = Some(crate::artifacts::Art::Table);

    fn run(&self, ctx: &mut StageCtx) -> Result<()> {
        let mut rows = Vec::new();
        let mut columns: Vec<String> = self.columns.clone();
        for (role, dir) in ctx.inputs() {
            let s = read_summary(dir)?;
            if self.columns.is_empty() {
                for k in s.keys() {
                    if !columns.contains(k) {
                        columns.push(k.clone());
                    }
                }
            }
            rows.push((role.to_string(), s));
        }
        let mut w = csv::Writer::from_path(ctx.out_path("table.csv"))?;
        let mut header = vec!["stage".to_string()];
        header.extend(columns.iter().cloned());
        w.write_record(&header)?;
        let mut md = String::new();
        if let Some(t) = &self.title {
            md.push_str(&format!("## {t}\n\n"));
        }
        md.push_str(&format!(
            "| {} |\n|{}\n",
            header.join(" | "),
            "---|".repeat(header.len())
        ));
        for (role, s) in &rows {
            let mut rec = vec![role.clone()];
            rec.extend(
                columns
                    .iter()
                    .map(|c| s.get(c).map(fmt_value).unwrap_or_default()),
            );
            w.write_record(&rec)?;
            md.push_str(&format!("| {} |\n", rec.join(" | ")));
        }
        w.flush()?;
        ctx.write_text("table.md", &md)?;
        ctx.summary("rows", rows.len());
        Ok(())
    }
}
