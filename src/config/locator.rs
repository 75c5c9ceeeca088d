//! Source positions for key paths. The YAML parser gives positions for syntax errors only; this
//! index maps a dotted key path (`stages.vocab.params.min_freq`) to the line and column where
//! that key is written, for block mappings and one-line flow mappings (`{ a: 1, b: 2 }`).

use std::collections::HashMap;

#[derive(Debug, Clone, Default)]
pub struct Locator {
    positions: HashMap<String, (usize, usize)>,
    /// Where a key written twice under the same parent appears the second time.
    repeats: HashMap<String, (usize, usize)>,
    /// Key paths whose value comes from a `--set` (path → the `--set` as given).
    overrides: HashMap<String, String>,
}

impl Locator {
    pub fn new(text: &str) -> Self {
        let mut positions = HashMap::new();
        let mut repeats = HashMap::new();
        // Stack of (indent, key) for the open block mappings.
        let mut stack: Vec<(usize, String)> = Vec::new();
        for (ln, line) in text.lines().enumerate() {
            let content = strip_comment(line);
            if content.trim().is_empty() || content.trim_start().starts_with("---") {
                continue;
            }
            let mut indent = content.len() - content.trim_start().len();
            let mut rest = content.trim_start();
            // A list item: its mapping keys sit two columns further in.
            while let Some(r) = rest.strip_prefix("- ") {
                indent += 2;
                rest = r.trim_start();
            }
            while stack.last().is_some_and(|(i, _)| *i >= indent) {
                stack.pop();
            }
            let Some((key, after)) = split_key(rest) else {
                continue;
            };
            let mut path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
            path.push(&key);
            let full = path.join(".");
            if positions.contains_key(&full) {
                repeats.entry(full.clone()).or_insert((ln + 1, indent + 1));
            } else {
                positions.insert(full.clone(), (ln + 1, indent + 1));
            }
            let after_trim = after.trim();
            if after_trim.starts_with('{') {
                let base = content.len() - after.len() + (after.len() - after.trim_start().len());
                index_flow(&mut positions, &full, after_trim, ln + 1, base + 1);
            }
            stack.push((indent, key));
        }
        Locator {
            positions,
            repeats,
            overrides: HashMap::new(),
        }
    }

    /// Where `path` is written a second time, if it is.
    pub fn repeat(&self, path: &str) -> Option<(usize, usize)> {
        self.repeats.get(path).copied()
    }

    /// The value at `path` comes from `--set {set}`, not from the file.
    pub fn set_by(&mut self, path: &str, set: &str) {
        self.overrides.insert(path.to_string(), set.to_string());
    }

    /// The `--set` that gave the value at `path` or at one of its parents, if one did.
    pub fn override_of(&self, path: &str) -> Option<&str> {
        let mut p = path;
        loop {
            if let Some(s) = self.overrides.get(p) {
                return Some(s);
            }
            p = &p[..p.rfind('.')?];
        }
    }

    /// (line, column), both 1-based, of the key at `path`; the nearest written parent otherwise.
    pub fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return Some(*pos);
            }
            p = &p[..p.rfind('.')?];
        }
    }
}

fn strip_comment(line: &str) -> &str {
    let mut in_s = false;
    let mut in_d = false;
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !in_d => in_s = !in_s,
            '"' if !in_s => in_d = !in_d,
            '#' if !in_s && !in_d && (i == 0 || line[..i].ends_with(' ')) => return &line[..i],
            _ => {}
        }
    }
    line
}

/// `key: rest` → (key, rest), for plain or quoted keys.
fn split_key(s: &str) -> Option<(String, &str)> {
    let (key, rest) = if let Some(r) = s.strip_prefix('"').or_else(|| s.strip_prefix('\'')) {
        let q = s.as_bytes()[0] as char;
        let end = r.find(q)?;
        (r[..end].to_string(), r[end + 1..].strip_prefix(':')?)
    } else {
        let i = s.find(':')?;
        let key = &s[..i];
        if key.is_empty()
            || key.contains(' ') && !key.trim().chars().all(|c| c.is_alphanumeric() || c == '_')
        {
            return None;
        }
        (key.trim().to_string(), &s[i + 1..])
    };
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    Some((key, rest))
}

/// Keys of a one-line flow mapping `{ a: 1, b: { c: 2 } }` starting at column `col`. Quoted
/// scalars are skipped whole (`description: "}"` closes nothing); text that does not balance
/// ends the indexing there (its keys then have no position), never the program.
fn index_flow(
    positions: &mut HashMap<String, (usize, usize)>,
    parent: &str,
    s: &str,
    line: usize,
    col: usize,
) {
    let mut stack: Vec<String> = vec![parent.to_string()];
    let mut token_start: Option<usize> = None;
    let mut last_key: Option<String> = None;
    let chars: Vec<char> = s.chars().collect();
    // A quote opens a quoted scalar only where a scalar starts (not in `don't`).
    let starts_scalar = |i: usize| {
        chars[..i]
            .iter()
            .rev()
            .find(|c| !c.is_whitespace())
            .is_none_or(|c| matches!(c, '{' | '[' | ',' | ':'))
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' if starts_scalar(i) => {
                i = skip_quoted(&chars, i);
                continue;
            }
            '{' => {
                let Some(top) = stack.last().cloned() else {
                    return;
                };
                if let Some(k) = last_key.take() {
                    stack.push(format!("{top}.{k}"));
                } else if i > 0 {
                    stack.push(top);
                }
                token_start = Some(i + 1);
            }
            '}' => {
                stack.pop();
                if stack.is_empty() {
                    return;
                }
                token_start = None;
            }
            '[' => {
                // Lists of scalars hold no keys; skip to the matching bracket.
                let mut depth = 0usize;
                while i < chars.len() {
                    match chars[i] {
                        '"' | '\'' if starts_scalar(i) => {
                            i = skip_quoted(&chars, i);
                            continue;
                        }
                        '[' => depth += 1,
                        ']' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                token_start = None;
            }
            ',' => token_start = Some(i + 1),
            ':' => {
                if let Some(st) = token_start.take().filter(|&st| st <= i) {
                    let raw: String = chars[st..i].iter().collect();
                    let key = raw.trim().trim_matches('"').trim_matches('\'').to_string();
                    let offset = st + raw.chars().take_while(|c| c.is_whitespace()).count();
                    if let Some(p) = stack.last() {
                        positions
                            .entry(format!("{p}.{key}"))
                            .or_insert((line, col + offset));
                    }
                    last_key = Some(key);
                }
            }
            _ => {}
        }
        i += 1;
    }
}

/// The index just past the quoted scalar that opens at `i` (`"..."` with `\` escapes, or
/// `'...'` with `''` for a quote); the end of the text if it is not closed.
fn skip_quoted(chars: &[char], i: usize) -> usize {
    let q = chars[i];
    let mut j = i + 1;
    while j < chars.len() {
        match chars[j] {
            '\\' if q == '"' => j += 2,
            c if c == q => {
                if q == '\'' && chars.get(j + 1) == Some(&'\'') {
                    j += 2;
                } else {
                    return j + 1;
                }
            }
            _ => j += 1,
        }
    }
    chars.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_block_and_flow_keys() {
        let text = "name: x\nstages:\n  vocab:\n    kind: build_vocab   # comment\n    inputs: { tokens: words }\n    params:\n      min_freq: 10\n";
        let l = Locator::new(text);
        assert_eq!(l.find("name"), Some((1, 1)));
        assert_eq!(l.find("stages.vocab"), Some((3, 3)));
        assert_eq!(l.find("stages.vocab.kind"), Some((4, 5)));
        assert_eq!(l.find("stages.vocab.inputs.tokens"), Some((5, 15)));
        assert_eq!(l.find("stages.vocab.params.min_freq"), Some((7, 7)));
        // Unknown keys fall back to the nearest parent that is written.
        assert_eq!(l.find("stages.vocab.params.nope"), Some((6, 5)));
        assert_eq!(l.find("other"), None);
    }

    #[test]
    fn quoted_braces_and_unbalanced_text_never_panic() {
        // Once a panic at `stack.last().unwrap()`: the quoted `}` closed the mapping.
        let text = "name: x\nstages:\n  s: { kind: toy_sequence, description: \"}\", params: { length: 3 } }\n";
        let l = Locator::new(text);
        assert_eq!(l.find("stages.s.params.length"), Some((3, 56)));
        for text in [
            "a: { b: 1 } } { c: 2 }\n",
            "a: }}}{{{\n",
            "a: { 'x'': {: 1, \"\\\": [ }\n",
            "a: { b: [1, \"]\", 2], c: 3 }\n",
            "a: {:}\n",
            "\"a\nb: '\n- - - \"\n",
        ] {
            let _ = Locator::new(text);
        }
        let l = Locator::new("a: { b: [1, \"]\", 2], c: 3 }\n");
        assert_eq!(l.find("a.c"), Some((1, 22)));
    }
}
