//! Reading the connector protocol's records in place: a record's plain parts (its topic,
//! coordinates, and a key and value that are no data, raw bytes, or a string or bytes with a
//! plain schema) located in the received bytes, without decoding a message per record (five
//! to seven allocations and copies, then as many frees). The worker reads source batches
//! this way, the Rust SDK sink batches. Anything else (headers, a structured schema or value,
//! a layout prost would read differently) is left to prost: every reader here answers `None`
//! for it, never a different reading.

use bytes::Buf as _;
use prost::encoding::decode_varint;

use crate::connector::v1::{data, value, Data, Schema, Structured, Value};

/// A key or value that may be its own Kafka bytes: no data, raw bytes, or a string or bytes
/// value with no schema or a plain one (a type and `optional`, nothing else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainData<'a> {
    Null,
    Raw(&'a [u8]),
    /// `schema` is the plain schema's type, as the wire gives it.
    String {
        schema: Option<i32>,
        text: &'a str,
    },
    Bytes {
        schema: Option<i32>,
        bytes: &'a [u8],
    },
}

impl<'a> PlainData<'a> {
    /// `data` as plain data, when it is.
    pub fn of(data: Option<&'a Data>) -> Option<PlainData<'a>> {
        let structured = match data.and_then(|d| d.kind.as_ref()) {
            None => return Some(PlainData::Null),
            Some(data::Kind::Raw(bytes)) => return Some(PlainData::Raw(bytes)),
            Some(data::Kind::Structured(s)) => s,
        };
        let schema = match &structured.schema {
            None => None,
            Some(s) if is_plain(s) => Some(s.r#type),
            Some(_) => return None,
        };
        match structured.value.as_ref()?.kind.as_ref()? {
            value::Kind::String(text) => Some(PlainData::String { schema, text }),
            value::Kind::Bytes(bytes) => Some(PlainData::Bytes { schema, bytes }),
            _ => None,
        }
    }

    /// The `Data` message this stands for, owned.
    pub fn to_data(&self) -> Data {
        let structured = |schema: Option<i32>, value| {
            Some(data::Kind::Structured(Structured {
                schema: schema.map(|t| Schema {
                    r#type: t,
                    ..Schema::default()
                }),
                value: Some(Value { kind: Some(value) }),
            }))
        };
        Data {
            kind: match *self {
                PlainData::Null => None,
                PlainData::Raw(raw) => Some(data::Kind::Raw(raw.to_vec())),
                PlainData::String { schema, text } => {
                    structured(schema, value::Kind::String(text.into()))
                }
                PlainData::Bytes { schema, bytes } => {
                    structured(schema, value::Kind::Bytes(bytes.to_vec()))
                }
            },
        }
    }

    /// An encoded `Data` message read in place, when it is plain and laid out as prost writes
    /// one (each field once, known fields only).
    pub fn read(data: &'a [u8]) -> Option<PlainData<'a>> {
        let mut buf = data;
        let out = match next_field(&mut buf) {
            None if data.is_empty() => return Some(PlainData::Null),
            None => return None,
            Some((1, Field::Bytes(raw))) => PlainData::Raw(raw),
            Some((2, Field::Bytes(structured))) => PlainData::structured(structured)?,
            Some(_) => return None,
        };
        // A second field (the oneof given twice, or an unknown one) is prost's to read.
        buf.is_empty().then_some(out)
    }

    /// `Structured { schema: plain or none, value: string or bytes }`.
    fn structured(structured: &'a [u8]) -> Option<PlainData<'a>> {
        let mut schema = None;
        let mut value = None;
        let mut buf = structured;
        while !buf.is_empty() {
            match next_field(&mut buf)? {
                (1, Field::Bytes(s)) if schema.is_none() => schema = Some(plain_schema(s)?),
                (2, Field::Bytes(v)) if value.is_none() => value = Some(v),
                _ => return None,
            }
        }
        let mut buf = value?;
        let out = match next_field(&mut buf)? {
            (6, Field::Bytes(text)) => PlainData::String {
                schema,
                text: utf8(text)?,
            },
            (7, Field::Bytes(bytes)) => PlainData::Bytes { schema, bytes },
            _ => return None,
        };
        buf.is_empty().then_some(out)
    }
}

/// A schema that is a type and `optional`, nothing else.
fn is_plain(s: &Schema) -> bool {
    let Schema {
        r#type: _,
        optional: _,
        name,
        version,
        doc,
        parameters,
        default_value,
        value_schema,
        key_schema,
        fields,
    } = s;
    name.is_none()
        && version.is_none()
        && doc.is_none()
        && parameters.is_empty()
        && default_value.is_none()
        && value_schema.is_none()
        && key_schema.is_none()
        && fields.is_empty()
}

/// An encoded `Schema` message holding at most its type and `optional`: the type.
fn plain_schema(schema: &[u8]) -> Option<i32> {
    let (mut schema_type, mut seen) = (0, 0u8);
    let mut buf = schema;
    while !buf.is_empty() {
        match next_field(&mut buf)? {
            (field @ (1 | 2), Field::Varint(v)) if seen & (1 << field) == 0 => {
                seen |= 1 << field;
                if field == 1 {
                    schema_type = v as i32;
                }
            }
            _ => return None,
        }
    }
    Some(schema_type)
}

/// A field's value: the two wire types the protocol's records use.
pub enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// The next field of a message: its number and value. `None` for a malformed field or a wire
/// type other than varint and length-delimited.
#[inline]
pub fn next_field<'a>(buf: &mut &'a [u8]) -> Option<(u32, Field<'a>)> {
    let key = varint(buf)?;
    let field = u32::try_from(key >> 3).ok().filter(|f| *f > 0)?;
    match key & 7 {
        0 => Some((field, Field::Varint(varint(buf)?))),
        2 => {
            let len = usize::try_from(varint(buf)?).ok()?;
            let body = buf.get(..len)?;
            buf.advance(len);
            Some((field, Field::Bytes(body)))
        }
        _ => None,
    }
}

/// Each field of a message, in order, to `each`; `None` when a field is malformed, given twice
/// or numbered 32 or more (prost would merge or skip it), or when `each` refuses one.
#[inline]
pub fn each_field_once<'a>(
    message: &'a [u8],
    mut each: impl FnMut(u32, Field<'a>) -> Option<()>,
) -> Option<()> {
    let mut seen = 0u32;
    let mut buf = message;
    while !buf.is_empty() {
        let (field, value) = next_field(&mut buf)?;
        if field >= 32 || seen & (1 << field) != 0 {
            return None;
        }
        seen |= 1 << field;
        each(field, value)?;
    }
    Some(())
}

/// A varint as prost reads it, its one- and two-byte forms (every key, and lengths below 16
/// KiB) inline: prost's reader, called for each, was a sixth of reading a sink batch.
#[inline]
fn varint(buf: &mut &[u8]) -> Option<u64> {
    let bytes = *buf;
    match bytes {
        [b0, rest @ ..] if *b0 < 0x80 => {
            *buf = rest;
            Some(u64::from(*b0))
        }
        [b0, b1, rest @ ..] if *b1 < 0x80 => {
            *buf = rest;
            Some(u64::from(b0 & 0x7f) | u64::from(*b1) << 7)
        }
        _ => decode_varint(buf).ok(),
    }
}

/// `bytes` as text, checked as prost checks a string field.
pub fn utf8(bytes: &[u8]) -> Option<&str> {
    simdutf8::basic::from_utf8(bytes).ok()
}

/// Shapes of keys and values for the tests of in-place readers: every plain kind and the
/// kinds a reader must leave to prost, each with and without a schema.
#[cfg(any(test, feature = "test-shapes"))]
pub mod shapes {
    use crate::connector::v1::{data, value, Data, Header, Schema, SchemaType, Structured, Value};

    /// Every key shape with every value shape, numbered: the records of a test batch.
    pub fn pairs() -> Vec<(usize, Option<Data>, Option<Data>)> {
        let shapes = data();
        let mut out = Vec::new();
        for key in &shapes {
            for value in &shapes {
                out.push((out.len(), key.clone(), value.clone()));
            }
        }
        out
    }

    /// The `n`th record's topic: short, empty, or not ASCII.
    pub fn topic(n: usize) -> String {
        ["t", "", "topic-\u{e9}"][n % 3].into()
    }

    /// The `n`th record's headers: one on every seventh record (not a plain record).
    pub fn headers(n: usize) -> Vec<Header> {
        if n.is_multiple_of(7) {
            vec![Header {
                key: "h".into(),
                value: None,
            }]
        } else {
            Vec::new()
        }
    }

    /// The `n`th record's timestamp: none, zero, negative or now.
    pub fn timestamp(n: usize) -> Option<i64> {
        [None, Some(0), Some(-3), Some(1_700_000_000_000)][n % 4]
    }

    pub fn structured(schema: Option<Schema>, kind: Option<value::Kind>) -> Data {
        Data {
            kind: Some(data::Kind::Structured(Structured {
                schema,
                value: Some(Value { kind }),
            })),
        }
    }

    pub fn schema(t: SchemaType) -> Option<Schema> {
        Some(Schema {
            r#type: t as i32,
            optional: true,
            ..Schema::default()
        })
    }

    /// Keys and values of every shape, plain or not.
    pub fn data() -> Vec<Option<Data>> {
        vec![
            None,
            Some(Data::default()),
            Some(Data {
                kind: Some(data::Kind::Raw(Vec::new())),
            }),
            Some(Data {
                kind: Some(data::Kind::Raw(b"raw \xff".to_vec())),
            }),
            Some(structured(
                schema(SchemaType::String),
                Some(value::Kind::String("h\u{e9}llo".into())),
            )),
            Some(structured(None, Some(value::Kind::String(String::new())))),
            Some(structured(
                schema(SchemaType::Bytes),
                Some(value::Kind::Bytes(vec![0, 255])),
            )),
            Some(structured(
                Some(Schema::default()),
                Some(value::Kind::Bytes(Vec::new())),
            )),
            // Not plain: a named schema, a number, a null, no value.
            Some(structured(
                Some(Schema {
                    name: Some("n".into()),
                    ..schema(SchemaType::String).unwrap_or_default()
                }),
                Some(value::Kind::String("x".into())),
            )),
            Some(structured(
                schema(SchemaType::Int64),
                Some(value::Kind::Int(-1)),
            )),
            Some(structured(schema(SchemaType::String), None)),
            Some(Data {
                kind: Some(data::Kind::Structured(Structured::default())),
            }),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    /// Every length of varint reads as prost reads it, and a cut one fails.
    #[test]
    fn varints_read_as_prost_reads_them() {
        let mut values = vec![0, 1, 127, 128, 300, 16_383, 16_384, u64::MAX];
        values.extend((0..64).map(|shift| 1u64 << shift));
        for v in values {
            let mut bytes = Vec::new();
            prost::encoding::encode_varint(v, &mut bytes);
            bytes.push(0x55);
            let mut buf = &bytes[..];
            assert_eq!(varint(&mut buf), Some(v));
            assert_eq!(buf, &[0x55]);
            let mut cut = &bytes[..bytes.len() - 2];
            assert_eq!(varint(&mut cut), None, "{v}");
        }
        // Not the shortest form (prost takes it).
        let mut buf = &[0x80, 0x00, 0x01][..];
        assert_eq!(varint(&mut buf), Some(0));
        assert_eq!(buf, &[0x01]);
    }

    /// Read in place, a `Data` message is what prost decodes, when it is plain at all.
    #[test]
    fn plain_data_reads_as_prost_decodes() {
        for data in shapes::data() {
            let bytes = data.as_ref().map(|d| d.encode_to_vec()).unwrap_or_default();
            let decoded = Data::decode(&bytes[..]).unwrap();
            let expected = PlainData::of(Some(&decoded));
            assert_eq!(PlainData::read(&bytes), expected, "{data:?}");
        }
        // Not UTF-8, a oneof given twice, an unknown field, a cut length: left to prost.
        let text = shapes::structured(None, Some(value::Kind::String("ab".into())));
        let mut bad = text.encode_to_vec();
        let at = bad.windows(2).position(|w| w == b"ab").unwrap();
        bad[at] = 0xff;
        assert_eq!(PlainData::read(&bad), None);
        let raw = Data {
            kind: Some(data::Kind::Raw(vec![1])),
        }
        .encode_to_vec();
        assert_eq!(PlainData::read(&[raw.clone(), raw.clone()].concat()), None);
        assert_eq!(
            PlainData::read(&[raw.clone(), vec![0x18, 1]].concat()),
            None
        );
        assert_eq!(PlainData::read(&raw[..raw.len() - 1]), None);
    }
}
