//! Typed values out of JSON values, with errors that are data, not text.
//!
//! The pipeline's spec types ([`super::spec`]) and every kind's params struct are read through
//! [`from_value`]. Its deserializer checks a value's type before it hands it to serde's visitor,
//! so a wrong type comes back as [`Problem::WrongType`] with both sides in the file's words
//! ("found string "fast"", "expected a number"), and serde's own reports (missing, unknown and
//! repeated fields, unknown names) arrive through the [`de::Error`] methods as data too. Nothing
//! downstream reads an error message to find out what went wrong.

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde_json::Value;
use std::fmt;

/// What is wrong with a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// `found` describes the value as written; `expected` says what would be right.
    WrongType {
        found: String,
        expected: String,
    },
    Missing {
        field: String,
    },
    UnknownField {
        field: String,
        expected: Vec<String>,
    },
    UnknownName {
        given: String,
        expected: Vec<String>,
    },
    /// A check of the type itself, in its own words (e.g. `time: 4h` is not a time limit).
    Invalid(String),
}

/// A [`Problem`] and the dotted key path of the value that has it (`stages.train.params.lr`;
/// empty at the top; list items add nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub path: String,
    pub problem: Problem,
}

impl Issue {
    /// The last key of the path: what a message names.
    pub fn key(&self) -> &str {
        match &self.problem {
            Problem::Missing { field } | Problem::UnknownField { field, .. } => field,
            _ => self.path.rsplit('.').next().unwrap_or_default(),
        }
    }

    /// A message and a help line in the file's words. `noun` says what the keys at this place
    /// are: "field", "param", "resource".
    pub fn explain(&self, noun: &str) -> (String, Option<String>) {
        fn names(v: &[String]) -> Vec<&str> {
            v.iter().map(String::as_str).collect()
        }
        let key = self.key();
        match &self.problem {
            Problem::WrongType { found, expected } => (
                format!("wrong type for {noun} `{key}`: found {found}"),
                Some(format!("expected {expected}")),
            ),
            Problem::Missing { field } => (
                format!("missing required {noun} `{field}`"),
                Some(format!("add `{field}:`")),
            ),
            Problem::UnknownField { field, expected } => (
                format!("unknown {noun} `{field}`"),
                Some(crate::diagnostic::suggest(
                    field,
                    &names(expected),
                    &format!("{noun}s"),
                )),
            ),
            Problem::UnknownName { given, expected } => (
                format!("invalid value `{given}` for {noun} `{key}`"),
                Some(crate::diagnostic::suggest(
                    given,
                    &names(expected),
                    "values",
                )),
            ),
            Problem::Invalid(m) => (format!("invalid {noun} `{key}`: {m}"), None),
        }
    }
}

#[derive(Debug)]
pub struct DeError(Problem);

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::error::Error for DeError {}

fn list(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError(Problem::Invalid(msg.to_string()))
    }
    fn invalid_type(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        DeError(Problem::WrongType {
            found: unexp.to_string(),
            expected: exp.to_string(),
        })
    }
    fn invalid_value(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        Self::invalid_type(unexp, exp)
    }
    fn invalid_length(len: usize, exp: &dyn de::Expected) -> Self {
        DeError(Problem::WrongType {
            found: format!("a list of {len}"),
            expected: exp.to_string(),
        })
    }
    fn missing_field(field: &'static str) -> Self {
        DeError(Problem::Missing {
            field: field.to_string(),
        })
    }
    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError(Problem::UnknownField {
            field: field.to_string(),
            expected: list(expected),
        })
    }
    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError(Problem::UnknownName {
            given: variant.to_string(),
            expected: list(expected),
        })
    }
}

/// Read a `T` out of `v`; on failure, where and what.
pub fn from_value<T: DeserializeOwned>(v: &Value) -> Result<T, Issue> {
    serde_path_to_error::deserialize(Json(v)).map_err(|e| {
        // Keys only: a list item is found under its list's path (see `Locator`).
        let path = e
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(key.as_str()),
                serde_path_to_error::Segment::Enum { variant } => Some(variant.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(".");
        Issue {
            path,
            problem: e.into_inner().0,
        }
    })
}

/// A value as a message names it: `string "fast"`, `integer `-1``, `a list`.
pub fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(n) if n.is_f64() => format!("number `{n}`"),
        Value::Number(n) => format!("integer `{n}`"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

pub const NON_NEGATIVE: &str = "a non-negative integer, e.g. `10`";
pub const INTEGER: &str = "an integer, e.g. `-3` or `10`";
pub const NUMBER: &str = "a number, e.g. `0.5` or `1e-3`";
pub const STRING: &str = "a string";
pub const BOOLEAN: &str = "`true` or `false`";
pub const LIST: &str = "a list, e.g. `[a, b]`";
pub const MAPPING: &str = "a mapping of names to values";

/// The deserializer: a borrowed JSON value.
struct Json<'a>(&'a Value);

impl Json<'_> {
    fn wrong(&self, expected: impl Into<String>) -> DeError {
        DeError(Problem::WrongType {
            found: describe(self.0),
            expected: expected.into(),
        })
    }

    fn unsigned<'de, V: Visitor<'de>>(self, max: u64, v: V) -> Result<V::Value, DeError> {
        match self.0.as_u64() {
            Some(n) if n <= max => v.visit_u64(n),
            Some(_) => Err(self.wrong(format!("a non-negative integer up to {max}"))),
            None => Err(self.wrong(NON_NEGATIVE)),
        }
    }

    fn signed<'de, V: Visitor<'de>>(self, min: i64, max: i64, v: V) -> Result<V::Value, DeError> {
        match self.0.as_i64() {
            Some(n) if (min..=max).contains(&n) => v.visit_i64(n),
            Some(_) => Err(self.wrong(format!("an integer from {min} to {max}"))),
            None => Err(self.wrong(INTEGER)),
        }
    }
}

macro_rules! unsigned {
    ($($f:ident: $t:ty),*) => {
        $(fn $f<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            self.unsigned(<$t>::MAX as u64, v)
        })*
    };
}

macro_rules! signed {
    ($($f:ident: $t:ty),*) => {
        $(fn $f<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            self.signed(<$t>::MIN as i64, <$t>::MAX as i64, v)
        })*
    };
}

impl<'de> de::Deserializer<'de> for Json<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => v.visit_unit(),
            Value::Bool(b) => v.visit_bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => v.visit_u64(u),
                (_, Some(i), _) => v.visit_i64(i),
                (_, _, Some(f)) => v.visit_f64(f),
                _ => Err(self.wrong(NUMBER)),
            },
            Value::String(s) => v.visit_str(s),
            Value::Array(a) => v.visit_seq(Seq(a.iter())),
            Value::Object(m) => v.visit_map(Map {
                iter: m.iter(),
                value: None,
            }),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Bool(b) => v.visit_bool(*b),
            _ => Err(self.wrong(BOOLEAN)),
        }
    }

    unsigned!(deserialize_u8: u8, deserialize_u16: u16, deserialize_u32: u32, deserialize_u64: u64);
    signed!(deserialize_i8: i8, deserialize_i16: i16, deserialize_i32: i32, deserialize_i64: i64);

    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(v)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.0.as_f64() {
            Some(f) => v.visit_f64(f),
            None => Err(self.wrong(NUMBER)),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::String(s) => v.visit_str(s),
            _ => Err(self.wrong(STRING)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_any(v)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_any(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => v.visit_none(),
            _ => v.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => v.visit_unit(),
            _ => Err(self.wrong("nothing (`null`)")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Array(a) => v.visit_seq(Seq(a.iter())),
            _ => Err(self.wrong(LIST)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Object(m) => v.visit_map(Map {
                iter: m.iter(),
                value: None,
            }),
            _ => Err(self.wrong(MAPPING)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        match self.0 {
            Value::String(s) => v.visit_enum(s.as_str().into_deserializer()),
            // `{ variant: value }`: a variant that carries a value.
            Value::Object(m) if m.len() == 1 => {
                let (k, value) = m.iter().next().expect("one entry");
                v.visit_enum(Variant { name: k, value })
            }
            _ => Err(self.wrong(format!(
                "one of {}",
                variants
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_unit()
    }
}

struct Variant<'a> {
    name: &'a str,
    value: &'a Value,
}

impl<'de, 'a> de::EnumAccess<'de> for Variant<'a> {
    type Error = DeError;
    type Variant = Json<'a>;
    fn variant_seed<V: de::DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Json<'a>), DeError> {
        let name: de::value::StrDeserializer<DeError> = self.name.into_deserializer();
        Ok((seed.deserialize(name)?, Json(self.value)))
    }
}

impl<'de> de::VariantAccess<'de> for Json<'_> {
    type Error = DeError;
    fn unit_variant(self) -> Result<(), DeError> {
        match self.0 {
            Value::Null => Ok(()),
            _ => Err(self.wrong("nothing after this name")),
        }
    }
    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(self, v)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_map(self, v)
    }
}

struct Seq<'a>(std::slice::Iter<'a, Value>);

impl<'de> de::SeqAccess<'de> for Seq<'_> {
    type Error = DeError;
    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        self.0.next().map(|v| seed.deserialize(Json(v))).transpose()
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Map<'a> {
    iter: serde_json::map::Iter<'a>,
    value: Option<&'a Value>,
}

impl<'de> de::MapAccess<'de> for Map<'_> {
    type Error = DeError;
    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                let key: de::value::StrDeserializer<DeError> = k.as_str().into_deserializer();
                seed.deserialize(key).map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<T::Value, DeError> {
        match self.value.take() {
            Some(v) => seed.deserialize(Json(v)),
            None => Err(de::Error::custom("a value was asked for before its key")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct P {
        n: usize,
        #[serde(default)]
        lr: Option<f64>,
        #[serde(default)]
        unit: Option<Unit>,
        #[serde(default)]
        names: Vec<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Unit {
        Char,
        Word,
        Both(usize),
    }

    fn issue(v: serde_json::Value) -> Issue {
        from_value::<P>(&v).unwrap_err()
    }

    #[test]
    fn reads_what_fits() {
        let p: P = from_value(&json!({"n": 3, "lr": 1, "unit": "word", "names": ["a"]})).unwrap();
        assert_eq!(p.n, 3);
        assert_eq!(p.lr, Some(1.0));
        assert_eq!(p.unit, Some(Unit::Word));
        let p: P = from_value(&json!({"n": 3, "unit": {"both": 2}})).unwrap();
        assert_eq!(p.unit, Some(Unit::Both(2)));
        let i = from_value::<P>(&json!({"n": 3, "unit": {"both": "x"}})).unwrap_err();
        assert!(
            matches!(i.problem, Problem::WrongType { ref expected, .. } if expected == NON_NEGATIVE)
        );
    }

    #[test]
    fn wrong_types_come_back_as_data_with_their_path() {
        assert_eq!(
            issue(json!({"n": "lots"})),
            Issue {
                path: "n".into(),
                problem: Problem::WrongType {
                    found: "string \"lots\"".into(),
                    expected: NON_NEGATIVE.into()
                }
            }
        );
        let i = issue(json!({"n": -2}));
        assert!(
            matches!(i.problem, Problem::WrongType { ref found, .. } if found == "integer `-2`")
        );
        let i = issue(json!({"n": 1, "lr": "fast"}));
        assert_eq!(i.path, "lr");
        assert!(matches!(i.problem, Problem::WrongType { ref expected, .. } if expected == NUMBER));
        let i = issue(json!({"n": 1, "names": ["a", 3]}));
        assert_eq!(i.path, "names");
    }

    #[test]
    fn serde_reports_arrive_as_data() {
        assert_eq!(
            issue(json!({})).problem,
            Problem::Missing { field: "n".into() }
        );
        assert!(matches!(
            issue(json!({"n": 1, "lrr": 1})).problem,
            Problem::UnknownField { ref field, ref expected } if field == "lrr" && expected.contains(&"lr".to_string())
        ));
        assert_eq!(
            issue(json!({"n": 1, "unit": "chars"})).problem,
            Problem::UnknownName {
                given: "chars".into(),
                expected: vec!["char".into(), "word".into(), "both".into()]
            }
        );
        assert!(matches!(
            issue(json!([1])).problem,
            Problem::WrongType { ref expected, .. } if expected == MAPPING
        ));
    }

    #[test]
    fn integers_are_bounded_by_their_type() {
        #[derive(Debug, Deserialize)]
        struct S {
            #[allow(dead_code)]
            x: u8,
        }
        let i = from_value::<S>(&json!({"x": 300})).unwrap_err();
        assert!(
            matches!(i.problem, Problem::WrongType { ref expected, .. } if expected.contains("up to 255"))
        );
    }
}
