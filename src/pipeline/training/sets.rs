//! The `--set KEY=VALUE` engine: overrides applied to a pipeline file's text before it is parsed,
//! so a run's `config.toml` records exactly what ran.

use std::path::Path;

use crate::error::{Error, Result};

/// Applies `--set KEY=VALUE` overrides to a pipeline file's text. KEY is a dotted path
/// (`learner.lr`, `rollout.k`; `stage.ID.KEY` is the key of the `[[stage]]` with id ID); `model`
/// and `env` are short for `model.name` and `rollout.env`, and setting `env` also retargets a
/// `small:ENV` model. VALUE is read as TOML (`0.5`, `true`,
/// `"x"`), or as a string when it is not valid TOML.
pub fn apply_sets(file: &Path, text: &str, sets: &[String]) -> Result<String> {
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| Error::Spec {
        file: file.to_path_buf(),
        stage: None,
        key: None,
        message: e.to_string(),
    })?;
    for set in sets {
        let (key, value) =
            set.split_once('=').ok_or_else(|| Error::Usage(format!("--set {set}: expected KEY=VALUE")))?;
        let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_string()));
        let path: Vec<&str> = match key {
            "model" => vec!["model", "name"],
            "env" => vec!["rollout", "env"],
            k => k.split('.').collect(),
        };
        if key == "env" {
            let model = doc.get_mut("model").and_then(|m| m.get_mut("name"));
            if let Some(toml::Value::String(name)) = model {
                if name.starts_with("small:") {
                    *name = format!("small:{}", value.as_str().unwrap_or_default());
                }
            }
        }
        // `stage.ID.KEY` addresses the `[[stage]]` whose id is ID.
        let (mut at, path) = match path.as_slice() {
            ["stage", id, rest @ ..] if !rest.is_empty() => {
                let stage = doc
                    .get_mut("stage")
                    .and_then(toml::Value::as_array_mut)
                    .and_then(|stages| {
                        stages
                            .iter_mut()
                            .filter_map(toml::Value::as_table_mut)
                            .find(|t| t.get("id").and_then(toml::Value::as_str) == Some(*id))
                    })
                    .ok_or_else(|| Error::Usage(format!("--set {key}: no [[stage]] with id '{id}'")))?;
                (stage, rest.to_vec())
            }
            _ => (&mut doc, path.clone()),
        };
        for part in &path[..path.len() - 1] {
            at = at
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| Error::Usage(format!("--set {key}: '{part}' is not a table")))?;
        }
        at.insert(path[path.len() - 1].to_string(), value);
    }
    Ok(toml::to_string(&doc).expect("a TOML table serialises"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_override_dotted_keys_and_shorthands() {
        let text = "[model]\nname = \"small:household\"\n[learner]\nlr = 0.1\n";
        let out = apply_sets(
            Path::new("p.toml"),
            text,
            &["learner.lr=0.5".into(), "rollout.k=2".into(), "env=household".into()],
        )
        .unwrap();
        let t: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(t["learner"]["lr"].as_float(), Some(0.5));
        assert_eq!(t["rollout"]["k"].as_integer(), Some(2));
        assert_eq!(t["rollout"]["env"].as_str(), Some("household"));
        let staged = "name = \"x\"\n[[stage]]\nid = \"a\"\nop = \"broadcast\"\n[[stage]]\nid = \"b\"\nop = \"kl\"\n";
        let out = apply_sets(Path::new("p.toml"), staged, &["stage.b.kind=\"k3\"".into()]).unwrap();
        let t: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(t["stage"][1]["kind"].as_str(), Some("k3"));
        assert!(t["stage"][0].get("kind").is_none());
        assert!(apply_sets(Path::new("p.toml"), staged, &["stage.c.kind=1".into()]).is_err());
        let out = apply_sets(Path::new("p.toml"), text, &["model=/some/folder".into()]).unwrap();
        assert!(out.contains("/some/folder"));
        assert!(apply_sets(Path::new("p.toml"), text, &["nokey".into()]).is_err());
    }
}
