//! The one parse of a pipeline file: YAML text → a tree of values, each with the line and column
//! where it is written. The parser is serde-saphyr (YAML 1.2, pure Rust, maintained); it gives
//! every node's place through `Spanned`, a place for every syntax error, and budgets for events,
//! aliases and nesting. This file is the only code that calls it.
//!
//! While the tree is built, every value is counted with aliases expanded, and the nesting depth is
//! tracked: a file that would cross [`super::limits`] stops at the value that crosses, before
//! anything is expanded further.

use super::limits::{Crossed, MAX_DEPTH, MAX_NODES};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;
use std::cell::Cell;
use std::fmt;

/// A 1-based (line, column).
pub type Pos = (usize, usize);

/// A value of the file and where it is written: a mapping's value at its key, a list item at
/// the key of its list (keys are what messages point at; a span on every value would double the
/// cost of a parse).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub at: Pos,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in file order; a key written twice appears twice.
    Map(Vec<Entry>),
}

/// One `key: value` of a mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: Key,
    pub value: Node,
}

/// A mapping key: its text, whether it was a string (`1:` and `true:` are not), and its place.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub text: String,
    pub is_str: bool,
    pub at: Pos,
}

/// Why a text did not give a tree.
#[derive(Debug)]
pub enum ParseError {
    /// Not YAML, or YAML this reader refuses: the parser's message and the place it gives.
    Syntax { message: String, at: Option<Pos> },
    /// The file crossed a bound; `at` is where the parser was when it did.
    Limit { crossed: Crossed, at: Option<Pos> },
}

thread_local! {
    /// Values seen so far in this thread's parse, aliases expanded.
    static NODES: Cell<usize> = const { Cell::new(0) };
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    static CROSSED: Cell<Option<Crossed>> = const { Cell::new(None) };
}

const LIMIT_MESSAGE: &str = "seqpipe: a pipeline-file limit was crossed";

fn bump<E: de::Error>() -> Result<(), E> {
    let n = NODES.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    if n > MAX_NODES {
        CROSSED.with(|c| c.set(Some(Crossed::Nodes)));
        return Err(E::custom(LIMIT_MESSAGE));
    }
    Ok(())
}

/// Enter a mapping or list: one level deeper, refused past [`MAX_DEPTH`].
fn enter<E: de::Error>() -> Result<(), E> {
    let d = DEPTH.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    if d > MAX_DEPTH {
        CROSSED.with(|c| c.set(Some(Crossed::Depth)));
        return Err(E::custom(LIMIT_MESSAGE));
    }
    Ok(())
}

fn leave() {
    DEPTH.with(|c| c.set(c.get().saturating_sub(1)));
}

fn pos(s: &serde_saphyr::Location) -> Pos {
    (s.line() as usize, s.column() as usize)
}

/// The value part of a node, read by the parser; its place comes from the `Spanned` around it.
struct Bare(Value);

impl<'de> Deserialize<'de> for Bare {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BareVisitor).map(Bare)
    }
}

struct BareVisitor;

impl<'de> Visitor<'de> for BareVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        bump()?;
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        bump()?;
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        bump()?;
        Ok(Value::UInt(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        bump()?;
        i64::try_from(v)
            .map(Value::Int)
            .or_else(|_| u64::try_from(v).map(Value::UInt))
            .or(Ok(Value::Float(v as f64)))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        bump()?;
        Ok(u64::try_from(v).map_or(Value::Float(v as f64), Value::UInt))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        bump()?;
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        bump()?;
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        bump()?;
        Ok(Value::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        bump()?;
        Ok(Value::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        bump()?;
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        bump()?;
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        bump::<A::Error>()?;
        enter::<A::Error>()?;
        let mut items = Vec::new();
        let r = (|| {
            while let Some(n) = seq.next_element::<Bare>()? {
                // Placed by the caller (the list's own place): spans on every value would
                // double the cost of a parse, and messages name keys.
                items.push(Node {
                    at: (0, 0),
                    value: n.0,
                });
            }
            Ok(())
        })();
        leave();
        r.map(|()| Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        bump::<A::Error>()?;
        enter::<A::Error>()?;
        let mut entries = Vec::new();
        let r = (|| {
            while let Some(k) = map.next_key::<Spanned<KeyText>>()? {
                let v = map.next_value::<Bare>()?;
                let at = pos(&k.referenced);
                entries.push(Entry {
                    key: Key {
                        text: k.value.text,
                        is_str: k.value.is_str,
                        at,
                    },
                    value: Node::placed(at, v.0),
                });
            }
            Ok(())
        })();
        leave();
        r.map(|()| Value::Map(entries))
    }
}

/// A mapping key: a scalar, kept as text.
struct KeyText {
    text: String,
    is_str: bool,
}

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KeyVisitor)
    }
}

struct KeyVisitor;

impl KeyVisitor {
    fn other<E: de::Error>(text: String) -> Result<KeyText, E> {
        bump()?;
        Ok(KeyText {
            text,
            is_str: false,
        })
    }
}

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = KeyText;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a name (a mapping key is a plain word, not a list or a mapping)")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
        bump()?;
        Ok(KeyText {
            text: v.to_string(),
            is_str: true,
        })
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
        Self::other(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
        Self::other(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
        Self::other(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyText, E> {
        Self::other(v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<KeyText, E> {
        Self::other("null".into())
    }
    fn visit_none<E: de::Error>(self) -> Result<KeyText, E> {
        Self::other("null".into())
    }
}

/// Parse `text` into a tree. An empty document (or one holding only comments) is `Null`.
pub fn parse(text: &str) -> Result<Node, ParseError> {
    NODES.with(|c| c.set(0));
    DEPTH.with(|c| c.set(0));
    CROSSED.with(|c| c.set(None));
    let mut options = serde_saphyr::Options::default();
    // Repeated keys reach the tree, which reports them by name and place.
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    // `.nan` and `.inf` reach the tree, which names the key that holds one.
    options.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::PassThrough;
    // Our own count (aliases expanded) stops first; the parser's bounds are a backstop.
    let mut limits = serde_saphyr::options::AliasLimits::default();
    limits.max_total_replayed_events = 4 * MAX_NODES;
    limits.max_replay_stack_depth = MAX_DEPTH;
    options.alias_limits = limits;
    // No pre-parse budget: it is a second pass over the events (a third of the cost of a
    // parse), and the counts above bound the same things while the tree is built.
    options.budget = None;
    options.with_snippet = false;
    // YAML 1.2: `yes`, `on` and `y` are words, not booleans.
    options.strict_booleans = true;
    let result = serde_saphyr::from_str_with_options::<Option<Spanned<Bare>>>(text, options);
    let crossed = CROSSED.with(|c| c.take());
    match (result, crossed) {
        (Ok(Some(n)), _) => Ok(Node::placed(pos(&n.referenced), n.value.0)),
        (Ok(None), _) => Ok(Node {
            at: (1, 1),
            value: Value::Null,
        }),
        (Err(e), Some(crossed)) => Err(ParseError::Limit {
            crossed,
            at: e.location().map(|l| pos(&l)),
        }),
        // One of the parser's own bounds (set above ours): the file is too big all the same.
        (Err(e @ serde_saphyr::Error::Budget { .. }), None) => Err(ParseError::Limit {
            crossed: Crossed::Nodes,
            at: e.location().map(|l| pos(&l)),
        }),
        (Err(e), None) => Err(ParseError::Syntax {
            message: e.without_snippet().to_string(),
            at: e.location().map(|l| pos(&l)).filter(|&(l, _)| l > 0),
        }),
    }
}

impl Value {
    /// What the value is, in the file's words ("a list", "the string `x`").
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::UInt(_) | Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl Node {
    /// A value at `at`; the items of a list (which carry no place of their own) get it too.
    fn placed(at: Pos, mut value: Value) -> Node {
        if let Value::Seq(items) = &mut value {
            for i in items.iter_mut().filter(|i| i.at == (0, 0)) {
                *i = Node::placed(at, std::mem::replace(&mut i.value, Value::Null));
            }
        }
        Node { at, value }
    }

    /// `.nan`, `.inf` or `-.inf` anywhere in the value: JSON (and a key) has no such numbers.
    pub fn non_finite(&self) -> Option<&'static str> {
        match &self.value {
            Value::Float(f) if f.is_nan() => Some(".nan"),
            Value::Float(f) if *f == f64::INFINITY => Some(".inf"),
            Value::Float(f) if *f == f64::NEG_INFINITY => Some("-.inf"),
            Value::Seq(s) => s.iter().find_map(Node::non_finite),
            Value::Map(m) => m.iter().find_map(|e| e.value.non_finite()),
            _ => None,
        }
    }

    /// The value as JSON, moved out of the tree. Non-finite numbers (see [`Node::non_finite`]) become null; callers
    /// check for them first. A key written twice keeps its last value, as YAML readers do.
    pub fn into_json(self) -> serde_json::Value {
        use serde_json::Value as J;
        match self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(b),
            Value::Int(i) => J::from(i),
            Value::UInt(u) => J::from(u),
            Value::Float(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s),
            Value::Seq(s) => J::Array(s.into_iter().map(Node::into_json).collect()),
            Value::Map(m) => J::Object(
                m.into_iter()
                    .map(|e| (e.key.text, e.value.into_json()))
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(n: &Node) -> &[Entry] {
        match &n.value {
            Value::Map(m) => m,
            v => panic!("not a mapping: {v:?}"),
        }
    }

    #[test]
    fn every_key_and_value_has_its_place() {
        let t =
            parse("name: x\nstages:\n  a: { kind: load, params: { n: 1 } }\n  b:\n    kind: k\n")
                .unwrap();
        let top = map(&t);
        assert_eq!(top[0].key.text, "name");
        assert_eq!(top[0].key.at, (1, 1));
        let stages = map(&top[1].value);
        assert_eq!(stages[0].key.at, (3, 3));
        let a = map(&stages[0].value);
        assert_eq!((a[0].key.text.as_str(), a[0].key.at), ("kind", (3, 8)));
        assert_eq!(a[1].key.at, (3, 20));
        assert_eq!(map(&a[1].value)[0].key.at, (3, 30));
        assert_eq!(map(&stages[1].value)[0].key.at, (5, 5));
    }

    #[test]
    fn flow_punctuation_inside_strings_is_text() {
        // The hand-written lexer this replaced panicked on this valid file.
        let t = parse("a: { description: \"}\", b: '{', c: [\"]\"] }\n").unwrap();
        assert_eq!(
            t.clone().into_json(),
            serde_json::json!({"a": {"description": "}", "b": "{", "c": ["]"]}})
        );
    }

    #[test]
    fn repeated_keys_are_kept_for_the_caller() {
        let t = parse("a: 1\na: 2\n").unwrap();
        let m = map(&t);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].key.at, (2, 1));
    }

    #[test]
    fn types_follow_yaml_1_2() {
        let t = parse("[1e-3, 10, -3, true, yes, null, ~, '10', .nan]").unwrap();
        let Value::Seq(items) = &t.value else {
            panic!()
        };
        let kinds: Vec<_> = items.iter().map(|n| n.value.kind()).collect();
        assert_eq!(
            kinds,
            [
                "a number",
                "a number",
                "a number",
                "a boolean",
                "a string",
                "nothing",
                "nothing",
                "a string",
                "a number"
            ]
        );
        assert_eq!(t.non_finite(), Some(".nan"));
    }

    #[test]
    fn aliases_count_as_their_expansion() {
        // 1,000 × 1,000 × 3 values from a few kilobytes.
        let mut text = String::from("a: &a [");
        text.push_str(&vec!["1"; 1000].join(", "));
        text.push_str("]\nb: &b [");
        text.push_str(&vec!["*a"; 1000].join(", "));
        text.push_str("]\nc: [*b, *b, *b]\n");
        match parse(&text) {
            Err(ParseError::Limit {
                crossed: Crossed::Nodes,
                at,
            }) => assert!(at.is_some()),
            other => panic!("{other:?}"),
        }
        assert!(parse("a: &a [1, 2]\nb: [*a, *a]\n").is_ok());
    }

    #[test]
    fn deep_nesting_is_refused_with_a_place() {
        let text = format!("a: {}{}\n", "[".repeat(100), "]".repeat(100));
        match parse(&text) {
            Err(ParseError::Limit {
                crossed: Crossed::Depth,
                at: Some((1, _)),
            }) => {}
            other => panic!("{other:?}"),
        }
        assert!(parse(&format!("a: {}{}\n", "[".repeat(20), "]".repeat(20))).is_ok());
        // Far deeper than any stack would take recursively: refused all the same.
        for open in ["[", "{a: "] {
            let text = format!("a: {}\n", open.repeat(200_000));
            assert!(matches!(
                parse(&text),
                Err(ParseError::Limit {
                    crossed: Crossed::Depth,
                    ..
                }) | Err(ParseError::Syntax { .. })
            ));
        }
    }

    #[test]
    fn syntax_errors_have_a_place() {
        match parse("a: [1, 2\nb: 3\n") {
            Err(ParseError::Syntax { at: Some(_), .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}
