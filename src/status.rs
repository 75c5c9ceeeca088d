//! `seqpipe status`: fresh or stale per stage, and why (the root cause for downstream stages).

use crate::cache::Store;
use crate::key::{explain_change, KeyRecord};
use crate::pipeline::Pipeline;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct StageStatus {
    pub name: String,
    pub fresh: bool,
    pub reasons: Vec<String>,
}

pub fn status(p: &Pipeline, records: &[KeyRecord], store: &Store) -> Vec<StageStatus> {
    let mut own: Vec<Vec<String>> = vec![Vec::new(); p.stages.len()];
    let mut fresh = vec![false; p.stages.len()];
    let mut out: Vec<Option<StageStatus>> = vec![None; p.stages.len()];
    for &i in &p.order {
        let st = &p.stages[i];
        let key = records[i].key();
        if let crate::cache::Lookup::Hit(_) = store.lookup(&key) {
            fresh[i] = true;
            out[i] = Some(StageStatus {
                name: st.name.clone(),
                fresh: true,
                reasons: vec![],
            });
            continue;
        }
        let mut reasons = Vec::new();
        match crate::view::view_key_at(&store.outputs().join(&p.name).join(&st.name)) {
            None => reasons.push("never run".to_string()),
            Some(prev) => match store.entry(&prev) {
                None => reasons.push("its last output is no longer in the cache".to_string()),
                Some(e) => {
                    reasons = explain_change(&e.record, &records[i]);
                    own[i] = reasons.clone();
                    // Inputs whose key changed: name the upstream stage and its root cause.
                    for (role, up) in &st.inputs {
                        let changed = e.record.inputs.get(role) != records[i].inputs.get(role);
                        if changed && !fresh[*up] {
                            let root = root_cause(p, *up, &own, &fresh);
                            let upn = &p.stages[*up].name;
                            if root.0 == *upn {
                                reasons.push(format!("upstream {upn} is stale ({})", root.1));
                            } else {
                                reasons.push(format!(
                                    "upstream {upn} is stale (root cause: {} — {})",
                                    root.0, root.1
                                ));
                            }
                        } else if changed {
                            reasons.push(format!("upstream {} changed", p.stages[*up].name));
                        }
                    }
                    if reasons.is_empty() {
                        reasons.push("its cache entry is missing or broken".to_string());
                    }
                }
            },
        }
        if own[i].is_empty() {
            own[i] = reasons
                .iter()
                .filter(|r| !r.starts_with("upstream"))
                .cloned()
                .collect();
        }
        out[i] = Some(StageStatus {
            name: st.name.clone(),
            fresh: false,
            reasons,
        });
    }
    p.order
        .iter()
        .map(|&i| out[i].clone().expect("every stage has a status"))
        .collect()
}

/// The first stale stage upstream of (and including) `i` with a reason of its own.
fn root_cause(p: &Pipeline, i: usize, own: &[Vec<String>], fresh: &[bool]) -> (String, String) {
    if !own[i].is_empty() {
        return (p.stages[i].name.clone(), own[i].join(", "));
    }
    for (_, up) in &p.stages[i].inputs {
        if !fresh[*up] {
            return root_cause(p, *up, own, fresh);
        }
    }
    (p.stages[i].name.clone(), "unknown".to_string())
}

pub struct StatusView<'a>(pub &'a Pipeline, pub &'a [StageStatus]);

impl fmt::Display for StatusView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stale = self.1.iter().filter(|s| !s.fresh).count();
        writeln!(
            f,
            "`{}`: {} of {} stages stale",
            self.0.name,
            stale,
            self.1.len()
        )?;
        let w = self.1.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for s in self.1 {
            if s.fresh {
                writeln!(f, "  fresh  {}", s.name)?;
            } else {
                writeln!(f, "  stale  {:<w$}  {}", s.name, s.reasons.join("; "))?;
            }
        }
        Ok(())
    }
}
