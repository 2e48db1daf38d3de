//! Connect to Avro: a Connect schema as the Avro schema Confluent's `AvroData` makes of it
//! (`ToAvro`), and Connect data as an Avro value of that schema.

use std::collections::{BTreeMap, HashMap};

use apache_avro::types::Value as AvroValue;
use serde_json::{json, Map, Value as Json};
use sluice_proto::connector::v1::{value, Schema, SchemaType, Value};

use super::{
    decimal_params, default_of, err, is_logical, native_decimal, non_optional, schema_type,
    type_name, DEFAULT_NAME, FIELD_DEFAULT_FLAG, FIELD_DOC_PREFIX, MAP_ENTRY, NAMESPACE,
    RECORD_DOC, UNION,
};
use crate::error::ConversionError;
use crate::record;

/// Builds the Avro schema (as JSON) for a Connect schema, as Confluent's AvroData does.
#[derive(Default)]
pub(super) struct ToAvro {
    /// Records already written, by full name: later uses refer to them by name.
    named: HashMap<String, Schema>,
    /// How many made-up names (`ConnectDefault`, `MapEntry`) are in use.
    made_up: HashMap<&'static str, usize>,
}

impl ToAvro {
    pub(super) fn schema(&mut self, s: &Schema) -> Result<Json, ConversionError> {
        let t = schema_type(s)?;
        if t == SchemaType::Struct && is_logical(s, UNION) {
            let mut members = Vec::new();
            if s.optional {
                members.push(json!("null"));
            }
            for field in &s.fields {
                let member = field.schema.as_ref().ok_or_else(|| {
                    ConversionError::new(format!("union member {:?} has no schema", field.name))
                })?;
                members.push(self.schema(&non_optional(member))?);
            }
            return Ok(Json::Array(members));
        }
        let base = self.base(s, t)?;
        if !s.optional {
            return Ok(base);
        }
        // A default must match the union's first branch.
        Ok(match default_of(s) {
            Some(_) => json!([base, "null"]),
            None => json!(["null", base]),
        })
    }

    fn made_up_name(&mut self, base: &'static str) -> String {
        let n = self.made_up.entry(base).or_insert(0);
        *n += 1;
        match *n {
            1 => base.to_string(),
            n => format!("{base}{n}"),
        }
    }

    /// The non-optional schema with its properties.
    fn base(&mut self, s: &Schema, t: SchemaType) -> Result<Json, ConversionError> {
        let mut m = Map::new();
        let mut connect_type = None;
        let (namespace, name) = match s.name.as_deref() {
            Some(full) => match full.rsplit_once('.') {
                Some((ns, name)) => (Some(ns.to_string()), name.to_string()),
                None => (None, full.to_string()),
            },
            None => (Some(NAMESPACE.to_string()), DEFAULT_NAME.to_string()),
        };
        match t {
            SchemaType::Int8 | SchemaType::Int16 => {
                m.insert("type".into(), json!("int"));
                connect_type = Some(if t == SchemaType::Int8 {
                    "int8"
                } else {
                    "int16"
                });
            }
            SchemaType::Int32 => {
                m.insert("type".into(), json!("int"));
            }
            SchemaType::Int64 => {
                m.insert("type".into(), json!("long"));
            }
            SchemaType::Float32 => {
                m.insert("type".into(), json!("float"));
            }
            SchemaType::Float64 => {
                m.insert("type".into(), json!("double"));
            }
            SchemaType::Boolean => {
                m.insert("type".into(), json!("boolean"));
            }
            SchemaType::String => {
                m.insert("type".into(), json!("string"));
            }
            SchemaType::Bytes => {
                m.insert("type".into(), json!("bytes"));
                if is_logical(s, record::DECIMAL) {
                    let (scale, precision) = decimal_params(s)?;
                    m.insert("scale".into(), json!(scale));
                    m.insert("precision".into(), json!(precision));
                }
            }
            SchemaType::Array => {
                let items = s
                    .value_schema
                    .as_deref()
                    .ok_or_else(|| ConversionError::new("array schema without items"))?;
                m.insert("type".into(), json!("array"));
                m.insert("items".into(), self.schema(items)?);
            }
            SchemaType::Map => {
                let (keys, values) = match (s.key_schema.as_deref(), s.value_schema.as_deref()) {
                    (Some(k), Some(v)) => (k, v),
                    _ => return err("map schema without key or value schema"),
                };
                if keys.r#type == SchemaType::String as i32 && !keys.optional {
                    m.insert("type".into(), json!("map"));
                    m.insert("values".into(), self.schema(values)?);
                } else {
                    // Avro maps have string keys: other maps are arrays of key/value records.
                    let mut entry = Map::new();
                    entry.insert("type".into(), json!("record"));
                    match s.name.is_some() {
                        true => {
                            entry.insert("name".into(), json!(name));
                            if let Some(ns) = &namespace {
                                entry.insert("namespace".into(), json!(ns));
                            }
                        }
                        false => {
                            entry.insert("name".into(), json!(self.made_up_name(MAP_ENTRY)));
                            entry.insert("namespace".into(), json!(NAMESPACE));
                        }
                    }
                    let fields = vec![
                        self.field("key", keys, None)?,
                        self.field("value", values, None)?,
                    ];
                    entry.insert("fields".into(), Json::Array(fields));
                    if s.name.is_some() {
                        entry.insert("connect.internal.type".into(), json!(MAP_ENTRY));
                    }
                    m.insert("type".into(), json!("array"));
                    m.insert("items".into(), Json::Object(entry));
                }
            }
            SchemaType::Struct => {
                let full = match &namespace {
                    Some(ns) if s.name.is_some() => format!("{ns}.{name}"),
                    _ => name.clone(),
                };
                let name = match s.name.is_some() {
                    true => {
                        match self.named.get(&full) {
                            Some(seen) if *seen == non_optional(s) => return Ok(json!(full)),
                            Some(_) => {
                                return err(format!(
                                    "two different struct schemas are named {full:?}: Avro \
                                     needs distinct names"
                                ))
                            }
                            None => {}
                        }
                        self.named.insert(full, non_optional(s));
                        name
                    }
                    false => self.made_up_name(DEFAULT_NAME),
                };
                m.insert("type".into(), json!("record"));
                m.insert("name".into(), json!(name));
                if let Some(ns) = &namespace {
                    m.insert("namespace".into(), json!(ns));
                }
                if let Some(doc) = s.parameters.get(RECORD_DOC) {
                    m.insert("doc".into(), json!(doc));
                }
                let mut fields = Vec::with_capacity(s.fields.len());
                for field in &s.fields {
                    let schema = field.schema.as_ref().ok_or_else(|| {
                        ConversionError::new(format!("field {:?} has no schema", field.name))
                    })?;
                    let doc = s
                        .parameters
                        .get(&format!("{FIELD_DOC_PREFIX}{}", field.name));
                    fields.push(self.field(&field.name, schema, doc.map(String::as_str))?);
                }
                m.insert("fields".into(), Json::Array(fields));
            }
            SchemaType::Unspecified => return err("schema without a type"),
        }

        // What Avro cannot say, as Confluent's connect.* properties.
        if let Some(doc) = &s.doc {
            m.insert("connect.doc".into(), json!(doc));
        }
        if let Some(version) = s.version {
            m.insert("connect.version".into(), json!(version));
        }
        let params: BTreeMap<&String, &String> = s
            .parameters
            .iter()
            .filter(|(k, _)| *k != FIELD_DEFAULT_FLAG)
            .collect();
        if !params.is_empty() {
            m.insert("connect.parameters".into(), json!(params));
        }
        if let Some(default) = default_of(s) {
            if !s.parameters.contains_key(FIELD_DEFAULT_FLAG) {
                m.insert("connect.default".into(), default_json(s, default)?);
            }
        }
        if let Some(name) = &s.name {
            m.insert("connect.name".into(), json!(name));
        }
        if let Some(connect_type) = connect_type {
            m.insert("connect.type".into(), json!(connect_type));
        }
        if is_logical(s, record::DECIMAL) {
            // Also when Avro cannot express the scale (Confluent's legacy form): apache-avro
            // then reads the schema as plain bytes, and `base_value` writes plain bytes.
            m.insert("logicalType".into(), json!("decimal"));
        } else if is_logical(s, record::TIME) && t == SchemaType::Int32 {
            m.insert("logicalType".into(), json!("time-millis"));
        } else if is_logical(s, record::TIMESTAMP) && t == SchemaType::Int64 {
            m.insert("logicalType".into(), json!("timestamp-millis"));
        } else if is_logical(s, record::DATE) && t == SchemaType::Int32 {
            m.insert("logicalType".into(), json!("date"));
        }
        let mut avro_params: Vec<(&String, &String)> = s
            .parameters
            .iter()
            .filter(|(k, _)| k.starts_with("avro"))
            .collect();
        avro_params.sort();
        for (k, v) in avro_params {
            m.insert(k.clone(), json!(v));
        }
        if m.len() == 1 {
            if let Some(Json::String(primitive)) = m.get("type") {
                return Ok(json!(primitive));
            }
        }
        Ok(Json::Object(m))
    }

    fn field(
        &mut self,
        name: &str,
        schema: &Schema,
        doc: Option<&str>,
    ) -> Result<Json, ConversionError> {
        let mut f = Map::new();
        f.insert("name".into(), json!(name));
        f.insert("type".into(), self.schema(schema)?);
        if let Some(doc) = doc {
            f.insert("doc".into(), json!(doc));
        }
        match default_of(schema) {
            Some(default) => {
                f.insert("default".into(), default_json(schema, default)?);
            }
            None if schema.optional => {
                f.insert("default".into(), Json::Null);
            }
            None => {}
        }
        Ok(Json::Object(f))
    }
}

/// A Connect default value as Avro writes defaults in JSON (bytes as ISO-8859-1 text).
fn default_json(s: &Schema, v: &Value) -> Result<Json, ConversionError> {
    use value::Kind;
    let t = schema_type(s)?;
    let bad = || {
        err(format!(
            "invalid default value for a {} schema",
            t.as_str_name()
                .trim_start_matches("SCHEMA_TYPE_")
                .to_ascii_lowercase()
        ))
    };
    Ok(match (&v.kind, t) {
        (None | Some(Kind::Null(_)), _) => Json::Null,
        (Some(Kind::Int(i)), _) => json!(i),
        (Some(Kind::Float32(f)), _) => json!(f),
        (Some(Kind::Float64(f)), _) => json!(f),
        (Some(Kind::Boolean(b)), _) => json!(b),
        (Some(Kind::String(s)), _) => json!(s),
        (Some(Kind::Bytes(b)), _) => Json::String(b.iter().map(|&b| char::from(b)).collect()),
        (Some(Kind::Array(a)), SchemaType::Array) => {
            let items = s
                .value_schema
                .as_deref()
                .ok_or_else(|| ConversionError::new("array schema without items"))?;
            Json::Array(
                a.items
                    .iter()
                    .map(|i| default_json(items, i))
                    .collect::<Result<_, _>>()?,
            )
        }
        (Some(Kind::Map(map)), SchemaType::Map) => {
            let (Some(keys), Some(values)) = (s.key_schema.as_deref(), s.value_schema.as_deref())
            else {
                return bad();
            };
            let null = Value { kind: None };
            if keys.r#type == SchemaType::String as i32 && !keys.optional {
                let mut out = Map::new();
                for e in &map.entries {
                    let Some(Kind::String(k)) = e.key.as_ref().and_then(|k| k.kind.as_ref()) else {
                        return bad();
                    };
                    out.insert(
                        k.clone(),
                        default_json(values, e.value.as_ref().unwrap_or(&null))?,
                    );
                }
                Json::Object(out)
            } else {
                let mut out = Vec::new();
                for e in &map.entries {
                    out.push(json!({
                        "key": default_json(keys, e.key.as_ref().unwrap_or(&null))?,
                        "value": default_json(values, e.value.as_ref().unwrap_or(&null))?,
                    }));
                }
                Json::Array(out)
            }
        }
        (Some(Kind::Struct(st)), SchemaType::Struct) => {
            let mut out = Map::new();
            let null = Value { kind: None };
            for (i, field) in s.fields.iter().enumerate() {
                let Some(fs) = field.schema.as_ref() else {
                    return bad();
                };
                let v = st.fields.get(i).filter(|v| !record::is_null(v));
                let v = v.or(default_of(fs)).unwrap_or(&null);
                out.insert(field.name.clone(), default_json(fs, v)?);
            }
            Json::Object(out)
        }
        _ => return bad(),
    })
}

/// Connect data to an Avro value shaped as `ToAvro` shapes the schema.
pub(super) fn to_avro_value(s: &Schema, v: Option<&Value>) -> Result<AvroValue, ConversionError> {
    let v = v.filter(|v| !record::is_null(v)).or(default_of(s));
    let t = schema_type(s)?;
    if t == SchemaType::Struct && is_logical(s, UNION) {
        let offset = u32::from(s.optional);
        let Some(value::Kind::Struct(st)) = v.and_then(|v| v.kind.as_ref()) else {
            return match (v, s.optional) {
                (None, true) => Ok(AvroValue::Union(0, Box::new(AvroValue::Null))),
                _ => err("a union must be a struct with one field set"),
            };
        };
        for (i, (field, fv)) in s.fields.iter().zip(&st.fields).enumerate() {
            if record::is_null(fv) {
                continue;
            }
            let fs = field
                .schema
                .as_deref()
                .map(non_optional)
                .unwrap_or_default();
            let index = u32::try_from(i).unwrap_or(u32::MAX).saturating_add(offset);
            return Ok(AvroValue::Union(index, Box::new(base_value(&fs, fv)?)));
        }
        return match s.optional {
            true => Ok(AvroValue::Union(0, Box::new(AvroValue::Null))),
            false => err("a union struct with no field set"),
        };
    }
    if s.optional {
        let (value_index, null_index) = match default_of(s) {
            Some(_) => (0, 1),
            None => (1, 0),
        };
        return Ok(match v {
            None => AvroValue::Union(null_index, Box::new(AvroValue::Null)),
            Some(v) => AvroValue::Union(value_index, Box::new(base_value(s, v)?)),
        });
    }
    match v {
        None => err(format!(
            "found null value for non-optional {} schema{}",
            type_name(t),
            s.name
                .as_deref()
                .map(|n| format!(" {n}"))
                .unwrap_or_default()
        )),
        Some(v) => base_value(s, v),
    }
}

fn mismatch(s: &Schema, v: &Value) -> ConversionError {
    let t = SchemaType::try_from(s.r#type).unwrap_or(SchemaType::Unspecified);
    ConversionError::new(format!(
        "invalid value for {} schema{}: {}",
        type_name(t),
        s.name
            .as_deref()
            .map(|n| format!(" {n}"))
            .unwrap_or_default(),
        crate::json::kind_name(v.kind.as_ref())
    ))
}

fn int32(s: &Schema, v: &Value, min: i64, max: i64) -> Result<i32, ConversionError> {
    match v.kind {
        Some(value::Kind::Int(i)) if (min..=max).contains(&i) => Ok(i as i32),
        Some(value::Kind::Int(i)) => err(format!(
            "value {i} out of range for {} schema",
            type_name(schema_type(s)?)
        )),
        _ => Err(mismatch(s, v)),
    }
}

fn base_value(s: &Schema, v: &Value) -> Result<AvroValue, ConversionError> {
    use value::Kind;
    let t = schema_type(s)?;
    Ok(match t {
        SchemaType::Int8 => AvroValue::Int(int32(s, v, i8::MIN.into(), i8::MAX.into())?),
        SchemaType::Int16 => AvroValue::Int(int32(s, v, i16::MIN.into(), i16::MAX.into())?),
        SchemaType::Int32 => {
            let i = int32(s, v, i32::MIN.into(), i32::MAX.into())?;
            if is_logical(s, record::DATE) {
                AvroValue::Date(i)
            } else if is_logical(s, record::TIME) {
                AvroValue::TimeMillis(i)
            } else {
                AvroValue::Int(i)
            }
        }
        SchemaType::Int64 => match v.kind {
            Some(Kind::Int(i)) if is_logical(s, record::TIMESTAMP) => AvroValue::TimestampMillis(i),
            Some(Kind::Int(i)) => AvroValue::Long(i),
            _ => return Err(mismatch(s, v)),
        },
        SchemaType::Float32 => match v.kind {
            Some(Kind::Float32(f)) => AvroValue::Float(f),
            Some(Kind::Float64(f)) => AvroValue::Float(f as f32),
            _ => return Err(mismatch(s, v)),
        },
        SchemaType::Float64 => match v.kind {
            Some(Kind::Float64(f)) => AvroValue::Double(f),
            Some(Kind::Float32(f)) => AvroValue::Double(f.into()),
            _ => return Err(mismatch(s, v)),
        },
        SchemaType::Boolean => match v.kind {
            Some(Kind::Boolean(b)) => AvroValue::Boolean(b),
            _ => return Err(mismatch(s, v)),
        },
        SchemaType::String => match &v.kind {
            Some(Kind::String(text)) => AvroValue::String(text.clone()),
            _ => return Err(mismatch(s, v)),
        },
        SchemaType::Bytes => match &v.kind {
            Some(Kind::Bytes(b)) if is_logical(s, record::DECIMAL) => {
                let (scale, precision) = decimal_params(s)?;
                match native_decimal(scale, precision) {
                    true => AvroValue::Decimal(apache_avro::Decimal::from(b)),
                    false => AvroValue::Bytes(b.clone()),
                }
            }
            Some(Kind::Bytes(b)) => AvroValue::Bytes(b.clone()),
            _ => return Err(mismatch(s, v)),
        },
        SchemaType::Array => {
            let items = s.value_schema.as_deref().unwrap_or(s);
            match &v.kind {
                Some(Kind::Array(a)) => AvroValue::Array(
                    a.items
                        .iter()
                        .map(|i| to_avro_value(items, Some(i)))
                        .collect::<Result<_, _>>()?,
                ),
                _ => return Err(mismatch(s, v)),
            }
        }
        SchemaType::Map => {
            let (Some(keys), Some(values)) = (s.key_schema.as_deref(), s.value_schema.as_deref())
            else {
                return err("map schema without key or value schema");
            };
            let Some(Kind::Map(map)) = &v.kind else {
                return Err(mismatch(s, v));
            };
            if keys.r#type == SchemaType::String as i32 && !keys.optional {
                let mut out = HashMap::with_capacity(map.entries.len());
                for e in &map.entries {
                    let Some(Kind::String(k)) = e.key.as_ref().and_then(|k| k.kind.as_ref()) else {
                        return err("map key is not a string");
                    };
                    out.insert(k.clone(), to_avro_value(values, e.value.as_ref())?);
                }
                AvroValue::Map(out)
            } else {
                AvroValue::Array(
                    map.entries
                        .iter()
                        .map(|e| {
                            Ok(AvroValue::Record(vec![
                                ("key".into(), to_avro_value(keys, e.key.as_ref())?),
                                ("value".into(), to_avro_value(values, e.value.as_ref())?),
                            ]))
                        })
                        .collect::<Result<_, ConversionError>>()?,
                )
            }
        }
        SchemaType::Struct => {
            let Some(Kind::Struct(st)) = &v.kind else {
                return Err(mismatch(s, v));
            };
            let mut fields = Vec::with_capacity(s.fields.len());
            for (i, field) in s.fields.iter().enumerate() {
                let fs = field.schema.as_ref().ok_or_else(|| {
                    ConversionError::new(format!("field {:?} has no schema", field.name))
                })?;
                let value = to_avro_value(fs, st.fields.get(i)).map_err(|e| {
                    ConversionError::new(format!("field {:?}: {}", field.name, e.message))
                })?;
                fields.push((field.name.clone(), value));
            }
            AvroValue::Record(fields)
        }
        SchemaType::Unspecified => return err("schema without a type"),
    })
}
