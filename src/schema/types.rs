//! The small type language of `schemas/*.json` and of operator column declarations:
//! `utf8`, `bool`, `uint8`, `int32`, `int64`, `float32`, `float64` and `list<T>`.
//! A type maps to exactly one Arrow `DataType`; list items are nullable, named `item`
//! (arrow-rs's default), so files written by pyarrow and by arrow-rs compare equal.

use std::fmt;

use arrow::datatypes::{DataType, Field};
use serde::{Deserialize, Deserializer};

/// A column type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    /// UTF-8 string.
    Utf8,
    /// Boolean.
    Bool,
    /// Unsigned 8-bit integer.
    UInt8,
    /// Signed 32-bit integer.
    Int32,
    /// Signed 64-bit integer.
    Int64,
    /// 32-bit float.
    Float32,
    /// 64-bit float.
    Float64,
    /// Variable-length list of the inner type.
    List(Box<ColumnType>),
}

impl ColumnType {
    /// Parses `float32`, `list<int32>`, ...
    pub fn parse(s: &str) -> Option<ColumnType> {
        let s = s.trim();
        if let Some(inner) = s.strip_prefix("list<").and_then(|r| r.strip_suffix('>')) {
            return Some(ColumnType::List(Box::new(ColumnType::parse(inner)?)));
        }
        Some(match s {
            "utf8" => ColumnType::Utf8,
            "bool" => ColumnType::Bool,
            "uint8" => ColumnType::UInt8,
            "int32" => ColumnType::Int32,
            "int64" => ColumnType::Int64,
            "float32" => ColumnType::Float32,
            "float64" => ColumnType::Float64,
            _ => return None,
        })
    }

    /// The Arrow data type.
    pub fn to_arrow(&self) -> DataType {
        match self {
            ColumnType::Utf8 => DataType::Utf8,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::UInt8 => DataType::UInt8,
            ColumnType::Int32 => DataType::Int32,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float32 => DataType::Float32,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::List(inner) => DataType::List(Field::new("item", inner.to_arrow(), true).into()),
        }
    }

    /// Whether an Arrow type read from a file is this type (list field names and item
    /// nullability are not significant; `LargeUtf8`/`Utf8View` count as `utf8`).
    pub fn matches(&self, dt: &DataType) -> bool {
        match (self, dt) {
            (ColumnType::List(inner), DataType::List(f) | DataType::LargeList(f)) => inner.matches(f.data_type()),
            (ColumnType::Utf8, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => true,
            (ColumnType::List(_), _) | (ColumnType::Utf8, _) => false,
            (t, dt) => &t.to_arrow() == dt,
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Utf8 => write!(f, "utf8"),
            ColumnType::Bool => write!(f, "bool"),
            ColumnType::UInt8 => write!(f, "uint8"),
            ColumnType::Int32 => write!(f, "int32"),
            ColumnType::Int64 => write!(f, "int64"),
            ColumnType::Float32 => write!(f, "float32"),
            ColumnType::Float64 => write!(f, "float64"),
            ColumnType::List(inner) => write!(f, "list<{inner}>"),
        }
    }
}

impl<'de> Deserialize<'de> for ColumnType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ColumnType::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown column type '{s}'")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_display_round_trip() {
        for s in ["utf8", "bool", "uint8", "int32", "int64", "float32", "float64", "list<float32>", "list<list<int32>>"]
        {
            assert_eq!(ColumnType::parse(s).unwrap().to_string(), s);
        }
        assert!(ColumnType::parse("list<float16>").is_none());
    }

    #[test]
    fn matches_ignores_list_field_name() {
        let t = ColumnType::parse("list<int32>").unwrap();
        assert!(t.matches(&DataType::List(Field::new("element", DataType::Int32, false).into())));
        assert!(!t.matches(&DataType::List(Field::new("item", DataType::Int64, true).into())));
    }
}
