//! Cast: changes the type of the whole key/value or of some of its fields, with Java's
//! conversions (narrowing wraps, strings parse, booleans are 1/0).

use base64::Engine as _;
use sluice_proto::connector::v1::{value, Schema, SchemaType, Value};

use super::{Settings, Transform};
use crate::record::{
    self, field_index, is_null, kind_label, logical, map_entries, map_value, schema_of,
    struct_fields, struct_value, struct_values, type_label, type_of, Part, Record, Side,
};

const PURPOSE: &str = "cast types";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Int8,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Boolean,
    String,
}

impl Target {
    fn parse(name: &str) -> Option<Target> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "int8" => Target::Int8,
            "int16" => Target::Int16,
            "int32" => Target::Int32,
            "int64" => Target::Int64,
            "float32" => Target::Float32,
            "float64" => Target::Float64,
            "boolean" => Target::Boolean,
            "string" => Target::String,
            _ => return None,
        })
    }

    fn schema_type(self) -> SchemaType {
        match self {
            Target::Int8 => SchemaType::Int8,
            Target::Int16 => SchemaType::Int16,
            Target::Int32 => SchemaType::Int32,
            Target::Int64 => SchemaType::Int64,
            Target::Float32 => SchemaType::Float32,
            Target::Float64 => SchemaType::Float64,
            Target::Boolean => SchemaType::Boolean,
            Target::String => SchemaType::String,
        }
    }
}

/// `spec`: either one type for the whole key/value, or `field:type,field:type`.
#[derive(Debug)]
pub(super) struct Cast {
    side: Side,
    whole: Option<Target>,
    fields: Vec<(String, Target)>,
}

impl Cast {
    pub(super) fn new(side: Side, s: &mut Settings<'_>) -> Cast {
        let mut cast = Cast {
            side,
            whole: None,
            fields: Vec::new(),
        };
        let items = s.required_list("spec");
        for item in &items {
            match item.split_once(':') {
                None => match Target::parse(item) {
                    Some(t) => cast.whole = Some(t),
                    None => s.issue("spec", unknown_type(item)),
                },
                Some((field, ty)) => match Target::parse(ty) {
                    Some(t) => cast.fields.push((field.trim().to_string(), t)),
                    None => s.issue("spec", unknown_type(ty)),
                },
            }
        }
        if cast.whole.is_some() && items.len() > 1 {
            s.issue(
                "spec",
                "cast transformations that specify a type to cast the entire value to may only specify a single cast in their spec",
            );
        }
        cast
    }

    fn target_of(&self, field: &str) -> Option<Target> {
        self.fields
            .iter()
            .find(|(name, _)| name == field)
            .map(|(_, t)| *t)
    }
}

fn unknown_type(ty: &str) -> String {
    format!(
        "invalid type {:?}: expected one of int8, int16, int32, int64, float32, float64, boolean, string",
        ty.trim()
    )
}

impl Transform for Cast {
    fn apply(&self, record: &mut Record) -> Result<bool, String> {
        let part = record.take(self.side);
        let out = match (part.schema, self.whole) {
            (Some(schema), Some(target)) => {
                check_castable(&schema, target)?;
                Part {
                    value: cast_opt(part.value, target, Some(&schema))?,
                    schema: Some(cast_schema(&schema, target)?),
                }
            }
            (None, Some(target)) => Part {
                schema: None,
                value: cast_opt(part.value, target, None)?,
            },
            (Some(schema), None) => {
                struct_fields(&schema, PURPOSE)?;
                let mut out_schema = schema.clone();
                for field in out_schema.fields.iter_mut() {
                    if let Some(target) = self.target_of(&field.name) {
                        let fs = field.schema.take().unwrap_or_default();
                        check_castable(&fs, target)?;
                        field.schema = Some(Box::new(cast_schema(&fs, target)?));
                    }
                }
                let value = match part.value {
                    None => None,
                    Some(v) => {
                        let mut values = struct_values(Some(v), PURPOSE)?;
                        for (name, target) in &self.fields {
                            if let Some(i) = field_index(&schema, name) {
                                let fs = schema.fields[i].schema.as_deref();
                                if let Some(slot) = values.get_mut(i) {
                                    let cast = cast_opt(Some(std::mem::take(slot)), *target, fs)?;
                                    *slot = cast.unwrap_or_else(record::null);
                                }
                            }
                        }
                        Some(struct_value(values))
                    }
                };
                Part {
                    schema: Some(out_schema),
                    value,
                }
            }
            (None, None) => match part.value {
                None => Part::default(),
                Some(v) => {
                    let mut entries = map_entries(v, PURPOSE)?;
                    for (name, slot) in entries.iter_mut() {
                        if let Some(target) = self.target_of(name) {
                            let cast = cast_opt(Some(std::mem::take(slot)), target, None)?;
                            *slot = cast.unwrap_or_else(record::null);
                        }
                    }
                    Part {
                        schema: None,
                        value: Some(map_value(entries)),
                    }
                }
            },
        };
        record.put(self.side, out);
        Ok(true)
    }
}

fn check_castable(schema: &Schema, target: Target) -> Result<(), String> {
    let ty = type_of(schema);
    let ok = match logical(schema) {
        Some(record::DECIMAL) => true,
        Some(_) => target == Target::String,
        None => {
            !matches!(
                ty,
                SchemaType::Array | SchemaType::Map | SchemaType::Struct | SchemaType::Unspecified
            ) && (ty != SchemaType::Bytes || target == Target::String)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Cast transformation does not support casting from {} to {:?}",
            schema
                .name
                .clone()
                .unwrap_or_else(|| type_label(schema).to_string()),
            target
        )
        .replace("to Int", "to INT")
        .replace("to Float", "to FLOAT"))
    }
}

/// The schema after a cast: the target type, the source's optional flag, its default cast too.
fn cast_schema(schema: &Schema, target: Target) -> Result<Schema, String> {
    let default_value = match &schema.default_value {
        Some(d) if !is_null(d) => Some(cast(d.clone(), target, Some(schema))?),
        _ => None,
    };
    Ok(Schema {
        default_value,
        ..schema_of(target.schema_type(), schema.optional)
    })
}

fn cast_opt(
    v: Option<Value>,
    target: Target,
    schema: Option<&Schema>,
) -> Result<Option<Value>, String> {
    match v.filter(|v| !is_null(v)) {
        None => Ok(None),
        Some(v) => cast(v, target, schema).map(Some),
    }
}

fn cast(v: Value, target: Target, schema: Option<&Schema>) -> Result<Value, String> {
    let label = kind_label(&v);
    // A Decimal casts through its decimal text, as Java's BigDecimal conversions do.
    if let (Some(schema), Some(value::Kind::Bytes(b))) = (schema, &v.kind) {
        if logical(schema) == Some(record::DECIMAL) {
            let text = record::decimal_text(b, schema)?;
            let kind = match target {
                Target::String => value::Kind::String(text),
                Target::Float32 | Target::Float64 | Target::Boolean => {
                    let f: f64 = text
                        .parse()
                        .map_err(|_| format!("invalid decimal {text}"))?;
                    from_float(f, target, target == Target::Float32)
                }
                _ => {
                    let whole = text.split('.').next().unwrap_or("0");
                    let i: i64 = whole
                        .parse()
                        .map_err(|_| format!("decimal {text} does not fit in {target:?}"))?;
                    from_int(i, target)
                }
            };
            return Ok(Value { kind: Some(kind) });
        }
    }
    let bad = |what: &str| {
        format!("unexpected type in Cast transformation: cannot cast {what} to {target:?}")
    };
    let kind = match (v.kind, target) {
        (Some(value::Kind::Int(i)), t) => from_int(i, t),
        (Some(value::Kind::Float32(f)), t) => from_float(f64::from(f), t, true),
        (Some(value::Kind::Float64(f)), t) => from_float(f, t, false),
        (Some(value::Kind::Boolean(b)), Target::String) => value::Kind::String(b.to_string()),
        (Some(value::Kind::Boolean(b)), Target::Boolean) => value::Kind::Boolean(b),
        (Some(value::Kind::Boolean(b)), t) => from_int(i64::from(b), t),
        (Some(value::Kind::String(s)), t) => from_string(s, t)?,
        (Some(value::Kind::Bytes(b)), Target::String) => {
            value::Kind::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        _ => return Err(bad(label)),
    };
    Ok(Value { kind: Some(kind) })
}

fn from_int(i: i64, t: Target) -> value::Kind {
    match t {
        Target::Int8 => value::Kind::Int(i64::from(i as i8)),
        Target::Int16 => value::Kind::Int(i64::from(i as i16)),
        Target::Int32 => value::Kind::Int(i64::from(i as i32)),
        Target::Int64 => value::Kind::Int(i),
        Target::Float32 => value::Kind::Float32(i as f32),
        Target::Float64 => value::Kind::Float64(i as f64),
        Target::Boolean => value::Kind::Boolean(i != 0),
        Target::String => value::Kind::String(i.to_string()),
    }
}

fn from_float(f: f64, t: Target, was_f32: bool) -> value::Kind {
    match t {
        // Java: (byte) (int) d, (short) (int) d; casts saturate like Java's.
        Target::Int8 => value::Kind::Int(i64::from(f as i32 as i8)),
        Target::Int16 => value::Kind::Int(i64::from(f as i32 as i16)),
        Target::Int32 => value::Kind::Int(i64::from(f as i32)),
        Target::Int64 => value::Kind::Int(f as i64),
        Target::Float32 => value::Kind::Float32(f as f32),
        Target::Float64 => value::Kind::Float64(f),
        Target::Boolean => value::Kind::Boolean(f != 0.0),
        Target::String => value::Kind::String(if was_f32 {
            crate::json_text(&Value {
                kind: Some(value::Kind::Float32(f as f32)),
            })
        } else {
            crate::json_text(&Value {
                kind: Some(value::Kind::Float64(f)),
            })
        }),
    }
}

fn from_string(s: String, t: Target) -> Result<value::Kind, String> {
    let parse_err =
        |what: &str| format!("value {s:?} cannot be cast to {what}: not a valid number");
    Ok(match t {
        Target::Int8 => value::Kind::Int(i64::from(
            s.trim().parse::<i8>().map_err(|_| parse_err("INT8"))?,
        )),
        Target::Int16 => value::Kind::Int(i64::from(
            s.trim().parse::<i16>().map_err(|_| parse_err("INT16"))?,
        )),
        Target::Int32 => value::Kind::Int(i64::from(
            s.trim().parse::<i32>().map_err(|_| parse_err("INT32"))?,
        )),
        Target::Int64 => value::Kind::Int(s.trim().parse::<i64>().map_err(|_| parse_err("INT64"))?),
        Target::Float32 => {
            value::Kind::Float32(s.trim().parse::<f32>().map_err(|_| parse_err("FLOAT32"))?)
        }
        Target::Float64 => {
            value::Kind::Float64(s.trim().parse::<f64>().map_err(|_| parse_err("FLOAT64"))?)
        }
        // Java's Boolean.parseBoolean: true only for "true", ignoring case.
        Target::Boolean => value::Kind::Boolean(s.trim().eq_ignore_ascii_case("true")),
        Target::String => value::Kind::String(s),
    })
}
