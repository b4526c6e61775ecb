//! The `--set KEY=VALUE` engine: overrides applied to a pipeline file's text before it is parsed,
//! so a run's `config.toml` records exactly what ran.

use std::path::Path;

use crate::error::{Error, Result};

/// The top-level tables of a graph-form pipeline: `--set TABLE.KEY` sets them, present or not.
const GRAPH_TABLES: &[&str] = &["models", "run", "stream", "stage"];

/// Applies `--set KEY=VALUE` overrides to a pipeline file's text. KEY is a dotted path
/// (`learner.lr`, `rollout.k`; `stage.ID.KEY` is the key of the `[[stage]]` with id ID, and in a
/// graph-form pipeline so is `ID.KEY` unless ID is `run`, `stream` or `models`, and `model.KEY` the policy's
/// `[models.NAME]` key); `model` and `env` are short for the policy's `name` and `rollout.env`, and
/// setting `env` also retargets a `small:ENV` model. VALUE is read as TOML (`0.5`, `true`,
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
        // In the graph form (`[models]`), the policy is the model table without a `head`, and
        // `ID.KEY` addresses the `[[stage]]` whose id is ID unless ID is one of GRAPH_TABLES.
        let policy: Option<String> = doc
            .get("models")
            .and_then(toml::Value::as_table)
            .and_then(|m| m.iter().find(|(_, t)| t.get("head").is_none()).map(|(name, _)| name.clone()));
        let path: Vec<&str> = match (key, &policy) {
            ("model", Some(p)) => vec!["models", p.as_str(), "name"],
            ("model", None) => vec!["model", "name"],
            ("env", _) => vec!["rollout", "env"],
            (k, Some(p)) if k.starts_with("model.") => {
                ["models", p.as_str()].into_iter().chain(k.split('.').skip(1)).collect()
            }
            (k, _) => k.split('.').collect(),
        };
        if key == "env" {
            let model = match &policy {
                Some(p) => doc.get_mut("models").and_then(|m| m.get_mut(p.as_str())),
                None => doc.get_mut("model"),
            };
            if let Some(toml::Value::String(name)) = model.and_then(|m| m.get_mut("name")) {
                if name.starts_with("small:") {
                    *name = format!("small:{}", value.as_str().unwrap_or_default());
                }
            }
        }
        let stage_id = match path.as_slice() {
            ["stage", id, rest @ ..] if !rest.is_empty() => Some((*id, 2)),
            [id, rest @ ..] if policy.is_some() && !rest.is_empty() && !GRAPH_TABLES.contains(id) => Some((*id, 1)),
            _ => None,
        };
        let (mut at, path) = match stage_id {
            Some((id, skip)) => {
                let stage = doc
                    .get_mut("stage")
                    .and_then(toml::Value::as_array_mut)
                    .and_then(|stages| {
                        stages
                            .iter_mut()
                            .filter_map(toml::Value::as_table_mut)
                            .find(|t| t.get("id").and_then(toml::Value::as_str) == Some(id))
                    })
                    .ok_or_else(|| Error::Usage(format!("--set {key}: no [[stage]] with id '{id}'")))?;
                (stage, path[skip..].to_vec())
            }
            None => (&mut doc, path.clone()),
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

    #[test]
    fn graph_form_sets_address_stages_and_the_policy() {
        let text = "[models.policy]\nname = \"small:household\"\n[models.critic]\nhead = \"value\"\non = \"policy\"\n\
                    [[stage]]\nid = \"rollout\"\nop = \"rollout\"\nk = 4\n[[stage]]\nid = \"learner\"\nop = \"ppo_update\"\n\
                    [run]\nseed = 0\n";
        let sets = [
            "rollout.k=2",
            "learner.lr=0.5",
            "env=kitchen",
            "run.seed=3",
            "models.critic.lr=0.01",
            "model.precision=bf16",
            "stream.checkpoint_every=2",
        ];
        let out = apply_sets(Path::new("p.toml"), text, &sets.map(String::from)).unwrap();
        let t: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(t["stage"][0]["k"].as_integer(), Some(2));
        assert_eq!(t["stage"][0]["env"].as_str(), Some("kitchen"));
        assert_eq!(t["stage"][1]["lr"].as_float(), Some(0.5));
        assert_eq!(t["models"]["policy"]["name"].as_str(), Some("small:kitchen"));
        assert_eq!(t["models"]["critic"]["lr"].as_float(), Some(0.01));
        assert_eq!(t["models"]["policy"]["precision"].as_str(), Some("bf16"));
        assert_eq!(t["run"]["seed"].as_integer(), Some(3));
        assert_eq!(t["stream"]["checkpoint_every"].as_integer(), Some(2));
        assert!(t.get("rollout").is_none() && t.get("learner").is_none());
        let out = apply_sets(Path::new("p.toml"), text, &["model=/some/folder".into()]).unwrap();
        let t: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(t["models"]["policy"]["name"].as_str(), Some("/some/folder"));
        assert!(apply_sets(Path::new("p.toml"), text, &["values.lr=1".into()]).is_err());
    }
}
