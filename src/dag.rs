//! `seqpipe dag`: the stage graph as text, Graphviz dot or Mermaid.

use crate::pipeline::Pipeline;
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DagFormat {
    Text,
    Dot,
    Mermaid,
}

pub fn render(p: &Pipeline, format: DagFormat) -> String {
    let mut s = String::new();
    match format {
        DagFormat::Text => {
            let _ = writeln!(s, "{} ({} stages, in run order)", p.name, p.stages.len());
            for &i in &p.order {
                let st = &p.stages[i];
                let ins: Vec<String> = st
                    .inputs
                    .iter()
                    .map(|(r, u)| {
                        if *r == p.stages[*u].name {
                            r.clone()
                        } else {
                            format!("{r}={}", p.stages[*u].name)
                        }
                    })
                    .collect();
                let _ = write!(s, "  {} [{}]", st.name, st.kind.name);
                if !ins.is_empty() {
                    let _ = write!(s, " <- {}", ins.join(", "));
                }
                s.push('\n');
            }
        }
        DagFormat::Dot => {
            let _ = writeln!(
                s,
                "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box];",
                p.name
            );
            for &i in &p.order {
                let st = &p.stages[i];
                let _ = writeln!(
                    s,
                    "  \"{}\" [label=\"{}\\n{}\"];",
                    st.name, st.name, st.kind.name
                );
            }
            for &i in &p.order {
                for (r, u) in &p.stages[i].inputs {
                    let _ = writeln!(
                        s,
                        "  \"{}\" -> \"{}\" [label=\"{r}\"];",
                        p.stages[*u].name, p.stages[i].name
                    );
                }
            }
            s.push_str("}\n");
        }
        DagFormat::Mermaid => {
            s.push_str("flowchart LR\n");
            for &i in &p.order {
                let st = &p.stages[i];
                let _ = writeln!(
                    s,
                    "  {}[\"{}<br/><i>{}</i>\"]",
                    st.name, st.name, st.kind.name
                );
            }
            for &i in &p.order {
                for (r, u) in &p.stages[i].inputs {
                    let _ = writeln!(s, "  {} -->|{r}| {}", p.stages[*u].name, p.stages[i].name);
                }
            }
        }
    }
    s
}
