//! The framework's connector keys, declared once: Kafka Connect's names, types, defaults,
//! groups and documentation, plus Sluice's `restart.*`. The parse in [`crate::connector`] reads
//! them, the controller's validation answers describe them, and a distributed worker asks
//! [`worker_reads`] whether a changed key restarts every task. Adding a framework key is one
//! entry here and one field read in `connector.rs`.

use sluice_proto::api::v1 as api;

/// One framework key as Kafka Connect's `ConfigDef` declares it.
#[derive(Debug, Clone, Copy)]
pub struct FrameworkKey {
    pub name: &'static str,
    /// Kafka Connect's type name: STRING, INT, SHORT, LONG, BOOLEAN, LIST, CLASS.
    pub r#type: &'static str,
    /// `None`: required.
    pub default: Option<&'static str>,
    pub importance: &'static str,
    pub group: &'static str,
    pub doc: &'static str,
    /// When non-empty, the only accepted values.
    pub valid_values: &'static [&'static str],
    /// Read by the worker itself (not only by the connector): a change restarts every task.
    pub worker_reads: bool,
}

const fn key(
    name: &'static str,
    r#type: &'static str,
    default: Option<&'static str>,
    group: &'static str,
    doc: &'static str,
) -> FrameworkKey {
    FrameworkKey {
        name,
        r#type,
        default,
        importance: "MEDIUM",
        group,
        doc,
        valid_values: &[],
        worker_reads: true,
    }
}

const COMMON: &str = "Common";
const TRANSFORMS: &str = "Transforms";
const ERRORS: &str = "Error Handling";
const EXACTLY_ONCE: &str = "Exactly Once Support";
const RESTARTS: &str = "Restarts";

/// Every framework key, in Kafka Connect's order.
pub const FRAMEWORK_KEYS: &[FrameworkKey] = &[
    FrameworkKey {
        importance: "HIGH",
        worker_reads: false,
        ..key("name", "STRING", None, COMMON, "Globally unique name to use for this connector.")
    },
    FrameworkKey {
        importance: "HIGH",
        worker_reads: false,
        ..key(
            "connector.class",
            "STRING",
            None,
            COMMON,
            "Name or alias of the class for this connector.",
        )
    },
    FrameworkKey {
        importance: "HIGH",
        worker_reads: false,
        ..key(
            "tasks.max",
            "INT",
            Some("1"),
            COMMON,
            "Maximum number of tasks to use for this connector.",
        )
    },
    key(
        "key.converter",
        "CLASS",
        Some(""),
        COMMON,
        "Converter class for keys; overrides the worker's.",
    ),
    key(
        "value.converter",
        "CLASS",
        Some(""),
        COMMON,
        "Converter class for values; overrides the worker's.",
    ),
    key(
        "header.converter",
        "CLASS",
        Some(""),
        COMMON,
        "Converter class for headers; overrides the worker's.",
    ),
    FrameworkKey {
        importance: "HIGH",
        ..key(
            "topics",
            "LIST",
            Some(""),
            COMMON,
            "List of topics to consume (sinks); mutually exclusive with topics.regex.",
        )
    },
    FrameworkKey {
        importance: "HIGH",
        ..key(
            "topics.regex",
            "STRING",
            Some(""),
            COMMON,
            "Regular expression of topics to consume (sinks); mutually exclusive with topics.",
        )
    },
    FrameworkKey {
        importance: "LOW",
        ..key(
            "transforms",
            "LIST",
            Some(""),
            TRANSFORMS,
            "Aliases for the transformations to apply to records, in order.",
        )
    },
    FrameworkKey {
        importance: "LOW",
        ..key(
            "predicates",
            "LIST",
            Some(""),
            TRANSFORMS,
            "Aliases for the predicates used by transformations.",
        )
    },
    key(
        "errors.retry.timeout",
        "LONG",
        Some("0"),
        ERRORS,
        "Milliseconds a failed operation is retried; -1 for ever, 0 for no retry.",
    ),
    key(
        "errors.retry.delay.max.ms",
        "LONG",
        Some("60000"),
        ERRORS,
        "Longest delay between consecutive retries, in milliseconds.",
    ),
    FrameworkKey {
        valid_values: &["none", "all"],
        ..key(
            "errors.tolerance",
            "STRING",
            Some("none"),
            ERRORS,
            "none: a record error fails the task; all: failed records are skipped.",
        )
    },
    key(
        "errors.log.enable",
        "BOOLEAN",
        Some("false"),
        ERRORS,
        "Log each error and the failed operation.",
    ),
    key(
        "errors.log.include.messages",
        "BOOLEAN",
        Some("false"),
        ERRORS,
        "Include the failed record in the log.",
    ),
    key(
        "errors.deadletterqueue.topic.name",
        "STRING",
        Some(""),
        ERRORS,
        "Topic that failed records are written to; empty for none.",
    ),
    key(
        "errors.deadletterqueue.topic.replication.factor",
        "SHORT",
        Some("3"),
        ERRORS,
        "Replication factor of the dead-letter topic when it is created; -1 for the broker's.",
    ),
    key(
        "errors.deadletterqueue.context.headers.enable",
        "BOOLEAN",
        Some("false"),
        ERRORS,
        "Add headers describing the failure to dead-letter records.",
    ),
    FrameworkKey {
        valid_values: &["requested", "required"],
        ..key(
            "exactly.once.support",
            "STRING",
            Some("requested"),
            EXACTLY_ONCE,
            "required: refuse to start unless the connector can run exactly-once.",
        )
    },
    FrameworkKey {
        valid_values: &["poll", "interval", "connector"],
        ..key(
            "transaction.boundary",
            "STRING",
            Some("poll"),
            EXACTLY_ONCE,
            "When an exactly-once source commits its transaction.",
        )
    },
    FrameworkKey {
        importance: "LOW",
        ..key(
            "transaction.boundary.interval.ms",
            "LONG",
            Some(""),
            EXACTLY_ONCE,
            "Transaction length with transaction.boundary=interval; the offset flush interval when empty.",
        )
    },
    FrameworkKey {
        importance: "LOW",
        ..key(
            "restart.max.attempts",
            "INT",
            Some("10"),
            RESTARTS,
            "Restarts after consecutive failures before a unit stays FAILED; -1 for no limit.",
        )
    },
    FrameworkKey {
        importance: "LOW",
        ..key(
            "restart.backoff.initial.ms",
            "LONG",
            Some("500"),
            RESTARTS,
            "Delay before the first restart, doubled each time.",
        )
    },
    FrameworkKey {
        importance: "LOW",
        ..key(
            "restart.backoff.max.ms",
            "LONG",
            Some("60000"),
            RESTARTS,
            "Longest delay between restarts.",
        )
    },
];

/// Prefixes of keys the worker reads beside the framework keys: converter settings,
/// transform and predicate settings, client overrides.
const WORKER_PREFIXES: &[&str] = &[
    "key.converter.",
    "value.converter.",
    "header.converter.",
    "transforms.",
    "predicates.",
    "producer.override.",
    "consumer.override.",
];

/// Whether the worker itself reads `key` (the rest reach the tasks through their task
/// configs): a change of such a key restarts every task of the connector.
pub fn worker_reads(key: &str) -> bool {
    FRAMEWORK_KEYS
        .iter()
        .any(|k| k.worker_reads && k.name == key)
        || WORKER_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// The framework keys as the public API describes config keys.
pub fn definitions() -> Vec<api::ConfigKey> {
    FRAMEWORK_KEYS
        .iter()
        .map(|k| api::ConfigKey {
            name: k.name.into(),
            r#type: k.r#type.into(),
            required: k.default.is_none(),
            default_value: k.default.map(str::to_string),
            importance: k.importance.into(),
            documentation: k.doc.into(),
            group: k.group.into(),
            display_name: k.name.into(),
            valid_values: k.valid_values.iter().map(|v| v.to_string()).collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_once_and_worker_reads_what_restarts_tasks() {
        let mut names: Vec<_> = FRAMEWORK_KEYS.iter().map(|k| k.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FRAMEWORK_KEYS.len());
        for restarts in [
            "errors.tolerance",
            "transforms",
            "transforms.a.type",
            "value.converter.schemas.enable",
            "transaction.boundary",
            "producer.override.linger.ms",
            "restart.max.attempts",
        ] {
            assert!(worker_reads(restarts), "{restarts}");
        }
        for not in ["tasks.max", "file", "connector.class", "name"] {
            assert!(!worker_reads(not), "{not}");
        }
        let defs = definitions();
        assert!(defs.iter().any(|d| d.name == "name" && d.required));
        assert!(defs
            .iter()
            .any(|d| d.name == "errors.tolerance" && d.valid_values == ["none", "all"]));
    }
}
