//! Parameter parsing for operators: a stage's leftover TOML keys are deserialised into the
//! operator's parameter struct (unknown keys rejected), then range-checked. Errors carry the key.

use serde::de::DeserializeOwned;

/// A bad operator parameter.
#[derive(Debug, Clone)]
pub struct ParamError {
    /// The key at fault.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl ParamError {
    /// A new error on `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ParamError { key: key.into(), message: message.into() }
    }
}

/// Deserialises `table` into `P`, naming the offending key on failure.
pub fn parse<P: DeserializeOwned>(table: &toml::Table) -> Result<P, ParamError> {
    toml::Value::Table(table.clone()).try_into::<P>().map_err(|e| {
        let msg = e.to_string().trim().to_string();
        let key = crate::pipeline::spec::unknown_field(&msg)
            .or_else(|| msg.split("field `").nth(1).and_then(|r| r.split('`').next()).map(str::to_string))
            .or_else(|| table.keys().find(|k| msg.contains(k.as_str())).cloned())
            .unwrap_or_default();
        ParamError::new(key, msg)
    })
}

/// Checks `lo <= x <= hi`.
pub fn in_range(key: &str, x: f64, lo: f64, hi: f64) -> Result<(), ParamError> {
    if x.is_finite() && x >= lo && x <= hi {
        Ok(())
    } else {
        Err(ParamError::new(key, format!("must be in [{lo}, {hi}], got {x}")))
    }
}

/// Checks `x > 0` and finite.
pub fn positive(key: &str, x: f64) -> Result<(), ParamError> {
    if x.is_finite() && x > 0.0 {
        Ok(())
    } else {
        Err(ParamError::new(key, format!("must be a positive number, got {x}")))
    }
}

/// Formats a parameter list for `explain`.
pub fn show<T: std::fmt::Debug>(pairs: &[(&str, T)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), format!("{v:?}"))).collect()
}
