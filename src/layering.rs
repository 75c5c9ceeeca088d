//! A test that keeps the crate's modules free of import cycles: every module's `crate::…` and
//! `super::…` paths (outside comments and its `#[cfg(test)] mod tests`) are edges of a graph,
//! and no strongly connected part may hold two modules. A parent reaching into its children is
//! an edge like any other; a child naming its parent is not (a child is part of its parent).
//! A type that two modules both need lives where both reach it without a loop, as `device.rs`
//! and `launcher_setting.rs` do.

#[cfg(test)]
mod tests {
    use petgraph::graph::DiGraph;
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Module path (`nn::core::cell`) → the file's text, outside comments and its test module.
    fn modules() -> BTreeMap<String, String> {
        fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
            for e in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()) {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, root, out);
                    continue;
                }
                if p.extension().is_none_or(|x| x != "rs") {
                    continue;
                }
                let rel = p.strip_prefix(root).unwrap().with_extension("");
                let mut parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if matches!(
                    parts.last().map(|s| s.as_str()),
                    Some("mod" | "lib" | "main")
                ) {
                    parts.pop();
                }
                let text = std::fs::read_to_string(&p).unwrap();
                let code = text
                    .split("\n#[cfg(test)]\nmod tests")
                    .next()
                    .unwrap()
                    .split("\n#[cfg(test)]\npub(crate) mod tests")
                    .next()
                    .unwrap()
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .collect::<Vec<_>>()
                    .join("\n");
                out.insert(parts.join("::"), code);
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut out = BTreeMap::new();
        walk(&root, &root, &mut out);
        out
    }

    /// The paths that follow `prefix` in `code`: `crate::a::b::C` gives `["a", "b", "C"]`.
    fn paths<'a>(code: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
        code.match_indices(prefix)
            .filter(|(i, _)| {
                !code[..*i]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':' || c == '$')
            })
            .map(|(i, _)| {
                let rest = &code[i + prefix.len()..];
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(rest.len());
                rest[..end].split("::").filter(|s| !s.is_empty()).collect()
            })
            .collect()
    }

    /// The module a path names: its longest prefix that is a module.
    fn resolve(mods: &BTreeMap<String, String>, path: &[&str]) -> Option<String> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].join("::"))
            .find(|m| mods.contains_key(m))
    }

    fn edges(mods: &BTreeMap<String, String>) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (m, code) in mods {
            let here: Vec<&str> = if m.is_empty() {
                vec![]
            } else {
                m.split("::").collect()
            };
            let parent = &here[..here.len().saturating_sub(1)];
            let mut named: Vec<Vec<&str>> = paths(code, "crate::");
            for p in paths(code, "super::") {
                named.push(parent.iter().copied().chain(p).collect());
            }
            for p in named {
                let Some(to) = resolve(mods, &p) else {
                    continue;
                };
                let is_ancestor = to.is_empty() || *m == to || m.starts_with(&format!("{to}::"));
                if !is_ancestor {
                    out.insert((m.clone(), to));
                }
            }
        }
        out
    }

    #[test]
    fn no_module_imports_itself_through_others() {
        let mods = modules();
        assert!(
            mods.contains_key("nn::core::cell"),
            "the walk found the modules"
        );
        let edges = edges(&mods);
        let mut g = DiGraph::<&str, ()>::new();
        let ix: BTreeMap<&str, _> = mods.keys().map(|m| (m.as_str(), g.add_node(m))).collect();
        for (a, b) in &edges {
            g.add_edge(ix[a.as_str()], ix[b.as_str()], ());
        }
        let cycles: Vec<String> = petgraph::algo::tarjan_scc(&g)
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| {
                let set: BTreeSet<&str> = c.iter().map(|n| g[*n]).collect();
                edges
                    .iter()
                    .filter(|(a, b)| set.contains(a.as_str()) && set.contains(b.as_str()))
                    .map(|(a, b)| format!("{a} -> {b}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .collect();
        assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
    }

    /// The check sees a cycle when there is one (so a pass is not a blind one).
    #[test]
    fn the_check_sees_a_planted_cycle() {
        let mut mods = modules();
        mods.get_mut("owner")
            .unwrap()
            .push_str("\nuse crate::cache::Store;\n");
        let e = edges(&mods);
        assert!(e.contains(&("owner".into(), "cache".into())));
        assert!(e.contains(&("cache".into(), "owner".into())));
        let sub = super::tests::paths("x crate::nn::core::Rows; y super::gemm::Choice", "crate::");
        assert_eq!(sub, vec![vec!["nn", "core", "Rows"]]);
    }
}
