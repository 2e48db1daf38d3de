//! PostgreSQL values in the binary format: columns read through a catch-all `FromSql` and
//! decoded by type (numerics exactly, dates and times from PostgreSQL's epoch), parameters
//! encoded for the type the server inferred.

use bytes::BytesMut;
use tokio_postgres::types::{FromSql, IsNull, Kind as PgKind, ToSql, Type};

use super::MICROS_PER_DAY;
use crate::value::{Cell, Kind, NumericMapping};

/// Microseconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
const PG_EPOCH_DAYS: i32 = 10_957;

/// A PostgreSQL value as it came: any type, bytes in the binary format, or NULL.
pub(super) struct Raw<'a>(pub(super) Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn is_text_type(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::CHAR | Type::UNKNOWN
    ) || matches!(ty.kind(), PgKind::Enum(_))
        || ty.name() == "citext"
}

/// Confluent's PostgreSQL mapping, by type and type modifier.
pub(super) fn pg_kind(ty: &Type, typmod: i32, mapping: NumericMapping) -> Option<Kind> {
    Some(match *ty {
        Type::BOOL => Kind::Boolean,
        Type::INT2 => Kind::Int16,
        Type::INT4 => Kind::Int32,
        Type::INT8 | Type::OID => Kind::Int64,
        Type::FLOAT4 => Kind::Float32,
        Type::FLOAT8 => Kind::Float64,
        Type::NUMERIC => {
            let (precision, scale) = if typmod >= 4 {
                let t = typmod - 4;
                (Some(((t >> 16) & 0xffff) as u32), Some(t & 0xffff))
            } else {
                (None, None)
            };
            Kind::numeric(mapping, precision, scale)
        }
        Type::JSON | Type::JSONB | Type::UUID | Type::XML => Kind::String,
        Type::BYTEA => Kind::Bytes,
        Type::DATE => Kind::Date,
        Type::TIME | Type::TIMETZ => Kind::Time,
        Type::TIMESTAMP | Type::TIMESTAMPTZ => Kind::Timestamp,
        _ if is_text_type(ty) => Kind::String,
        _ => return None,
    })
}

fn be<const N: usize>(raw: &[u8]) -> Result<[u8; N], String> {
    raw.get(..N)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{} bytes where {N} were expected", raw.len()))
}

/// A PostgreSQL binary value of a supported type as a [`Cell`].
pub(super) fn pg_decode(ty: &Type, raw: &[u8]) -> Result<Cell, String> {
    Ok(match *ty {
        Type::BOOL => Cell::Bool(be::<1>(raw)?[0] != 0),
        Type::INT2 => Cell::Int(i64::from(i16::from_be_bytes(be(raw)?))),
        Type::INT4 => Cell::Int(i64::from(i32::from_be_bytes(be(raw)?))),
        Type::INT8 => Cell::Int(i64::from_be_bytes(be(raw)?)),
        Type::OID => Cell::Int(i64::from(u32::from_be_bytes(be(raw)?))),
        Type::FLOAT4 => Cell::Float32(f32::from_be_bytes(be(raw)?)),
        Type::FLOAT8 => Cell::Float64(f64::from_be_bytes(be(raw)?)),
        Type::NUMERIC => Cell::Decimal(pg_numeric_text(raw)?),
        Type::BYTEA => Cell::Bytes(raw.to_vec()),
        Type::JSONB => Cell::Text(
            String::from_utf8(raw.get(1..).unwrap_or_default().to_vec())
                .map_err(|_| "jsonb is not UTF-8")?,
        ),
        Type::UUID => {
            let b: [u8; 16] = be(raw)?;
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            Cell::Text(format!(
                "{}-{}-{}-{}-{}",
                &hex[0..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            ))
        }
        Type::DATE => {
            let days = i32::from_be_bytes(be(raw)?);
            if days == i32::MAX || days == i32::MIN {
                return Err("infinite dates have no Connect value".into());
            }
            Cell::Date(days + PG_EPOCH_DAYS)
        }
        Type::TIME => Cell::Time(i64::from_be_bytes(be(raw)?)),
        Type::TIMETZ => {
            let micros = i64::from_be_bytes(be(raw)?);
            let zone = i32::from_be_bytes(be(raw.get(8..).unwrap_or_default())?);
            Cell::Time((micros + i64::from(zone) * 1_000_000).rem_euclid(MICROS_PER_DAY))
        }
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            let micros = i64::from_be_bytes(be(raw)?);
            if micros == i64::MAX || micros == i64::MIN {
                return Err("infinite timestamps have no Connect value".into());
            }
            Cell::Timestamp(micros + PG_EPOCH_MICROS)
        }
        _ => Cell::Text(String::from_utf8(raw.to_vec()).map_err(|_| "text is not UTF-8")?),
    })
}

/// PostgreSQL's binary NUMERIC (base-10000 digits) as decimal text.
pub(super) fn pg_numeric_text(raw: &[u8]) -> Result<String, String> {
    let header: [u8; 8] = be(raw)?;
    let ndigits = u16::from_be_bytes([header[0], header[1]]) as usize;
    let weight = i16::from_be_bytes([header[2], header[3]]) as i32;
    let sign = u16::from_be_bytes([header[4], header[5]]);
    let dscale = u16::from_be_bytes([header[6], header[7]]) as usize;
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err("NaN has no Connect Decimal value".into()),
        _ => return Err("infinity has no Connect Decimal value".into()),
    }
    let mut groups = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        let at = 8 + 2 * i;
        groups.push(u16::from_be_bytes(be(raw.get(at..).unwrap_or_default())?));
    }
    let group = |i: i32| -> u16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| groups.get(i).copied())
            .unwrap_or(0)
    };
    // Integer part: groups 0..=weight.
    let mut whole = String::new();
    for i in 0..=weight {
        if whole.is_empty() {
            let g = group(i);
            if g != 0 {
                whole = g.to_string();
            }
        } else {
            whole.push_str(&format!("{:04}", group(i)));
        }
    }
    if whole.is_empty() {
        whole.push('0');
    }
    let mut frac = String::new();
    let mut i = weight + 1;
    while frac.len() < dscale {
        frac.push_str(&format!("{:04}", group(i)));
        i += 1;
    }
    frac.truncate(dscale);
    let mut text = if sign == 0x4000 {
        format!("-{whole}")
    } else {
        whole
    };
    if !frac.is_empty() {
        text.push('.');
        text.push_str(&frac);
    }
    Ok(text)
}

/// Decimal text as PostgreSQL's binary NUMERIC.
pub(super) fn pg_numeric_bytes(text: &str, out: &mut BytesMut) -> Result<(), String> {
    let t = text.trim();
    let (negative, body) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    if (whole.is_empty() && frac.is_empty())
        || !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(format!("{text:?} is not a decimal number"));
    }
    let whole = whole.trim_start_matches('0');
    let pad_left = (4 - whole.len() % 4) % 4;
    let pad_right = (4 - frac.len() % 4) % 4;
    let digits = format!(
        "{}{whole}{frac}{}",
        "0".repeat(pad_left),
        "0".repeat(pad_right)
    );
    let mut groups: Vec<u16> = digits
        .as_bytes()
        .chunks(4)
        .map(|c| {
            std::str::from_utf8(c)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        })
        .collect();
    let mut weight = ((pad_left + whole.len()) / 4) as i32 - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let n = u16::try_from(groups.len()).map_err(|_| "too many digits".to_string())?;
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    out.extend_from_slice(
        &(if negative && !groups.is_empty() {
            0x4000u16
        } else {
            0
        })
        .to_be_bytes(),
    );
    out.extend_from_slice(&(frac.len() as u16).to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Ok(())
}

/// A [`Cell`] as a PostgreSQL parameter, encoded for the type the server inferred.
#[derive(Debug)]
pub(super) struct PgParam<'a>(pub(super) &'a Cell);

impl ToSql for PgParam<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let mismatch = || -> Box<dyn std::error::Error + Sync + Send> {
            format!("a {:?} cannot be written to a column of type {ty}", self.0).into()
        };
        let int =
            |i: i64, out: &mut BytesMut| -> Result<(), Box<dyn std::error::Error + Sync + Send>> {
                match *ty {
                    Type::INT2 => out.extend_from_slice(&i16::try_from(i)?.to_be_bytes()),
                    Type::INT4 => out.extend_from_slice(&i32::try_from(i)?.to_be_bytes()),
                    Type::INT8 => out.extend_from_slice(&i.to_be_bytes()),
                    Type::OID => out.extend_from_slice(&u32::try_from(i)?.to_be_bytes()),
                    Type::FLOAT4 => out.extend_from_slice(&(i as f32).to_be_bytes()),
                    Type::FLOAT8 => out.extend_from_slice(&(i as f64).to_be_bytes()),
                    Type::NUMERIC => pg_numeric_bytes(&i.to_string(), out)?,
                    Type::BOOL => out.extend_from_slice(&[u8::from(i != 0)]),
                    _ if is_text_type(ty) => out.extend_from_slice(i.to_string().as_bytes()),
                    _ => return Err(mismatch()),
                }
                Ok(())
            };
        match self.0 {
            Cell::Null => return Ok(IsNull::Yes),
            Cell::Bool(b) => match *ty {
                Type::BOOL => out.extend_from_slice(&[u8::from(*b)]),
                _ => int(i64::from(*b), out)?,
            },
            Cell::Int(i) => int(*i, out)?,
            Cell::UInt(u) => match *ty {
                Type::NUMERIC => pg_numeric_bytes(&u.to_string(), out)?,
                _ if is_text_type(ty) => out.extend_from_slice(u.to_string().as_bytes()),
                _ => int(i64::try_from(*u)?, out)?,
            },
            Cell::Float32(f) => match *ty {
                Type::FLOAT4 => out.extend_from_slice(&f.to_be_bytes()),
                Type::FLOAT8 => out.extend_from_slice(&f64::from(*f).to_be_bytes()),
                Type::NUMERIC => pg_numeric_bytes(&f.to_string(), out)?,
                _ if is_text_type(ty) => out.extend_from_slice(f.to_string().as_bytes()),
                _ => return Err(mismatch()),
            },
            Cell::Float64(f) => match *ty {
                Type::FLOAT4 => out.extend_from_slice(&(*f as f32).to_be_bytes()),
                Type::FLOAT8 => out.extend_from_slice(&f.to_be_bytes()),
                Type::NUMERIC => pg_numeric_bytes(&f.to_string(), out)?,
                _ if is_text_type(ty) => out.extend_from_slice(f.to_string().as_bytes()),
                _ => return Err(mismatch()),
            },
            Cell::Decimal(text) => match *ty {
                Type::NUMERIC => pg_numeric_bytes(text, out)?,
                Type::FLOAT4 => out.extend_from_slice(&text.parse::<f32>()?.to_be_bytes()),
                Type::FLOAT8 => out.extend_from_slice(&text.parse::<f64>()?.to_be_bytes()),
                _ if is_text_type(ty) => out.extend_from_slice(text.as_bytes()),
                _ => int(text.parse()?, out)?,
            },
            Cell::Text(s) => match *ty {
                Type::JSON | Type::XML => out.extend_from_slice(s.as_bytes()),
                Type::JSONB => {
                    out.extend_from_slice(&[1]);
                    out.extend_from_slice(s.as_bytes());
                }
                Type::UUID => {
                    let hex: String = s.chars().filter(|c| *c != '-').collect();
                    if hex.len() != 32 {
                        return Err(format!("{s:?} is not a UUID").into());
                    }
                    for i in 0..16 {
                        out.extend_from_slice(&[u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?]);
                    }
                }
                Type::NUMERIC => pg_numeric_bytes(s, out)?,
                Type::BYTEA => out.extend_from_slice(s.as_bytes()),
                _ if is_text_type(ty) => out.extend_from_slice(s.as_bytes()),
                _ => return Err(mismatch()),
            },
            Cell::Bytes(b) => match *ty {
                Type::BYTEA => out.extend_from_slice(b),
                _ => return Err(mismatch()),
            },
            Cell::Date(days) => match *ty {
                Type::DATE => out.extend_from_slice(&(days - PG_EPOCH_DAYS).to_be_bytes()),
                Type::TIMESTAMP | Type::TIMESTAMPTZ => out.extend_from_slice(
                    &(i64::from(*days) * MICROS_PER_DAY - PG_EPOCH_MICROS).to_be_bytes(),
                ),
                _ => return Err(mismatch()),
            },
            Cell::Time(us) => match *ty {
                Type::TIME => out.extend_from_slice(&us.to_be_bytes()),
                Type::TIMETZ => {
                    out.extend_from_slice(&us.to_be_bytes());
                    out.extend_from_slice(&0i32.to_be_bytes());
                }
                _ => return Err(mismatch()),
            },
            Cell::Timestamp(us) => match *ty {
                Type::TIMESTAMP | Type::TIMESTAMPTZ => {
                    out.extend_from_slice(&(us - PG_EPOCH_MICROS).to_be_bytes())
                }
                Type::DATE => out.extend_from_slice(
                    &(i32::try_from(us.div_euclid(MICROS_PER_DAY))? - PG_EPOCH_DAYS).to_be_bytes(),
                ),
                _ => return Err(mismatch()),
            },
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}
