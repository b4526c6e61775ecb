//! The `[models.NAME]` tables of a graph-form pipeline: the policy (a model SPEC with optional
//! LoRA) and heads on its backbone (a critic's `head = "value"`, a discriminator's
//! `head = "discriminator"`), each named so that operators say which model they use.
//!
//! Invariant: exactly one policy (this version trains one), every head sits `on` it, and every
//! model is named by at least one stage.

use std::collections::BTreeMap;

use super::GraphError;

/// One `[models.NAME]` table.
#[derive(Debug, Clone)]
pub struct ModelDecl {
    /// `None` for the policy; `value` or `discriminator` for a head.
    pub head: Option<String>,
    /// A head's `on`: the model whose backbone it reads.
    on: Option<String>,
    /// The table without `head` and `on` (the section keys it lowers into).
    pub keys: toml::Table,
}

/// The heads a model table may declare.
const HEADS: &[&str] = &["value", "discriminator"];

/// Parses `[models]`; returns the models by name and the policy's name.
pub fn parse(models: toml::Value) -> Result<(BTreeMap<String, ModelDecl>, String), GraphError> {
    let at = |name: &str| format!("[models.{name}]");
    let toml::Value::Table(models) = models else {
        return Err(GraphError::new("[models]", None, "must be a table of [models.NAME] tables"));
    };
    let mut out = BTreeMap::new();
    for (name, table) in models {
        let toml::Value::Table(mut keys) = table else {
            return Err(GraphError::new(&at(&name), None, "must be a table"));
        };
        let head = match keys.remove("head") {
            None => None,
            Some(toml::Value::String(h)) if HEADS.contains(&h.as_str()) => Some(h),
            Some(h) => {
                return Err(GraphError::new(
                    &at(&name),
                    Some("head"),
                    &format!("unknown head {h} (known: {})", HEADS.join(", ")),
                ))
            }
        };
        let on = match (&head, keys.remove("on")) {
            (Some(_), Some(toml::Value::String(on))) => Some(on),
            (Some(_), _) => {
                return Err(GraphError::new(
                    &at(&name),
                    Some("on"),
                    "a head needs `on = \"POLICY\"`, the model it reads",
                ))
            }
            (None, Some(_)) => {
                return Err(GraphError::new(&at(&name), Some("on"), "only a head (`head = ...`) sits on another model"))
            }
            (None, None) => None,
        };
        out.insert(name, ModelDecl { head, on, keys });
    }
    let policies: Vec<&String> = out.iter().filter(|(_, m)| m.head.is_none()).map(|(n, _)| n).collect();
    let policy = match policies.as_slice() {
        [one] => (*one).clone(),
        [] => return Err(GraphError::new("[models]", None, "no policy: a [models.NAME] table without `head`")),
        many => {
            let names: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
            return Err(GraphError::new(
                "[models]",
                None,
                &format!("{} policies ({}): this version trains one", names.len(), names.join(", ")),
            ));
        }
    };
    for (name, m) in &out {
        if let Some(on) = m.on.as_ref().filter(|on| **on != policy) {
            return Err(GraphError::new(
                &at(name),
                Some("on"),
                &format!("'{on}' is not the policy (heads sit on the policy '{policy}')"),
            ));
        }
    }
    Ok((out, policy))
}
