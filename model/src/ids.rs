//! Typed ids: what names a connector, a task, a worker, an assignment generation and a
//! schedulable unit. The controller, the worker and the CLI pass these, never bare strings and
//! integers, so a worker id cannot be handed where a connector name is meant.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// A connector's name as users gave it: non-empty, no surrounding spaces, no `/` (it is a path
/// segment of Kafka Connect's REST API) and no control characters. Shared, not copied, when
/// cloned: the controller keeps each name in many maps (placement, assignments sent, releases).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectorName(Arc<str>);

impl ConnectorName {
    /// What a valid name looks like, for messages.
    pub const RULE: &'static str =
        "must be non-empty, without '/', control characters or surrounding spaces";

    /// Checks `name` against [`ConnectorName::RULE`].
    pub fn parse(name: &str) -> Result<ConnectorName, String> {
        let valid = !name.is_empty()
            && name.trim() == name
            && !name.contains('/')
            && !name.chars().any(char::is_control);
        if valid {
            Ok(ConnectorName(name.into()))
        } else {
            Err(Self::RULE.to_string())
        }
    }

    /// A name read back from where only checked names are written (the store, an assignment),
    /// or one that is only looked up: not checked again.
    pub fn from_trusted(name: impl AsRef<str>) -> ConnectorName {
        ConnectorName(name.as_ref().into())
    }
}

/// A newtype over an integer id, shown as the number.
macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default,
            serde::Serialize, serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

numeric_id!(
    /// A task's index within its connector: task `i` runs with the connector's `i`-th task
    /// config.
    TaskId(u32)
);

numeric_id!(
    /// The number of a placement the controller computed; each assignment carries it, and a
    /// worker acts only on newer ones.
    Generation(u64)
);

/// A worker's id, unique in its cluster (`--worker-id`, by default its host and port). Shared,
/// not copied, when cloned.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(Arc<str>);

impl WorkerId {
    pub fn new(id: impl AsRef<str>) -> WorkerId {
        WorkerId(id.as_ref().into())
    }
}

impl Generation {
    pub fn next(self) -> Generation {
        Generation(self.0 + 1)
    }
}

/// One schedulable unit: a connector's planning instance (`task: None`) or one of its tasks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitKey {
    pub connector: ConnectorName,
    pub task: Option<TaskId>,
}

impl UnitKey {
    /// The planning instance of `connector`.
    pub fn planning(connector: &str) -> UnitKey {
        UnitKey {
            connector: ConnectorName::from_trusted(connector),
            task: None,
        }
    }

    /// Task `task` of `connector`.
    pub fn task(connector: &str, task: u32) -> UnitKey {
        UnitKey {
            connector: ConnectorName::from_trusted(connector),
            task: Some(TaskId(task)),
        }
    }

    /// The unit a wire message names (`task` absent for the planning instance).
    pub fn from_wire(connector: &str, task: Option<u32>) -> UnitKey {
        UnitKey {
            connector: ConnectorName::from_trusted(connector),
            task: task.map(TaskId),
        }
    }

    /// The task number on the wire, `None` for the planning instance.
    pub fn wire_task(&self) -> Option<u32> {
        self.task.map(|t| t.0)
    }
}

/// What both string ids share: display, lookups by `&str`, comparisons with strings, and serde
/// as a plain string.
macro_rules! string_id {
    ($name:ident) => {
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                String::deserialize(d).map(|s| $name(s.into()))
            }
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0.to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                *self.0 == *other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                *self.0 == **other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                *self.0 == **other
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }
    };
}

string_id!(ConnectorName);
string_id!(WorkerId);

impl fmt::Display for UnitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.task {
            Some(t) => write!(f, "{}-{t}", self.connector),
            None => write!(f, "{}", self.connector),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connector_names_follow_the_rule() {
        for good in ["file-sink", "a b", "Ünïcode", "x.y_z"] {
            assert_eq!(ConnectorName::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", " lead", "trail ", "a/b", "nul\0", "tab\tin"] {
            assert_eq!(
                ConnectorName::parse(bad).unwrap_err(),
                ConnectorName::RULE,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn units_order_planning_first_and_print_as_kafka_connect_does() {
        let mut units = [
            UnitKey::task("c", 1),
            UnitKey::planning("c"),
            UnitKey::task("c", 0),
        ];
        units.sort();
        assert_eq!(units[0], UnitKey::planning("c"));
        assert_eq!(units[1].to_string(), "c-0");
        assert_eq!(UnitKey::from_wire("c", Some(1)), units[2]);
        assert_eq!(units[2].wire_task(), Some(1));
    }

    #[test]
    fn ids_look_up_by_str() {
        let map: std::collections::BTreeMap<WorkerId, u32> = [(WorkerId::new("w1"), 1)].into();
        assert_eq!(map.get("w1"), Some(&1));
        assert!(WorkerId::new("w1") == "w1");
        assert_eq!(Generation(4).next(), Generation(5));
    }
}
