//! Single message transforms and predicates with Kafka Connect's class names and keys:
//! `transforms=a,b`, `transforms.a.type=org.apache.kafka.connect.transforms.InsertField$Value`,
//! `transforms.a.<key>=...`, `transforms.a.predicate=p`, `transforms.a.negate=true`,
//! `predicates=p`, `predicates.p.type=...`. A chain is built once per task from the connector's
//! config; every problem in it is reported with the full key it concerns.

mod cast;
mod fields;
mod headers;
mod routing;
mod timestamp;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::record::Record;

pub use timestamp::java_date_format;

/// Kafka's package for transforms; class names are accepted with or without it.
const PACKAGE: &str = "org.apache.kafka.connect.transforms.";
const PREDICATES_PACKAGE: &str = "org.apache.kafka.connect.transforms.predicates.";

/// A problem with one configuration key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// One transform: changes the record in place, `Ok(false)` to drop it. An error message says
/// what in the record did not fit (Kafka's DataException text where Kafka has one).
pub trait Transform: Send + Sync + std::fmt::Debug {
    fn apply(&self, record: &mut Record) -> Result<bool, String>;
}

/// A predicate deciding whether a transform applies to a record.
#[derive(Debug)]
enum Predicate {
    TopicNameMatches(regex::Regex),
    HasHeaderKey(String),
    RecordIsTombstone,
}

impl Predicate {
    fn test(&self, record: &Record) -> bool {
        match self {
            Predicate::TopicNameMatches(re) => re.is_match(&record.topic),
            Predicate::HasHeaderKey(name) => record.headers.iter().any(|h| &h.key == name),
            Predicate::RecordIsTombstone => record.is_tombstone(),
        }
    }
}

#[derive(Debug)]
struct Step {
    alias: String,
    class: String,
    transform: Box<dyn Transform>,
    predicate: Option<(Arc<Predicate>, bool)>,
}

/// A failed transform: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformFailure {
    pub alias: String,
    /// Kafka Connect's class name of the transform.
    pub class: String,
    pub message: String,
}

impl std::fmt::Display for TransformFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "transform {} ({}) failed: {}",
            self.alias, self.class, self.message
        )
    }
}

impl std::error::Error for TransformFailure {}

/// What one step of a chain did to a record, for dry runs.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    pub alias: String,
    pub class: String,
    /// False when the step's predicate (after `negate`) left the record alone.
    pub applied: bool,
    /// The record after the step; `None` when it was dropped or the step failed.
    pub record: Option<Record>,
    pub error: Option<String>,
}

/// A connector's transforms in order.
#[derive(Debug, Default)]
pub struct Chain {
    steps: Vec<Step>,
}

impl Chain {
    /// Builds the chain from a connector's whole config; every problem found is returned, each
    /// naming its key.
    pub fn from_config(config: &BTreeMap<String, String>) -> Result<Chain, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let predicates = predicates(config, &mut issues);
        let mut steps = Vec::new();
        let aliases = list(config.get("transforms").map(String::as_str).unwrap_or(""));
        check_unique(&aliases, "transforms", &mut issues);
        for alias in aliases {
            let prefix = format!("transforms.{alias}.");
            let mut own: BTreeMap<String, String> = config
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), v.clone())))
                .collect();
            let class = own.remove("type");
            let predicate_alias = own.remove("predicate");
            let negate = own.remove("negate");
            let predicate = match predicate_alias.as_deref().map(str::trim) {
                None | Some("") => {
                    if negate.is_some() {
                        issues.push(ConfigIssue {
                            key: format!("{prefix}negate"),
                            message: "negate applies only with a predicate".into(),
                        });
                    }
                    None
                }
                Some(p) => match predicates.get(p) {
                    None => {
                        issues.push(ConfigIssue {
                            key: format!("{prefix}predicate"),
                            message: format!(
                                "predicate {p:?} is not defined in 'predicates' (or its type is invalid)"
                            ),
                        });
                        None
                    }
                    Some(predicate) => {
                        let negate = match negate.as_deref().map(|s| s.trim().to_ascii_lowercase())
                        {
                            None => false,
                            Some(v) if v == "true" => true,
                            Some(v) if v == "false" => false,
                            Some(v) => {
                                issues.push(ConfigIssue {
                                    key: format!("{prefix}negate"),
                                    message: format!("invalid value {v:?}: expected true or false"),
                                });
                                false
                            }
                        };
                        Some((predicate.clone(), negate))
                    }
                },
            };
            let Some(class) = class.filter(|c| !c.trim().is_empty()) else {
                issues.push(ConfigIssue {
                    key: format!("{prefix}type"),
                    message: "missing required value: the transform's class".into(),
                });
                continue;
            };
            let mut settings = Settings::new(&prefix, own, &mut issues);
            let built = build(class.trim(), &mut settings);
            settings.finish();
            match built {
                Some((class, transform)) => {
                    if settings_ok(&issues, &prefix) {
                        steps.push(Step {
                            alias: alias.to_string(),
                            class,
                            transform,
                            predicate,
                        });
                    }
                }
                None => issues.push(ConfigIssue {
                    key: format!("{prefix}type"),
                    message: format!(
                        "unknown transform class {class:?}; the transforms are {}",
                        known_names()
                    ),
                }),
            }
        }
        if issues.is_empty() {
            Ok(Chain { steps })
        } else {
            Err(issues)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Runs the record through every step; `Ok(None)` when a step dropped it.
    pub fn apply(&self, mut record: Record) -> Result<Option<Record>, TransformFailure> {
        for step in &self.steps {
            if !step.applies(&record) {
                continue;
            }
            match step.transform.apply(&mut record) {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(message) => {
                    return Err(TransformFailure {
                        alias: step.alias.clone(),
                        class: step.class.clone(),
                        message,
                    })
                }
            }
        }
        Ok(Some(record))
    }

    /// Runs the record through the steps, keeping what each did; stops after a drop or an
    /// error.
    pub fn trace(&self, record: Record) -> Vec<StepOutcome> {
        let mut out = Vec::new();
        let mut current = record;
        for step in &self.steps {
            let (alias, class) = (step.alias.clone(), step.class.clone());
            if !step.applies(&current) {
                out.push(StepOutcome {
                    alias,
                    class,
                    applied: false,
                    record: Some(current.clone()),
                    error: None,
                });
                continue;
            }
            match step.transform.apply(&mut current) {
                Ok(true) => {
                    out.push(StepOutcome {
                        alias,
                        class,
                        applied: true,
                        record: Some(current.clone()),
                        error: None,
                    });
                }
                Ok(false) => {
                    out.push(StepOutcome {
                        alias,
                        class,
                        applied: true,
                        record: None,
                        error: None,
                    });
                    break;
                }
                Err(e) => {
                    out.push(StepOutcome {
                        alias,
                        class,
                        applied: true,
                        record: None,
                        error: Some(e),
                    });
                    break;
                }
            }
        }
        out
    }
}

impl Step {
    fn applies(&self, record: &Record) -> bool {
        match &self.predicate {
            None => true,
            Some((p, negate)) => p.test(record) != *negate,
        }
    }
}

fn settings_ok(issues: &[ConfigIssue], prefix: &str) -> bool {
    !issues.iter().any(|i| i.key.starts_with(prefix))
}

fn check_unique(aliases: &[&str], key: &str, issues: &mut Vec<ConfigIssue>) {
    let mut seen = BTreeSet::new();
    for a in aliases {
        if !seen.insert(*a) {
            issues.push(ConfigIssue {
                key: key.into(),
                message: format!("duplicate alias {a:?}"),
            });
        }
    }
}

fn predicates(
    config: &BTreeMap<String, String>,
    issues: &mut Vec<ConfigIssue>,
) -> BTreeMap<String, Arc<Predicate>> {
    let mut out = BTreeMap::new();
    let aliases = list(config.get("predicates").map(String::as_str).unwrap_or(""));
    check_unique(&aliases, "predicates", issues);
    for alias in aliases {
        let prefix = format!("predicates.{alias}.");
        let mut own: BTreeMap<String, String> = config
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), v.clone())))
            .collect();
        let Some(class) = own.remove("type").filter(|c| !c.trim().is_empty()) else {
            issues.push(ConfigIssue {
                key: format!("{prefix}type"),
                message: "missing required value: the predicate's class".into(),
            });
            continue;
        };
        let mut settings = Settings::new(&prefix, own, issues);
        let name = class.trim();
        let name = name.strip_prefix(PREDICATES_PACKAGE).unwrap_or(name);
        let predicate = match name {
            "TopicNameMatches" => settings
                .required("pattern")
                .and_then(|p| settings.regex("pattern", &p, true))
                .map(Predicate::TopicNameMatches),
            "HasHeaderKey" => settings.required("name").map(Predicate::HasHeaderKey),
            "RecordIsTombstone" => Some(Predicate::RecordIsTombstone),
            _ => {
                settings.issue(
                    "type",
                    format!(
                        "unknown predicate class {class:?}; the predicates are \
                         {PREDICATES_PACKAGE}TopicNameMatches, HasHeaderKey and RecordIsTombstone"
                    ),
                );
                None
            }
        };
        settings.finish();
        if let Some(p) = predicate {
            out.insert(alias.to_string(), Arc::new(p));
        }
    }
    out
}

/// A comma-separated list, trimmed, empty items left out.
pub(crate) fn list(s: &str) -> Vec<&str> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// A transform's own keys (the prefix removed), read one by one; keys never read are reported
/// as unknown, so a typo does not pass silently.
pub(crate) struct Settings<'i> {
    prefix: String,
    own: BTreeMap<String, String>,
    read: BTreeSet<String>,
    issues: &'i mut Vec<ConfigIssue>,
}

impl<'i> Settings<'i> {
    fn new(
        prefix: &str,
        own: BTreeMap<String, String>,
        issues: &'i mut Vec<ConfigIssue>,
    ) -> Settings<'i> {
        Settings {
            prefix: prefix.to_string(),
            own,
            read: BTreeSet::new(),
            issues,
        }
    }

    pub(crate) fn issue(&mut self, key: &str, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            key: format!("{}{key}", self.prefix),
            message: message.into(),
        });
    }

    /// The raw value, if set.
    pub(crate) fn get(&mut self, key: &str) -> Option<String> {
        self.read.insert(key.to_string());
        self.own.get(key).cloned()
    }

    pub(crate) fn required(&mut self, key: &str) -> Option<String> {
        match self.get(key) {
            Some(v) if !v.trim().is_empty() => Some(v),
            _ => {
                self.issue(key, "missing required value");
                None
            }
        }
    }

    pub(crate) fn string(&mut self, key: &str, default: &str) -> String {
        self.get(key).unwrap_or_else(|| default.to_string())
    }

    pub(crate) fn list(&mut self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|v| list(&v).into_iter().map(str::to_string).collect())
            .unwrap_or_default()
    }

    pub(crate) fn required_list(&mut self, key: &str) -> Vec<String> {
        let items = self.list(key);
        if items.is_empty() {
            self.issue(key, "missing required value: a comma-separated list");
        }
        items
    }

    /// One of `choices` (matched ignoring case); returns the choice as written in `choices`.
    pub(crate) fn choice(
        &mut self,
        key: &str,
        choices: &[&'static str],
        default: Option<&'static str>,
    ) -> Option<&'static str> {
        match self.get(key) {
            None => {
                if default.is_none() {
                    self.issue(
                        key,
                        format!("missing required value: one of {}", choices.join(", ")),
                    );
                }
                default
            }
            Some(v) => {
                let found = choices
                    .iter()
                    .find(|c| c.eq_ignore_ascii_case(v.trim()))
                    .copied();
                if found.is_none() {
                    self.issue(
                        key,
                        format!(
                            "invalid value {v:?}: expected one of {}",
                            choices.join(", ")
                        ),
                    );
                }
                found
            }
        }
    }

    pub(crate) fn boolean(&mut self, key: &str, default: bool) -> bool {
        match self.get(key).map(|v| v.trim().to_ascii_lowercase()) {
            None => default,
            Some(v) if v == "true" => true,
            Some(v) if v == "false" => false,
            Some(v) => {
                self.issue(key, format!("invalid value {v:?}: expected true or false"));
                default
            }
        }
    }

    /// Kafka's `replace.null.with.default` (true unless set false): whether null struct fields
    /// read as their field's default.
    pub(crate) fn replace_null_with_default(&mut self) -> bool {
        self.boolean("replace.null.with.default", true)
    }

    pub(crate) fn int(&mut self, key: &str) -> Option<i32> {
        let v = self.get(key)?;
        match v.trim().parse() {
            Ok(i) => Some(i),
            Err(_) => {
                self.issue(key, format!("invalid value {v:?}: expected an integer"));
                None
            }
        }
    }

    /// A Java regular expression compiled with Rust's regex engine; `whole` anchors it so it
    /// must match the whole text, as Java's `Matcher.matches()` does.
    pub(crate) fn regex(&mut self, key: &str, pattern: &str, whole: bool) -> Option<regex::Regex> {
        let source = if whole {
            format!("^(?:{pattern})$")
        } else {
            pattern.to_string()
        };
        match regex::Regex::new(&source) {
            Ok(re) => Some(re),
            Err(e) => {
                self.issue(key, format!("invalid regular expression {pattern:?}: {e}"));
                None
            }
        }
    }

    fn finish(self) {
        for key in self.own.keys() {
            if !self.read.contains(key) {
                self.issues.push(ConfigIssue {
                    key: format!("{}{key}", self.prefix),
                    message: "unknown key for this transform".into(),
                });
            }
        }
    }
}

/// The transforms by Kafka's simple class name; `$Key`/`$Value` pick the side.
const KNOWN: &[&str] = &[
    "Cast$Key",
    "Cast$Value",
    "DropHeaders",
    "ExtractField$Key",
    "ExtractField$Value",
    "Filter",
    "Flatten$Key",
    "Flatten$Value",
    "HeaderFrom$Key",
    "HeaderFrom$Value",
    "HoistField$Key",
    "HoistField$Value",
    "InsertField$Key",
    "InsertField$Value",
    "InsertHeader",
    "MaskField$Key",
    "MaskField$Value",
    "RegexRouter",
    "ReplaceField$Key",
    "ReplaceField$Value",
    "SetSchemaMetadata$Key",
    "SetSchemaMetadata$Value",
    "TimestampConverter$Key",
    "TimestampConverter$Value",
    "TimestampRouter",
    "ValueToKey",
];

fn known_names() -> String {
    format!("{PACKAGE}{{{}}}", KNOWN.join(", "))
}

/// Every transform class this crate knows, with Kafka's full names.
pub fn transform_classes() -> Vec<String> {
    KNOWN.iter().map(|n| format!("{PACKAGE}{n}")).collect()
}

/// Every predicate class, with Kafka's full names.
pub fn predicate_classes() -> Vec<String> {
    ["TopicNameMatches", "HasHeaderKey", "RecordIsTombstone"]
        .iter()
        .map(|n| format!("{PREDICATES_PACKAGE}{n}"))
        .collect()
}

fn build(class: &str, s: &mut Settings<'_>) -> Option<(String, Box<dyn Transform>)> {
    use crate::record::Side;
    let name = class.strip_prefix(PACKAGE).unwrap_or(class);
    // `a.b.Cast.Key` is how some tools spell nested classes.
    let name = name.replace('.', "$");
    let (base, side) = match name.split_once('$') {
        Some((base, "Key")) => (base, Some(Side::Key)),
        Some((base, "Value")) => (base, Some(Side::Value)),
        Some(_) => return None,
        None => (name.as_str(), None),
    };
    if !KNOWN.contains(&name.as_str()) {
        return None;
    }
    let side = side.unwrap_or(Side::Value);
    let transform: Box<dyn Transform> = match base {
        "Cast" => Box::new(cast::Cast::new(side, s)),
        "DropHeaders" => Box::new(headers::DropHeaders::new(s)),
        "ExtractField" => Box::new(fields::ExtractField::new(side, s)),
        "Filter" => Box::new(routing::Filter),
        "Flatten" => Box::new(fields::Flatten::new(side, s)),
        "HeaderFrom" => Box::new(headers::HeaderFrom::new(side, s)),
        "HoistField" => Box::new(fields::HoistField::new(side, s)),
        "InsertField" => Box::new(fields::InsertField::new(side, s)),
        "InsertHeader" => Box::new(headers::InsertHeader::new(s)),
        "MaskField" => Box::new(fields::MaskField::new(side, s)),
        "RegexRouter" => Box::new(routing::RegexRouter::new(s)),
        "ReplaceField" => Box::new(fields::ReplaceField::new(side, s)),
        "SetSchemaMetadata" => Box::new(fields::SetSchemaMetadata::new(side, s)),
        "TimestampConverter" => Box::new(timestamp::TimestampConverter::new(side, s)),
        "TimestampRouter" => Box::new(routing::TimestampRouter::new(s)),
        "ValueToKey" => Box::new(fields::ValueToKey::new(s)),
        _ => return None,
    };
    Some((format!("{PACKAGE}{name}"), transform))
}

#[cfg(test)]
mod tests;
