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

    /// Every path in `code` that starts with `crate`, `super` or `self` (at a word's start),
    /// with `use` groups expanded: `use super::{gru, super::math::f}` gives
    /// `["super", "gru"]` and `["super", "super", "math", "f"]`.
    fn paths(code: &str) -> Vec<Vec<String>> {
        let bytes = code.as_bytes();
        let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if !matches!(bytes[i], b'c' | b's') {
                i += 1;
                continue;
            }
            let at_start =
                i == 0 || !(ident(bytes[i - 1]) || bytes[i - 1] == b':' || bytes[i - 1] == b'$');
            let rest = &code[i..];
            let head = ["crate::", "super::", "self::"]
                .into_iter()
                .find(|h| rest.starts_with(h));
            match head {
                Some(h) if at_start => {
                    let (trees, used) = tree(rest);
                    out.extend(trees);
                    i += used.max(h.len());
                }
                _ => i += 1,
            }
        }
        out
    }

    /// The paths of one use tree at the start of `s` (`a::b::{c, d::e}`), and the bytes read.
    fn tree(s: &str) -> (Vec<Vec<String>>, usize) {
        let b = s.as_bytes();
        let skip_ws = |mut i: usize| {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            i
        };
        let mut i = skip_ws(0);
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        if i == start {
            // `*` or `{` with no name before it: the prefix itself.
            return (vec![vec![]], i);
        }
        let seg = s[start..i].to_string();
        let j = skip_ws(i);
        if !s[j..].starts_with("::") {
            return (vec![vec![seg]], i);
        }
        let k = skip_ws(j + 2);
        if s[k..].starts_with('{') {
            let mut out = Vec::new();
            let mut p = k + 1;
            loop {
                p = skip_ws(p);
                if p >= b.len() || b[p] == b'}' {
                    break;
                }
                let (sub, used) = tree(&s[p..]);
                out.extend(sub.into_iter().map(|mut v| {
                    v.insert(0, seg.clone());
                    v
                }));
                p = skip_ws(p + used.max(1));
                if p < b.len() && b[p] == b',' {
                    p += 1;
                }
            }
            return (out, (p + 1).min(b.len()));
        }
        let (sub, used) = tree(&s[k..]);
        let out = sub
            .into_iter()
            .map(|mut v| {
                v.insert(0, seg.clone());
                v
            })
            .collect();
        (out, k + used)
    }

    /// The module a path names from module `here`: `crate`, `super` and `self` resolved, then
    /// its longest prefix that is a module.
    fn resolve(mods: &BTreeMap<String, String>, here: &[&str], path: &[String]) -> Option<String> {
        let mut base: Vec<String> = match path.first().map(|s| s.as_str()) {
            Some("crate") => vec![],
            Some("self") => here.iter().map(|s| s.to_string()).collect(),
            Some("super") => here[..here.len().checked_sub(1)?]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            _ => return None,
        };
        let mut rest = &path[1..];
        while rest.first().is_some_and(|s| s == "super") {
            base.pop()?;
            rest = &rest[1..];
        }
        let full: Vec<String> = base
            .into_iter()
            .chain(rest.iter().filter(|s| *s != "self").cloned())
            .collect();
        (0..=full.len())
            .rev()
            .map(|n| full[..n].join("::"))
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
            for p in paths(code) {
                let Some(to) = resolve(mods, &here, &p) else {
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
        let p = paths("x crate::nn::core::Rows; use super::{gemm::Choice, super::math::{f, g}};");
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            p,
            vec![
                s(&["crate", "nn", "core", "Rows"]),
                s(&["super", "gemm", "Choice"]),
                s(&["super", "super", "math", "f"]),
                s(&["super", "super", "math", "g"]),
            ]
        );
        // `super::super` from a cell climbs two modules.
        let here = ["nn", "core", "forward"];
        assert_eq!(resolve(&mods, &here, &p[2]).as_deref(), Some("nn::math"));
        assert_eq!(resolve(&mods, &here, &p[1]).as_deref(), Some("nn::core"));
    }
}
