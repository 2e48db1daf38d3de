//! Transforms on the fields of a key or value: ExtractField, Flatten, HoistField, InsertField,
//! MaskField, ReplaceField, SetSchemaMetadata and ValueToKey. Schema'd data is a struct (its
//! schema rewritten with the value); schemaless data is a map with string keys.

use std::collections::BTreeMap;

use sluice_proto::connector::v1::{value, Field, Schema, SchemaType, Value};

use super::{Settings, Transform};
use crate::record::{
    self, array_value, bytes_value, field_index, fill_defaults, int_value, is_null, kind_label,
    logical, map_entries, map_value, schema_of, string_value, struct_fields, struct_value,
    struct_values, timestamp_schema, type_label, type_of, validate, with_optional, Part, Record,
    Side,
};

/// A struct schema with the basics (name, version, doc, parameters, optional) of `from` and
/// the given fields, as Kafka's `SchemaUtil.copySchemaBasics` builds it. Takes `from` by
/// value: its strings move into the new schema instead of being copied for every record.
fn struct_like(from: Schema, fields: Vec<Field>) -> Schema {
    Schema {
        r#type: SchemaType::Struct as i32,
        optional: from.optional,
        name: from.name,
        version: from.version,
        doc: from.doc,
        parameters: from.parameters,
        fields,
        ..Schema::default()
    }
}

/// What `struct_like` does, in place: the struct schema keeps its basics and its fields and
/// loses the rest (a default value, key and value schemas).
fn keep_basics(schema: &mut Schema) {
    schema.default_value = None;
    schema.key_schema = None;
    schema.value_schema = None;
}

fn field(name: impl Into<String>, schema: Schema) -> Field {
    Field {
        name: name.into(),
        schema: Some(Box::new(schema)),
    }
}

/// ExtractField: the key/value becomes one of its fields.
#[derive(Debug)]
pub(super) struct ExtractField {
    side: Side,
    field: String,
}

impl ExtractField {
    pub(super) fn new(side: Side, s: &mut Settings<'_>) -> ExtractField {
        ExtractField {
            side,
            field: s.required("field").unwrap_or_default(),
        }
    }
}

impl Transform for ExtractField {
    fn apply(&self, record: &mut Record) -> Result<bool, String> {
        const PURPOSE: &str = "field extraction";
        let part = record.take(self.side);
        let out = match part.schema {
            Some(schema) => {
                struct_fields(&schema, PURPOSE)?;
                let i = field_index(&schema, &self.field)
                    .ok_or_else(|| format!("unknown field: {}", self.field))?;
                let value = match part.value {
                    None => None,
                    Some(v) => struct_values(Some(v), PURPOSE)?
                        .into_iter()
                        .nth(i)
                        .filter(|v| !is_null(v)),
                };
                Part {
                    schema: schema
                        .fields
                        .into_iter()
                        .nth(i)
                        .and_then(|f| f.schema.map(|s| *s)),
                    value,
                }
            }
            None => Part {
                schema: None,
                value: match part.value {
                    None => None,
                    Some(v) => map_entries(v, PURPOSE)?
                        .into_iter()
                        .find(|(k, _)| *k == self.field)
                        .map(|(_, v)| v)
                        .filter(|v| !is_null(v)),
                },
            },
        };
        record.put(self.side, out);
        Ok(true)
    }
}

/// Flatten: nested structs (maps when schemaless) become top-level fields named with
/// `delimiter`; a field under an optional parent becomes optional.
#[derive(Debug)]
pub(super) struct Flatten {
    side: Side,
    delimiter: String,
}

impl Flatten {
    pub(super) fn new(side: Side, s: &mut Settings<'_>) -> Flatten {
        Flatten {
            side,
            delimiter: s.string("delimiter", "."),
        }
    }

    fn name(&self, prefix: &str, name: &str) -> String {
        if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}{}{name}", self.delimiter)
        }
    }

    fn flatten_schema(&self, prefix: &str, schema: &Schema, optional: bool, out: &mut Vec<Field>) {
        for f in &schema.fields {
            let fs = f.schema.clone().unwrap_or_default();
            let name = self.name(prefix, &f.name);
            let optional = optional || fs.optional;
            if type_of(&fs) == SchemaType::Struct {
                self.flatten_schema(&name, &fs, optional, out);
            } else {
                out.push(field(name, with_optional(&fs, optional)));
            }
        }
    }

    fn flatten_value(&self, schema: &Schema, value: Option<Value>, out: &mut Vec<Value>) {
        let mut values = match value.and_then(|v| v.kind) {
            Some(value::Kind::Struct(s)) => s.fields,
            _ => Vec::new(),
        }
        .into_iter();
        for f in &schema.fields {
            let fs = f.schema.clone().unwrap_or_default();
            let v = values.next().filter(|v| !is_null(v));
            if type_of(&fs) == SchemaType::Struct {
                self.flatten_value(&fs, v, out);
            } else {
                out.push(v.unwrap_or_else(record::null));
            }
        }
    }

    fn flatten_map(
        &self,
        prefix: &str,
        entries: Vec<(String, Value)>,
        out: &mut Vec<(String, Value)>,
    ) {
        for (k, v) in entries {
            let name = self.name(prefix, &k);
            match v.kind {
                Some(value::Kind::Map(_)) => match map_entries(v, "flattening") {
                    Ok(inner) => self.flatten_map(&name, inner, out),
                    Err(_) => out.push((name, record::null())),
                },
                _ => out.push((name, v)),
            }
        }
    }
}

impl Transform for Flatten {
    fn apply(&self, record: &mut Record) -> Result<bool, String> {
        const PURPOSE: &str = "flattening";
        let part = record.take(self.side);
        let out = match part.schema {
            Some(schema) => {
                struct_fields(&schema, PURPOSE)?;
                let mut fields = Vec::new();
                self.flatten_schema("", &schema, false, &mut fields);
                let value = match part.value {
                    None => None,
                    Some(v) => {
                        if !matches!(v.kind, Some(value::Kind::Struct(_))) {
                            return Err(format!(
                                "only Struct objects supported for [{PURPOSE}], found: {}",
                                kind_label(&v)
                            ));
                        }
                        let mut values = Vec::with_capacity(fields.len());
                        self.flatten_value(&schema, Some(v), &mut values);
                        Some(struct_value(values))
                    }
                };
                Part {
                    schema: Some(struct_like(schema, fields)),
                    value,
                }
            }
            None => Part {
                schema: None,
                value: match part.value {
                    None => None,
                    Some(v) => {
                        let mut out = Vec::new();
                        self.flatten_map("", map_entries(v, PURPOSE)?, &mut out);
                        Some(map_value(out))
                    }
                },
            },
        };
        record.put(self.side, out);
        Ok(true)
    }
}

/// HoistField: wraps the key/value in a struct (a map when schemaless) under `field`.
#[derive(Debug)]
pub(super) struct HoistField {
    side: Side,
    field: String,
}

impl HoistField {
    pub(super) fn new(side: Side, s: &mut Settings<'_>) -> HoistField {
        HoistField {
            side,
            field: s.required("field").unwrap_or_default(),
        }
    }
}

impl Transform for HoistField {
    fn apply(&self, record: &mut Record) -> Result<bool, String> {
        let part = record.take(self.side);
        let out = match part.schema {
            Some(schema) => {
                validate(&schema, part.value.as_ref(), &self.field)?;
                Part {
                    schema: Some(struct_like(
                        Schema::default(),
                        vec![field(self.field.clone(), schema)],
                    )),
                    value: Some(struct_value(vec![part.value.unwrap_or_else(record::null)])),
                }
            }
            None => Part {
                schema: None,
                value: Some(map_value(vec![(
                    self.field.clone(),
                    part.value.unwrap_or_else(record::null),
                )])),
            },
        };
        record.put(self.side, out);
        Ok(true)
    }
}

/// A field InsertField adds: `name` (optional) or `name?`, or `name!` for a required field.
#[derive(Debug, Clone)]
struct Insertion {
    name: String,
    optional: bool,
}

impl Insertion {
    fn parse(s: &mut Settings<'_>, key: &str) -> Option<Insertion> {
        let spec = s.get(key)?;
        let spec = spec.trim();
        if spec.is_empty() {
            return None;
        }
        Some(if let Some(name) = spec.strip_suffix('!') {
            Insertion {
                name: name.to_string(),
                optional: false,
            }
        } else {
            Insertion {
                name: spec.strip_suffix('?').unwrap_or(spec).to_string(),
                optional: true,
            }
        })
    }
}

/// InsertField: adds the record's topic, partition, offset, timestamp and/or a static value
/// as fields. Tombstones pass unchanged.
#[derive(Debug)]
pub(super) struct InsertField {
    side: Side,
    topic: Option<Insertion>,
    partition: Option<Insertion>,
    offset: Option<Insertion>,
    timestamp: Option<Insertion>,
    static_field: Option<Insertion>,
    static_value: Option<String>,
    replace_null: bool,
}

impl InsertField {
    pub(super) fn new(side: Side, s: &mut Settings<'_>) -> InsertField {
        let t = InsertField {
            side,
            topic: Insertion::parse(s, "topic.field"),
            partition: Insertion::parse(s, "partition.field"),
            offset: Insertion::parse(s, "offset.field"),
            timestamp: Insertion::parse(s, "timestamp.field"),
            static_field: Insertion::parse(s, "static.field"),
            static_value: s.get("static.value"),
            replace_null: s.replace_null_with_default(),
        };
        if t.static_field.is_some() && t.static_value.is_none() {
            s.issue(
                "static.value",
                "missing required value: static.field is set",
            );
        }
        t
    }

    /// The fields to add, with their schemas and values for this record. Schemas and values
    /// are built only for the insertions configured (a record's topic is not copied for a
    /// chain that does not insert it).
    fn additions(&self, record: &Record) -> Result<Vec<(Field, Value)>, String> {
        let mut out = Vec::new();
        let mut add = |ins: &Option<Insertion>,
                       kind: fn(bool) -> Schema,
                       v: &dyn Fn() -> Option<Value>|
         -> Result<(), String> {
            if let Some(ins) = ins {
                let v = v();
                if v.is_none() && !ins.optional {
                    return Err(format!(
                        "conversion error: null value for field \"{}\" that is required and has no default value",
                        ins.name
                    ));
                }
                out.push((
                    field(ins.name.clone(), kind(ins.optional)),
                    v.unwrap_or_else(record::null),
                ));
            }
            Ok(())
        };
        add(
            &self.topic,
            |optional| schema_of(SchemaType::String, optional),
            &|| Some(string_value(record.topic.clone())),
        )?;
        add(
            &self.partition,
            |optional| schema_of(SchemaType::Int32, optional),
            &|| record.kafka_partition.map(|p| int_value(i64::from(p))),
        )?;
        if self.offset.is_some() && record.offset.is_none() {
            return Err(
                "Only SinkRecord supported for [field insertion], found: a source record (offset.field applies to sink connectors)".into(),
            );
        }
        add(
            &self.offset,
            |optional| schema_of(SchemaType::Int64, optional),
            &|| record.offset.map(int_value),
        )?;
        add(&self.timestamp, timestamp_schema, &|| {
            record.timestamp_ms.map(int_value)
        })?;
        add(
            &self.static_field,
            |optional| schema_of(SchemaType::String, optional),
            &|| self.static_value.clone().map(string_value),
        )?;
        Ok(out)
    }
}

impl Transform for InsertField {
    fn apply(&self, record: &mut Record) -> Result<bool, String> {
        const PURPOSE: &str = "field insertion";
        if record.get(self.side).is_none() || (self.side == Side::Value && record.is_tombstone()) {
            return Ok(true);
        }
        let additions = self.additions(record)?;
        if let Some(s) = record.struct_mut(self.side) {
            // The record's own schema and values grow where they are.
            if self.replace_null {
                fill_defaults(s.schema, s.values);
            }
            s.schema.fields.reserve(additions.len());
            s.values.reserve(additions.len());
            for (f, v) in additions {
                s.schema.fields.push(f);
                s.values.push(v);
            }
            keep_basics(s.schema);
            return Ok(true);
        }
        let part = record.take(self.side);
        let out = match part.schema {
            Some(mut schema) => {
                struct_fields(&schema, PURPOSE)?;
                let mut values = struct_values(part.value, PURPOSE)?;
                if self.replace_null {
                    fill_defaults(&schema, &mut values);
                }
                // The record's own schema grows: its fields are not copied.
                let mut fields = std::mem::take(&mut schema.fields);
                fields.reserve(additions.len());
                values.reserve(additions.len());
                for (f, v) in additions {
                    fields.push(f);
                    values.push(v);
                }
                Part {
                    schema: Some(struct_like(schema, fields)),
                    value: Some(struct_value(values)),
                }
            }
            None => {
                let Some(v) = part.value else {
                    return Ok(true);
                };
                let mut entries = map_entries(v, PURPOSE)?;
                for (f, v) in additions {
                    match entries.iter_mut().find(|(k, _)| *k == f.name) {
                        Some(slot) => slot.1 = v,
                        None => entries.push((f.name, v)),
                    }
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

/// MaskField: listed fields become their type's empty value (0, false, "", empty array or
/// map), or `replacement` parsed to the field's type.
#[derive(Debug)]
pub(super) struct MaskField {
    side: Side,
    fields: Vec<String>,
    replacement: Option<String>,
    replace_null: bool,
}

impl MaskField {
    pub(super) fn new(side: Side, s: &mut Settings<'_>) -> MaskField {
        let fields = s.required_list("fields");
        let replacement = s.get("replacement");
        if replacement.as_deref() == Some("") {
            s.issue("replacement", "String must be non-empty");
        }
        let replace_null = s.replace_null_with_default();
        MaskField {
            side,
            fields,
            replacement,
            replace_null,
        }
    }

    fn mask(&self, v: Value, schema: Option<&Schema>) -> Result<Value, String> {
        if is_null(&v) {
            return Ok(v);
        }
        let ty = schema.map(type_of);
        let decimal = schema.and_then(logical) == Some(record::DECIMAL);
        let Some(replacement) = &self.replacement else {
            return Ok(match v.kind {
                Some(value::Kind::Boolean(_)) => Value {
                    kind: Some(value::Kind::Boolean(false)),
                },
                Some(value::Kind::Int(_)) => int_value(0),
                Some(value::Kind::Float32(_)) => Value {
                    kind: Some(value::Kind::Float32(0.0)),
                },
                Some(value::Kind::Float64(_)) => Value {
                    kind: Some(value::Kind::Float64(0.0)),
                },
                Some(value::Kind::String(_)) => string_value(""),
                Some(value::Kind::Bytes(_)) if decimal => bytes_value(vec![0]),
                Some(value::Kind::Bytes(_)) => bytes_value(Vec::new()),
                Some(value::Kind::Array(_)) => array_value(Vec::new()),
                Some(value::Kind::Map(_)) => map_value(Vec::new()),
                other => {
                    return Err(format!(
                        "cannot mask value of type {}",
                        kind_label(&Value { kind: other })
                    ))
                }
            });
        };
        let bad = || {
            format!(
                "unable to convert {replacement} ({}) to number",
                schema.map_or_else(|| kind_label(&v), type_label)
            )
        };
        Ok(match (&v.kind, ty) {
            (Some(value::Kind::String(_)), _) => string_value(replacement.clone()),
            (Some(value::Kind::Int(_)), Some(SchemaType::Int8)) => {
                int_value(i64::from(replacement.parse::<i8>().map_err(|_| bad())?))
            }
            (Some(value::Kind::Int(_)), Some(SchemaType::Int16)) => {
                int_value(i64::from(replacement.parse::<i16>().map_err(|_| bad())?))
            }
            (Some(value::Kind::Int(_)), Some(SchemaType::Int32)) => {
                int_value(i64::from(replacement.parse::<i32>().map_err(|_| bad())?))
            }
            (Some(value::Kind::Int(_)), _) => int_value(replacement.parse().map_err(|_| bad())?),
            (Some(value::Kind::Float32(_)), _) => Value {
                kind: Some(value::Kind::Float32(
                    replacement.parse().map_err(|_| bad())?,
                )),
            },
            (Some(value::Kind::Float64(_)), _) => Value {
                kind: Some(value::Kind::Float64(
                    replacement.parse().map_err(|_| bad())?,
                )),
            },
            _ => {
                return Err(format!(
                    "cannot mask value of type {} with custom replacement",
                    schema.map_or_else(|| kind_label(&v), type_label)
                ))
            }
        })
    }
}

impl Transform for MaskField {
    fn apply(&self, record: &mut Record) -> Result<bool, String> {
        const PURPOSE: &str = "mask fields";
        if let Some(s) = record.struct_mut(self.side) {
            if self.replace_null {
                fill_defaults(s.schema, s.values);
            }
            for (f, slot) in s.schema.fields.iter().zip(s.values.iter_mut()) {
                if self.fields.contains(&f.name) {
                    *slot = self.mask(std::mem::take(slot), f.schema.as_deref())?;
                }
            }
            return Ok(true);
        }
        let part = record.take(self.side);
        let out = match (part.schema, part.value) {
            (schema, None) => Part {
                schema,
                value: None,
            },
            (Some(schema), Some(v)) => {
                struct_fields(&schema, PURPOSE)?;
                let mut values = struct_values(Some(v), PURPOSE)?;
                if self.replace_null {
                    fill_defaults(&schema, &mut values);
                }
                for (i, f) in schema.fields.iter().enumerate() {
                    if self.fields.contains(&f.name) {
                        if let Some(slot) = values.get_mut(i) {
                            *slot = self.mask(std::mem::take(slot), f.schema.as_deref())?;
                        }
                    }
                }
                Part {
                    schema: Some(schema),
                    value: Some(struct_value(values)),
                }
            }
            (None, Some(v)) => {
                let mut entries = map_entries(v, PURPOSE)?;
                for (k, slot) in entries.iter_mut() {
                    if self.fields.contains(k) {
                        *slot = self.mask(std::mem::take(slot), None)?;
                    }
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

/// ReplaceField: keeps (`include`), drops (`exclude`) and renames (`renames=old:new`) fields.
#[derive(Debug)]
pub(super) struct ReplaceField {
    side: Side,
    exclude: Vec<String>,
    include: Vec<String>,
    renames: BTreeMap<String, String>,
    replace_null: bool,
}

impl ReplaceField {
    pub(super) fn new(side: Side, s: &mut Settings<'_>) -> ReplaceField {
        let mut exclude = s.list("exclude");
        // The names before Kafka 2.7, still accepted.
        exclude.extend(s.list("blacklist"));
        let mut include = s.list("include");
        include.extend(s.list("whitelist"));
        let mut renames = BTreeMap::new();
        for pair in s.list("renames") {
            match pair.split_once(':') {
                Some((from, to)) if !from.trim().is_empty() && !to.trim().is_empty() => {
                    renames.insert(from.trim().to_string(), to.trim().to_string());
                }
                _ => s.issue("renames", format!("invalid rename mapping: {pair}")),
            }
        }
        let replace_null = s.replace_null_with_default();
        ReplaceField {
            side,
            exclude,
            include,
            renames,
            replace_null,
        }
    }

    fn keeps(&self, name: &str) -> bool {
        !self.exclude.iter().any(|e| e == name)
            && (self.include.is_empty() || self.include.iter().any(|i| i == name))
    }

    /// A struct's fields dropped and renamed where they are, with its values (positional: one
    /// per field, missing ones null) when the struct is not null.
    fn replace(&self, fields: &mut Vec<Field>, values: Option<&mut Vec<Value>>) {
        if let Some(values) = values {
            values.resize_with(fields.len(), record::null);
            let mut kept = fields.iter();
            values.retain(|_| kept.next().is_some_and(|f| self.keeps(&f.name)));
        }
        fields.retain(|f| self.keeps(&f.name));
        for f in fields {
            if let Some(to) = self.renames.get(&f.name) {
                f.name.clone_from(to);
            }
        }
    }

    fn renamed(&self, name: &str) -> String {
        self.renames
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }
}

impl Transform for ReplaceField {
    fn apply(&self, record: &mut Record) -> Result<bool, String> {
        const PURPOSE: &str = "field replacement";
        if let Some(s) = record.struct_mut(self.side) {
            if self.replace_null {
                fill_defaults(s.schema, s.values);
            }
            self.replace(&mut s.schema.fields, Some(s.values));
            keep_basics(s.schema);
            return Ok(true);
        }
        let part = record.take(self.side);
        let out = match part.schema {
            Some(mut schema) => {
                struct_fields(&schema, PURPOSE)?;
                let mut values = match part.value {
                    None => None,
                    Some(v) => {
                        let mut values = struct_values(Some(v), PURPOSE)?;
                        if self.replace_null {
                            fill_defaults(&schema, &mut values);
                        }
                        Some(values)
                    }
                };
                let mut fields = std::mem::take(&mut schema.fields);
                self.replace(&mut fields, values.as_mut());
                let value = values.map(struct_value);
                Part {
                    schema: Some(struct_like(schema, fields)),
                    value,
                }
            }
            None => Part {
                schema: None,
                value: match part.value {
                    None => None,
                    Some(v) => Some(map_value(
                        map_entries(v, PURPOSE)?
                            .into_iter()
                            .filter(|(k, _)| self.keeps(k))
                            .map(|(k, v)| (self.renamed(&k), v))
                            .collect(),
                    )),
                },
            },
        };
        record.put(self.side, out);
        Ok(true)
    }
}

/// SetSchemaMetadata: sets the schema's name and/or version.
#[derive(Debug)]
pub(super) struct SetSchemaMetadata {
    side: Side,
    name: Option<String>,
    version: Option<i32>,
    replace_null: bool,
}

impl SetSchemaMetadata {
    pub(super) fn new(side: Side, s: &mut Settings<'_>) -> SetSchemaMetadata {
        let name = s.get("schema.name").filter(|n| !n.trim().is_empty());
        let version = s.int("schema.version");
        let replace_null = s.replace_null_with_default();
        if name.is_none() && version.is_none() {
            s.issue("schema.name", "neither schema name nor version configured");
        }
        SetSchemaMetadata {
            side,
            name,
            version,
            replace_null,
        }
    }
}

impl Transform for SetSchemaMetadata {
    fn apply(&self, record: &mut Record) -> Result<bool, String> {
        let mut part = record.take(self.side);
        let Some(schema) = part.schema.as_mut() else {
            return Err("Schema required for [updating schema metadata]".into());
        };
        if let Some(name) = &self.name {
            schema.name = Some(name.clone());
        }
        if let Some(version) = self.version {
            schema.version = Some(version);
        }
        // Kafka rebuilds a struct value under the new schema, reading its fields with or
        // without their defaults.
        if self.replace_null {
            if let Some(value::Kind::Struct(s)) = part.value.as_mut().and_then(|v| v.kind.as_mut())
            {
                fill_defaults(schema, &mut s.fields);
            }
        }
        record.put(self.side, part);
        Ok(true)
    }
}

/// ValueToKey: the key becomes a struct (a map when schemaless) of some of the value's fields.
#[derive(Debug)]
pub(super) struct ValueToKey {
    fields: Vec<String>,
    replace_null: bool,
}

impl ValueToKey {
    pub(super) fn new(s: &mut Settings<'_>) -> ValueToKey {
        let fields = s.required_list("fields");
        let replace_null = s.replace_null_with_default();
        ValueToKey {
            fields,
            replace_null,
        }
    }
}

impl Transform for ValueToKey {
    fn apply(&self, record: &mut Record) -> Result<bool, String> {
        const PURPOSE: &str = "copying fields from value to key";
        let value = record.take(Side::Value);
        let key = match &value.schema {
            Some(schema) => {
                struct_fields(schema, PURPOSE)?;
                let Some(v) = value.value.clone() else {
                    return Err(format!(
                        "Only Struct objects supported for [{PURPOSE}], found: null"
                    ));
                };
                let mut values = struct_values(Some(v), PURPOSE)?;
                if self.replace_null {
                    fill_defaults(schema, &mut values);
                }
                let mut key_fields = Vec::new();
                let mut key_values = Vec::new();
                for name in &self.fields {
                    let i = field_index(schema, name)
                        .ok_or_else(|| format!("field does not exist: {name}"))?;
                    key_fields.push(schema.fields[i].clone());
                    key_values.push(values.get(i).cloned().unwrap_or_else(record::null));
                }
                Part {
                    schema: Some(struct_like(Schema::default(), key_fields)),
                    value: Some(struct_value(key_values)),
                }
            }
            None => {
                let Some(v) = value.value.clone() else {
                    return Err(format!(
                        "Only Map objects supported in absence of schema for [{PURPOSE}], found: null"
                    ));
                };
                let entries = map_entries(v, PURPOSE)?;
                Part {
                    schema: None,
                    value: Some(map_value(
                        self.fields
                            .iter()
                            .map(|name| {
                                let v = entries
                                    .iter()
                                    .find(|(k, _)| k == name)
                                    .map(|(_, v)| v.clone())
                                    .unwrap_or_else(record::null);
                                (name.clone(), v)
                            })
                            .collect(),
                    )),
                }
            }
        };
        record.put(Side::Value, value);
        record.put(Side::Key, key);
        Ok(true)
    }
}
