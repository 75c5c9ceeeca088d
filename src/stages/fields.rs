//! The field names of a params struct, read from its `Deserialize` impl (the names serde asks
//! for), so that "unknown param" errors can list and suggest the valid ones.

use serde::de::{self, Deserialize, Deserializer, Visitor};

#[derive(Debug)]
struct Found(&'static [&'static str]);

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fields")
    }
}
impl std::error::Error for Found {}
impl de::Error for Found {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Found(&[])
    }
}

struct Probe;

impl<'de> Deserializer<'de> for Probe {
    type Error = Found;
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Found> {
        Err(Found(&[]))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Found> {
        Err(Found(fields))
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

pub fn struct_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    match T::deserialize(Probe) {
        Err(Found(f)) => f,
        Ok(_) => &[],
    }
}
