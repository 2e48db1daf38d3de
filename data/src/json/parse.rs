//! Reading: the `{"schema":…,"payload":…}` envelope and schemaless JSON back into Connect
//! data, checked against the schema as Kafka's JsonConverter checks it.

use sluice_proto::connector::v1::{
    value, ArrayValue, Field, MapEntry, MapValue, Schema, SchemaType, StructValue, Structured,
    Value,
};

use crate::error::{base64_decode, ConversionError};

use super::decimal::{self, BigDecimal};
use super::reader::Node;
use super::{
    kafka_type_name, logical, type_from_name, JsonOptions, Logical, ENVELOPE_ERROR, MILLIS_PER_DAY,
};
use crate::logical::is_null;

/// Reads the `{"schema":…,"payload":…}` envelope; `None` for Kafka's null (no schema, null
/// payload).
pub(crate) fn from_envelope_node(
    doc: Node,
    options: JsonOptions,
) -> Result<Option<Structured>, ConversionError> {
    let Node::Object(members) = doc else {
        return Err(ConversionError::new(ENVELOPE_ERROR));
    };
    if members.len() != 2 {
        return Err(ConversionError::new(ENVELOPE_ERROR));
    }
    let mut schema = None;
    let mut payload = None;
    for (k, v) in members {
        match k.as_str() {
            "schema" => schema = Some(v),
            "payload" => payload = Some(v),
            _ => return Err(ConversionError::new(ENVELOPE_ERROR)),
        }
    }
    let (Some(schema), Some(payload)) = (schema, payload) else {
        return Err(ConversionError::new(ENVELOPE_ERROR));
    };
    if schema == Node::Null {
        return Ok(schemaless_node(payload)?.map(|value| Structured {
            schema: None,
            value: Some(value),
        }));
    }
    let schema = parse_schema(&schema, options)?;
    let value = parse_value(&schema, Some(payload), options)?;
    Ok(Some(Structured {
        schema: Some(schema),
        value: Some(value),
    }))
}

fn null_value() -> Value {
    Value {
        kind: Some(value::Kind::Null(true)),
    }
}

/// Plain JSON to a schemaless value, as Kafka's JsonConverter reads it with no schema: integers
/// as int64, other numbers as float64, objects as maps with string keys. `None` for null.
pub(crate) fn schemaless_node(doc: Node) -> Result<Option<Value>, ConversionError> {
    let kind = match doc {
        Node::Null => return Ok(None),
        Node::Bool(b) => value::Kind::Boolean(b),
        Node::Number { text, integral } => {
            if integral {
                value::Kind::Int(text.parse().map_err(|_| {
                    ConversionError::new(format!("integer {text} does not fit int64"))
                })?)
            } else {
                value::Kind::Float64(
                    text.parse()
                        .map_err(|_| ConversionError::new(format!("invalid number {text}")))?,
                )
            }
        }
        Node::String(s) => value::Kind::String(s),
        Node::Array(items) => value::Kind::Array(ArrayValue {
            items: items
                .into_iter()
                .map(|i| Ok(schemaless_node(i)?.unwrap_or_else(null_value)))
                .collect::<Result<_, ConversionError>>()?,
        }),
        Node::Object(members) => value::Kind::Map(MapValue {
            entries: members
                .into_iter()
                .map(|(k, v)| {
                    Ok(MapEntry {
                        key: Some(Value {
                            kind: Some(value::Kind::String(k)),
                        }),
                        value: Some(schemaless_node(v)?.unwrap_or_else(null_value)),
                    })
                })
                .collect::<Result<_, ConversionError>>()?,
        }),
    };
    Ok(Some(Value { kind: Some(kind) }))
}

fn parse_schema(doc: &Node, options: JsonOptions) -> Result<Schema, ConversionError> {
    let type_name = match doc.get("type") {
        Some(Node::String(t)) => t.as_str(),
        _ => return Err(ConversionError::new("schema must contain 'type' field")),
    };
    let kind = type_from_name(type_name)
        .ok_or_else(|| ConversionError::new(format!("unknown schema type: {type_name}")))?;
    let mut schema = Schema {
        r#type: kind as i32,
        ..Schema::default()
    };
    match kind {
        SchemaType::Array => {
            let items = doc
                .get("items")
                .filter(|i| **i != Node::Null)
                .ok_or_else(|| {
                    ConversionError::new("array schema did not specify the element type")
                })?;
            schema.value_schema = Some(Box::new(parse_schema(items, options)?));
        }
        SchemaType::Map => {
            let keys = doc
                .get("keys")
                .ok_or_else(|| ConversionError::new("map schema did not specify the key type"))?;
            let values = doc
                .get("values")
                .ok_or_else(|| ConversionError::new("map schema did not specify the value type"))?;
            schema.key_schema = Some(Box::new(parse_schema(keys, options)?));
            schema.value_schema = Some(Box::new(parse_schema(values, options)?));
        }
        SchemaType::Struct => {
            let Some(Node::Array(fields)) = doc.get("fields") else {
                return Err(ConversionError::new(
                    "struct schema's \"fields\" argument is not an array",
                ));
            };
            for field in fields {
                let Some(Node::String(name)) = field.get("field") else {
                    return Err(ConversionError::new(
                        "struct schema's field name not specified properly",
                    ));
                };
                schema.fields.push(Field {
                    name: name.clone(),
                    schema: Some(Box::new(parse_schema(field, options)?)),
                });
            }
        }
        _ => {}
    }
    schema.optional = doc.get("optional") == Some(&Node::Bool(true));
    if let Some(Node::String(name)) = doc.get("name") {
        schema.name = Some(name.clone());
    }
    if let Some(Node::Number {
        text,
        integral: true,
    }) = doc.get("version")
    {
        schema.version = text.parse().ok();
    }
    if let Some(Node::String(d)) = doc.get("doc") {
        schema.doc = Some(d.clone());
    }
    if let Some(Node::Object(params)) = doc.get("parameters") {
        for (k, v) in params {
            let Node::String(v) = v else {
                return Err(ConversionError::new(
                    "schema parameters must have string values",
                ));
            };
            schema.parameters.insert(k.clone(), v.clone());
        }
    }
    if let Some(default) = doc.get("default") {
        let value = parse_value(&schema, Some(default.clone()), options)?;
        if !is_null(&value) {
            schema.default_value = Some(value);
        }
    }
    Ok(schema)
}

fn integral_text(doc: &Node) -> Option<&str> {
    match doc {
        Node::Number {
            text,
            integral: true,
        } => Some(text),
        _ => None,
    }
}

/// A JSON number as a whole number in `min..=max` (Jackson's `intValue`/`longValue`, minus
/// their silent truncation).
fn whole_number(schema: &Schema, doc: &Node, min: i64, max: i64) -> Result<i64, ConversionError> {
    let Node::Number { text, .. } = doc else {
        return Err(ConversionError::new(format!(
            "invalid json for {}: expected a number, found {}",
            kafka_type_name(schema.r#type),
            doc.type_name()
        )));
    };
    BigDecimal::parse(text)
        .and_then(|d| d.to_i64())
        .filter(|i| (min..=max).contains(i))
        .ok_or_else(|| {
            ConversionError::new(format!(
                "invalid json for {}: {text} is not a whole number in range",
                kafka_type_name(schema.r#type)
            ))
        })
}

fn parse_value(
    schema: &Schema,
    doc: Option<Node>,
    options: JsonOptions,
) -> Result<Value, ConversionError> {
    let doc = match doc {
        None | Some(Node::Null) => {
            if options.replace_null_with_default {
                if let Some(default) = &schema.default_value {
                    return Ok(default.clone());
                }
            }
            if schema.optional {
                return Ok(null_value());
            }
            return Err(ConversionError::new(format!(
                "invalid null value for required {} field",
                kafka_type_name(schema.r#type)
            )));
        }
        Some(doc) => doc,
    };
    let mismatch = |expected: &str, doc: &Node| {
        ConversionError::new(format!(
            "invalid json for {}: expected {expected}, found {}",
            kafka_type_name(schema.r#type),
            doc.type_name()
        ))
    };
    if let Some(logical) = logical(schema) {
        return parse_logical(schema, logical, doc);
    }
    let kind = match SchemaType::try_from(schema.r#type).unwrap_or(SchemaType::Unspecified) {
        SchemaType::Int8 => {
            value::Kind::Int(whole_number(schema, &doc, i8::MIN.into(), i8::MAX.into())?)
        }
        SchemaType::Int16 => value::Kind::Int(whole_number(
            schema,
            &doc,
            i16::MIN.into(),
            i16::MAX.into(),
        )?),
        SchemaType::Int32 => value::Kind::Int(whole_number(
            schema,
            &doc,
            i32::MIN.into(),
            i32::MAX.into(),
        )?),
        SchemaType::Int64 => value::Kind::Int(whole_number(schema, &doc, i64::MIN, i64::MAX)?),
        SchemaType::Float32 => match &doc {
            // Straight from the decimal text, as Java's `BigDecimal.floatValue` rounds.
            Node::Number { text, .. } => value::Kind::Float32(
                text.parse()
                    .map_err(|_| ConversionError::new(format!("invalid number {text}")))?,
            ),
            other => return Err(mismatch("a number", other)),
        },
        SchemaType::Float64 => match &doc {
            Node::Number { text, .. } => value::Kind::Float64(
                text.parse()
                    .map_err(|_| ConversionError::new(format!("invalid number {text}")))?,
            ),
            other => return Err(mismatch("a number", other)),
        },
        SchemaType::Boolean => match doc {
            Node::Bool(b) => value::Kind::Boolean(b),
            other => return Err(mismatch("a boolean", &other)),
        },
        SchemaType::String => match doc {
            Node::String(s) => value::Kind::String(s),
            other => return Err(mismatch("a string", &other)),
        },
        SchemaType::Bytes => match doc {
            Node::String(s) => value::Kind::Bytes(
                base64_decode(&s)
                    .map_err(|e| ConversionError::new(format!("invalid bytes field: {e}")))?,
            ),
            other => return Err(mismatch("base64 text", &other)),
        },
        SchemaType::Array => {
            let items_schema = schema.value_schema.as_deref().ok_or_else(|| {
                ConversionError::new("array schema did not specify the element type")
            })?;
            let Node::Array(items) = doc else {
                return Err(mismatch("an array", &doc));
            };
            value::Kind::Array(ArrayValue {
                items: items
                    .into_iter()
                    .map(|i| parse_value(items_schema, Some(i), options))
                    .collect::<Result<_, _>>()?,
            })
        }
        SchemaType::Map => parse_map(schema, doc, options)?,
        SchemaType::Struct => {
            let Node::Object(mut members) = doc else {
                return Err(ConversionError::new(format!(
                    "structs should be encoded as JSON objects, but found {}",
                    doc.type_name()
                )));
            };
            let values = schema
                .fields
                .iter()
                .map(|f| {
                    let field_schema = f.schema.as_ref().ok_or_else(|| {
                        ConversionError::new(format!("struct field {} has no schema", f.name))
                    })?;
                    let member = members
                        .iter()
                        .position(|(k, _)| *k == f.name)
                        .map(|i| members.swap_remove(i).1);
                    parse_value(field_schema, member, options)
                })
                .collect::<Result<_, _>>()?;
            value::Kind::Struct(StructValue {
                fields: values,
                names: Vec::new(),
            })
        }
        SchemaType::Unspecified => return Err(ConversionError::new("schema has no type")),
    };
    Ok(Value { kind: Some(kind) })
}

fn parse_map(
    schema: &Schema,
    doc: Node,
    options: JsonOptions,
) -> Result<value::Kind, ConversionError> {
    let (Some(key_schema), Some(value_schema)) =
        (schema.key_schema.as_deref(), schema.value_schema.as_deref())
    else {
        return Err(ConversionError::new(
            "map schema did not specify the key and value types",
        ));
    };
    let entries = if key_schema.r#type == SchemaType::String as i32 {
        let Node::Object(members) = doc else {
            return Err(ConversionError::new(format!(
                "maps with string fields should be encoded as JSON objects, but found {}",
                doc.type_name()
            )));
        };
        members
            .into_iter()
            .map(|(k, v)| {
                Ok(MapEntry {
                    key: Some(Value {
                        kind: Some(value::Kind::String(k)),
                    }),
                    value: Some(parse_value(value_schema, Some(v), options)?),
                })
            })
            .collect::<Result<_, ConversionError>>()?
    } else {
        let Node::Array(pairs) = doc else {
            return Err(ConversionError::new(format!(
                "maps with non-string fields should be encoded as JSON array of tuples, but found {}",
                doc.type_name()
            )));
        };
        pairs
            .into_iter()
            .map(|pair| match pair {
                Node::Array(kv) if kv.len() == 2 => {
                    let mut kv = kv.into_iter();
                    Ok(MapEntry {
                        key: Some(parse_value(key_schema, kv.next(), options)?),
                        value: Some(parse_value(value_schema, kv.next(), options)?),
                    })
                }
                Node::Array(kv) => Err(ConversionError::new(format!(
                    "found invalid map entry, expected length 2 but found: {}",
                    kv.len()
                ))),
                other => Err(ConversionError::new(format!(
                    "found invalid map entry instead of array tuple: {}",
                    other.type_name()
                ))),
            })
            .collect::<Result<_, ConversionError>>()?
    };
    Ok(value::Kind::Map(MapValue { entries }))
}

fn parse_logical(schema: &Schema, logical: Logical, doc: Node) -> Result<Value, ConversionError> {
    let kind = match logical {
        Logical::Decimal => {
            let scale = decimal::schema_scale(&schema.parameters)?;
            match doc {
                // Accepted whatever decimal.format says, as Kafka does.
                Node::Number { text, .. } => {
                    let decimal = BigDecimal::parse(&text)
                        .ok_or_else(|| ConversionError::new(format!("invalid decimal {text}")))?;
                    let exact = decimal.with_scale(i64::from(scale)).ok_or_else(|| {
                        ConversionError::new(format!(
                            "invalid decimal {text}: does not fit the schema's scale {scale}"
                        ))
                    })?;
                    value::Kind::Bytes(exact.unscaled_bytes())
                }
                Node::String(s) => {
                    let bytes = base64_decode(&s)
                        .ok()
                        .filter(|b| !b.is_empty())
                        .ok_or_else(|| {
                            ConversionError::new("invalid bytes for decimal field")
                        })?;
                    value::Kind::Bytes(bytes)
                }
                other => {
                    return Err(ConversionError::new(format!(
                        "invalid type for decimal, underlying representation should be numeric or bytes but was {}",
                        other.type_name()
                    )))
                }
            }
        }
        Logical::Date | Logical::Time => {
            let name = if logical == Logical::Date {
                "date"
            } else {
                "time"
            };
            let v = integral_text(&doc)
                .and_then(|t| t.parse::<i32>().ok())
                .ok_or_else(|| {
                    ConversionError::new(format!(
                        "invalid type for {name}, underlying representation should be integer but was {}",
                        doc.type_name()
                    ))
                })?;
            if logical == Logical::Time && !(0..=MILLIS_PER_DAY).contains(&i64::from(v)) {
                return Err(ConversionError::new(
                    "time values must use number of milliseconds greater than 0 and less than 86400000",
                ));
            }
            value::Kind::Int(i64::from(v))
        }
        Logical::Timestamp => {
            let v = integral_text(&doc)
                .and_then(|t| t.parse::<i64>().ok())
                .ok_or_else(|| {
                    ConversionError::new(format!(
                        "invalid type for timestamp, underlying representation should be integral but was {}",
                        doc.type_name()
                    ))
                })?;
            value::Kind::Int(v)
        }
    };
    Ok(Value { kind: Some(kind) })
}
