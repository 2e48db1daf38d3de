//! Avro to Connect: an Avro value as Connect data of the schema it was written with, and an
//! Avro schema as the Connect schema Confluent's `AvroData` reads from it (`FromAvro`).

use std::collections::{HashMap, HashSet};

use apache_avro::types::Value as AvroValue;
use serde_json::{Map, Value as Json};
use sluice_proto::connector::v1::{
    value, ArrayValue, Field, MapEntry, MapValue, Schema, SchemaType, StructValue, Value,
};

use super::{
    err, is_logical, schema_type, type_name, DEFAULT_NAME, DEFAULT_PRECISION, ENUM_PARAM,
    FIELD_DEFAULT_FLAG, FIELD_DOC_PREFIX, MAP_ENTRY, NAMESPACE, PRECISION_PARAM, RECORD_DOC, UNION,
};
use crate::error::ConversionError;
use crate::record;

fn null_value() -> Value {
    Value {
        kind: Some(value::Kind::Null(true)),
    }
}

/// An Avro value read with the writer's schema to Connect, following the Connect schema made
/// from that writer's schema.
pub(super) fn from_avro_value(s: &Schema, v: AvroValue) -> Result<Value, ConversionError> {
    use value::Kind;
    let kind = match v {
        AvroValue::Null => return Ok(null_value()),
        AvroValue::Union(_, inner) if is_logical(s, UNION) => {
            if matches!(*inner, AvroValue::Null) {
                return Ok(null_value());
            }
            let index = union_branch(s, &inner)
                .ok_or_else(|| ConversionError::new("union value matches no union member"))?;
            let mut fields = vec![null_value(); s.fields.len()];
            let fs = s.fields[index].schema.clone().unwrap_or_default();
            fields[index] = from_avro_value(&fs, *inner)?;
            Kind::Struct(StructValue {
                fields,
                names: vec![],
            })
        }
        AvroValue::Union(_, inner) => return from_avro_value(s, *inner),
        AvroValue::Boolean(b) => Kind::Boolean(b),
        AvroValue::Int(i) | AvroValue::Date(i) | AvroValue::TimeMillis(i) => Kind::Int(i.into()),
        AvroValue::Long(i)
        | AvroValue::TimeMicros(i)
        | AvroValue::TimestampMillis(i)
        | AvroValue::TimestampMicros(i)
        | AvroValue::TimestampNanos(i)
        | AvroValue::LocalTimestampMillis(i)
        | AvroValue::LocalTimestampMicros(i)
        | AvroValue::LocalTimestampNanos(i) => Kind::Int(i),
        AvroValue::Float(f) => Kind::Float32(f),
        AvroValue::Double(f) => Kind::Float64(f),
        AvroValue::String(text) | AvroValue::Enum(_, text) => Kind::String(text),
        AvroValue::Uuid(u) => Kind::String(u.to_string()),
        AvroValue::Bytes(b) | AvroValue::Fixed(_, b) => Kind::Bytes(b),
        AvroValue::Decimal(d) => Kind::Bytes(
            Vec::<u8>::try_from(&d)
                .map_err(|e| ConversionError::new(format!("invalid decimal: {e}")))?,
        ),
        AvroValue::Array(items) if s.r#type == SchemaType::Map as i32 => {
            let keys = s.key_schema.clone().unwrap_or_default();
            let values = s.value_schema.clone().unwrap_or_default();
            let mut entries = Vec::with_capacity(items.len());
            for item in items {
                let AvroValue::Record(fields) = item else {
                    return err("map entry is not a record");
                };
                let mut key = None;
                let mut value = None;
                for (name, v) in fields {
                    match name.as_str() {
                        "key" => key = Some(from_avro_value(&keys, v)?),
                        "value" => value = Some(from_avro_value(&values, v)?),
                        _ => {}
                    }
                }
                entries.push(MapEntry { key, value });
            }
            Kind::Map(MapValue { entries })
        }
        AvroValue::Array(items) => {
            let schema = s.value_schema.clone().unwrap_or_default();
            Kind::Array(ArrayValue {
                items: items
                    .into_iter()
                    .map(|i| from_avro_value(&schema, i))
                    .collect::<Result<_, _>>()?,
            })
        }
        AvroValue::Map(map) => {
            let values = s.value_schema.clone().unwrap_or_default();
            let mut sorted: Vec<(String, AvroValue)> = map.into_iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            let entries = sorted
                .into_iter()
                .map(|(k, v)| {
                    Ok(MapEntry {
                        key: Some(Value {
                            kind: Some(Kind::String(k)),
                        }),
                        value: Some(from_avro_value(&values, v)?),
                    })
                })
                .collect::<Result<_, ConversionError>>()?;
            Kind::Map(MapValue { entries })
        }
        AvroValue::Record(fields) => {
            let mut by_name: HashMap<String, AvroValue> = fields.into_iter().collect();
            let mut out = Vec::with_capacity(s.fields.len());
            for field in &s.fields {
                let fs = field.schema.clone().unwrap_or_default();
                out.push(match by_name.remove(&field.name) {
                    Some(v) => from_avro_value(&fs, v)?,
                    None => null_value(),
                });
            }
            Kind::Struct(StructValue {
                fields: out,
                names: vec![],
            })
        }
        other => return err(format!("unsupported Avro value {other:?}")),
    };
    Ok(Value { kind: Some(kind) })
}

/// Which field of a union struct holds a value of this Avro kind.
fn union_branch(s: &Schema, v: &AvroValue) -> Option<usize> {
    s.fields.iter().position(|f| {
        let Some(fs) = f.schema.as_ref() else {
            return false;
        };
        let t = SchemaType::try_from(fs.r#type).unwrap_or(SchemaType::Unspecified);
        match v {
            AvroValue::Boolean(_) => t == SchemaType::Boolean,
            AvroValue::Int(_) | AvroValue::Date(_) | AvroValue::TimeMillis(_) => {
                matches!(t, SchemaType::Int8 | SchemaType::Int16 | SchemaType::Int32)
            }
            AvroValue::Long(_) | AvroValue::TimestampMillis(_) => t == SchemaType::Int64,
            AvroValue::Float(_) => t == SchemaType::Float32,
            AvroValue::Double(_) => t == SchemaType::Float64,
            AvroValue::String(_) | AvroValue::Enum(..) => t == SchemaType::String,
            AvroValue::Bytes(_) | AvroValue::Fixed(..) | AvroValue::Decimal(_) => {
                t == SchemaType::Bytes
            }
            AvroValue::Array(_) => matches!(t, SchemaType::Array | SchemaType::Map),
            AvroValue::Map(_) => t == SchemaType::Map,
            AvroValue::Record(fields) => {
                t == SchemaType::Struct
                    && fs.fields.len() == fields.len()
                    && fs.fields.iter().zip(fields).all(|(a, (b, _))| a.name == *b)
            }
            _ => false,
        }
    })
}

/// Maps an Avro schema (as JSON) to Connect, as Confluent's AvroData reads it.
#[derive(Default)]
pub(super) struct FromAvro {
    /// Named types already read, by full name.
    named: HashMap<String, Schema>,
    /// Records being read: a reference to one of them is a recursive schema.
    open: HashSet<String>,
}

fn full_name(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_string(),
    }
}

fn is_made_up(full: &str, base: &str) -> bool {
    full.strip_prefix(NAMESPACE)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.strip_prefix(base))
        .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
}

fn primitive(t: SchemaType) -> Schema {
    Schema {
        r#type: t as i32,
        ..Schema::default()
    }
}

pub(super) fn logical(t: SchemaType, name: &str) -> Schema {
    Schema {
        name: Some(name.to_string()),
        version: Some(1),
        ..primitive(t)
    }
}

impl FromAvro {
    pub(super) fn schema(
        &mut self,
        j: &Json,
        namespace: Option<&str>,
        force_optional: bool,
        field_default: Option<&Json>,
    ) -> Result<Schema, ConversionError> {
        let empty = Map::new();
        let (type_name, m) = match j {
            Json::String(t) => (t.as_str(), &empty),
            Json::Object(m) => match m.get("type") {
                Some(Json::String(t)) => (t.as_str(), m),
                Some(inner @ (Json::Object(_) | Json::Array(_))) => {
                    return self.schema(inner, namespace, force_optional, field_default)
                }
                _ => return err(format!("Avro schema without a type: {j}")),
            },
            Json::Array(members) => return self.union(members, namespace),
            _ => return err(format!("invalid Avro schema: {j}")),
        };
        let prop_str = |k: &str| m.get(k).and_then(Json::as_str);
        let logical_type = prop_str("logicalType");
        let own_namespace = m
            .get("namespace")
            .and_then(Json::as_str)
            .or(namespace)
            .map(str::to_string);
        let mut s = match type_name {
            "boolean" => primitive(SchemaType::Boolean),
            "int" => match (prop_str("connect.type"), logical_type) {
                (_, Some("date")) => logical(SchemaType::Int32, record::DATE),
                (_, Some("time-millis")) => logical(SchemaType::Int32, record::TIME),
                (Some("int8"), _) => primitive(SchemaType::Int8),
                (Some("int16"), _) => primitive(SchemaType::Int16),
                _ => primitive(SchemaType::Int32),
            },
            "long" => match logical_type {
                Some("timestamp-millis") => logical(SchemaType::Int64, record::TIMESTAMP),
                _ => primitive(SchemaType::Int64),
            },
            "float" => primitive(SchemaType::Float32),
            "double" => primitive(SchemaType::Float64),
            "string" => primitive(SchemaType::String),
            "bytes" | "fixed" => {
                if type_name == "fixed" {
                    if let Some(name) = prop_str("name") {
                        let full = full_name(name, own_namespace.as_deref());
                        self.named.insert(full, primitive(SchemaType::Bytes));
                    }
                }
                match logical_type {
                    Some("decimal") => {
                        let scale = m.get("scale").and_then(Json::as_i64).ok_or_else(|| {
                            ConversionError::new("scale must be specified and must be a number")
                        })?;
                        let mut s = logical(SchemaType::Bytes, record::DECIMAL);
                        s.parameters.insert("scale".into(), scale.to_string());
                        match m.get("precision").map(Json::as_i64) {
                            Some(Some(DEFAULT_PRECISION)) | None => {}
                            Some(Some(p)) => {
                                s.parameters.insert(PRECISION_PARAM.into(), p.to_string());
                            }
                            Some(None) => return err("precision property must be a JSON integer"),
                        }
                        s
                    }
                    _ => primitive(SchemaType::Bytes),
                }
            }
            "enum" => {
                let name = prop_str("name").unwrap_or_default();
                let full = full_name(name, own_namespace.as_deref());
                let mut s = primitive(SchemaType::String);
                s.parameters.insert(ENUM_PARAM.into(), full.clone());
                if let Some(Json::Array(symbols)) = m.get("symbols") {
                    for symbol in symbols.iter().filter_map(Json::as_str) {
                        s.parameters
                            .insert(format!("{ENUM_PARAM}.{symbol}"), symbol.to_string());
                    }
                }
                s.name = Some(full.clone());
                self.named.insert(full, s.clone());
                s
            }
            "array" => {
                let items = m
                    .get("items")
                    .ok_or_else(|| ConversionError::new("Avro array without items"))?;
                match self.map_entry(items, own_namespace.as_deref())? {
                    Some((k, v)) => Schema {
                        r#type: SchemaType::Map as i32,
                        key_schema: Some(Box::new(k)),
                        value_schema: Some(Box::new(v)),
                        ..Schema::default()
                    },
                    None => Schema {
                        r#type: SchemaType::Array as i32,
                        value_schema: Some(Box::new(self.schema(
                            items,
                            own_namespace.as_deref(),
                            false,
                            None,
                        )?)),
                        ..Schema::default()
                    },
                }
            }
            "map" => {
                let values = m
                    .get("values")
                    .ok_or_else(|| ConversionError::new("Avro map without values"))?;
                Schema {
                    r#type: SchemaType::Map as i32,
                    key_schema: Some(Box::new(primitive(SchemaType::String))),
                    value_schema: Some(Box::new(self.schema(
                        values,
                        own_namespace.as_deref(),
                        false,
                        None,
                    )?)),
                    ..Schema::default()
                }
            }
            "record" | "error" => self.record(m, own_namespace.as_deref())?,
            "null" => return err("standalone null schemas are not supported by this converter"),
            reference => {
                let full = full_name(reference, namespace);
                if self.open.contains(&full) {
                    return err(format!(
                        "recursive Avro schema {full:?} is not supported by this converter"
                    ));
                }
                let mut s = self
                    .named
                    .get(&full)
                    .or_else(|| self.named.get(reference))
                    .cloned()
                    .ok_or_else(|| {
                        ConversionError::new(format!("unknown Avro type {reference:?}"))
                    })?;
                s.optional = force_optional;
                return Ok(s);
            }
        };

        // Confluent's connect.* properties.
        if let Some(doc) = prop_str("connect.doc") {
            s.doc = Some(doc.to_string());
        }
        match m.get("connect.version") {
            None => {}
            Some(v) => {
                let v = v
                    .as_i64()
                    .and_then(|v| i32::try_from(v).ok())
                    .ok_or_else(|| {
                        ConversionError::new(format!("invalid Connect version found: {v}"))
                    })?;
                s.version = Some(v);
            }
        }
        match m.get("connect.parameters") {
            None => {}
            Some(Json::Object(params)) => {
                for (k, v) in params {
                    let Json::String(v) = v else {
                        return err(format!(
                            "expected schema parameter values to be strings but found: {v}"
                        ));
                    };
                    s.parameters.insert(k.clone(), v.clone());
                }
            }
            Some(other) => {
                return err(format!(
                    "expected JSON object for schema parameters but found: {other}"
                ))
            }
        }
        for (k, v) in m.iter().filter(|(k, _)| k.starts_with("avro")) {
            let text = match v {
                Json::String(text) => text.clone(),
                other => other.to_string(),
            };
            s.parameters.insert(k.clone(), text);
        }
        match m.get("connect.name") {
            Some(Json::String(name)) => s.name = Some(name.clone()),
            Some(other) => return err(format!("invalid schema name: {other}")),
            None => {}
        }
        if type_name == "record" || type_name == "error" {
            let full = full_name(
                prop_str("name").unwrap_or_default(),
                own_namespace.as_deref(),
            );
            if s.name.is_none() && !is_made_up(&full, DEFAULT_NAME) {
                s.name = Some(full.clone());
            }
            self.open.remove(&full);
            self.named.insert(full, s.clone());
        }
        let default = match (m.get("connect.default"), field_default) {
            (Some(d), _) => Some(d),
            (None, Some(d)) => {
                s.parameters
                    .insert(FIELD_DEFAULT_FLAG.into(), "true".into());
                Some(d)
            }
            (None, None) => None,
        };
        if let Some(default) = default {
            s.default_value = default_from_json(&s, default)?;
        }
        s.optional = force_optional;
        Ok(s)
    }

    fn record(
        &mut self,
        m: &Map<String, Json>,
        namespace: Option<&str>,
    ) -> Result<Schema, ConversionError> {
        let name = m
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| ConversionError::new("Avro record without a name"))?;
        let full = full_name(name, namespace);
        let record_namespace = full.rsplit_once('.').map(|(ns, _)| ns.to_string());
        self.open.insert(full);
        let mut s = primitive(SchemaType::Struct);
        if let Some(doc) = m.get("doc").and_then(Json::as_str) {
            s.parameters.insert(RECORD_DOC.into(), doc.to_string());
        }
        let Some(Json::Array(fields)) = m.get("fields") else {
            return err(format!("Avro record {name:?} without fields"));
        };
        for f in fields {
            let fname = f.get("name").and_then(Json::as_str).ok_or_else(|| {
                ConversionError::new(format!("a field of record {name:?} has no name"))
            })?;
            if let Some(doc) = f.get("doc").and_then(Json::as_str) {
                s.parameters
                    .insert(format!("{FIELD_DOC_PREFIX}{fname}"), doc.to_string());
            }
            let ftype = f
                .get("type")
                .ok_or_else(|| ConversionError::new(format!("field {fname:?} has no type")))?;
            let fs = self.schema(ftype, record_namespace.as_deref(), false, f.get("default"))?;
            s.fields.push(Field {
                name: fname.to_string(),
                schema: Some(Box::new(fs)),
            });
        }
        Ok(s)
    }

    /// An array's items as the key and value schemas of a map, when they are map entries.
    fn map_entry(
        &mut self,
        items: &Json,
        namespace: Option<&str>,
    ) -> Result<Option<(Schema, Schema)>, ConversionError> {
        let Json::Object(m) = items else {
            return Ok(None);
        };
        if m.get("type").and_then(Json::as_str) != Some("record") {
            return Ok(None);
        }
        let name = m.get("name").and_then(Json::as_str).unwrap_or_default();
        let ns = m.get("namespace").and_then(Json::as_str).or(namespace);
        let full = full_name(name, ns);
        let internal = m.get("connect.internal.type").and_then(Json::as_str) == Some(MAP_ENTRY);
        if !internal && !is_made_up(&full, MAP_ENTRY) {
            return Ok(None);
        }
        let fields = match m.get("fields") {
            Some(Json::Array(fields)) if fields.len() == 2 => fields,
            _ => {
                return err(
                    "found map encoded as array of key-value pairs, but array elements \
                            do not match the expected format",
                )
            }
        };
        let field = |n: &str| {
            fields
                .iter()
                .find(|f| f.get("name").and_then(Json::as_str) == Some(n))
                .and_then(|f| f.get("type"))
        };
        let (Some(k), Some(v)) = (field("key"), field("value")) else {
            return err(
                "found map encoded as array of key-value pairs, but array elements do \
                        not match the expected format",
            );
        };
        let ns = full.rsplit_once('.').map(|(ns, _)| ns.to_string());
        let key = self.schema(k, ns.as_deref(), false, None)?;
        let value = self.schema(v, ns.as_deref(), false, None)?;
        Ok(Some((key, value)))
    }

    fn union(
        &mut self,
        members: &[Json],
        namespace: Option<&str>,
    ) -> Result<Schema, ConversionError> {
        let is_null = |j: &Json| j.as_str() == Some("null");
        if members.len() == 2 && members.iter().any(is_null) {
            if let Some(other) = members.iter().find(|m| !is_null(m)) {
                return self.schema(other, namespace, true, None);
            }
        }
        let mut s = primitive(SchemaType::Struct);
        s.name = Some(UNION.into());
        let mut names = HashSet::new();
        for member in members {
            if is_null(member) {
                s.optional = true;
                continue;
            }
            let name = match member {
                Json::String(t) => t.rsplit('.').next().unwrap_or(t).to_string(),
                Json::Object(m) => match m.get("type").and_then(Json::as_str) {
                    Some("record" | "enum" | "fixed") => m
                        .get("name")
                        .and_then(Json::as_str)
                        .map(|n| n.rsplit('.').next().unwrap_or(n).to_string())
                        .unwrap_or_default(),
                    Some(t) => t.to_string(),
                    None => String::new(),
                },
                _ => String::new(),
            };
            if !names.insert(name.clone()) {
                return err("multiple union schemas map to the Connect union field name");
            }
            let schema = self.schema(member, namespace, true, None)?;
            s.fields.push(Field {
                name,
                schema: Some(Box::new(schema)),
            });
        }
        Ok(s)
    }
}

/// An Avro JSON default to a Connect value of the schema; `None` for null.
fn default_from_json(s: &Schema, j: &Json) -> Result<Option<Value>, ConversionError> {
    use value::Kind;
    if j.is_null() {
        return Ok(None);
    }
    let t = schema_type(s)?;
    let bad = || err(format!("invalid default {j} for a {} schema", type_name(t)));
    let kind = match t {
        SchemaType::Int8 | SchemaType::Int16 | SchemaType::Int32 | SchemaType::Int64 => {
            match j.as_i64() {
                Some(i) => Kind::Int(i),
                None => return bad(),
            }
        }
        SchemaType::Float32 => match j.as_f64() {
            Some(f) => Kind::Float32(f as f32),
            None => return bad(),
        },
        SchemaType::Float64 => match j.as_f64() {
            Some(f) => Kind::Float64(f),
            None => return bad(),
        },
        SchemaType::Boolean => match j.as_bool() {
            Some(b) => Kind::Boolean(b),
            None => return bad(),
        },
        SchemaType::String => match j.as_str() {
            Some(text) => Kind::String(text.to_string()),
            None => return bad(),
        },
        SchemaType::Bytes => match j.as_str() {
            Some(text) => Kind::Bytes(
                text.chars()
                    .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                    .collect(),
            ),
            None => return bad(),
        },
        SchemaType::Array => {
            let items = s.value_schema.clone().unwrap_or_default();
            let Some(a) = j.as_array() else {
                return bad();
            };
            Kind::Array(ArrayValue {
                items: a
                    .iter()
                    .map(|i| Ok(default_from_json(&items, i)?.unwrap_or_else(null_value)))
                    .collect::<Result<_, ConversionError>>()?,
            })
        }
        SchemaType::Map => {
            let keys = s.key_schema.clone().unwrap_or_default();
            let values = s.value_schema.clone().unwrap_or_default();
            let mut entries = Vec::new();
            match j {
                Json::Object(m) => {
                    for (k, v) in m {
                        entries.push(MapEntry {
                            key: Some(Value {
                                kind: Some(Kind::String(k.clone())),
                            }),
                            value: default_from_json(&values, v)?,
                        });
                    }
                }
                Json::Array(a) => {
                    for e in a {
                        let (k, v) = match e {
                            Json::Array(pair) if pair.len() == 2 => (&pair[0], &pair[1]),
                            Json::Object(o) => match (o.get("key"), o.get("value")) {
                                (Some(k), Some(v)) => (k, v),
                                _ => return bad(),
                            },
                            _ => return bad(),
                        };
                        entries.push(MapEntry {
                            key: default_from_json(&keys, k)?,
                            value: default_from_json(&values, v)?,
                        });
                    }
                }
                _ => return bad(),
            }
            Kind::Map(MapValue { entries })
        }
        SchemaType::Struct => {
            let Some(o) = j.as_object() else {
                return bad();
            };
            let mut fields = Vec::with_capacity(s.fields.len());
            for field in &s.fields {
                let fs = field.schema.clone().unwrap_or_default();
                fields.push(match o.get(&field.name) {
                    Some(v) => default_from_json(&fs, v)?.unwrap_or_else(null_value),
                    None => null_value(),
                });
            }
            Kind::Struct(StructValue {
                fields,
                names: vec![],
            })
        }
        SchemaType::Unspecified => return bad(),
    };
    Ok(Some(Value { kind: Some(kind) }))
}
