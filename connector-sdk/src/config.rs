//! Connector configurations: a flat string map, typed access and validation against definitions.

use std::collections::BTreeMap;
use std::str::FromStr;

use crate::proto::{ConfigDef, ConfigType, FieldError, Importance};
use crate::TaskError;

/// A connector or task configuration, Kafka Connect style: string keys to string values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config(BTreeMap<String, String>);

impl Config {
    pub fn new() -> Self {
        Config::default()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    /// Parses `key` as `T`, or returns `default` when the key is absent or empty.
    pub fn parse_or<T: FromStr>(&self, key: &str, default: T) -> Result<T, TaskError> {
        match self.get(key).map(str::trim) {
            None | Some("") => Ok(default),
            Some(raw) => raw.parse().map_err(|_| {
                TaskError::fatal(format!("invalid value {raw:?} for configuration {key}"))
            }),
        }
    }

    /// The value of a key that must be present and non-empty.
    pub fn required(&self, key: &str) -> Result<&str, TaskError> {
        match self.get(key) {
            Some(v) if !v.trim().is_empty() => Ok(v),
            _ => Err(TaskError::fatal(format!(
                "missing required configuration {key:?} which has no default value"
            ))),
        }
    }

    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    pub fn into_map(self) -> BTreeMap<String, String> {
        self.0
    }

    /// Kafka Connect's checks: required keys present, values of the declared type and among the
    /// valid values. Keys without a definition are left to the framework.
    pub fn validate_against(&self, defs: &[ConfigDef]) -> Vec<FieldError> {
        let mut errors = Vec::new();
        for def in defs {
            let value = self.get(&def.name);
            let value = match (value, &def.default_value) {
                (Some(v), _) => v,
                (None, Some(_)) => continue,
                (None, None) => {
                    errors.push(FieldError {
                        name: def.name.clone(),
                        message: format!(
                            "missing required configuration {:?} which has no default value",
                            def.name
                        ),
                    });
                    continue;
                }
            };
            if let Some(message) = type_error(def, value) {
                errors.push(FieldError {
                    name: def.name.clone(),
                    message,
                });
            }
        }
        errors
    }
}

fn type_error(def: &ConfigDef, value: &str) -> Option<String> {
    let trimmed = value.trim();
    let kind = ConfigType::try_from(def.r#type).unwrap_or(ConfigType::String);
    let ok = match kind {
        ConfigType::Int => trimmed.parse::<i32>().is_ok(),
        ConfigType::Long => trimmed.parse::<i64>().is_ok(),
        ConfigType::Double => trimmed.parse::<f64>().is_ok(),
        ConfigType::Boolean => matches!(trimmed.to_ascii_lowercase().as_str(), "true" | "false"),
        _ => true,
    };
    if !ok {
        let expected = match kind {
            ConfigType::Int => "a 32-bit integer",
            ConfigType::Long => "a 64-bit integer",
            ConfigType::Double => "a number",
            _ => "true or false",
        };
        return Some(format!("invalid value {value:?}: expected {expected}"));
    }
    if !def.valid_values.is_empty() && !def.valid_values.iter().any(|v| v == trimmed) {
        return Some(format!(
            "invalid value {value:?}: must be one of {}",
            def.valid_values.join(", ")
        ));
    }
    None
}

impl FromIterator<(String, String)> for Config {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Config(iter.into_iter().collect())
    }
}

impl<K: Into<String>, V: Into<String>, const N: usize> From<[(K, V); N]> for Config {
    fn from(pairs: [(K, V); N]) -> Self {
        pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect()
    }
}

/// Builds a [`ConfigDef`]: `ConfigDefBuilder::new("file", ConfigType::String).default("").doc("...")`.
pub struct ConfigDefBuilder(ConfigDef);

impl ConfigDefBuilder {
    /// A required key (no default) of medium importance.
    pub fn new(name: &str, kind: ConfigType) -> Self {
        ConfigDefBuilder(ConfigDef {
            name: name.to_string(),
            r#type: kind as i32,
            importance: Importance::Medium as i32,
            ..ConfigDef::default()
        })
    }

    pub fn default_value(mut self, value: &str) -> Self {
        self.0.default_value = Some(value.to_string());
        self
    }

    pub fn importance(mut self, importance: Importance) -> Self {
        self.0.importance = importance as i32;
        self
    }

    pub fn doc(mut self, doc: &str) -> Self {
        self.0.documentation = doc.to_string();
        self
    }

    pub fn valid_values(mut self, values: &[&str]) -> Self {
        self.0.valid_values = values.iter().map(|v| v.to_string()).collect();
        self
    }

    pub fn build(self) -> ConfigDef {
        self.0
    }

    /// A whole definition in one call, for a table of keys: `default` `None` is a required
    /// key.
    pub fn define(
        name: &str,
        kind: ConfigType,
        default: Option<&str>,
        importance: Importance,
        doc: &str,
    ) -> ConfigDef {
        let mut b = ConfigDefBuilder::new(name, kind)
            .importance(importance)
            .doc(doc);
        if let Some(d) = default {
            b = b.default_value(d);
        }
        b.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs() -> Vec<ConfigDef> {
        vec![
            ConfigDefBuilder::new("topic", ConfigType::String).build(),
            ConfigDefBuilder::new("batch.size", ConfigType::Int)
                .default_value("2000")
                .build(),
            ConfigDefBuilder::new("mode", ConfigType::String)
                .default_value("a")
                .valid_values(&["a", "b"])
                .build(),
        ]
    }

    #[test]
    fn missing_required_key_is_reported_by_name() {
        let errors = Config::new().validate_against(&defs());
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].name, "topic");
        assert!(errors[0].message.contains("missing required configuration"));
    }

    #[test]
    fn bad_types_and_values_are_reported() {
        let config = Config::from([("topic", "t"), ("batch.size", "x1"), ("mode", "c")]);
        let errors = config.validate_against(&defs());
        let names: Vec<_> = errors.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["batch.size", "mode"]);
    }

    #[test]
    fn parse_or_uses_default_for_absent_keys() {
        let config = Config::from([("n", "5")]);
        assert_eq!(config.parse_or("n", 1).unwrap(), 5);
        assert_eq!(config.parse_or("m", 7).unwrap(), 7);
        assert!(config.parse_or::<i32>("x", 0).is_ok());
        assert!(Config::from([("n", "no")]).parse_or::<i32>("n", 0).is_err());
    }
}
