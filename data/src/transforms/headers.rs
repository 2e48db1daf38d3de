//! Transforms on headers: DropHeaders, HeaderFrom, InsertHeader.

use sluice_proto::connector::v1::{data, Data, Header, SchemaType, Structured};

use super::{Settings, Transform};
use crate::record::{
    field_index, map_entries, map_value, schema_of, string_value, struct_fields, struct_value,
    struct_values, Part, Record, Side,
};

/// Removes every header whose key is listed in `headers`.
#[derive(Debug)]
pub(super) struct DropHeaders {
    headers: Vec<String>,
}

impl DropHeaders {
    pub(super) fn new(s: &mut Settings<'_>) -> DropHeaders {
        DropHeaders {
            headers: s.required_list("headers"),
        }
    }
}

impl Transform for DropHeaders {
    fn apply(&self, record: &mut Record) -> Result<bool, String> {
        record.headers.retain(|h| !self.headers.contains(&h.key));
        Ok(true)
    }
}

/// Adds a header with a literal value (`header`, `value.literal`).
#[derive(Debug)]
pub(super) struct InsertHeader {
    header: String,
    value: Data,
}

impl InsertHeader {
    pub(super) fn new(s: &mut Settings<'_>) -> InsertHeader {
        let header = s.required("header").unwrap_or_default();
        let literal = s.required("value.literal").unwrap_or_default();
        InsertHeader {
            header,
            value: Data {
                kind: Some(data::Kind::Structured(Structured {
                    schema: Some(schema_of(SchemaType::String, false)),
                    value: Some(string_value(literal)),
                })),
            },
        }
    }
}

impl Transform for InsertHeader {
    fn apply(&self, record: &mut Record) -> Result<bool, String> {
        record.headers.push(Header {
            key: self.header.clone(),
            value: Some(self.value.clone()),
        });
        Ok(true)
    }
}

/// Copies or moves fields of the key or value into headers (`fields`, `headers`, `operation`).
#[derive(Debug)]
pub(super) struct HeaderFrom {
    side: Side,
    fields: Vec<String>,
    headers: Vec<String>,
    moving: bool,
}

const PURPOSE: &str = "header from field";

impl HeaderFrom {
    pub(super) fn new(side: Side, s: &mut Settings<'_>) -> HeaderFrom {
        let fields = s.required_list("fields");
        let headers = s.required_list("headers");
        if !fields.is_empty() && fields.len() != headers.len() {
            s.issue(
                "headers",
                format!(
                    "'fields' config must have the same number of elements as 'headers' config ({} fields, {} headers)",
                    fields.len(),
                    headers.len()
                ),
            );
        }
        let moving = s.choice("operation", &["move", "copy"], None) == Some("move");
        HeaderFrom {
            side,
            fields,
            headers,
            moving,
        }
    }
}

impl Transform for HeaderFrom {
    fn apply(&self, record: &mut Record) -> Result<bool, String> {
        let part = record.take(self.side);
        let Some(value) = part.value else {
            record.put(self.side, part);
            return Ok(true);
        };
        let out = match part.schema {
            Some(schema) => {
                struct_fields(&schema, PURPOSE)?;
                let mut values = struct_values(Some(value), PURPOSE)?;
                for (field, header) in self.fields.iter().zip(&self.headers) {
                    let i = field_index(&schema, field).ok_or_else(|| {
                        format!("field {field} not found in {} schema", self.side.name())
                    })?;
                    record.headers.push(Header {
                        key: header.clone(),
                        value: Some(Data {
                            kind: Some(data::Kind::Structured(Structured {
                                schema: schema.fields[i].schema.as_deref().cloned(),
                                value: values.get(i).cloned(),
                            })),
                        }),
                    });
                }
                if self.moving {
                    let mut kept_schema = schema.clone();
                    kept_schema.fields.clear();
                    let mut kept = Vec::new();
                    for (i, f) in schema.fields.iter().enumerate() {
                        if !self.fields.contains(&f.name) {
                            kept_schema.fields.push(f.clone());
                            kept.push(std::mem::take(&mut values[i]));
                        }
                    }
                    Part {
                        schema: Some(kept_schema),
                        value: Some(struct_value(kept)),
                    }
                } else {
                    Part {
                        schema: Some(schema),
                        value: Some(struct_value(values)),
                    }
                }
            }
            None => {
                let mut entries = map_entries(value, PURPOSE)?;
                for (field, header) in self.fields.iter().zip(&self.headers) {
                    let v = entries
                        .iter()
                        .find(|(k, _)| k == field)
                        .map(|(_, v)| v.clone());
                    record.headers.push(Header {
                        key: header.clone(),
                        value: v.map(|v| Data {
                            kind: Some(data::Kind::Structured(Structured {
                                schema: None,
                                value: Some(v),
                            })),
                        }),
                    });
                }
                if self.moving {
                    entries.retain(|(k, _)| !self.fields.contains(k));
                }
                Part {
                    schema: None,
                    value: Some(map_value(entries)),
                }
            }
        };
        record.put(self.side, out);
        Ok(true)
    }
}
