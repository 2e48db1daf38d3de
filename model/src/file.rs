//! Loading Kafka Connect configuration files: Java `.properties` files and JSON connector files
//! (`{"name": ..., "config": {...}}` or a flat object). Every key remembers its line, so that
//! any later complaint can name the file, the line and the key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A problem with a configuration file, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The key/value pairs of one file, with the line each key was set on.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    pub path: PathBuf,
    values: BTreeMap<String, String>,
    lines: BTreeMap<String, usize>,
}

impl ConfigFile {
    /// Reads a `.json` file as JSON and anything else as Java properties.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: None,
            message: format!("cannot read file: {e}"),
        })?;
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            Self::parse_json(path, &text)
        } else {
            Self::parse_properties(path, &text)
        }
    }

    pub fn parse_properties(path: &Path, text: &[u8]) -> Result<ConfigFile, ConfigError> {
        let mut file = ConfigFile {
            path: path.to_path_buf(),
            ..ConfigFile::default()
        };
        let mut failure = None;
        // Decoded here, not by the parser: its decoder panics on a file that is only the start
        // of a byte order mark (found by fuzzing). UTF-8 when the bytes are (what files are
        // written in today), else ISO-8859-1 as Java reads properties.
        let text = match std::str::from_utf8(text) {
            Ok(utf8) => std::borrow::Cow::Borrowed(utf8),
            Err(_) => std::borrow::Cow::Owned(text.iter().map(|&b| char::from(b)).collect()),
        };
        let iter =
            java_properties::PropertiesIter::new_with_encoding(text.as_bytes(), encoding_rs::UTF_8);
        for line in iter {
            let line = match line {
                Ok(line) => line,
                Err(e) => {
                    failure = Some(ConfigError {
                        file: path.to_path_buf(),
                        line: e.line_number(),
                        key: None,
                        message: format!("malformed properties: {e}"),
                    });
                    break;
                }
            };
            let number = line.line_number();
            if let java_properties::LineContent::KVPair(key, value) = line.consume_content() {
                file.lines.insert(key.clone(), number);
                file.values.insert(key, value);
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(file),
        }
    }

    pub fn parse_json(path: &Path, text: &[u8]) -> Result<ConfigFile, ConfigError> {
        let error = |line: Option<usize>, key: Option<&str>, message: String| ConfigError {
            file: path.to_path_buf(),
            line,
            key: key.map(str::to_string),
            message,
        };
        let doc: serde_json::Value = serde_json::from_slice(text)
            .map_err(|e| error(Some(e.line()), None, format!("malformed JSON: {e}")))?;
        let serde_json::Value::Object(mut top) = doc else {
            return Err(error(Some(1), None, "expected a JSON object".into()));
        };
        let text = String::from_utf8_lossy(text);
        let line_of = |key: &str| {
            let needle = format!("\"{key}\"");
            text.find(&needle)
                .map(|at| text[..at].bytes().filter(|&b| b == b'\n').count() + 1)
        };
        let mut entries = match top.remove("config") {
            Some(serde_json::Value::Object(config)) => {
                if let Some(name) = top.remove("name") {
                    let mut config = config;
                    config.entry("name").or_insert(name);
                    config
                } else {
                    config
                }
            }
            Some(_) => {
                return Err(error(
                    line_of("config"),
                    Some("config"),
                    "must be a JSON object".into(),
                ))
            }
            None => top,
        };
        let mut file = ConfigFile {
            path: path.to_path_buf(),
            ..ConfigFile::default()
        };
        for (key, value) in std::mem::take(&mut entries) {
            let line = line_of(&key);
            let value = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                other => {
                    return Err(error(
                        line,
                        Some(&key),
                        format!("value must be a string, not {other}"),
                    ))
                }
            };
            if let Some(line) = line {
                file.lines.insert(key.clone(), line);
            }
            file.values.insert(key, value);
        }
        Ok(file)
    }

    /// Values that came from somewhere other than a file (the controller, command-line flags);
    /// `origin` names that place in errors.
    pub fn from_values(origin: impl Into<PathBuf>, values: BTreeMap<String, String>) -> ConfigFile {
        ConfigFile {
            path: origin.into(),
            values,
            lines: BTreeMap::new(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    pub fn values(&self) -> &BTreeMap<String, String> {
        &self.values
    }

    pub fn into_values(self) -> BTreeMap<String, String> {
        self.values
    }

    /// An error about `key`, pointing at the line that set it (or the file if none did).
    /// The first of `issues` (there is always one where this is called), located.
    pub fn first_issue(&self, issues: Vec<sluice_data::transforms::ConfigIssue>) -> ConfigError {
        match issues.into_iter().next() {
            Some(issue) => self.error(&issue.key, issue.message),
            None => ConfigError {
                file: self.path.clone(),
                line: None,
                key: None,
                message: "invalid configuration".into(),
            },
        }
    }

    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.path.clone(),
            line: self.lines.get(key).copied(),
            key: Some(key.to_string()),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_keep_lines_and_escapes() {
        let text =
            b"# comment\nname=local-file-source\n\nfile = a\\\n  b.txt\ntopic:connect-test\n";
        let f = ConfigFile::parse_properties(Path::new("c.properties"), text).unwrap();
        assert_eq!(f.get("name"), Some("local-file-source"));
        assert_eq!(f.get("file"), Some("ab.txt"));
        assert_eq!(f.get("topic"), Some("connect-test"));
        let e = f.error("topic", "bad");
        assert_eq!(e.to_string(), "c.properties:6: topic: bad");
    }

    #[test]
    fn malformed_properties_name_the_line() {
        let text = b"a=1\nb=\\uZZZZ\n";
        let e = ConfigFile::parse_properties(Path::new("w.properties"), text).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("malformed"), "{e}");
    }

    #[test]
    fn any_bytes_read_as_properties_without_a_panic() {
        // Files that are only the start of a byte order mark (found by fuzzing).
        for text in [&b"\xff"[..], b"\xfe", b"\xef", b"\xef\xbb", b"\xef\xbb\xbf"] {
            let f = ConfigFile::parse_properties(Path::new("x.properties"), text).unwrap();
            assert!(f.values().len() <= 1, "{text:?}");
        }
        // UTF-8 as written; other bytes as ISO-8859-1, as Java reads properties.
        let f = ConfigFile::parse_properties(Path::new("x.properties"), "a=é\n".as_bytes());
        assert_eq!(f.unwrap().get("a"), Some("é"));
        let f = ConfigFile::parse_properties(Path::new("x.properties"), b"a=\xe9\n");
        assert_eq!(f.unwrap().get("a"), Some("é"));
    }

    #[test]
    fn json_files_in_rest_and_flat_shapes() {
        let rest = br#"{"name": "s",
  "config": {"connector.class": "FileStreamSink", "tasks.max": 2}}"#;
        let f = ConfigFile::parse_json(Path::new("s.json"), rest).unwrap();
        assert_eq!(f.get("name"), Some("s"));
        assert_eq!(f.get("tasks.max"), Some("2"));
        assert_eq!(f.error("connector.class", "x").line, Some(2));

        let flat = br#"{"name": "s", "file": "x"}"#;
        let f = ConfigFile::parse_json(Path::new("s.json"), flat).unwrap();
        assert_eq!(f.get("file"), Some("x"));
    }

    #[test]
    fn malformed_json_names_the_line() {
        let e = ConfigFile::parse_json(Path::new("s.json"), b"{\n\"a\": \n}").unwrap_err();
        assert_eq!(e.line, Some(3));
        let e = ConfigFile::parse_json(Path::new("s.json"), br#"{"a": [1]}"#).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("a"));
    }
}
